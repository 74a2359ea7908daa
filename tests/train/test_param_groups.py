"""The optimizer's groups: layer-wise lr decay as timm groups a model (for timm's models and the
reference tiny_resnet50), the classifier's own rate, and the default two groups unchanged."""

from __future__ import annotations

import pytest
from support.helpers import shrunk_params

from tinyclf.model.architectures import create_model
from tinyclf.model.init_weights import classifier_names
from tinyclf.params import params_from_dict
from tinyclf.train.param_groups import build_param_groups, layer_scales, needs_param_groups, schedule_lr
from tinyclf.train.recipe import build_optimizer, build_scheduler, scaled_lr


def _optimizer(model, **overrides):
    train_params = params_from_dict(shrunk_params(**overrides)).train
    groups = build_param_groups(model, train_params, classifier_names(model)) if needs_param_groups(train_params) \
        else None
    optimizer = build_optimizer(model, train_params, groups)
    scheduler, _ = build_scheduler(optimizer, train_params, updates_per_epoch=10)
    return train_params, optimizer, scheduler


@pytest.mark.parametrize("name, layers, first, head", [
    ("tiny_resnet50", 18, "stem.0.weight", "head.1.weight"),  # stem, 16 blocks, classifier
    ("resnet18", 10, "conv1.weight", "fc.weight"),  # timm: stem, 8 blocks, classifier
])
def test_each_group_learns_at_lr_times_decay_to_the_power_of_its_distance_from_the_top(name, layers, first, head):
    model = create_model(name, 200)
    train_params, optimizer, scheduler = _optimizer(model, train__model=name, train__layer_decay=0.7,
                                                    train__head_lr_scale=10.0, train__epochs=5)
    scales = layer_scales(model, train_params)
    assert len(scales) == layers and scales[0].first == first and scales[-1].first == head
    layer_of = {}
    for scale in scales:
        names = [n for n, _ in model.named_parameters()]
        for n in names[names.index(scale.first):names.index(scale.last) + 1]:
            layer_of[n] = scale.layer
        assert scale.lr_scale == pytest.approx(0.7 ** (layers - 1 - scale.layer))
    name_of = {id(p): n for n, p in model.named_parameters()}
    classifier = classifier_names(model)
    for update in (0, 7, 31):  # warmup, then the cosine decay
        scheduler.step_update(num_updates=update)
        base = schedule_lr(optimizer)
        for group in optimizer.param_groups:
            for param in group["params"]:
                n = name_of[id(param)]
                expected = base * 0.7 ** (layers - 1 - layer_of[n]) * (10.0 if n in classifier else 1.0)
                assert group["lr"] == pytest.approx(expected, rel=1e-12), (n, update)
    assert {name_of[id(p)] for g in optimizer.param_groups for p in g["params"]} == set(layer_of)


def test_without_layer_decay_or_head_scale_the_optimizer_is_timms_default():
    model = create_model("test_resnet", 4)
    _, optimizer, _ = _optimizer(model, train__model="test_resnet")
    assert len(optimizer.param_groups) == 2 and all("lr_scale" not in g for g in optimizer.param_groups)
    assert sorted(g["weight_decay"] for g in optimizer.param_groups) == [0.0, 5e-4]
    assert schedule_lr(optimizer) == optimizer.param_groups[0]["lr"]


def test_head_scale_alone_multiplies_only_the_classifier():
    model = create_model("test_resnet", 4)
    train_params, optimizer, scheduler = _optimizer(model, train__model="test_resnet", train__head_lr_scale=5.0,
                                                    train__warmup_epochs=0)
    scheduler.step_update(num_updates=0)
    name_of = {id(p): n for n, p in model.named_parameters()}
    for group in optimizer.param_groups:
        in_head = {name_of[id(p)] in {"fc.weight", "fc.bias"} for p in group["params"]}
        assert len(in_head) == 1
        assert group["lr"] == pytest.approx(scaled_lr(train_params) * (5.0 if in_head.pop() else 1.0))
    assert layer_scales(model, train_params) == []
