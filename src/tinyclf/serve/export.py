"""`models/model.pt` → `models/model.onnx`, proven equal to PyTorch before it is written.

The exported graph is `ServingModel`: RGB uint8 N×S×S×3 in [0, 255] (dynamic N), normalization
inside, `logits` and `probabilities` out, opset 18, with the class list, input size, fit, dataset and
`generated` in its metadata (`tinyclf.serve.onnx_model.METADATA_KEYS`). Parity is checked with
onnxruntime against PyTorch on up to 512 prepared validation images, spread over the whole split;
if it fails, neither the ONNX file nor parity.json is written.

Exporter: the TorchScript one (`dynamo=False`): several times faster than the torch.export-based one
with logits as equal, and quiet (docs/benchmarks.md, "Inference"); the latter is the fallback for a
model the TorchScript exporter cannot trace. Either way the parity check below vouches for the graph.
"""

from __future__ import annotations

import io
import json
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

from tinyclf import atomic
from tinyclf.data.arrays import load_split
from tinyclf.errors import TinyclfError
from tinyclf.model.parameters import count_parameters
from tinyclf.serve.onnx_model import INPUT_NAME, ONNX_FORMAT, OUTPUT_NAMES, OnnxModel
from tinyclf.serve.predictor import model_fit
from tinyclf.serve.torch_model import ServingModel, load_serving_model, square_size

OPSET = 18
PARITY_IMAGES = 512
MAX_LOGIT_DIFF = 1e-3  # absolute, on any logit of any image
MIN_TOP1_AGREEMENT = 0.998  # fraction of images whose top-1 class is the same
_BATCH = 64


class ExportError(TinyclfError):
    """An export that failed or did not match PyTorch; nothing was written."""


def metadata(serving: ServingModel, meta: dict, path: Path) -> dict[str, str]:
    """The ONNX metadata_props (strings) that serving code reads instead of the training code."""
    return {
        "format": ONNX_FORMAT, "model": meta["model"], "parameters": str(count_parameters(serving.model)),
        "num_classes": str(meta["num_classes"]),
        "classes": json.dumps([{"id": c["id"], "name": c["name"]} for c in meta["classes"]]),
        "image_size": str(square_size(meta, path)), "fit": model_fit(meta), "dataset": str(meta["dataset"]),
        "generated": "true" if meta["generated"] else "false",
        "mean": json.dumps(meta["mean"]), "std": json.dumps(meta["std"]),
        "input": "RGB uint8 NHWC in [0, 255]; normalization is inside the graph",
    }


def _trace(serving: ServingModel, example: torch.Tensor, dynamo: bool) -> bytes:
    buffer = io.BytesIO()
    names = dict(input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES), opset_version=OPSET)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice, tracer notes
        if dynamo:
            program = torch.onnx.export(serving, (example,), dynamo=True, verbose=False,
                                        dynamic_shapes={INPUT_NAME: {0: torch.export.Dim("batch")}}, **names)
            return program.model_proto.SerializeToString()
        torch.onnx.export(serving, (example,), buffer, dynamo=False,
                          dynamic_axes={name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)}, **names)
    return buffer.getvalue()


def build_onnx(serving: ServingModel, meta: dict, path: Path) -> tuple[bytes, str]:
    """The serialized ONNX model with tinyclf's metadata, and which exporter made it."""
    size = square_size(meta, path)
    # Batch 2: a batch-1 example lets an exporter fold the batch size into the graph.
    example = torch.zeros((2, size, size, 3), dtype=torch.uint8)
    try:
        data, exporter = _trace(serving, example, dynamo=False), "torchscript"
    except Exception as exc:  # noqa: BLE001 - tracing fails in many ways; the other exporter may cope
        try:
            data, exporter = _trace(serving, example, dynamo=True), "dynamo"
        except Exception as exc2:  # noqa: BLE001
            raise ExportError(f"{path}: ONNX export of {meta['model']} failed ({_first_line(exc)}; "
                              f"dynamo exporter: {_first_line(exc2)})") from None
    proto = onnx.load_from_string(data)
    for key, value in metadata(serving, meta, path).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto.SerializeToString(), exporter


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]


def parity_images(prepared: Path, limit: int = PARITY_IMAGES) -> np.ndarray:
    """Up to `limit` validation images, evenly spread over the split (which may be sorted by class)."""
    images, _ = load_split(prepared, "val")
    if len(images) == 0:
        raise ExportError(f"{prepared}: the val split is empty; parity needs images")
    index = np.unique(np.linspace(0, len(images) - 1, min(limit, len(images))).round().astype(np.int64))
    return np.ascontiguousarray(images[index])


def parity(onnx_model: OnnxModel, serving: ServingModel, images: np.ndarray) -> dict:
    """onnxruntime vs PyTorch on `images`: max absolute logit and probability differences, top-1 agreement."""
    logit_diff = prob_diff = 0.0
    same = 0
    for start in range(0, len(images), _BATCH):
        batch = images[start : start + _BATCH]
        with torch.inference_mode():
            ref_logits, ref_probs = (t.numpy() for t in serving(torch.from_numpy(batch)))
        logits, probs = onnx_model.run(batch)
        logit_diff = max(logit_diff, float(np.abs(logits - ref_logits).max()))
        prob_diff = max(prob_diff, float(np.abs(probs - ref_probs).max()))
        same += int((logits.argmax(1) == ref_logits.argmax(1)).sum())
    return {"images": int(len(images)), "max_abs_logit_diff": logit_diff, "max_abs_prob_diff": prob_diff,
            "top1_agreement": same / len(images)}


def check_parity(figures: dict, max_logit_diff: float, min_top1_agreement: float) -> list[str]:
    """What fails the thresholds, as readable phrases; empty when parity holds."""
    problems = []
    if not figures["max_abs_logit_diff"] <= max_logit_diff:  # `not <=` also catches NaN
        problems.append(f"max |logit difference| {figures['max_abs_logit_diff']:.3g} > {max_logit_diff:g}")
    if not figures["top1_agreement"] >= min_top1_agreement:
        problems.append(f"top-1 agreement {figures['top1_agreement']:.2%} < {min_top1_agreement:.2%}")
    return problems


@torch.no_grad()  # no autograd graph to trace or keep; a decorator, so the caller's grad mode is left as it was
def export_model(model_path: Path, prepared: Path, onnx_out: Path, parity_out: Path, *,
                 max_logit_diff: float = MAX_LOGIT_DIFF, min_top1_agreement: float = MIN_TOP1_AGREEMENT,
                 parity_limit: int = PARITY_IMAGES) -> dict:
    """Export, check parity on prepared val images, then write `onnx_out` and `parity_out` (JSON);
    ExportError, with nothing written, when the export or parity fails. Returns parity.json's dict."""
    serving, meta = load_serving_model(model_path, "cpu")
    images = parity_images(prepared, parity_limit)
    size = square_size(meta, model_path)
    if images.shape[1:] != (size, size, 3):
        raise ExportError(f"{prepared}: val images are {images.shape[1]}x{images.shape[2]}, "
                          f"{model_path} takes {size}x{size}")
    start = time.perf_counter()
    data, exporter = build_onnx(serving, meta, model_path)
    seconds = time.perf_counter() - start
    with atomic.atomic_path(onnx_out) as tmp:
        tmp.write_bytes(data)
        figures = parity(OnnxModel(tmp), serving, images)
        problems = check_parity(figures, max_logit_diff, min_top1_agreement)
        if problems:
            raise ExportError(f"{onnx_out}: ONNX does not match PyTorch on {figures['images']} val images "
                              f"({'; '.join(problems)}); nothing written")
    record = {**figures, "passed": True, "max_logit_diff_allowed": max_logit_diff,
              "min_top1_agreement": min_top1_agreement, "opset": OPSET, "exporter": exporter,
              "onnx_bytes": len(data)}
    atomic.write_json(parity_out, record)
    return {**record, "export_seconds": seconds}
