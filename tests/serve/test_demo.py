"""`tinyclf demo`, used as a person uses it: a real browser opens the page the command serves,
uploads a real Tiny ImageNet validation JPEG, and reads the top-5 from the page; they must be
`tinyclf predict`'s (the Predictor's top-k of read_image of the same bytes). `gradio_client` gets
the same answer from the API. Screenshots go to test-artifacts/.

Real components: a model trained by `run_training` on real images (tests/support/demo_model.py), the
`tinyclf` command in its own process on 127.0.0.1, headless Chromium (tests/support/browser.py).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support.browser import (assert_same_top5, chrome, expected_rows, screenshot, server_env, serving,
                             upload, wait_for, wait_for_top5)
from support.demo_model import CLASSES
from support.helpers import REAL_SUBSET, free_port

from tinyclf.serve.demo import pick_examples
from tinyclf.serve.predictor import load_predictor, read_image

pytestmark = [pytest.mark.skipif(not REAL_SUBSET.exists(), reason=f"real Tiny ImageNet subset not present at {REAL_SUBSET}"),
              pytest.mark.usefixtures("one_torch_thread")]

TINYCLF = str(Path(sys.executable).parent / "tinyclf")


@pytest.fixture(scope="module")
def predictor(trained):
    return load_predictor(trained.model_pt)


@pytest.fixture(scope="module")
def demo(trained, tmp_path_factory):
    """The URL of `tinyclf demo` serving the trained model file."""
    tmp = tmp_path_factory.mktemp("demo-server")
    port = free_port()
    cmd = [TINYCLF, "demo", str(trained.model_pt), "--port", str(port), "--examples", str(trained.prepared),
           "--metrics", str(trained.metrics)]
    url = f"http://127.0.0.1:{port}/"
    with serving(cmd, url, tmp / "demo.log", env=server_env(tmp)):
        yield url


def predicted(predictor, data: bytes) -> list[tuple[str, str, float]]:
    """What `tinyclf predict` says for these bytes."""
    return expected_rows(predictor.top_k(predictor.probabilities(read_image(data, predictor)[None]))[0])


def test_an_uploaded_validation_jpeg_gets_the_top5_of_tinyclf_predict(demo, trained, predictor):
    jpeg = trained.jpegs[1]
    expected = predicted(predictor, jpeg.read_bytes())
    with chrome() as driver:
        driver.get(demo)
        upload(driver, jpeg)
        shown = wait_for_top5(driver, expected)
        screenshot(driver, "demo-upload")
        assert_same_top5(shown, expected)
        latency = driver.find_element("id", "latency").text
        facts = driver.find_element("id", "model-facts").text
        banners = driver.find_elements("id", "generated-banner")
        answers = slide_the_threshold_around(driver, expected[0])
    assert "Latency of this request" in latency and "ms (decode" in latency
    metrics = json.loads(trained.metrics.read_text())
    assert "architecture test_resnet" in facts and f"parameters {predictor.facts['parameters']:,}" in facts
    assert f"top-1 {metrics['top1']:.1%}" in facts and f"classes {CLASSES}" in facts
    assert "trained on tiny-imagenet\n" in facts and not [b for b in banners if b.is_displayed()]  # real images
    threshold = proposed_threshold(trained)
    assert f'"I don\'t know" below {threshold:.1%} (proposed on val by the evaluate stage)' in facts
    assert answers[0] == (expected[0][0] if expected[0][2] >= threshold else "unknown")
    top_id, name, probability = expected[0]
    assert answers[1:] == [("unknown", f"I don't know: the best guess, {name}, has {100 * probability:.1f}%"), top_id]


def slide_the_threshold_around(driver, best: tuple[str, str, float]) -> list:
    """The answer the page shows for the uploaded image at its starting threshold, then with the slider
    just above the top-1 probability (the answer and its words), then at 0; no new upload."""
    from selenium.webdriver.common.keys import Keys

    def shown_answer():  # read in one script: Gradio replaces the list while it redraws
        return driver.execute_script("const top5 = document.querySelector('#top5'); return top5 && top5.dataset.answer")

    def slide_to(value: float) -> None:
        box = driver.find_element("css selector", "#min-confidence input[type=number]")
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys(f"{value:.3f}", Keys.ENTER)

    answers = [shown_answer()]
    slide_to(min(0.99, math.floor(best[2] * 1000) / 1000 + 0.001))
    wait_for(lambda: shown_answer() == "unknown")
    said = driver.find_element("id", "unknown-answer").text
    answers.append((shown_answer(), said.split("%")[0] + "%"))
    slide_to(0)
    wait_for(lambda: shown_answer() == best[0])
    answers.append(shown_answer())
    return answers


def test_clicking_a_gallery_image_classifies_that_validation_image(demo, trained, predictor):
    images, labels = np.load(trained.prepared / "val" / "images.npy"), np.load(trained.prepared / "val" / "labels.npy")
    picked = pick_examples(labels, 16)
    assert len(picked) == CLASSES  # one per class: fewer classes than the gallery's 16
    third = picked[2]
    expected = expected_rows(predictor.top_k(predictor.probabilities(images[third][None]))[0])
    with chrome() as driver:
        driver.get(demo)
        thumbnails = wait_for(lambda: driver.find_elements("css selector", "#examples .thumbnail-item"))
        assert len(thumbnails) == CLASSES
        classes = json.loads((trained.prepared / "classes.json").read_text())["classes"]
        assert thumbnails[2].text == classes[int(labels[third])]["name"].split(",")[0]  # the true class as caption
        thumbnails[2].click()
        shown = wait_for_top5(driver, expected)
        screenshot(driver, "demo-gallery")
    assert_same_top5(shown, expected)


def proposed_threshold(trained) -> float:
    """The "I don't know" threshold the evaluate stage proposed, where the demo's page starts."""
    return json.loads(trained.metrics.with_name("per_class.json").read_text())["unknown_threshold"]["threshold"]


def test_gradio_client_gets_the_same_top5_from_the_api(demo, trained, predictor):
    from gradio_client import Client, handle_file

    client = Client(demo, verbose=False)
    threshold = proposed_threshold(trained)
    for jpeg in trained.jpegs[:3]:
        answer = client.predict(handle_file(str(jpeg)), api_name="/predict")
        rows = [(p["id"], p["name"], p["probability"]) for p in answer["predictions"]]
        expected = predicted(predictor, jpeg.read_bytes())
        assert_same_top5(rows, expected)
        assert [p["rank"] for p in answer["predictions"]] == [1, 2, 3, 4, 5]
        assert 0 < answer["latency_ms"]["total"] >= answer["latency_ms"]["model"]
        # "I don't know" at the page's starting threshold, as `tinyclf predict --min-confidence` answers.
        assert answer["min_confidence"] == threshold
        assert answer["answer"] == (expected[0][0] if expected[0][2] >= threshold else "unknown"), (answer, threshold)


def test_a_file_that_is_not_an_image_is_refused_naming_it(demo, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    notes = tmp_path / "notes.jpg"
    notes.write_text("not a picture\n")
    with pytest.raises(AppError) as caught:
        Client(demo, verbose=False).predict(handle_file(str(notes)), api_name="/predict")
    assert str(caught.value).startswith("cannot use notes.jpg: not a decodable image")


def test_command_line_problems_are_one_line(trained, tmp_path):
    missing = tmp_path / "nope.pt"
    proc = subprocess.run([TINYCLF, "demo", str(missing)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and proc.stderr == f"tinyclf demo: {missing}: no such model file\n"
    proc = subprocess.run([TINYCLF, "demo", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    for words in ("--port", "--host", "--metrics", "--examples", "top-5", "GENERATED", "/predict", "--min-confidence"):
        assert words in proc.stdout, words
    for option, value in (("--port", "eighty"), ("--min-confidence", "1.5")):
        proc = subprocess.run([TINYCLF, "demo", option, value], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1 and option in proc.stderr, proc.stderr


def test_a_port_in_use_is_named(trained, tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run([TINYCLF, "demo", str(trained.model_onnx), "--port", str(port), "--num-examples", "0"],
                              capture_output=True, text=True, timeout=120, env=server_env(tmp_path))
    assert proc.returncode == 1
    assert proc.stderr == (f"tinyclf demo: cannot listen on 127.0.0.1:{port} (Address already in use); "
                           "choose another port with --port\n")
