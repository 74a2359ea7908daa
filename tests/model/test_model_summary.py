"""tinyclf.model.summary: parameter counts and the torchinfo table, pinned to the reference figures."""

from __future__ import annotations

import re

import pytest
import torch
import torchinfo
from torch import nn

from tinyclf.model.architectures import create_model
from tinyclf.model.parameters import count_parameters
from tinyclf.model.summary import format_model_table, model_table

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def reference_200() -> nn.Module:
    # Shapes and counts need no memory or arithmetic: build on the meta device.
    with torch.device("meta"):
        return create_model("tiny_resnet50", 200)


@pytest.fixture(scope="module")
def table_200(reference_200) -> dict:
    return model_table(reference_200, 64)


def test_reference_mult_adds_at_64(table_200):
    # Conv layers alone (the head is a conv too); the total adds torchinfo's BatchNorm terms.
    conv = sum(row["mult_adds"] for row in table_200["layers"] if row["type"] == "Conv2d")
    assert round(conv / 1e6) == 1_095
    assert f"{conv / 1e9:.2f}" == "1.10"
    assert conv < table_200["total_mult_adds"]


def test_table_matches_the_reference_report(reference_200, table_200):
    table = table_200
    assert table["model"] == "TinyResNet50" and table["input_shape"] == [1, 3, 64, 64]
    assert f"{table['input_size_mb']:.2f}" == "0.05"
    assert f"{table['forward_backward_pass_size_mb']:.2f}" == "54.99"
    assert f"{table['params_size_mb']:.2f}" == "82.01"
    assert f"{table['estimated_total_size_mb']:.2f}" == "137.05"
    assert table["total_params"] == table["trainable_params"] == 20_503_688
    assert table["non_trainable_params"] == 0
    assert f"{table['total_mult_adds'] / 1e9:.2f}" == "1.10"
    rows = {row["name"]: row for row in table["layers"]}
    assert rows["stage4"]["output_shape"] == [1, 2048, 4, 4]
    assert rows["stem.0"]["params"] == 1_792
    assert rows["stage1.0.shortcut"]["params"] == 16_896
    assert rows["stage4.0.shortcut"]["params"] == 2_101_248
    assert rows["head"]["params"] == 409_800
    text = format_model_table(table, max_depth=2)
    assert "| Forward/backward pass size (MB) | 54.99 |" in text
    assert "| Estimated total size (MB) | 137.05 |" in text
    assert "stage3.5" in text and "stage3.5.conv1" not in text and "BatchNorm2d" in text  # stem BN at depth 2
    assert "stage3.5.conv1" in format_model_table(table, max_depth=3)


def test_rows_are_the_modules_by_dotted_name(reference_200, table_200):
    # Every module of the reference model runs once, in definition order: one row each, the root
    # named after its class, containers carrying the totals of what they hold.
    layers = table_200["layers"]
    named = list(reference_200.named_modules())
    assert [row["name"] for row in layers] == ["TinyResNet50"] + [name for name, _ in named[1:]]
    assert [row["type"] for row in layers] == [type(m).__name__ for _, m in named]
    assert [row["depth"] for row in layers] == [0] + [name.count(".") + 1 for name, _ in named[1:]]
    root = layers[0]
    assert root["params"] == 20_503_688 and root["mult_adds"] == table_200["total_mult_adds"]
    assert root["output_shape"] == [1, 200]
    top = [row for row in layers if row["depth"] == 1]
    assert sum(row["params"] for row in top) == root["params"]
    assert sum(row["mult_adds"] for row in top) == root["mult_adds"]


def _torchinfo_totals(text: str) -> dict[str, str]:
    """The figures under the layer list of torchinfo's printout, by label."""
    totals = {}
    for line in text.splitlines():
        match = re.fullmatch(r"([A-Za-z/ -]+?)(?: \((?:MB|Units\.\w+)\))?: (\S+)", line)
        if match:
            totals[match.group(1).lower()] = match.group(2)
    return totals


def _markdown_totals(text: str) -> dict[str, str]:
    totals = {}
    for line in text.split("| Summary | |", 1)[1].splitlines():
        match = re.fullmatch(r"\| ([A-Za-z/ -]+?)(?: \(MB\))? \| (\S+)(?: [GM] \(.*\))? \|", line)
        if match:
            totals[match.group(1).lower()] = match.group(2)
    return totals


def test_markdown_totals_are_what_torchinfo_prints(reference_200, table_200):
    printed = str(torchinfo.summary(reference_200, input_size=(1, 3, 64, 64), device="meta", verbose=0))
    theirs = _torchinfo_totals(printed)
    ours = _markdown_totals(format_model_table(table_200))
    labels = ["total params", "trainable params", "non-trainable params", "total mult-adds", "input size",
              "forward/backward pass size", "params size", "estimated total size"]
    assert set(labels) <= set(theirs) and set(labels) <= set(ours)
    assert {label: theirs[label] for label in labels} == {label: ours[label] for label in labels}
    assert theirs["total params"] == "20,503,688" and theirs["total mult-adds"] == "1.10"
    assert (theirs["input size"], theirs["forward/backward pass size"], theirs["params size"],
            theirs["estimated total size"]) == ("0.05", "54.99", "82.01", "137.05")


def test_timm_model_counts_agree_with_count_parameters():
    # A ViT keeps parameters on the root module itself (cls_token, pos_embed), outside any layer row.
    with torch.device("meta"):
        model = create_model("vit_tiny_patch16_224", 10, img_size=32)
    model.cls_token.requires_grad_(False)
    model.patch_embed.requires_grad_(False)
    table = model_table(model, 32)
    assert table["total_params"] == count_parameters(model) == 5_489_482
    assert table["trainable_params"] == count_parameters(model, trainable_only=True) < table["total_params"]
    assert table["non_trainable_params"] == count_parameters(model) - count_parameters(model, trainable_only=True)
    rows = {row["name"]: row for row in table["layers"]}
    assert rows["patch_embed.proj"]["output_shape"] == [1, 192, 2, 2]
    assert rows["patch_embed"]["trainable_params"] == 0


def test_counting_leaves_batchnorm_statistics_and_mode_alone():
    torch.manual_seed(0)
    m = create_model("resnet18", 10)
    m.train()
    before = m.bn1.running_mean.clone()
    rng = torch.random.get_rng_state()
    table = model_table(m, 32)
    assert table["layers"][0]["output_shape"] == [1, 10]
    assert m.training
    assert torch.equal(m.bn1.running_mean, before)
    # The probe input is zeros: torchinfo's input_size would draw it from the global RNG.
    assert torch.equal(torch.random.get_rng_state(), rng)
