"""An exported `models/model.onnx` run with onnxruntime: its metadata, probabilities and top-k.

Self-contained on purpose (numpy and onnxruntime only, no torch, no other tinyclf module): the
Hugging Face Space bundle copies this file as is and runs without torch. The export
(`tinyclf.serve.export`) writes the metadata read here; `METADATA_KEYS` is the contract.

The graph takes RGB uint8 N×S×S×3 in [0, 255] (input `images`, dynamic N) and normalizes itself;
it returns `logits` and `probabilities` (N×C float32).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

ONNX_FORMAT = "tinyclf-onnx-v1"
INPUT_NAME = "images"
OUTPUT_NAMES = ("logits", "probabilities")
# metadata_props keys, each a string; JSON for the structured ones. "classes" is
# [{"id", "name"}] in logit order; "fit" is how a non-square photo becomes square
# (tinyclf.data.images.FITS); "generated" is "true" when the model was trained on generated data.
METADATA_KEYS = ("format", "model", "parameters", "num_classes", "classes", "image_size", "fit",
                 "dataset", "generated", "mean", "std", "input")


class OnnxModelError(ValueError):
    """An ONNX file that is missing, unreadable or lacks tinyclf's metadata; the message names it."""


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float32, stable for large logits."""
    shifted = logits.astype(np.float32) - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def top_k(probs: np.ndarray, classes: list[dict], k: int = 5) -> list[list[tuple[dict, float]]]:
    """Per row of `probs`, the k most probable (class, probability), best first; k is clamped to
    the number of classes. Ties keep the lower class index first, so results are deterministic."""
    if k < 1:
        raise ValueError(f"top-k must be at least 1, got {k}")
    k = min(k, probs.shape[1])
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return [[(classes[int(i)], float(row[i])) for i in idx] for row, idx in zip(probs, order)]


def parse_metadata(props: dict[str, str], where: str) -> dict:
    """tinyclf's metadata from an ONNX file's metadata_props, typed and checked."""
    if props.get("format") != ONNX_FORMAT:
        raise OnnxModelError(f"{where}: not a tinyclf ONNX export (metadata format is {props.get('format')!r}, "
                             f"expected {ONNX_FORMAT!r})")
    missing = [key for key in METADATA_KEYS if key not in props]
    if missing:
        raise OnnxModelError(f"{where}: ONNX metadata lacks {', '.join(missing)}")
    try:
        meta = {key: props[key] for key in ("format", "model", "fit", "dataset", "input")}
        meta.update(parameters=int(props["parameters"]), num_classes=int(props["num_classes"]),
                    image_size=int(props["image_size"]), generated=props["generated"] == "true",
                    classes=json.loads(props["classes"]), mean=json.loads(props["mean"]), std=json.loads(props["std"]))
    except ValueError as exc:
        raise OnnxModelError(f"{where}: unreadable ONNX metadata ({exc})") from None
    if not isinstance(meta["classes"], list) or len(meta["classes"]) != meta["num_classes"]:
        raise OnnxModelError(f"{where}: ONNX metadata classes do not list num_classes={meta['num_classes']} classes")
    meta["classes"] = [{"index": i, "id": str(c["id"]), "name": str(c["name"])} for i, c in enumerate(meta["classes"])]
    return meta


class OnnxModel:
    """An ONNX export loaded in onnxruntime: `meta` (parse_metadata's dict) and `run(images)`."""

    def __init__(self, path: str | Path, providers: list[str] | None = None, threads: int = 0):
        import onnxruntime as ort  # here, so that importing this module stays cheap

        self.path = Path(path)
        if not self.path.is_file():
            raise OnnxModelError(f"{self.path}: no such ONNX file")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # 0: onnxruntime's default, one per core
        options.log_severity_level = 3  # errors only: its warnings are not the user's business
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=providers or ["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types for bad bytes
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise OnnxModelError(f"{self.path}: not a loadable ONNX model ({first})") from None
        self.meta = parse_metadata(self.session.get_modelmeta().custom_metadata_map, str(self.path))

    def run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(logits, probabilities) for RGB uint8 N×S×S×3 images."""
        size = self.meta["image_size"]
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (size, size, 3):
            raise ValueError(f"expected uint8 N×{size}×{size}×3 RGB images, got {images.dtype} {images.shape}")
        logits, probs = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: np.ascontiguousarray(images)})
        return logits, probs
