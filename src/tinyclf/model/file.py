"""The model file `models/model.pt`: the trained weights plus the plain metadata that rebuilds the model.

Contract in docs/architecture.md ("model file"): `torch.save` of a plain dict
`{"format", "state_dict", "meta"}`, loadable with `torch.load(weights_only=True)`, with no
timestamps, so the same weights and meta always give the same bytes.

- `save_model_file(path, model, meta)` writes it atomically (a module, DDP- or compile-wrapped, or
  a state dict); `read_model_file(path)` checks it without building the model;
  `load_model_file(path)` rebuilds the model with `tinyclf.model.architectures.create_model` and loads the weights.
- `clean_state_dict` strips wrapper prefixes and gives canonical CPU tensors (stable bytes).
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tinyclf import atomic
from tinyclf.errors import TinyclfError
from tinyclf.model.architectures import ModelError, create_model

MODEL_FILE_FORMAT = "tinyclf-model-v1"
# The meta keys every model file carries (docs/architecture.md, "model file").
REQUIRED_META_KEYS = (
    "model", "num_classes", "classes", "image_size", "mean", "std", "dataset", "generated",
    "weights", "params", "environment", "epochs_trained",
)
# Prefixes wrappers add to state-dict keys: torch.compile (`_orig_mod.`) and DDP (`module.`).
_WRAPPER_PREFIXES = ("_orig_mod.", "module.")


class ModelFileError(TinyclfError):
    """A model file that is missing, unreadable, foreign or does not match its own metadata."""


def _plain(value: Any, key: str) -> Any:
    """`value` as plain Python types (what weights_only unpickling accepts); tuples become lists.

    Subclasses are converted too (numpy.float64 is a float subclass that weights_only rejects).
    """
    if value is None or type(value) in (str, int, float, bool):
        return value
    # Subclasses and numpy scalars become the plain type (weights_only refuses numpy.float64).
    for plain_type in (bool, int, float, str):
        if isinstance(value, plain_type):
            return plain_type(value)
    if type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 0:
        return _plain(value.item(), key)
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ModelError(f"model meta: key {k!r} under {key or 'meta'} must be a string")
            out[k] = _plain(v, f"{key}.{k}" if key else k)
        return out
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{key}[{i}]") for i, v in enumerate(value)]
    raise ModelError(f"model meta: {key} is a {type(value).__name__}; only str, int, float, bool, list, dict and None are stored")


def _check_meta(meta: Any, where: str, error: type[Exception]) -> None:
    if not isinstance(meta, Mapping):
        raise error(f"{where}: meta must be a dict, got {type(meta).__name__}")
    missing = [k for k in REQUIRED_META_KEYS if k not in meta]
    if missing:
        raise error(f"{where}: meta lacks {', '.join(missing)}")
    n = meta["num_classes"]
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise error(f"{where}: meta num_classes must be a positive integer, got {n!r}")
    if not isinstance(meta["model"], str):
        raise error(f"{where}: meta model must be a model name, got {meta['model']!r}")
    if not isinstance(meta["classes"], list) or len(meta["classes"]) != n:
        count = len(meta["classes"]) if isinstance(meta["classes"], list) else meta["classes"]
        raise error(f"{where}: meta classes must list {n} classes (num_classes), got {count!r}")


def clean_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous, detached copies with torch.compile's `_orig_mod.` and DDP's `module.` prefixes removed."""
    out = {}
    for key, tensor in state.items():
        while key.startswith(_WRAPPER_PREFIXES):
            key = key.split(".", 1)[1]
        out[key] = _canonical_tensor(tensor)
    return out


def _canonical_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """A CPU tensor with row-major strides that owns exactly its storage.

    torch.save writes strides and whole storages, so a channels_last weight (whose 1x1 kernels count
    as "contiguous" with other strides) or a view into a bigger buffer would change the file's bytes.
    """
    tensor = tensor.detach().to("cpu")
    standard, step = [], 1
    for size in reversed(tensor.shape):
        standard.append(step)
        step *= size
    exact = (
        list(tensor.stride()) == standard[::-1]
        and tensor.storage_offset() == 0
        and tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size()
    )
    return tensor if exact else tensor.clone(memory_format=torch.contiguous_format)


def save_model_file(path: str | Path, model: nn.Module | Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
    """Write the model file atomically: {"format", "state_dict", "meta"}; same inputs give the same bytes.

    `model` is a module (DDP- or compile-wrapped is fine) or its state dict. `meta` must hold the keys
    of docs/architecture.md in plain types; raises ModelError otherwise, before anything is written.
    """
    path = Path(path)
    if not isinstance(meta, Mapping):
        raise ModelError(f"{path}: meta must be a dict, got {type(meta).__name__}")
    # Canonical form through JSON text: pickle memoizes by object identity (a string shared by two
    # keys is written once), so equal metas built differently would otherwise pickle differently.
    plain_meta = json.loads(json.dumps(_plain(dict(meta), ""), sort_keys=True))
    _check_meta(plain_meta, f"{path}", ModelError)
    state = model.state_dict() if isinstance(model, nn.Module) else model
    payload = {"format": MODEL_FILE_FORMAT, "state_dict": clean_state_dict(state), "meta": plain_meta}
    # Serialize to memory, not to the temp file: torch.save names the zip's top folder after the
    # file it writes, so a random temp name would make every save's bytes differ.
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic.write_bytes(path, buffer.getvalue())


def load_error_text(exc: Exception) -> str:
    """One line from torch.load's error: the weights-only unpickler's reason when it gave one."""
    text = str(exc)
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text[text.index(marker):]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) > 1 and lines[0] == marker:  # the reason is on the next line
        lines = [f"{marker} {lines[1]}"]
    return (lines[0] if lines else type(exc).__name__)[:200]


def _not_torch_save(path: Path) -> str | None:
    """Why `path` cannot be a torch.save file, from its first bytes (a zip archive since torch 1.6;
    an older pickle starts with 0x80), or None when it may be one."""
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
        return None
    known = {b"\x89PNG": "a PNG image", b"\xff\xd8": "a JPEG image", b"\x08": "an ONNX model?"}
    kind = next((what for magic, what in known.items() if head.startswith(magic)), None)
    return f"not a torch.save file ({kind or f'it starts {head!r}'}); expected models/model.pt"


def read_model_file(path: str | Path, map_location: Any = "cpu") -> dict:
    """The checked contents of a model file ({"format", "state_dict", "meta"}) without building the model."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"{path}: no such model file")
    if path.is_dir():
        raise ModelFileError(f"{path}: is a directory, not a model file")
    problem = _not_torch_save(path)
    if problem:
        raise ModelFileError(f"{path}: {problem}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - garbage bytes make the unpickler fail in many ways
        raise ModelFileError(f"{path}: not a readable model file (corrupt or truncated?): {load_error_text(exc)}") from None
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FILE_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ModelFileError(f"{path}: not a tinyclf model file (expected format {MODEL_FILE_FORMAT!r}, found {found!r})")
    if not isinstance(payload.get("state_dict"), dict):
        raise ModelFileError(f"{path}: model file has no state_dict")
    _check_meta(payload.get("meta"), f"{path}", ModelFileError)
    return payload


def _mismatch_text(model: nn.Module, state: Mapping[str, torch.Tensor]) -> str | None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {list(state[k].shape)} vs {list(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)):
        if items:
            more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
            parts.append(f"{label}: {', '.join(items[:3])}{more}")
    return "; ".join(parts) or None


def load_model_file(path: str | Path, map_location: Any = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model a model file describes and load its weights strictly; returns (model in eval mode, meta).

    Raises ModelFileError (one line naming `path`) for a missing, corrupt, truncated or foreign file,
    an unknown model name, or weights that do not fit the model the meta describes.
    """
    payload = read_model_file(path, map_location)
    meta, state = payload["meta"], payload["state_dict"]
    try:
        model = create_model(meta["model"], meta["num_classes"])
    except ModelError as exc:
        raise ModelFileError(f"{path}: {exc}") from None
    problem = _mismatch_text(model, state)
    if problem is not None:
        raise ModelFileError(f"{path}: weights do not fit {meta['model']} with {meta['num_classes']} classes ({problem})")
    model.load_state_dict(state, strict=True)
    if map_location is not None and not callable(map_location) and not isinstance(map_location, dict):
        model.to(map_location)
    return model.eval(), meta
