"""The export stage: models/model.onnx takes RGB uint8 N×H×W×3, normalizes inside, carries its
classes in its metadata, matches PyTorch in onnxruntime, and is written only when it does.

Real components: a model trained by `run_training` (tests/support/served_model.py), the real exporter,
onnx's checker and onnxruntime; the expected logits come from the model file through the same
normalization the evaluate stage uses (`tinyclf.loading.normalize.to_model_input`), not from the export code.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from support.helpers import REPO
from support.served_model import SIZE, train_and_export

from tinyclf.data.arrays import load_classes, load_split
from tinyclf.loading.normalize import to_model_input
from tinyclf.model.file import load_model_file
from tinyclf.serve.export import ExportError, check_parity, export_model, parity, parity_images
from tinyclf.serve.onnx_model import OnnxModel
from tinyclf.serve.predictor import load_predictor
from tinyclf.serve.torch_model import load_serving_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.set_num_threads(1)
    return train_and_export(tmp_path_factory.mktemp("export"))


def torch_logits(model_path, images: np.ndarray) -> np.ndarray:
    """The model file's logits for uint8 NHWC images, normalized as the evaluate stage does."""
    model, meta = load_model_file(model_path)
    x = to_model_input(torch.from_numpy(np.array(images)).permute(0, 3, 1, 2), meta["mean"], meta["std"],
                       channels_last=False)
    with torch.no_grad():
        return model(x).numpy()


def test_the_graph_takes_uint8_nhwc_of_any_batch_and_matches_pytorch(exported):
    model = onnx.load(exported["onnx"])
    onnx.checker.check_model(model, full_check=True)
    assert max(op.version for op in model.opset_import if op.domain in ("", "ai.onnx")) >= 18
    session = ort.InferenceSession(str(exported["onnx"]), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.type == "tensor(uint8)" and inp.shape[1:] == [SIZE, SIZE, 3] and not isinstance(inp.shape[0], int)
    assert [o.name for o in session.get_outputs()] == ["logits", "probabilities"]
    images, _ = load_split(exported["prepared"], "val")
    for batch in (1, 7):
        x = np.array(images[:batch])
        logits, probs = session.run(None, {inp.name: x})
        expected = torch_logits(exported["model"], x)
        assert logits.shape == probs.shape == (batch, 6)
        assert np.abs(logits - expected).max() <= 1e-3
        assert (logits.argmax(1) == expected.argmax(1)).all()
        np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
        # The probabilities are the calibrated ones: softmax of the logits over the model file's
        # temperature, fitted on val by the train stage; the logits stay the model's.
        temperature = load_model_file(exported["model"])[1]["temperature"]
        assert temperature != 1.0
        np.testing.assert_allclose(probs, torch.from_numpy(expected / temperature).softmax(1).numpy(), atol=1e-5)


def test_parity_figures_are_recorded_for_every_val_image(exported):
    figures = json.loads(exported["parity"].read_text())
    assert figures["images"] == 6 * 8  # fewer than 512 val images: all of them
    assert 0 <= figures["max_abs_logit_diff"] <= 1e-3
    assert figures["top1_agreement"] >= 0.998 and figures["passed"] is True
    assert figures["opset"] >= 18 and figures["onnx_bytes"] == exported["onnx"].stat().st_size


def test_metadata_carries_classes_size_dataset_and_generated(exported):
    props = {p.key: p.value for p in onnx.load(exported["onnx"]).metadata_props}
    classes = load_classes(exported["prepared"])["classes"]
    assert json.loads(props["classes"]) == [{"id": c["id"], "name": c["name"]} for c in classes]
    assert props["image_size"] == str(SIZE) and props["dataset"] == "tiny-imagenet"
    assert props["generated"] == "true" and props["fit"] == "squash" and props["model"] == "test_resnet"
    # Serving code reads all of it from the ONNX file alone.
    predictor = load_predictor(exported["onnx"])
    assert predictor.backend == "onnx" and predictor.image_size == SIZE and predictor.fit == "squash"
    assert [c["name"] for c in predictor.classes] == [c["name"] for c in classes]
    assert predictor.classes[2] == {"index": 2, "id": classes[2]["id"], "name": classes[2]["name"]}
    assert predictor.facts["generated"] is True and predictor.facts["num_classes"] == 6
    assert predictor.facts["parameters"] == load_predictor(exported["model"]).facts["parameters"] > 0


def test_parity_spreads_over_the_whole_val_split(exported):
    images, _ = load_split(exported["prepared"], "val")
    picked = parity_images(exported["prepared"], limit=5)
    assert len(picked) == 5
    assert (picked[0] == images[0]).all() and (picked[-1] == images[-1]).all()


def test_a_failed_parity_writes_nothing(exported, tmp_path):
    out = tmp_path / "models" / "model.onnx"
    parity_json = tmp_path / "results" / "parity.json"
    with pytest.raises(ExportError, match=r"model\.onnx: ONNX does not match PyTorch on 48 val images .*nothing written"):
        export_model(exported["model"], exported["prepared"], out, parity_json, max_logit_diff=0.0)
    assert not out.exists() and not parity_json.exists()
    assert list(out.parent.iterdir()) == []  # no temp file left behind either


def test_a_tampered_graph_fails_the_parity_check(exported, tmp_path):
    model = onnx.load(exported["onnx"])
    bias = next(t for t in model.graph.initializer if list(t.dims) == [6] and "bias" in t.name)
    values = onnx.numpy_helper.to_array(bias).copy()
    values[0] += 0.01  # one class's logit off by 0.01: a small change, ten times the tolerance
    bias.CopyFrom(onnx.numpy_helper.from_array(values, bias.name))
    tampered = tmp_path / "tampered.onnx"
    onnx.save(model, tampered)
    serving, _ = load_serving_model(exported["model"])
    figures = parity(OnnxModel(tampered), serving, parity_images(exported["prepared"]))
    assert figures["max_abs_logit_diff"] == pytest.approx(0.01, abs=1e-4)
    assert check_parity(figures, 1e-3, 0.998)[0] == "max |logit difference| 0.01 > 0.001"
    assert check_parity(figures, 0.02, 0.0) == []  # the thresholds, not the figures, decide


def test_the_stage_names_a_missing_model_in_one_line(exported, tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("stage_export", REPO / "stages" / "export.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    missing = tmp_path / "nope.pt"
    rc = stage.main(["--data", str(exported["prepared"]), "--model", str(missing), "--out", str(tmp_path / "m.onnx"),
                     "--parity", str(tmp_path / "p.json"), "--params", str(REPO / "params.yaml")])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and err == f"export: {missing}: no such model file"
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "p.json").exists()
