"""Models: the reference `tiny_resnet50`, any timm architecture, their counts, and the model file.

- `create_model(name, num_classes)` builds `tiny_resnet50` (ours, see `../shared/reference-model.md`)
  or passes any other name to `timm.create_model(name, pretrained=False, ...)`.
- `count_parameters`, `count_mult_adds` and `model_table` describe a model for tests and the report.
- `save_model_file` / `load_model_file` write and read `models/model.pt`
  (contract in docs/architecture.md): a plain dict loadable with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import io
import json
import math
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from tinyclf import atomic
from tinyclf.errors import TinyclfError

MODEL_FILE_FORMAT = "tinyclf-model-v1"
# The meta keys every model file carries (docs/architecture.md, "model file").
REQUIRED_META_KEYS = (
    "model", "num_classes", "classes", "image_size", "mean", "std", "dataset", "generated",
    "weights", "params", "environment", "epochs_trained",
)
# Prefixes wrappers add to state-dict keys: torch.compile (`_orig_mod.`) and DDP (`module.`).
_WRAPPER_PREFIXES = ("_orig_mod.", "module.")


class ModelError(TinyclfError, ValueError):
    """An unknown model name or an impossible model request."""


class ModelFileError(TinyclfError):
    """A model file that is missing, unreadable, foreign or does not match its own metadata."""


# --------------------------------------------------------------------------------------------
# The reference model
# --------------------------------------------------------------------------------------------
class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (carries the stride) -> 1x1 expand, plus a shortcut, then ReLU."""

    def __init__(self, in_channels: int, width: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Functional ReLUs: they hold no state, and one module per call would only pad the table.
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = F.relu(self.bn2(self.conv2(out)), inplace=True)
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x), inplace=True)


class TinyResNet50(nn.Module):
    """The ResNet-50 variant of the reference Tiny ImageNet result (64x64 input, 20.5M params at 200 classes).

    Differs from torchvision/timm `resnet50`: a 3x3 stride-1 stem conv with bias and no max-pool;
    every stage downsamples (stage 1 included); a stage's first block is `in_channels / 4` wide;
    the head is a 1x1 conv with bias after global average pooling.
    """

    STAGE_BLOCKS = (3, 4, 6, 3)
    STAGE_OUT = (256, 512, 1024, 2048)

    def __init__(self, num_classes: int, in_chans: int = 3, *, zero_init_last: bool = True) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, 64, 3, stride=1, padding=1, bias=True),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
        )
        in_channels = 64
        stages = []
        for blocks, out_channels in zip(self.STAGE_BLOCKS, self.STAGE_OUT):
            layers = [Bottleneck(in_channels, in_channels // 4, out_channels, stride=2)]
            layers += [Bottleneck(out_channels, out_channels // 4, out_channels) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*layers))
            in_channels = out_channels
        self.stage1, self.stage2, self.stage3, self.stage4 = stages
        self.num_features = in_channels
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(in_channels, num_classes, 1, bias=True),
            nn.Flatten(1),
        )
        self._init_weights(zero_init_last)

    def _init_weights(self, zero_init_last: bool) -> None:
        classifier = self.head[1]
        for module in self.modules():
            if isinstance(module, nn.Conv2d) and module is not classifier:
                # He et al. 2015 for convs followed by ReLU (torchvision's and timm's choice).
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        # The classifier keeps PyTorch's default init (the same as nn.Linear's): a 1x1 conv after
        # pooling *is* a linear layer, and fan-out Kaiming would start it with needlessly large logits.
        if zero_init_last:
            # Zero gamma on each block's last BN makes every residual branch output 0 at the start,
            # so each block begins as its shortcut: better-conditioned early training, especially
            # with large batches and warmup (Goyal et al. 2017; timm's resnet default is the same).
            for module in self.modules():
                if isinstance(module, Bottleneck):
                    nn.init.zeros_(module.bn3.weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.stage1(x)
        x = self.stage2(x)
        x = self.stage3(x)
        return self.stage4(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def tiny_resnet50(num_classes: int, *, zero_init_last: bool = True, in_chans: int = 3) -> TinyResNet50:
    return TinyResNet50(num_classes, in_chans, zero_init_last=zero_init_last)


# A plain dict rather than timm's @register_model: timm passes pretrained_cfg and friends to
# registered entry points, which our constructor has no use for.
MODELS: dict[str, Callable[..., nn.Module]] = {"tiny_resnet50": tiny_resnet50}


def _timm():
    import timm  # imported lazily: it takes a second and only non-reference models need it

    return timm


def available_models() -> list[str]:
    """Our own model names followed by every timm architecture name."""
    return sorted(MODELS) + _timm().list_models()


def create_model(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
    """Build `name` from scratch with a `num_classes`-way classifier.

    `tiny_resnet50` is ours; any other name is a timm architecture (`resnet18`, `convnext_nano`,
    a tagged name such as `resnet50.a1_in1k` is accepted; weights are never downloaded).
    Extra keyword arguments go to the constructor (e.g. `zero_init_last=False`).
    Raises ModelError for an unknown name, listing close matches.
    """
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ModelError(f"num_classes must be a positive integer, got {num_classes!r}")
    if name in MODELS:
        return MODELS[name](num_classes, **kwargs)
    timm = _timm()
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, available_models(), n=5, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see timm.list_models() for the choices"
        raise ModelError(f"unknown model {name!r} (neither tinyclf's {', '.join(sorted(MODELS))} nor a timm model){hint}")
    return timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)


# --------------------------------------------------------------------------------------------
# Counting
# --------------------------------------------------------------------------------------------
def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _image_hw(image_size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(image_size, int):
        return image_size, image_size
    h, w = image_size
    return int(h), int(w)


def _probe_input(model: nn.Module, image_size, in_chans: int, batch_size: int = 1) -> torch.Tensor:
    """A zero image batch on the model's device and dtype (a meta-device model gets a meta input)."""
    first = next(iter(model.parameters()), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    h, w = _image_hw(image_size)
    return torch.zeros(batch_size, in_chans, h, w, device=device, dtype=dtype)


def _run_with_hooks(model: nn.Module, x: torch.Tensor, hook: Callable, modules: list[nn.Module]) -> None:
    """One forward pass in eval mode without gradients, with `hook` on `modules`; restores the mode.

    Eval mode so that the probe never touches BatchNorm running statistics.
    """
    handles = [m.register_forward_hook(hook) for m in modules]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)


def _layer_mult_adds(module: nn.Module, output: torch.Tensor) -> int:
    """Exact mult-adds of a conv or linear layer for the output it produced (bias adds included).

    Conv: every output element costs in_channels/groups * kernel area multiply-adds (+1 for the bias).
    Linear: every output element costs in_features (+1 for the bias).
    """
    if isinstance(module, nn.modules.conv._ConvNd) and not module.transposed:
        per_output = (module.in_channels // module.groups) * math.prod(module.kernel_size)
    elif isinstance(module, nn.Linear):
        per_output = module.in_features
    else:
        return 0
    if getattr(module, "bias", None) is not None:
        per_output += 1
    return per_output * output.numel()


def count_mult_adds(model: nn.Module, image_size: int | tuple[int, int], in_chans: int = 3) -> int:
    """Multiply-adds of one image through the conv and linear layers, counted exactly with hooks.

    Matmuls outside nn.Linear (attention scores) and norm/activation layers are not counted.
    For tiny_resnet50 at 64x64 this equals torchinfo's total less its BatchNorm terms.
    Works on a meta-device model (no memory, no arithmetic).
    """
    total = 0

    def hook(module, _inputs, output):
        nonlocal total
        total += _layer_mult_adds(module, output)

    layers = [m for m in model.modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]
    _run_with_hooks(model, _probe_input(model, image_size, in_chans), hook, layers)
    return total


def _torchinfo_mult_adds(module: nn.Module, output_shape: list[int]) -> int:
    """torchinfo 1.8's mult-add rule for a leaf layer, so the table's total reads like the reference.

    Conv: parameter count x batch x output spatial size; anything else with a weight or bias
    (BatchNorm, Linear on 2-D input): parameter count x batch.
    """
    if not output_shape:
        return 0
    total = 0
    for name, param in module.named_parameters(recurse=False):
        if name in ("weight", "bias"):
            if "Conv" in type(module).__name__:
                total += param.numel() * math.prod(output_shape[:1] + output_shape[2:])
            else:
                total += output_shape[0] * param.numel()
        elif "weight" in name or "bias" in name:
            total += math.prod(output_shape[:2]) * param.numel()
    return total


def _first_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (list, tuple)):
        for item in value:
            found = _first_tensor(item)
            if found is not None:
                return found
    if isinstance(value, Mapping):
        return _first_tensor(list(value.values()))
    return None


def model_table(model: nn.Module, image_size: int | tuple[int, int], in_chans: int = 3, batch_size: int = 1) -> dict:
    """A torchinfo-style description of `model` for one `batch_size` x in_chans x H x W forward pass.

    Returns plain types only (JSON-ready):
    `{"model": class name, "input_shape": [..], "layers": [{"name", "type", "depth", "output_shape",
    "params", "trainable_params", "mult_adds"}, ...] in definition order (depth 0 is the model;
    containers carry the totals of everything inside them), "total_params", "trainable_params",
    "non_trainable_params", "total_mult_adds", "input_size_mb", "forward_backward_pass_size_mb",
    "params_size_mb", "estimated_total_size_mb"}`.

    Sizes follow torchinfo 1.8: input = the input tensor's bytes; forward/backward pass = twice
    (activation + its gradient) the output bytes of every leaf layer that has parameters; params =
    the parameters' bytes; total = their sum. MB = 10^6 bytes.
    """
    outputs: dict[nn.Module, list[int]] = {}
    output_bytes: dict[nn.Module, int] = {}

    def hook(module, _inputs, output):
        tensor = _first_tensor(output)
        if tensor is not None:  # a module called twice keeps its last output, as in torchinfo
            outputs[module] = list(tensor.shape)
            output_bytes[module] = tensor.numel() * tensor.element_size()

    named = list(model.named_modules())
    x = _probe_input(model, image_size, in_chans, batch_size)
    _run_with_hooks(model, x, hook, [m for _, m in named])

    leaf_macs: dict[nn.Module, int] = {}
    for _, module in named:
        if not any(True for _ in module.children()):
            leaf_macs[module] = _torchinfo_mult_adds(module, outputs.get(module, []))

    layers = []
    for name, module in named:
        params = sum(p.numel() for p in module.parameters())
        trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
        macs = sum(leaf_macs.get(m, 0) for m in module.modules())
        layers.append({
            "name": name or type(model).__name__,
            "type": type(module).__name__,
            "depth": 0 if not name else name.count(".") + 1,
            "output_shape": outputs.get(module),
            "params": params,
            "trainable_params": trainable,
            "mult_adds": macs,
        })

    total_params = count_parameters(model)
    trainable_params = count_parameters(model, trainable_only=True)
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    pass_bytes = sum(
        2 * output_bytes.get(module, 0)
        for module in leaf_macs
        if any(True for _ in module.parameters(recurse=False))
    )
    input_bytes = x.numel() * x.element_size()
    mb = 1e6
    return {
        "model": type(model).__name__,
        "input_shape": list(x.shape),
        "layers": layers,
        "total_params": total_params,
        "trainable_params": trainable_params,
        "non_trainable_params": total_params - trainable_params,
        "total_mult_adds": sum(leaf_macs.values()),
        "input_size_mb": input_bytes / mb,
        "forward_backward_pass_size_mb": pass_bytes / mb,
        "params_size_mb": param_bytes / mb,
        "estimated_total_size_mb": (input_bytes + pass_bytes + param_bytes) / mb,
    }


def _shape_text(shape: list[int] | None) -> str:
    return "--" if not shape else "[" + ", ".join(str(s) for s in shape) + "]"


def _count_text(n: int) -> str:
    return f"{n:,}" if n else "--"


def format_model_table(table: dict, max_depth: int = 2) -> str:
    """Markdown for a `model_table` dict: layers down to `max_depth` (2: stages and blocks;
    3: the convs inside blocks), then totals and sizes the way torchinfo prints them."""
    lines = [
        "| Layer | Type | Output shape | Params | Mult-adds |",
        "|---|---|---|--:|--:|",
    ]
    for row in table["layers"]:
        if row["depth"] > max_depth:
            continue
        # Non-breaking spaces indent nested layers so the hierarchy survives markdown rendering.
        indent = "\u00a0\u00a0" * row["depth"]
        name = row["name"].replace("|", "\\|")
        lines.append(
            f"| {indent}{name} | {row['type']} | {_shape_text(row['output_shape'])} | "
            f"{_count_text(row['params'])} | {_count_text(row['mult_adds'])} |"
        )
    macs = table["total_mult_adds"]
    macs_text = f"{macs / 1e9:.2f} G" if macs >= 1e9 else f"{macs / 1e6:.2f} M"
    lines += [
        "",
        "| Summary | |",
        "|---|--:|",
        f"| Input shape | {_shape_text(table['input_shape'])} |",
        f"| Total params | {table['total_params']:,} |",
        f"| Trainable params | {table['trainable_params']:,} |",
        f"| Non-trainable params | {table['non_trainable_params']:,} |",
        f"| Total mult-adds | {macs_text} ({macs:,}) |",
        f"| Input size (MB) | {table['input_size_mb']:.2f} |",
        f"| Forward/backward pass size (MB) | {table['forward_backward_pass_size_mb']:.2f} |",
        f"| Params size (MB) | {table['params_size_mb']:.2f} |",
        f"| Estimated total size (MB) | {table['estimated_total_size_mb']:.2f} |",
    ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Environment and the model file
# --------------------------------------------------------------------------------------------
def _version(package: str) -> str | None:
    # Read from the installed metadata rather than importing: albumentations takes seconds to import.
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment_info(device: str | torch.device | None = None) -> dict:
    """Versions and hardware that produced a model, for meta["environment"] (plain types only).

    `cuda`/`cudnn` are the versions torch runs with, or None on a build or machine without CUDA;
    `device` is the GPU's name for a CUDA `device` (default: the current GPU when there is one), else "cpu".
    """
    device = torch.device(device) if device is not None else None
    cuda_ok = torch.cuda.is_available()
    if cuda_ok and (device is None or device.type == "cuda"):
        device_name = torch.cuda.get_device_name(device if device is not None and device.index is not None else None)
    else:
        device_name = "cpu" if device is None or device.type == "cpu" else str(device)
    return {
        "torch": str(torch.__version__),  # a TorchVersion (str subclass) that weights_only refuses
        "torchvision": _version("torchvision"),
        "timm": _version("timm"),
        "albumentations": _version("albumentations"),
        "numpy": _version("numpy"),
        "python": platform.python_version(),
        "cuda": torch.version.cuda if cuda_ok else None,
        "cudnn": torch.backends.cudnn.version() if cuda_ok and torch.backends.cudnn.is_available() else None,
        "device": device_name,
        # CPU results depend on the thread count (reduction order in the BLAS/oneDNN kernels).
        "cpu_threads": torch.get_num_threads(),
    }


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


def _load_error_text(exc: Exception) -> str:
    """One line from torch.load's error: the weights-only unpickler's reason when it gave one."""
    text = str(exc)
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text[text.index(marker):]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:200]


def read_model_file(path: str | Path, map_location: Any = "cpu") -> dict:
    """The checked contents of a model file ({"format", "state_dict", "meta"}) without building the model."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"{path}: no such model file")
    if path.is_dir():
        raise ModelFileError(f"{path}: is a directory, not a model file")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - garbage bytes make the unpickler fail in many ways
        raise ModelFileError(f"{path}: not a readable model file (corrupt or truncated?): {_load_error_text(exc)}") from None
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
