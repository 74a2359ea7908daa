"""`load_predictor`: a trained model, from `models/model.pt` (PyTorch) or `models/model.onnx`
(onnxruntime), behind one small interface: RGB uint8 N×S×S×3 in, class probabilities out.

The ONNX backend takes everything (classes, input size, fit, facts) from the ONNX metadata and never
imports torch; the torch backend reads the model file's meta. `read_image` turns image bytes into the
model's input exactly as the preprocess stage prepared the training images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from tinyclf.data.images import MAX_IMAGE_BYTES, decode_photo
from tinyclf.errors import TinyclfError
from tinyclf.serve.onnx_model import OnnxModel, OnnxModelError, top_k

BACKENDS = ("auto", "torch", "onnx")
_SUFFIX = {"torch": ".pt", "onnx": ".onnx"}


class PredictError(TinyclfError):
    """A model that cannot be loaded or used for prediction; the message names the file."""


class Predictor:
    """A loaded model. `classes` are [{"index", "id", "name"}] in logit order; `fit` is how a
    non-square image becomes square for it (tinyclf.data.images.FITS)."""

    def __init__(self, *, backend: str, classes: list[dict], image_size: int, fit: str, facts: dict,
                 run: Callable[[np.ndarray], np.ndarray]):
        self.backend, self.classes, self.image_size, self.fit, self.facts = backend, classes, image_size, fit, facts
        self._run = run

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Softmax probabilities, float32 N×C, for RGB uint8 N×S×S×3 images."""
        s = self.image_size
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.shape[1:] != (s, s, 3) \
                or images.ndim != 4:
            got = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
            raise ValueError(f"expected uint8 N×{s}×{s}×3 RGB images, got {got}")
        if len(images) == 0:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        return np.asarray(self._run(images), dtype=np.float32)

    def top_k(self, probs: np.ndarray, k: int = 5) -> list[list[tuple[dict, float]]]:
        """Per image, the k most probable (class, probability), best first; k is clamped to the class count."""
        return top_k(probs, self.classes, k)


def read_image(data: bytes, predictor: Predictor) -> np.ndarray:
    """S×S×3 uint8 RGB from image file bytes, prepared as the pipeline prepares images (header
    checked before decoding, EXIF orientation applied, made square by the model's fit); ValueError
    with the reason for anything that is not a usable image."""
    if len(data) > MAX_IMAGE_BYTES:
        raise ValueError(f"{len(data):,} bytes, over the limit of {MAX_IMAGE_BYTES:,} (tinyclf.data.images.MAX_IMAGE_BYTES)")
    if not data:
        raise ValueError("empty file")
    return decode_photo(data, predictor.image_size, fit=predictor.fit).image


def load_predictor(path: str | Path, *, backend: str = "auto", device: str = "cpu", threads: int = 0) -> Predictor:
    """The model at `path`: "auto" picks onnx for a .onnx file and torch otherwise. Naming the other
    backend than the file's suffix uses its sibling (models/model.pt with "onnx" reads models/model.onnx).
    `threads`: onnxruntime's threads per call (0: one per core); the torch backend ignores it.
    PredictError, one line naming the file, for any problem."""
    path = Path(path)
    if backend not in BACKENDS:
        raise PredictError(f"unknown backend {backend!r} (one of {', '.join(BACKENDS)})")
    if backend == "auto":
        backend = "onnx" if path.suffix == ".onnx" else "torch"
    elif path.suffix in _SUFFIX.values() and path.suffix != _SUFFIX[backend]:
        path = path.with_suffix(_SUFFIX[backend])
    if not path.is_file():
        hint = " (the export stage writes it: dvc repro export)" if backend == "onnx" else ""
        raise PredictError(f"{path}: no such model file{hint}")
    return _load_onnx(path, device, threads) if backend == "onnx" else _load_torch(path, device)


def _onnx_providers(device: str) -> list[str] | list[tuple[str, dict]]:
    import onnxruntime as ort

    if device == "cpu":
        return ["CPUExecutionProvider"]
    kind, _, index = device.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise PredictError(f"unknown device {device!r} for the onnx backend (cpu, cuda or cuda:N)")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise PredictError(f"device {device}: this onnxruntime has no CUDA support (pip install onnxruntime-gpu)")
    return [("CUDAExecutionProvider", {"device_id": int(index or 0)}), "CPUExecutionProvider"]


def _load_onnx(path: Path, device: str, threads: int = 0) -> Predictor:
    try:
        model = OnnxModel(path, providers=_onnx_providers(device), threads=threads)
    except OnnxModelError as exc:
        raise PredictError(str(exc)) from None
    meta = model.meta
    facts = {key: meta[key] for key in ("model", "parameters", "dataset", "generated", "num_classes", "image_size")}
    facts.update(path=str(path), backend="onnx")
    return Predictor(backend="onnx", classes=meta["classes"], image_size=meta["image_size"], fit=meta["fit"],
                     facts=facts, run=lambda images: model.run(images)[1])


def model_fit(meta: dict) -> str:
    """How preprocess made this model's training images square: data.resize for your own images;
    the official datasets' images are all one size already, and any other is squashed."""
    data = meta.get("params", {}).get("data", {})
    return data.get("resize", "center_crop") if data.get("dataset") == "folder" else "squash"


def _load_torch(path: Path, device: str) -> Predictor:
    import torch

    from tinyclf.model.parameters import count_parameters
    from tinyclf.serve.torch_model import load_serving_model, square_size

    try:
        torch_device = torch.device(device)
        model, meta = load_serving_model(path, torch_device)
        size = square_size(meta, path)
    except TinyclfError as exc:
        raise PredictError(str(exc)) from None
    except (RuntimeError, ValueError, AssertionError) as exc:  # an unknown or absent device
        raise PredictError(f"{path}: cannot use device {device!r} ({str(exc).splitlines()[0][:150]})") from None

    def run(images: np.ndarray) -> np.ndarray:
        # torch wants a writable array (a memory-mapped one is not); the copy is one batch of uint8.
        x = torch.from_numpy(images if images.flags.writeable else images.copy())
        with torch.inference_mode():
            return model(x.to(torch_device))[1].float().cpu().numpy()

    classes = [{"index": i, "id": c["id"], "name": c["name"]} for i, c in enumerate(meta["classes"])]
    facts = {"model": meta["model"], "parameters": count_parameters(model.model), "dataset": meta["dataset"],
             "generated": bool(meta["generated"]), "num_classes": meta["num_classes"], "image_size": size,
             "path": str(path), "backend": "torch"}
    return Predictor(backend="torch", classes=classes, image_size=size, fit=model_fit(meta), facts=facts, run=run)
