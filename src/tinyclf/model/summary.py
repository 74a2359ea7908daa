"""What a model is made of, layer by layer: the torchinfo table of the report.

- `model_table(model, image_size)`: `torchinfo.summary` of one forward pass as plain types
  (JSON-ready), each layer named by its dotted module path; the figures are torchinfo's own, so
  the report reads like the reference result's torchinfo printout (for `tiny_resnet50` at 64 px:
  20,503,688 params, 1.10 G mult-adds, 0.05 / 54.99 / 82.01 / 137.05 MB).
- `format_model_table(table)`: that dict as markdown.

Only the summarize stage uses this module, so changing the table re-runs nothing but the report
(the parameter count that export and `tinyclf info` show is `tinyclf.model.parameters`).
"""

from __future__ import annotations

import torch
import torchinfo
from torch import nn

MB = 1e6  # torchinfo's megabyte


def _image_hw(image_size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(image_size, int):
        return image_size, image_size
    h, w = image_size
    return int(h), int(w)


def _device_and_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Where the model's weights live and their floating dtype (CPU float32 for a model without any)."""
    first = next(iter(model.parameters()), None)
    if first is None:
        first = next(iter(model.buffers()), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    return device, dtype


def model_table(model: nn.Module, image_size: int | tuple[int, int], in_chans: int = 3, batch_size: int = 1) -> dict:
    """`torchinfo.summary` of one `batch_size` x in_chans x H x W forward pass, as plain types.

    Returns `{"model": class name, "input_shape": [..], "layers": [{"name", "type", "depth",
    "output_shape", "params", "trainable_params", "mult_adds"}, ...], "total_params",
    "trainable_params", "non_trainable_params", "total_mult_adds", "input_size_mb",
    "forward_backward_pass_size_mb", "params_size_mb", "estimated_total_size_mb"}`.

    Layers are torchinfo's rows in call order: depth 0 is the model (named after its class), the
    others carry their dotted module path (`stage1.0.conv1`). A container's params and mult-adds
    are the totals of everything inside it; a module called a second time is listed again with
    params 0 (torchinfo's "(recursive)": counted once) and the mult-adds of that call.
    Totals and sizes are torchinfo's: forward/backward pass = twice the output bytes of each leaf
    layer with parameters (activation + gradient); MB = 10^6 bytes.

    The probe runs on the model's own device (a meta-device model needs no memory or arithmetic;
    torchinfo moves the model to `device`, so naming its own makes that a no-op), in eval mode
    without gradients (torchinfo restores the mode), so BatchNorm statistics are never touched.
    The input is a zero batch of the model's dtype rather than torchinfo's `input_size`, which
    would draw it with torch.rand from the caller's global RNG and always in float32.
    """
    device, dtype = _device_and_dtype(model)
    h, w = _image_hw(image_size)
    x = torch.zeros(batch_size, in_chans, h, w, device=device, dtype=dtype)
    stats = torchinfo.summary(model, input_data=x, device=device, mode="eval", verbose=0)

    names = {id(module): name for name, module in model.named_modules()}
    layers = []
    for info in stats.summary_list:
        name = names.get(id(info.module), info.var_name)
        # torchinfo's own `macs` of a container is not the sum of its layers; its children are
        # every row nested below it, so the sum over the leaves among them is the container's total.
        macs = info.macs if info.is_leaf_layer else sum(c.macs for c in info.children if c.is_leaf_layer)
        layers.append({
            "name": name or type(model).__name__,
            "type": info.class_name,
            "depth": info.depth,
            "output_shape": [int(s) for s in info.output_size] or None,
            "params": 0 if info.is_recursive else info.num_params,
            "trainable_params": 0 if info.is_recursive else info.trainable_params,
            "mult_adds": int(macs),
        })

    return {
        "model": type(model).__name__,
        "input_shape": list(x.shape),
        "layers": layers,
        "total_params": stats.total_params,
        "trainable_params": stats.trainable_params,
        "non_trainable_params": stats.total_params - stats.trainable_params,
        "total_mult_adds": stats.total_mult_adds,
        "input_size_mb": stats.total_input / MB,
        "forward_backward_pass_size_mb": stats.total_output_bytes / MB,
        "params_size_mb": stats.total_param_bytes / MB,
        "estimated_total_size_mb": (stats.total_input + stats.total_output_bytes + stats.total_param_bytes) / MB,
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
