"""`tinyclf space`: the folder is a ready Hugging Face Space, and its app.py, run from a fresh venv
made from the folder's own requirements.txt (so a missing or wrong dependency shows), answers in a
real browser and through gradio_client as `tinyclf predict` does for the same image.

Real components: a model trained by `run_training` on generated data and exported by the real
exporter (tests/support/served_model.py), a real Tiny ImageNet validation JPEG to upload, `python -m venv`
and a real install from the package index (by uv, which resolves the file the way pip does: the same
versions, in a sixth of pip's time), headless Chromium (tests/support/browser.py). The venv is made
once per test session for each distinct requirements.txt.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from support.browser import (assert_same_top5, chrome, expected_rows, require_browser, screenshot,
                             server_env, serving, upload, wait_for_top5)
from support.helpers import REAL_SUBSET, REPO, free_port
from support.served_model import train_and_export

from tinyclf.serve.predictor import load_predictor, read_image

pytestmark = [pytest.mark.skipif(not REAL_SUBSET.exists(), reason=f"real Tiny ImageNet subset not present at {REAL_SUBSET}"),
              pytest.mark.usefixtures("one_torch_thread")]

TINYCLF = str(Path(sys.executable).parent / "tinyclf")
# What app.py and the files beside it may import, besides the standard library and each other.
ALLOWED = {"numpy", "cv2", "onnxruntime", "gradio"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        return train_and_export(tmp_path_factory.mktemp("space-model"))


MIN_CONFIDENCE = 0.5  # the Space's "I don't know" threshold, given on the command line


@pytest.fixture(scope="module")
def space(exported, tmp_path_factory):
    out = tmp_path_factory.mktemp("space") / "my-space"
    proc = subprocess.run([TINYCLF, "space", str(exported["onnx"]), str(out), "--examples", str(exported["prepared"]),
                           "--metrics", str(REPO / "nonexistent-metrics.json"), "--min-confidence", str(MIN_CONFIDENCE)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"tinyclf space: wrote {out}/")
    return out


@pytest.fixture(scope="session")
def venv_for(tmp_path_factory):
    """venv_for(requirements.txt): a fresh venv with only what that file names, made once per
    session for each distinct content."""
    made: dict[str, Path] = {}

    def make(requirements: Path) -> Path:
        text = requirements.read_text()
        if text not in made:
            venv = tmp_path_factory.mktemp("space-venv") / "venv"
            subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
            # uv is the project's installer (the Makefile); compiled, the app starts as fast as pip's would.
            uv = subprocess.run([str(Path(sys.executable).parent / "uv"), "pip", "install", "--quiet", "--no-cache",
                                 "--compile-bytecode", "--python", str(venv / "bin" / "python"), "-r", str(requirements)],
                                capture_output=True, text=True, timeout=600)
            assert uv.returncode == 0, f"uv pip install -r {requirements}:\n{uv.stdout}{uv.stderr}"
            made[text] = venv
        return made[text]

    return make


@pytest.fixture(scope="module")
def jpeg(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("upload") / "val_7.JPEG"
    with zipfile.ZipFile(REAL_SUBSET) as zf:
        path.write_bytes(zf.read("tiny-imagenet-200/val/images/val_7.JPEG"))
    return path


def lock_versions() -> dict[str, str]:
    pins = (line.split("==") for line in (REPO / "requirements.txt").read_text().splitlines() if "==" in line)
    return {name.strip().lower().replace("_", "-"): version.strip() for name, version in pins}


def test_the_folder_is_a_space_with_pinned_requirements_and_no_torch(space, exported):
    files = sorted(str(p.relative_to(space)) for p in space.rglob("*") if p.is_file() and "examples/" not in str(p))
    assert files == [".gitattributes", "README.md", "app.py", "classes.json", "examples.json", "facts.json",
                     "images.py", "model.onnx", "onnx_model.py", "requirements.txt", "webui.py"]
    assert (space / "model.onnx").read_bytes() == exported["onnx"].read_bytes()
    pins = [line for line in (space / "requirements.txt").read_text().splitlines() if not line.startswith("#")]
    lock = lock_versions()
    assert {p.split("==")[0] for p in pins} == {"gradio", "onnxruntime", "opencv-python-headless", "numpy"}
    assert all(p.split("==")[1] == lock[p.split("==")[0]] for p in pins), (pins, "differ from requirements.txt")
    assert not [p for p in pins if "torch" in p]
    classes = json.loads((space / "classes.json").read_text())["classes"]
    assert classes == load_predictor(exported["onnx"]).classes
    examples = json.loads((space / "examples.json").read_text())
    assert examples and all((space / "examples" / e["file"]).is_file() for e in examples)
    assert "*.onnx filter=lfs" in (space / ".gitattributes").read_text()


def test_the_readme_has_the_space_header_and_says_how_to_push(space):
    text = (space / "README.md").read_text()
    header = dict(line.split(": ", 1) for line in text.split("---\n")[1].splitlines())
    assert header["sdk"] == "gradio" and header["sdk_version"] == lock_versions()["gradio"]
    assert header["app_file"] == "app.py" and json.loads(header["title"]) == "test_resnet on tiny-imagenet"
    assert len(json.loads(header["short_description"])) <= 60  # Hugging Face's limit
    assert "**GENERATED DATA**" in text and "validation top-1 | not evaluated" in text
    assert f'| "I don\'t know" below | {MIN_CONFIDENCE:.1%} (--min-confidence) |' in text
    for command in ("hf auth login", "hf repos create <your-name>/<space-name> --type space --space-sdk gradio",
                    "hf upload <your-name>/<space-name> . . --repo-type space", "git lfs install", "git push"):
        assert command in text, command


def test_the_app_imports_only_its_requirements_and_its_own_files(space):
    own = {p.stem for p in space.glob("*.py")}
    for path in space.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            for name in names:
                top = name.split(".")[0]
                assert top in ALLOWED | own | sys.stdlib_module_names | {"__future__"}, f"{path.name} imports {name}"


def test_the_app_in_a_fresh_venv_answers_as_tinyclf_predict(space, venv_for, exported, jpeg, tmp_path):
    from gradio_client import Client, handle_file

    require_browser()  # before making the venv
    python = venv_for(space / "requirements.txt") / "bin" / "python"
    no_torch = subprocess.run([str(python), "-c", "import torch"], capture_output=True, text=True)
    assert "No module named 'torch'" in no_torch.stderr  # the Space runs without it
    predictor = load_predictor(exported["onnx"])
    expected = expected_rows(predictor.top_k(predictor.probabilities(read_image(jpeg.read_bytes(), predictor)[None]))[0])
    port = free_port()
    env = dict(server_env(tmp_path), GRADIO_SERVER_PORT=str(port), GRADIO_SERVER_NAME="127.0.0.1")
    url = f"http://127.0.0.1:{port}/"
    # Started from another directory: the app finds its files beside itself.
    with serving([str(python), str(space / "app.py")], url, tmp_path / "app.log",
                 cwd=tmp_path, env=env):
        with chrome() as driver:
            driver.get(url)
            upload(driver, jpeg)
            shown = wait_for_top5(driver, expected)
            screenshot(driver, "space-upload")
            banner = driver.find_element("id", "generated-banner").text
            facts = driver.find_element("id", "model-facts").text
        answer = Client(url, verbose=False).predict(handle_file(str(jpeg)), api_name="/predict")
    assert_same_top5(shown, expected)
    assert_same_top5([(p["id"], p["name"], p["probability"]) for p in answer["predictions"]], expected)
    assert banner.startswith("GENERATED DATA") and "runs on onnx" in facts and "not evaluated" in facts
    assert f'"I don\'t know" below {MIN_CONFIDENCE:.1%} (--min-confidence)' in facts
    assert answer["min_confidence"] == MIN_CONFIDENCE
    assert answer["answer"] == (expected[0][0] if expected[0][2] >= MIN_CONFIDENCE else "unknown")


def test_problems_are_one_line_and_force_keeps_other_files(exported, tmp_path):
    def space_cmd(*args):
        return subprocess.run([TINYCLF, "space", *map(str, args)], capture_output=True, text=True, timeout=120)

    proc = space_cmd(exported["model"], tmp_path / "a")
    assert proc.returncode == 1 and proc.stderr == (f"tinyclf space: {exported['model']}: the Space runs the ONNX "
                                                    "export, not a .pt file (dvc repro export writes models/model.onnx)\n")
    clone = tmp_path / "clone"
    (clone / ".git").mkdir(parents=True)
    (clone / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    proc = space_cmd(exported["onnx"], clone, "--num-examples", "0")
    assert proc.returncode == 1 and proc.stderr == (f"tinyclf space: {clone}: folder is not empty (use --force to "
                                                    "write into it, replacing this command's files)\n")
    assert space_cmd(exported["onnx"], clone, "--num-examples", "0", "--force").returncode == 0
    assert (clone / ".git" / "HEAD").is_file() and (clone / "app.py").is_file()
    help_text = space_cmd("--help").stdout
    for words in ("README.md", "requirements.txt", "no torch", "--force", "--examples"):
        assert words in help_text, words
