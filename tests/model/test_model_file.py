"""tinyclf.model.file: the model file round trip, identical bytes, plain meta, clear errors."""

from __future__ import annotations

import zipfile

import pytest
import torch
from torch import nn

from tinyclf.environment import environment_info
from tinyclf.model.architectures import ModelError, create_model
from tinyclf.model.file import MODEL_FILE_FORMAT, ModelFileError, load_model_file, save_model_file
from tinyclf.params import Params

torch.set_num_threads(1)


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


def test_an_image_given_as_the_model_says_what_it_is(tmp_path):
    """A user who swaps the arguments (`tinyclf predict photo.png models/model.pt`) is told the file is an image."""
    import cv2
    import numpy as np

    path = tmp_path / "photo.png"
    cv2.imwrite(str(path), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ModelFileError, match=r"not a torch.save file \(a PNG image\)") as info:
        load_model_file(path)
    _one_line_naming(info, path)
