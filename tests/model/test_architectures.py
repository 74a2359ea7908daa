"""tinyclf.model.architectures: the reference model's shape and parameter counts, timm passthrough, unknown names.

The table and mult-adds are in test_model_summary.py, the model file in test_model_file.py.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tinyclf.model.architectures import ModelError, create_model
from tinyclf.model.parameters import count_parameters

torch.set_num_threads(1)


def _meta_device_model(num_classes: int) -> nn.Module:
    # Shapes and counts need no memory or arithmetic: build on the meta device.
    with torch.device("meta"):
        return create_model("tiny_resnet50", num_classes)


def _n(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def reference_200():
    return _meta_device_model(200)


# ---------------------------------------------------------------- the reference model
def test_reference_parameter_count_at_200_classes(reference_200):
    assert count_parameters(reference_200) == 20_503_688
    assert count_parameters(reference_200, trainable_only=True) == 20_503_688


def test_reference_per_layer_counts(reference_200):
    m = reference_200
    assert _n(m.stem[0]) == 1_792  # 3x3 conv 3->64 with bias
    assert m.stem[0].bias is not None
    assert _n(m.stage1[0].shortcut) == 16_896  # 1x1 stride-2 conv 64->256 + BN
    assert _n(m.stage4[0].shortcut) == 2_101_248  # 1x1 stride-2 conv 1024->2048 + BN
    assert _n(m.head) == 409_800  # 1x1 conv 2048->200 with bias
    assert not any(isinstance(x, nn.MaxPool2d) for x in m.modules())


def test_reference_block_layout(reference_200):
    m = reference_200
    stages = [m.stage1, m.stage2, m.stage3, m.stage4]
    assert [len(s) for s in stages] == [3, 4, 6, 3]
    in_channels = 64
    for stage, out_channels in zip(stages, (256, 512, 1024, 2048)):
        first = stage[0]
        # First block: width = input channels / 4, stride 2 on the 3x3 conv, projection shortcut.
        assert (first.conv1.in_channels, first.conv1.out_channels, first.conv3.out_channels) == (
            in_channels, in_channels // 4, out_channels)
        assert first.conv2.stride == (2, 2) and first.conv1.stride == (1, 1)
        assert first.shortcut[0].stride == (2, 2) and first.shortcut[0].bias is None
        for block in list(stage)[1:]:
            assert block.conv1.out_channels == out_channels // 4
            assert isinstance(block.shortcut, nn.Identity)
        in_channels = out_channels


def test_ten_class_head_changes_only_the_head():
    m = _meta_device_model(10)
    assert _n(m.head) == 20_490
    assert count_parameters(m) == 20_503_688 - 409_800 + 20_490


@pytest.mark.parametrize("size, final", [(64, 4), (32, 2)])
def test_output_and_stage_shapes(size, final):
    torch.manual_seed(0)
    m = create_model("tiny_resnet50", 10)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        m.eval()
        features = m.forward_features(x)
        logits = m(x)
    assert features.shape == (2, 2048, final, final)
    assert logits.shape == (2, 10)
    assert torch.isfinite(logits).all()


def test_init_kaiming_and_zero_last_bn():
    torch.manual_seed(0)
    m = create_model("tiny_resnet50", 10)
    block = m.stage2[1]
    assert torch.all(block.bn3.weight == 0) and torch.all(block.bn1.weight == 1)
    assert torch.all(block.bn1.bias == 0)
    # fan_out Kaiming: std = sqrt(2 / (out_channels * k * k)) = sqrt(2 / (128 * 9)) for conv2
    assert abs(block.conv2.weight.std().item() - (2 / (128 * 9)) ** 0.5) < 0.002
    plain = create_model("tiny_resnet50", 10, zero_init_last=False)
    assert torch.all(plain.stage2[1].bn3.weight == 1)


def test_reference_learns_one_step_in_train_mode():
    # A residual branch with zero gamma still gets gradients (the trick must not freeze blocks).
    torch.manual_seed(0)
    m = create_model("tiny_resnet50", 10)
    loss = nn.functional.cross_entropy(m(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert m.stage3[2].bn3.weight.grad.abs().sum() > 0
    assert m.stem[0].weight.grad.abs().sum() > 0


def test_reference_drop_path_grows_with_depth_and_changes_no_weights():
    """train.drop_path on the reference model: timm's rule (0 for the first block, the full rate for the
    last), the same parameters, random in training and off in eval; the default model has none."""
    plain, dropped = create_model("tiny_resnet50", 200), create_model("tiny_resnet50", 200, drop_path_rate=0.15)
    assert not [m for m in plain.modules() if type(m).__name__ == "DropPath"]
    blocks = [b for stage in (dropped.stage1, dropped.stage2, dropped.stage3, dropped.stage4) for b in stage]
    assert blocks[0].drop_path is None and blocks[-1].drop_path.drop_prob == pytest.approx(0.15)
    assert blocks[8].drop_path.drop_prob == pytest.approx(0.15 * 8 / 15)
    assert count_parameters(dropped) == count_parameters(plain) == 20_503_688
    assert dropped.state_dict().keys() == plain.state_dict().keys()
    # Zero-initialised last BatchNorms make every branch 0 at the start, and dropping 0 changes nothing.
    dropped = create_model("tiny_resnet50", 200, drop_path_rate=0.15, zero_init_last=False)
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        dropped.train()
        assert not torch.equal(dropped(x), dropped(x))
        dropped.eval()
        assert torch.equal(dropped(x), dropped(x))


def test_drop_path_for_a_model_without_it_is_one_line():
    from support.helpers import shrunk_params

    from tinyclf.params import params_from_dict
    from tinyclf.train.recipe import TrainingError
    from tinyclf.train.setup import build_model

    train_params = params_from_dict(shrunk_params(train__model="vgg11", train__drop_path=0.1)).train
    with pytest.raises(TrainingError, match=r"^train.drop_path=0.1: vgg11 has no stochastic depth \(timm builds it "
                                            r"without a drop_path_rate\); set train.drop_path=0$"):
        build_model(train_params, 10)


# ---------------------------------------------------------------- timm and unknown names
def test_timm_passthrough_resnet18():
    m = create_model("resnet18", 10)
    assert m.__class__.__module__.startswith("timm.")
    assert m.get_classifier().out_features == 10
    with torch.no_grad():
        assert m.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_unknown_name_lists_close_matches():
    with pytest.raises(ModelError, match="tiny_resnet50") as info:
        create_model("tiny_resnet05", 10)
    assert "did you mean" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ModelError, match="resnet18"):
        create_model("resnet81", 10)


def test_bad_num_classes():
    with pytest.raises(ModelError, match="num_classes"):
        create_model("tiny_resnet50", 0)


def test_models_holds_only_the_architecture():
    # The train stage depends on model/architectures.py: the model file, the table and the environment live
    # elsewhere (no re-exports), so that editing them does not re-run a training.
    import tinyclf.model.architectures as models

    for moved in ("save_model_file", "load_model_file", "read_model_file", "ModelFileError", "count_parameters",
                  "model_table", "format_model_table", "environment_info"):
        assert not hasattr(models, moved), moved
