"""The optimizer's parameter groups: weight decay as timm sets it, and for fine-tuning, layer-wise
learning-rate decay (`train.layer_decay`) and the classifier's own rate (`train.head_lr_scale`).

Without either, the optimizer is built as timm's `create_optimizer_v2(model)` builds it (two groups:
with and without weight decay), and no group carries an `lr_scale`. With layer decay, timm's own
`param_groups_layer_decay` groups the parameters by depth (the model's `group_matcher`: timm's models
have one, and so has tiny_resnet50: the stem, then one group per block, the classifier last) and
gives layer i of n the scale decay^(n-1-i). `head_lr_scale` then multiplies the classifier's scale
(its parameters move to groups of their own). timm's schedulers set every group's rate to the
schedule's value times its `lr_scale`, so the schedule stays one function of the step count, and a
resumed run gets the same rates.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn

from tinyclf.train.recipe import TrainingError


@dataclass(frozen=True)
class LayerScale:
    """One depth of the layer-decay schedule: its first and last parameter names and its lr scale."""

    layer: int
    first: str
    last: str
    lr_scale: float
    tensors: int

    def record(self) -> dict:
        return asdict(self)


def layer_decay_active(train_params) -> bool:
    return 0 < train_params.layer_decay < 1


def needs_param_groups(train_params) -> bool:
    """Whether the optimizer needs groups of its own (otherwise timm's default two)."""
    return layer_decay_active(train_params) or train_params.head_lr_scale != 1


def build_param_groups(model: nn.Module, train_params, classifier: set[str]) -> list[dict]:
    """The groups for `create_optimizer_v2`: timm's weight-decay split, by depth when layer decay is on,
    with the classifier's parameters in groups of their own at `head_lr_scale` times their scale."""
    from timm.optim._param_groups import param_groups_layer_decay, param_groups_weight_decay

    no_decay = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    if layer_decay_active(train_params):
        groups = param_groups_layer_decay(model, weight_decay=train_params.weight_decay,
                                          no_weight_decay_list=no_decay, layer_decay=train_params.layer_decay)
    else:
        groups = param_groups_weight_decay(model, weight_decay=train_params.weight_decay,
                                           no_weight_decay_list=no_decay)
    if train_params.head_lr_scale == 1:
        return groups
    if not classifier:
        raise TrainingError(f"train.head_lr_scale={train_params.head_lr_scale}: {train_params.model} has no "
                            "classifier layer to give its own rate (set train.head_lr_scale=1)")
    return _classifier_apart(model, groups, classifier, train_params.head_lr_scale)


def _classifier_apart(model: nn.Module, groups: list[dict], classifier: set[str], head_scale: float) -> list[dict]:
    names = {id(param): name for name, param in model.named_parameters()}
    out = []
    for group in groups:
        rest = [p for p in group["params"] if names[id(p)] not in classifier]
        head = [p for p in group["params"] if names[id(p)] in classifier]
        scale = group.get("lr_scale", 1.0)
        if rest:
            out.append({**group, "params": rest, "lr_scale": scale})
        if head:
            out.append({**group, "params": head, "lr_scale": scale * head_scale})
    return out


def layer_scales(model: nn.Module, train_params) -> list[LayerScale]:
    """The layer-decay schedule as timm groups this model (what the report shows); [] when off."""
    if not layer_decay_active(train_params):
        return []
    from timm.optim._param_groups import auto_group_layers, group_parameters

    if hasattr(model, "group_matcher"):
        layer_map = group_parameters(model, model.group_matcher(coarse=False), reverse=True)
    else:
        layer_map = auto_group_layers(model)
    top = max(layer_map.values())
    names: dict[int, list[str]] = {}
    for name, _ in model.named_parameters():
        names.setdefault(layer_map.get(name, top), []).append(name)
    return [LayerScale(layer, found[0], found[-1], train_params.layer_decay ** (top - layer), len(found))
            for layer, found in sorted(names.items())]


def schedule_lr(optimizer) -> float:
    """The schedule's current rate (what `lr` logs): a group's rate divided by its scale, so it is the
    same number with or without layer decay."""
    group = optimizer.param_groups[0]
    return group["lr"] / group.get("lr_scale", 1.0)
