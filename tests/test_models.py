"""tinyclf.models: the reference model's shape and counts, timm passthrough, the table, the model file."""

from __future__ import annotations

import zipfile

import pytest
import torch
from torch import nn

from tinyclf.models import (
    MODEL_FILE_FORMAT,
    ModelError,
    ModelFileError,
    count_mult_adds,
    count_parameters,
    create_model,
    environment_info,
    format_model_table,
    load_model_file,
    model_table,
    save_model_file,
)
from tinyclf.params import Params

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


def test_reference_mult_adds_at_64(reference_200):
    conv_linear = count_mult_adds(reference_200, 64)
    assert round(conv_linear / 1e6) == 1_095  # conv layers alone (the head is a conv too)
    assert f"{conv_linear / 1e9:.2f}" == "1.10"


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


# ---------------------------------------------------------------- the table
def test_table_matches_the_reference_report(reference_200):
    table = model_table(reference_200, 64)
    assert f"{table['input_size_mb']:.2f}" == "0.05"
    assert f"{table['forward_backward_pass_size_mb']:.2f}" == "54.99"
    assert f"{table['params_size_mb']:.2f}" == "82.01"
    assert table["total_params"] == table["trainable_params"] == 20_503_688
    assert f"{table['total_mult_adds'] / 1e9:.2f}" == "1.10"
    rows = {row["name"]: row for row in table["layers"]}
    assert rows["stage4"]["output_shape"] == [1, 2048, 4, 4]
    assert rows["stage1.0.shortcut"]["params"] == 16_896
    assert rows["head"]["params"] == 409_800
    text = format_model_table(table, max_depth=2)
    assert "| Forward/backward pass size (MB) | 54.99 |" in text
    assert "stage3.5" in text and "stage3.5.conv1" not in text and "BatchNorm2d" in text  # stem BN at depth 2
    assert "stage3.5.conv1" in format_model_table(table, max_depth=3)


def test_table_agrees_with_torchinfo():
    torchinfo = pytest.importorskip("torchinfo")
    torch.manual_seed(0)
    m = create_model("tiny_resnet50", 10)
    ours = model_table(m, 32)
    theirs = torchinfo.summary(m, input_size=(1, 3, 32, 32), device="cpu", verbose=0)
    assert ours["total_mult_adds"] == theirs.total_mult_adds
    assert ours["total_params"] == theirs.total_params
    assert round(ours["forward_backward_pass_size_mb"] * 1e6) == theirs.total_output_bytes
    assert round(ours["params_size_mb"] * 1e6) == theirs.total_param_bytes


def test_counting_leaves_batchnorm_statistics_and_mode_alone():
    m = create_model("resnet18", 10)
    m.train()
    before = m.bn1.running_mean.clone()
    count_mult_adds(m, 32)
    model_table(m, 32)
    assert m.training
    assert torch.equal(m.bn1.running_mean, before)


# ---------------------------------------------------------------- the model file
def _meta(num_classes: int = 10) -> dict:
    return {
        "model": "tiny_resnet50",
        "num_classes": num_classes,
        "classes": [{"id": f"g{i:07d}", "name": f"class {i}"} for i in range(num_classes)],
        "image_size": [32, 32],
        "mean": [0.49, 0.48, 0.45],
        "std": [0.25, 0.24, 0.26],
        "dataset": "cifar10",
        "generated": True,
        "weights": "ema",
        "params": Params().to_dict(),
        "environment": environment_info(),
        "epochs_trained": 3,
    }


@pytest.fixture(scope="module")
def trained_like():
    torch.manual_seed(1)
    m = create_model("tiny_resnet50", 10)
    # Non-default BN statistics and gammas so a round trip that dropped buffers would show.
    m.train()
    with torch.no_grad():
        m(torch.randn(4, 3, 32, 32))
        for block in m.modules():
            if isinstance(block, nn.BatchNorm2d):
                block.weight.uniform_(0.5, 1.5)
    return m.eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory, trained_like):
    """One saved model file shared by the tests that only read it (a save costs ~0.5 s)."""
    path = tmp_path_factory.mktemp("saved") / "models" / "model.pt"
    save_model_file(path, trained_like, _meta())
    return path


def test_round_trip_gives_identical_outputs(saved, trained_like):
    # weights_only=True works on the raw file: only tensors and plain types inside.
    raw = torch.load(saved, weights_only=True)
    assert raw["format"] == MODEL_FILE_FORMAT
    assert all(t.device.type == "cpu" for t in raw["state_dict"].values())
    model, meta = load_model_file(saved)
    assert meta == _meta()
    assert not model.training
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), trained_like(x))
    assert [p.name for p in saved.parent.iterdir()] == ["model.pt"]  # no temp files left


def test_saves_are_byte_identical(tmp_path, saved, trained_like):
    expected = saved.read_bytes()
    # Another file name (torch.save would name the zip's folder after it), the same meta with its
    # keys in another order, and key prefixes from torch.compile and DDP wrappers.
    save_model_file(tmp_path / "other-name.pt", trained_like, dict(reversed(list(_meta().items()))))
    wrapped = {f"module._orig_mod.{k}": v for k, v in trained_like.state_dict().items()}
    save_model_file(tmp_path / "wrapped.pt", wrapped, _meta())
    # A channels_last copy: 1x1 kernels count as contiguous there but carry other strides.
    cl = create_model("tiny_resnet50", 10)
    cl.load_state_dict(trained_like.state_dict())
    save_model_file(tmp_path / "channels-last.pt", cl.to(memory_format=torch.channels_last), _meta())
    # A loaded model saved again (its meta strings are fresh objects, not shared literals).
    model, meta = load_model_file(saved)
    save_model_file(tmp_path / "again.pt", model, meta)
    for name in ("other-name.pt", "wrapped.pt", "channels-last.pt", "again.pt"):
        assert (tmp_path / name).read_bytes() == expected, name


def test_meta_is_plain_types(tmp_path, trained_like):
    import numpy as np

    meta = _meta()
    meta["mean"] = tuple(np.array([0.5, 0.5, 0.5]))  # numpy scalars in a tuple become floats in a list
    save_model_file(tmp_path / "m.pt", trained_like, meta)
    stored = torch.load(tmp_path / "m.pt", weights_only=True)["meta"]
    assert stored["mean"] == [0.5, 0.5, 0.5] and type(stored["mean"][0]) is float
    meta["generated"] = tmp_path  # a Path is not a plain type
    with pytest.raises(ModelError, match="generated"):
        save_model_file(tmp_path / "n.pt", trained_like, meta)
    bad = _meta()
    del bad["classes"]
    with pytest.raises(ModelError, match="classes"):
        save_model_file(tmp_path / "n.pt", trained_like, bad)
    assert not (tmp_path / "n.pt").exists()


def _one_line_naming(exc: pytest.ExceptionInfo, path) -> None:
    message = str(exc.value)
    assert str(path) in message and "\n" not in message


def test_missing_file(tmp_path):
    path = tmp_path / "nope.pt"
    with pytest.raises(ModelFileError, match="no such model file") as info:
        load_model_file(path)
    _one_line_naming(info, path)


def test_truncated_file(tmp_path, saved):
    path = tmp_path / "model.pt"
    data = saved.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="corrupt or truncated") as info:
        load_model_file(path)
    _one_line_naming(info, path)


@pytest.mark.parametrize("kind", ["text", "foreign_torch", "pickle_with_code", "empty"])
def test_foreign_files(tmp_path, kind):
    path = tmp_path / "model.pt"
    if kind == "text":
        path.write_text("this is not a model\n")
    elif kind == "foreign_torch":
        torch.save({"weights": torch.zeros(3)}, path)
    elif kind == "pickle_with_code":
        torch.save({"format": MODEL_FILE_FORMAT, "meta": zipfile.ZipInfo("x")}, path)  # not weights_only-safe
    else:
        path.write_bytes(b"")
    with pytest.raises(ModelFileError) as info:
        load_model_file(path)
    _one_line_naming(info, path)
    if kind == "foreign_torch":
        assert "not a tinyclf model file" in str(info.value)


def test_state_dict_mismatch(tmp_path, trained_like):
    path = tmp_path / "model.pt"
    meta = _meta(num_classes=200)  # says 200 classes, weights have a 10-class head
    state = trained_like.state_dict()
    payload = {"format": MODEL_FILE_FORMAT, "state_dict": state, "meta": meta}
    torch.save(payload, path)
    with pytest.raises(ModelFileError, match=r"head\.1\.weight \[10, 2048, 1, 1\] vs \[200, 2048, 1, 1\]") as info:
        load_model_file(path)
    _one_line_naming(info, path)
    payload["meta"] = _meta()
    payload["state_dict"] = {k: v for k, v in state.items() if not k.startswith("stage4")}
    torch.save(payload, path)
    with pytest.raises(ModelFileError, match="missing: stage4") as info:
        load_model_file(path)
    payload["meta"]["model"] = "no_such_net"
    torch.save(payload, path)
    with pytest.raises(ModelFileError, match="unknown model 'no_such_net'"):
        load_model_file(path)


def test_timm_model_round_trip(tmp_path):
    torch.manual_seed(0)
    model = create_model("resnet18", 10).eval()
    meta = dict(_meta(), model="resnet18")
    save_model_file(tmp_path / "r18.pt", model, meta)
    loaded, _ = load_model_file(tmp_path / "r18.pt")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_environment_info_plain():
    env = environment_info()
    for key in ("torch", "torchvision", "timm", "albumentations", "numpy", "python", "cuda", "cudnn", "device"):
        assert key in env
    assert env["torch"] == torch.__version__
    assert all(v is None or isinstance(v, (str, int)) for v in env.values())
    if not torch.cuda.is_available():
        assert env["device"] == "cpu" and env["cuda"] is None
