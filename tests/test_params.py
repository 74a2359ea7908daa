"""params.yaml is loaded into typed objects; bad values fail in one line naming the key."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from support.helpers import REPO, committed_text, real_params, write_params

from tinyclf.data.formats import registry
from tinyclf.params import ParamsError, load_params, params_from_dict


def test_committed_params_are_the_reference_setup():
    p = params_from_dict(yaml.safe_load(committed_text("params.yaml")))
    assert p.data.dataset == "tiny-imagenet"
    assert p.download.source == "official" and p.download.kind == "official"
    assert p.train.model == "tiny_resnet50"
    assert registry.prepared_image_size(p.data.dataset, p.data.image_size) == 64


def test_every_committed_key_has_a_comment():
    """Each key line in params.yaml is commented on the line itself or just above it."""
    lines = committed_text("params.yaml").splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped.endswith(":"):
            continue  # blank, comment, or a section header
        commented_above = i > 0 and lines[i - 1].strip().startswith("#")
        assert "#" in line or commented_above, f"params.yaml line {i + 1} has no comment: {line!r}"


def test_committed_checks_read_git_not_the_edited_working_copy(tmp_path):
    """A user who tries a change in params.yaml (as `dvc exp run -S` or an editor does) does not
    break the checks of the committed file: they read HEAD."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "params.yaml").write_text("train:\n  lr: 0.1  # committed\n")
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run(["git", "add", "params.yaml"], cwd=repo, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", "commit", "-qm", "p"], cwd=repo,
                   check=True)
    (repo / "params.yaml").write_text("train:\n  lr: 0.5\n")  # edited, uncommitted, no comment
    assert committed_text("params.yaml", repo) == "train:\n  lr: 0.1  # committed\n"


def _with(**dotted):
    tree = real_params()
    for key, value in dotted.items():
        *parents, leaf = key.split("__")
        node = tree
        for part in parents:
            node = node[part]
        node[leaf] = value
    return tree


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"train__learning_rate": 0.1}, "unknown key 'train.learning_rate' (did you mean 'train.lr'?)"),
        ({"data__dataset": "imagenet"}, "data.dataset must be one of tiny-imagenet, cifar10"),
        ({"train__epochs": "ten"}, "train.epochs must be an integer, got 'ten'"),
        ({"train__epochs": 0}, "train.epochs must be >= 1, got 0"),
        ({"train__ema": 1}, "train.ema must be true or false"),
        ({"train__lr": -0.1}, "train.lr must be > 0"),
        ({"download__md5": "abc"}, "download.md5 has an invalid value 'abc'"),
        ({"train__rrc_scale": [0.5]}, "train.rrc_scale must be a list of 2 numbers"),
        ({"train__precision": "bf61"}, "did you mean 'bf16'?"),
        ({"download__generated__num_clases": 3}, "did you mean 'download.generated.num_classes'?"),
    ],
)
def test_bad_values_name_the_key(overrides, fragment):
    with pytest.raises(ParamsError) as info:
        params_from_dict(_with(**overrides), where="params.yaml")
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message


def test_cross_field_cifar_generated_needs_ten_classes():
    tree = _with(data__dataset="cifar10", download__source="generated")
    tree["download"]["generated"]["num_classes"] = 4
    with pytest.raises(ParamsError, match="download.generated.num_classes must be 10"):
        params_from_dict(tree)


@pytest.mark.parametrize("overrides, fragment", [
    ({"data__dataset": "folder", "download__source": "/photos", "data__image_size": 64, "data__val_fraction": 0.5,
      "data__test_fraction": 0.5}, "data.val_fraction (0.5) + data.test_fraction (0.5) must stay below 1"),
    ({"data__test_fraction": 0.1}, "data.test_fraction is for your own images (data.dataset: folder); tiny-imagenet "
                                   "keeps its official val set as the test split with data.val_from_train > 0"),
    ({"data__dataset": "folder", "download__source": "/photos", "data__image_size": 64, "data__val_from_train": 0.1},
     "data.val_from_train is for the official datasets"),
    ({"train__select_metric": "val/f1"}, "train.select_metric must be one of val/top1, val/top5, val/loss"),
    ({"train__early_stopping_patience": 5}, "did you mean 'train.patience'?"),
])
def test_held_out_splits_and_selection_refuse_what_cannot_work(overrides, fragment):
    with pytest.raises(ParamsError) as info:
        params_from_dict(_with(**overrides), where="params.yaml")
    assert fragment in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("overrides, fragment", [
    ({"train__freeze": "backbone", "train__init": "w.pt"},
     "train.freeze=backbone needs train.freeze_epochs between 1 and train.epochs (150), got 0"),
    ({"train__freeze": "backbone", "train__freeze_epochs": 151, "train__init": "w.pt"},
     "train.freeze_epochs between 1 and train.epochs (150), got 151"),
    ({"train__freeze": "backbone", "train__freeze_epochs": 3},
     "train.freeze=backbone keeps the backbone as train.init loaded it, but train.init is none"),
    ({"train__freeze_epochs": 3}, "train.freeze_epochs=3 has no effect with train.freeze: none"),
    ({"train__freeze": "head"}, "train.freeze must be one of none, backbone"),
    ({"train__layer_decay": 1.5}, "train.layer_decay must be <= 1"),
    ({"train__drop_path": 1.0}, "train.drop_path must be < 1"),
    ({"train__head_lr_scale": 0}, "train.head_lr_scale must be > 0"),
    ({"train__drop_path_rate": 0.1}, "did you mean 'train.drop_path'?"),
    ({"train__lr_layer_decay": 0.7}, "did you mean 'train.layer_decay'?"),
    ({"train__freeze_backbone": True}, "did you mean 'train.freeze'?"),
    ({"train__head_lr": 10}, "did you mean 'train.head_lr_scale'?"),
])
def test_fine_tuning_settings_that_cannot_work_fail_in_one_line(overrides, fragment):
    with pytest.raises(ParamsError) as info:
        params_from_dict(_with(**overrides), where="params.yaml")
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_device_augmentation_refuses_per_image_policies_before_work():
    with pytest.raises(ParamsError, match="train.policy=randaugment is albumentations, per image: it needs "
                                          "train.aug_backend workers"):
        params_from_dict(_with(train__aug_backend="device", train__policy="randaugment"))
    assert params_from_dict(_with(train__aug_backend="device", train__color_jitter=0.4)).train.aug_backend == "device"
    # auto picks workers for a policy, so the pair is fine.
    assert params_from_dict(_with(train__aug_backend="auto", train__policy="randaugment")).train.policy == "randaugment"
    with pytest.raises(ParamsError, match="got 'batched' \\(did you mean 'device'\\?\\)"):
        params_from_dict(_with(train__aug_backend="batched"))


def test_compile_is_true_false_or_auto():
    assert params_from_dict(_with(train__compile=True)).train.compile is True
    assert params_from_dict(_with(train__compile="auto")).train.compile == "auto"
    with pytest.raises(ParamsError, match="train.compile must be true, false or auto, got 'yes'"):
        params_from_dict(_with(train__compile="yes"))


def test_yaml_scientific_notation_without_dot_is_a_number(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text((REPO / "params.yaml").read_text().replace("weight_decay: 5.0e-4", "weight_decay: 5e-4"))
    assert load_params(path).train.weight_decay == pytest.approx(5e-4)


def test_source_kinds():
    for source, kind in [("official", "official"), ("generated", "generated"),
                         ("https://mirror.example/tiny-imagenet-200.zip", "url"), ("/data/t.zip", "path")]:
        assert params_from_dict(_with(download__source=source)).download.kind == kind


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ParamsError, match="no such parameter file"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML at line"):
        load_params(bad)


@pytest.mark.parametrize("stage", ["download", "preprocess", "train", "evaluate", "audit", "summarize"])
def test_stage_rejects_bad_params_before_work(tmp_path, stage):
    """Every stage script fails in one line, exit 1, no traceback, nothing written."""
    params = write_params(tmp_path / "params.yaml", _with(train__epochs=-3, download__source="generated"))
    out = tmp_path / "out"
    args = {
        "download": ["--out", str(out)],
        "preprocess": ["--raw", str(tmp_path / "raw"), "--out", str(out)],
        "train": ["--data", str(tmp_path / "prepared"), "--model-out", str(out / "model.pt"),
                  "--live", str(out / "live"), "--checkpoints", str(out / "ckpt")],
        "evaluate": ["--data", str(tmp_path / "prepared"), "--model", str(tmp_path / "model.pt"), "--out", str(out)],
        "audit": ["--data", str(tmp_path / "prepared"), "--model", str(tmp_path / "model.pt"), "--out", str(out)],
        "summarize": ["--data", str(tmp_path / "prepared"), "--model", str(tmp_path / "model.pt"),
                      "--train", str(tmp_path / "t"), "--evaluate", str(tmp_path / "e"), "--out", str(out)],
    }[stage]
    proc = subprocess.run([sys.executable, str(REPO / "stages" / f"{stage}.py"), "--params", str(params), *args],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "train.epochs must be >= 1, got -3" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()
