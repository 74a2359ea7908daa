"""train.init: starting weights from a tinyclf model file, a timm/torchvision state dict (.pth,
.safetensors) or timm's pretrained weights; matched by name and shape, the classifier re-initialised
when the class count differs; one-line errors before any training; never re-applied on resume.

Real components: models trained by `run_training` on a synthetic prepared dataset, files written
by torch and safetensors, the resume checkpoint; no mocks (timm's download is made to fail fast by
switching the Hugging Face Hub client to offline mode, as HF_HUB_OFFLINE=1 does).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from support.helpers import shrunk_params
from support.synthetic_prepared import write_prepared

from tinyclf.model.architectures import create_model
from tinyclf.model.file import read_model_file
from tinyclf.model.init_weights import InitWeightsError, apply_init, classifier_names
from tinyclf.params import params_from_dict
from tinyclf.report.facts import init_text
from tinyclf.train import checkpoint
from tinyclf.train.run import run_training

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MODEL = "test_resnet"  # timm's smallest ResNet: a real timm architecture that trains in seconds


def train(out, prepared, **overrides) -> dict:
    """One quick CPU run of `run_training`; returns the model file's meta."""
    tree = shrunk_params(train__model=MODEL, train__epochs=1, train__crop="pad_crop", **overrides)
    run_training(params_from_dict(tree), prepared, out / "model.pt", out / "live", out / "ck", progress_bar=False)
    return read_model_file(out / "model.pt")["meta"]


def seeded_model(num_classes: int, seed: int = 0, name: str = MODEL) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model(name, num_classes)


@pytest.fixture(scope="module")
def four_class_model(tmp_path_factory):
    """A model file trained on 4 classes, and a 3-class prepared dataset to start another run on."""
    root = tmp_path_factory.mktemp("init")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        train(root / "first", write_prepared(root / "p4", num_classes=4, train_per_class=16, val_per_class=2))
    return root / "first" / "model.pt", write_prepared(root / "p3", num_classes=3, train_per_class=16,
                                                       val_per_class=2)


def test_a_model_file_of_other_classes_loads_all_but_the_classifier(four_class_model):
    model_file, _ = four_class_model
    source = read_model_file(model_file)["state_dict"]
    fresh, model = seeded_model(3), seeded_model(3)
    record = apply_init(model, str(model_file), model_name=MODEL)
    for name, tensor in model.state_dict().items():
        expected = fresh.state_dict()[name] if name.startswith("fc.") else source[name]
        assert torch.equal(tensor, expected), name
    assert record["loaded"] == record["total"] - 2 == len(source) - 2 and record["unused"] == 2
    assert record["classifier_reinitialised"]
    assert record["not_loaded"] == [{"module": "fc", "tensors": ["weight", "bias"],
                                     "reason": "classifier: re-initialised for 3 classes (4 in the source)"}]
    assert record["description"] == f"a tinyclf model file ({MODEL}, 4 classes)"
    assert record["md5"] == hashlib.md5(model_file.read_bytes()).hexdigest()


def test_a_run_from_a_model_file_records_it_and_a_resume_does_not_reload_it(four_class_model, tmp_path, capfd):
    model_file, prepared = four_class_model
    init_file = shutil.copy(model_file, tmp_path / "start.pt")
    out = tmp_path / "run"
    meta = train(out, prepared, train__init=str(init_file))
    record = meta["init"]
    assert record["source"] == str(init_file) and record["loaded"] == record["total"] - 2
    assert record["not_loaded"][0]["module"] == "fc" and record["classifier_reinitialised"]
    text = init_text(meta)  # what the report and the model card say
    assert text.startswith("`start.pt` (a tinyclf model file") and f"{record['loaded']:,} of" in text
    assert str(tmp_path) not in text
    assert "starting weights start.pt" in capfd.readouterr().err

    # Make the finished run's checkpoint an unfinished one at the start of its epoch, and remove the
    # init file: a resume must take the weights (and the record) from the checkpoint, not train.init.
    ck = out / "ck" / "last.pt"
    state = checkpoint.load(ck)
    state.update(complete=False, epoch=0, update=0, micro_in_epoch=0)
    checkpoint.save(ck, {k: v for k, v in state.items() if k != "format"})
    init_file.unlink()
    resumed = train(out, prepared, train__init=str(init_file))
    assert "resuming from" in capfd.readouterr().err
    assert resumed["init"] == record


def test_a_timm_state_dict_loads_fully_from_pth_and_safetensors(tmp_path):
    from safetensors.torch import save_file

    state = seeded_model(5, seed=1).state_dict()
    # A training checkpoint's layout: DDP's prefix inside {"state_dict": …} beside other entries.
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "w.pth")
    # Lightning's layout: every name under "model.".
    save_file({f"model.{k}": v.contiguous() for k, v in state.items()}, str(tmp_path / "w.safetensors"))
    for name in ("w.pth", "w.safetensors"):
        model = seeded_model(5, seed=2)
        record = apply_init(model, str(tmp_path / name), model_name=MODEL)
        assert record["loaded"] == record["total"] == len(state) and record["not_loaded"] == []
        assert not record["classifier_reinitialised"] and record["unused"] == 0
        assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_the_reference_models_classifier_is_its_last_conv():
    assert classifier_names(create_model("tiny_resnet50", 7)) == {"head.1.weight", "head.1.bias"}
    assert classifier_names(seeded_model(3)) == {"fc.weight", "fc.bias"}


def _garbage(path):
    path.write_bytes(b"\x00not a torch file" * 10)


def _not_a_state_dict(path):
    torch.save({"epoch": 3, "args": [1, 2]}, path)


def _other_architecture(path):
    torch.save(create_model("tiny_resnet50", 3).state_dict(), path)


@pytest.mark.parametrize("name, write, says", [
    ("missing.pt", None, "no such file"),
    ("garbage.pth", _garbage, "not readable by torch.load(weights_only=True)"),
    ("garbage.safetensors", _garbage, "not a readable safetensors file"),
    ("meta.pt", _not_a_state_dict, "not a state dict"),
    ("other.pt", _other_architecture, f"matches {MODEL} by name and shape"),
])
def test_an_unusable_file_is_a_one_line_error_naming_it(tmp_path, name, write, says):
    path = tmp_path / name
    if write is not None:
        write(path)
    with pytest.raises(InitWeightsError) as caught:
        apply_init(seeded_model(3), str(path), model_name=MODEL)
    message = str(caught.value)
    assert len(message.splitlines()) == 1 and message.startswith(f"train.init={str(path)!r}: ") and says in message


def test_a_bad_init_stops_the_run_before_any_training(tmp_path):
    prepared = write_prepared(tmp_path / "p", num_classes=3, train_per_class=8, val_per_class=2)
    out = tmp_path / "run"
    with pytest.raises(InitWeightsError, match="no such file"):
        train(out, prepared, train__init=str(tmp_path / "missing.pt"))
    assert not (out / "model.pt").exists() and not (out / "ck" / "last.pt").exists() and not (out / "live").exists()


def _offline_with_cache(monkeypatch, cache):
    """What HF_HUB_OFFLINE=1 and HF_HUB_CACHE=`cache` set (read by huggingface_hub when it imports,
    so patched where it keeps them): no network attempt, this cache only. A machine without internet
    gets the same error after the hub client's retries."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))


def write_hub_cache(cache, repo_id: str, state: dict) -> Path:
    """`repo_id`'s model.safetensors and config.json in the Hugging Face cache layout, as `hf download`
    leaves them (refs/main naming the snapshot); returns the snapshot folder."""
    from safetensors.torch import save_file

    revision = hashlib.sha1(repo_id.encode()).hexdigest()
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(snapshot / "model.safetensors"))
    (snapshot / "config.json").write_text(json.dumps({"architecture": MODEL, "num_classes": 1000,
                                                      "pretrained_cfg": {"tag": "r160_in1k"}}))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    return snapshot


def test_timm_pretrained_weights_come_from_the_hugging_face_cache_offline(monkeypatch, tmp_path):
    source = seeded_model(1000, seed=4)
    snapshot = write_hub_cache(tmp_path / "hub", "timm/test_resnet.r160_in1k", source.state_dict())
    _offline_with_cache(monkeypatch, tmp_path / "hub")
    model = seeded_model(3)
    record = apply_init(model, "timm:test_resnet.r160_in1k", model_name=MODEL)
    assert record["kind"] == "timm" and record["classifier_reinitialised"] and record["loaded"] == record["total"] - 2
    assert record["description"] == "timm's pretrained test_resnet.r160_in1k, from the Hugging Face cache"
    assert record["md5"] == hashlib.md5((snapshot / "model.safetensors").read_bytes()).hexdigest()
    assert torch.equal(model.state_dict()["conv1.0.weight"], source.state_dict()["conv1.0.weight"])


def test_a_hugging_face_folder_loads_and_is_named_by_its_config(tmp_path):
    source = seeded_model(1000, seed=4)
    snapshot = write_hub_cache(tmp_path / "hub", "timm/test_resnet.r160_in1k", source.state_dict())
    folder = tmp_path / "test_resnet"
    shutil.copytree(snapshot, folder)  # what `hf download timm/test_resnet.r160_in1k --local-dir DIR` leaves
    record = apply_init(seeded_model(3), str(folder), model_name=MODEL)
    assert record["kind"] == "folder" and record["loaded"] == record["total"] - 2
    assert record["description"] == "timm's test_resnet.r160_in1k, 1000 classes in model.safetensors"
    assert init_text({"init": record}).startswith("`test_resnet` (timm's test_resnet.r160_in1k, 1000 classes in "
                                                  "model.safetensors, md5 `")
    (folder / "model.safetensors").unlink()
    with pytest.raises(InitWeightsError, match=r"a folder without model.safetensors or pytorch_model.bin \(as "
                                               r"`hf download timm/<name> --local-dir DIR` leaves it\)$"):
        apply_init(seeded_model(3), str(folder), model_name=MODEL)


def test_timm_pretrained_weights_neither_cached_nor_reachable_fail_in_one_line(monkeypatch, tmp_path):
    _offline_with_cache(monkeypatch, tmp_path / "empty")
    with pytest.raises(InitWeightsError) as caught:
        apply_init(seeded_model(3), "timm:test_resnet.r160_in1k", model_name=MODEL)
    message = str(caught.value)
    assert len(message.splitlines()) == 1
    assert message == (f"train.init='timm:test_resnet.r160_in1k': timm's weights for 'test_resnet.r160_in1k' are "
                       f"not in the Hugging Face cache ({tmp_path / 'empty'}) and HF_HUB_OFFLINE=1 is set "
                       "(LocalEntryNotFoundError); where there is internet, run `hf download "
                       "timm/test_resnet.r160_in1k --local-dir DIR` and set train.init to DIR")
    with pytest.raises(InitWeightsError, match="'no_such_net' is not a timm model"):
        apply_init(seeded_model(3), "timm:no_such_net", model_name=MODEL)
    with pytest.raises(InitWeightsError, match="timm has no pretrained weights for 'resnet18.no_such_tag'"):
        apply_init(seeded_model(3), "timm:resnet18.no_such_tag", model_name=MODEL)


def test_a_resume_with_another_init_is_refused():
    old = checkpoint.fingerprint(params_from_dict(shrunk_params()), {}, 4)
    new = checkpoint.fingerprint(params_from_dict(shrunk_params(train__init="models/other.pt")), {}, 4)
    assert checkpoint.fingerprint_diff(old, new) == ["train.init: 'none' -> 'models/other.pt'"]


def test_scratch_loads_nothing():
    model, fresh = seeded_model(3), seeded_model(3)
    assert apply_init(model, "none", model_name=MODEL) == {"source": "none"}
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in model.state_dict().items())
    assert init_text({"init": {"source": "none"}}) == "from scratch (`train.init: none`)"
