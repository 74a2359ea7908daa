"""`tinyclf space`: a folder that is a ready Hugging Face Space for an exported model.

    tinyclf space models/model.onnx space/      then follow space/README.md to push it

The folder holds app.py (the page `tinyclf demo` shows, run by onnxruntime), the model and its
classes, a few validation images for the gallery, the model's facts, a requirements.txt pinned to the
versions installed here (numpy, OpenCV, onnxruntime, Gradio; no torch: a small Space that starts
fast), and a README.md with the Space's metadata header and the commands that publish it.
`python app.py` in the folder runs it locally first.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from tinyclf.data import images
from tinyclf.errors import ArgumentParser, TinyclfError, run_command
from tinyclf.serve import onnx_model
from tinyclf.serve.demo import (DEFAULT_EXAMPLES, add_min_confidence, load_examples, model_facts, split_title,
                                write_examples)
from tinyclf.serve.predictor import load_predictor

PROG = "tinyclf space"
# What app.py imports, as PyPI distributions; pinned to the versions installed here, the ones
# `tinyclf demo` runs with (the project's requirements.txt). gradio-client comes with gradio.
REQUIREMENTS = ("gradio", "onnxruntime", "opencv-python-headless", "numpy")
SERVE = Path(__file__).resolve().parent
# The Space's own code, copied as is: app.py from space_app.py, then what it imports (paths, not
# imports: space_app.py runs only inside the folder, and importing webui.py would load Gradio).
APP = SERVE / "space_app.py"
MODULES = (SERVE / "webui.py", Path(onnx_model.__file__), Path(images.__file__))
# Files that go to the Space with Git LFS when it is pushed with git (the hf CLI needs no setup).
LFS_PATTERNS = ("*.onnx", "*.png")


class SpaceError(TinyclfError):
    """The Space folder cannot be written; the message names the input or folder."""


def _parser() -> ArgumentParser:
    parser = ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                            epilog="The model must be the ONNX export (dvc repro export writes models/model.onnx).")
    parser.add_argument("model", help="the exported model, e.g. models/model.onnx")
    parser.add_argument("out", help="the folder to write (created; must be empty unless --force)")
    parser.add_argument("--metrics", default="results/evaluate/metrics.json",
                        help="the evaluate stage's metrics, for the validation top-1 shown (default %(default)s)")
    parser.add_argument("--examples", default="data/prepared",
                        help="prepared data whose validation images fill the gallery (default %(default)s)")
    parser.add_argument("--num-examples", type=int, default=DEFAULT_EXAMPLES,
                        help="how many validation images, one per class (default %(default)s; 0 for none)")
    parser.add_argument("--title", help="the Space's title (default: <model> on <dataset>)")
    parser.add_argument("--force", action="store_true",
                        help="write into a folder that is not empty (a clone of your Space, say), replacing "
                             "the files this command writes and keeping the others (.git included)")
    add_min_confidence(parser, "the Space")
    return parser


def pinned_requirements() -> str:
    """requirements.txt for the Space: app.py's dependencies at the versions installed here."""
    lines = []
    for name in REQUIREMENTS:
        try:
            lines.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            raise SpaceError(f"{name} is not installed here, so its version cannot be pinned "
                             "(pip install -r requirements.txt)") from None
    return "# app.py's dependencies, pinned (written by tinyclf space). No torch: onnxruntime runs the model.\n" + \
        "\n".join(lines) + "\n"


def readme(facts: dict, title: str, size_mb: float) -> str:
    """The Space's README.md: the metadata header Hugging Face reads, what the Space is, how to push it."""
    from tinyclf.serve.webui import unknown_setting  # the page's own words (webui imports gradio: only here)

    version = importlib.metadata.version("gradio")
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    generated = ("\n\n**GENERATED DATA**: this model was trained on a generated dataset, not real photos; "
                 "its predictions say nothing about real images." if facts["generated"] else "")
    top1 = "not evaluated" if facts["val_top1"] is None else f"{facts['val_top1']:.1%}"
    summary = f"Top-5 of {facts['num_classes']} classes for any image"
    header = "\n".join(["---", f"title: {json.dumps(title)}", "emoji: 🖼️", "colorFrom: indigo", "colorTo: gray",
                        "sdk: gradio", f"sdk_version: {version}", f'python_version: "{python}"',
                        "app_file: app.py", "pinned: false", f"short_description: {json.dumps(summary)}", "---"])
    return f"""{header}

# {title}

An image classifier trained with tinyclf: upload, paste or take a picture, or click a validation
image, and see its top-5 classes with their probabilities.{generated}

| | |
|---|---|
| architecture | {facts['model']} ({facts['parameters']:,} parameters) |
| trained on | {facts['dataset']}{' (GENERATED)' if facts['generated'] else ''}, {facts['num_classes']} classes, {facts['image_size']}×{facts['image_size']} px |
| {split_title(facts)} top-1 | {top1} |
| "I don't know" below | {unknown_setting(facts)} |
| runtime | onnxruntime on CPU (model.onnx, {size_mb:.1f} MB); no torch |

The same answer as JSON: `gradio_client.Client("<your-name>/<space-name>").predict(handle_file("a.jpg"), api_name="/predict")`.

## Run it here first

```bash
python3 -m venv .venv && .venv/bin/pip install -r requirements.txt
.venv/bin/python app.py          # http://127.0.0.1:7860
```

## Publish it

With the `hf` command (`pip install huggingface_hub`; large files need no setup):

```bash
hf auth login                                                   # a write token from huggingface.co/settings/tokens
hf repos create <your-name>/<space-name> --type space --space-sdk gradio
hf upload <your-name>/<space-name> . . --repo-type space
```

Or with git (model.onnx and the images go through Git LFS, as `.gitattributes` says):

```bash
git init -b main && git lfs install && git add . && git commit -m "tinyclf Space"
git remote add origin https://huggingface.co/spaces/<your-name>/<space-name>
git push -u origin main                                         # after creating the Space on huggingface.co/new-space
```

Files: `app.py` (the app), `webui.py` (the page), `onnx_model.py` (runs model.onnx), `images.py` (the
image decoder `tinyclf predict` uses), `model.onnx`, `classes.json`, `facts.json`, `examples/`.
"""


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise SpaceError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise SpaceError(f"{out}: folder is not empty (use --force to write into it, replacing this command's files)")


@dataclass(frozen=True)
class Shown:
    """What the Space shows beside the model: the evaluate stage's metrics (None: not evaluated), the
    prepared data whose val images fill the gallery (None: no gallery) and how many, its title (None:
    <model> on <dataset>) and the "I don't know" threshold (None: the evaluate stage's proposal)."""

    metrics: str | Path | None
    examples: str | Path | None
    num_examples: int = DEFAULT_EXAMPLES
    title: str | None = None
    min_confidence: float | None = None


def write_space(model: str | Path, out: str | Path, shown: Shown, *, force: bool = False) -> Path:
    """Write the Space folder `out` for the ONNX export `model`; SpaceError (one line) when it cannot."""
    model, out = Path(model), Path(out)
    metrics, examples, num_examples, title = shown.metrics, shown.examples, shown.num_examples, shown.title
    if model.suffix != ".onnx":
        raise SpaceError(f"{model}: the Space runs the ONNX export, not a {model.suffix or 'suffix-less'} file "
                         "(dvc repro export writes models/model.onnx)")
    predictor = load_predictor(model, backend="onnx")
    facts = model_facts(predictor, metrics, shown.min_confidence)
    picked = load_examples(examples, num_examples, [c["id"] for c in predictor.classes]) if examples else []
    _check_out(out, force)  # everything read and checked before anything is written
    shutil.rmtree(out / "examples", ignore_errors=True)  # a previous bundle's examples are stale
    (out / "examples").mkdir(parents=True, exist_ok=True)
    gallery = write_examples(picked, out / "examples")
    title = title or f"{facts['model']} on {facts['dataset']}"
    shutil.copyfile(APP, out / "app.py")
    for module in MODULES:
        shutil.copyfile(module, out / module.name)
    shutil.copyfile(model, out / "model.onnx")
    (out / "classes.json").write_text(json.dumps({"classes": predictor.classes}, indent=1) + "\n")
    (out / "facts.json").write_text(json.dumps(dict(facts, path="model.onnx"), indent=1) + "\n")
    (out / "examples.json").write_text(json.dumps([{"file": Path(p).name, "caption": c} for p, c in gallery]) + "\n")
    (out / "requirements.txt").write_text(pinned_requirements())
    (out / ".gitattributes").write_text("".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in LFS_PATTERNS))
    (out / "README.md").write_text(readme(facts, title, model.stat().st_size / 1e6))
    return out


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    return run_command(PROG, lambda: _write_and_say(args))


def _write_and_say(args: argparse.Namespace) -> None:
    shown = Shown(args.metrics, args.examples, args.num_examples, args.title, args.min_confidence)
    out = write_space(args.model, args.out, shown, force=args.force)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file() and ".git" not in f.parts)
    print(f"{PROG}: wrote {out}/ ({size / 1e6:.1f} MB): try it with `cd {out} && python app.py`, "
          f"publish it as {out}/README.md says")


if __name__ == "__main__":
    sys.exit(main())
