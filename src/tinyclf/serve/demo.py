"""`tinyclf demo`: a trained model in the browser, on this machine.

    tinyclf demo                                  models/model.pt on http://127.0.0.1:7860
    tinyclf demo models/model.onnx --port 8000    the ONNX export, through onnxruntime

Upload, paste or take a picture (or click one of the validation images in the gallery) and see the
top-5 classes with their names and probability bars, and how long the request took, or "I don't
know" when the top-1 probability is below the page's slider (it starts at --min-confidence, or the
threshold the evaluate stage proposed on val); beside them the model's facts (architecture, parameters, the data it was trained on, its validation top-1 from
results/evaluate/metrics.json), under a GENERATED banner when it learned from generated data. The page
is `tinyclf.serve.webui`, the one the Hugging Face Space (`tinyclf space`) shows too. Runs on a CPU.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinyclf.errors import ArgumentParser, TinyclfError, run_command
from tinyclf.serve.predict_files import min_confidence_arg
from tinyclf.serve.predictor import Predictor, load_predictor, read_image

PROG = "tinyclf demo"
DEFAULT_EXAMPLES = 16


class DemoError(TinyclfError):
    """The demo cannot start: a port in use, unreadable examples or metrics; the message names it."""


def _parser() -> ArgumentParser:
    parser = ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                            epilog="The page also answers API calls: gradio_client.Client(URL).predict("
                                   "handle_file('a.jpg'), api_name='/predict') returns the top-5 as JSON.")
    parser.add_argument("model", nargs="?", default="models/model.pt",
                        help="models/model.pt (PyTorch) or models/model.onnx (the export); default %(default)s")
    parser.add_argument("--port", type=int, default=7860, help="port to serve on (default %(default)s)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default %(default)s: this machine only; 0.0.0.0 opens it "
                             "to your network)")
    parser.add_argument("--backend", choices=("auto", "torch", "onnx"), default="auto",
                        help="auto (default): onnx for a .onnx file, torch otherwise")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument("--metrics", default="results/evaluate/metrics.json",
                        help="the evaluate stage's metrics, for the validation top-1 shown (default %(default)s)")
    parser.add_argument("--examples", default="data/prepared",
                        help="prepared data whose validation images fill the gallery (default %(default)s)")
    parser.add_argument("--num-examples", type=int, default=DEFAULT_EXAMPLES,
                        help="how many validation images, one per class, spread over the classes "
                             "(default %(default)s; 0 for none)")
    add_min_confidence(parser, "the page")
    return parser


def add_min_confidence(parser: argparse.ArgumentParser, where: str) -> None:
    """--min-confidence, shared with `tinyclf space`."""
    parser.add_argument("--min-confidence", type=min_confidence_arg, default=None, metavar="P",
                        help=f"{where} answers \"I don't know\" below this top-1 probability, 0 < P < 1 (a slider "
                             "changes it); default: the threshold the evaluate stage proposed on val "
                             "(per_class.json unknown_threshold, beside --metrics), or none")


# ------------------------------------------------------------------------------ facts and examples
def model_facts(predictor: Predictor, metrics_path: str | Path | None, min_confidence: float | None = None) -> dict:
    """The predictor's facts plus the top-1/top-5 from the evaluate stage's metrics (None when there is
    no such file), the split they measure (`evaluated_split`: test or val, from the per_class.json
    beside them; val when it is absent), and the "I don't know" threshold the page starts at
    (`min_confidence`: the one given, else per_class.json's proposed `unknown_threshold`, else None)
    with who set it (`min_confidence_from`)."""
    facts = dict(predictor.facts, val_top1=None, val_top5=None, evaluated_split="val",
                 min_confidence=min_confidence, min_confidence_from="--min-confidence" if min_confidence else None)
    path = Path(metrics_path) if metrics_path else None
    if path is None or not path.is_file():
        return facts
    try:
        metrics = json.loads(path.read_text())
        facts.update(val_top1=float(metrics["top1"]), val_top5=float(metrics["top5"]))
        evaluated = path.with_name("per_class.json")
        if evaluated.is_file():
            per_class = json.loads(evaluated.read_text())
            facts["evaluated_split"] = str(per_class.get("split", "val"))
            proposal = per_class.get("unknown_threshold")
            if min_confidence is None and proposal:
                facts.update(min_confidence=float(proposal["threshold"]),
                             min_confidence_from="proposed on val by the evaluate stage")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DemoError(f"{path}: not the evaluate stage's metrics ({exc})") from None
    return facts


def split_title(facts: dict) -> str:
    """"test" or "validation": what the shown accuracy was measured on."""
    return "test" if facts.get("evaluated_split") == "test" else "validation"


def pick_examples(labels: np.ndarray, count: int) -> list[int]:
    """Indices of up to `count` validation images: the first image of each of `count` classes spread
    evenly over the classes present, so the gallery shows varied classes and the same ones every time."""
    present = np.unique(labels)
    if count <= 0 or len(present) == 0:
        return []
    wanted = present[np.unique(np.linspace(0, len(present) - 1, min(count, len(present))).round().astype(int))]
    first = {}
    for index, label in enumerate(labels.tolist()):
        first.setdefault(label, index)
    return [first[c] for c in wanted.tolist()]


@dataclass(frozen=True)
class Example:
    """A validation image for the gallery: its index in the val split, pixels and true class name."""

    index: int
    image: np.ndarray
    caption: str


def load_examples(prepared: str | Path, count: int, class_ids: list[str]) -> list[Example]:
    """Up to `count` validation images of a prepared dataset (`pick_examples`); [] when it has no
    val split. DemoError when it cannot be read or its classes are not `class_ids`, the model's."""
    prepared = Path(prepared)
    images_path, labels_path = prepared / "val" / "images.npy", prepared / "val" / "labels.npy"
    if count <= 0 or not images_path.is_file():
        return []
    try:
        images, labels = np.load(images_path, mmap_mode="r"), np.load(labels_path)
        classes = json.loads((prepared / "classes.json").read_text())["classes"]
    except (OSError, ValueError, KeyError) as exc:
        raise DemoError(f"{prepared}: unreadable prepared data for the examples ({exc})") from None
    if [c["id"] for c in classes] != class_ids:
        raise DemoError(f"{prepared}: its classes are not the model's, so its images make no examples "
                        "(--examples names the prepared data the model learned from; --num-examples 0 for none)")
    return [Example(i, np.array(images[i]), classes[int(labels[i])]["name"].split(",")[0])
            for i in pick_examples(labels, count)]


def write_examples(examples: list[Example], out_dir: str | Path) -> list[tuple[str, str]]:
    """The examples as PNG files in `out_dir`: (path, caption) pairs for the gallery."""
    import cv2

    written = []
    for example in examples:
        path = Path(out_dir) / f"val_{example.index}.png"
        # PNG is lossless: the file decodes to exactly the prepared array the model was evaluated on.
        _, png = cv2.imencode(".png", cv2.cvtColor(example.image, cv2.COLOR_RGB2BGR))
        path.write_bytes(png.tobytes())
        written.append((str(path), example.caption))
    return written


# ------------------------------------------------------------------------------ the app
def build_app(predictor: Predictor, facts: dict, examples: list[tuple[str, str]]):
    """The demo page (a gradio.Blocks) for `predictor`; `facts` from model_facts, `examples`
    (image file, caption) pairs from write_examples."""
    from tinyclf.serve.webui import Classifier, build_blocks

    classifier = Classifier(decode=lambda data: read_image(data, predictor),
                            probabilities=predictor.probabilities, top_k=predictor.top_k)
    return build_blocks(classifier, facts, examples)


def serve(app, host: str, port: int) -> str:
    """Start serving `app` in the background; its URL. DemoError when the port is taken."""
    from tinyclf.serve.webui import launch_options

    try:
        _, url, _ = app.launch(**launch_options(host, port), prevent_thread_lock=True, quiet=True)
    except OSError as exc:
        raise DemoError(f"cannot listen on {host}:{port} ({str(exc).split('. ')[0]}); "
                        "choose another port with --port") from None
    return url or f"http://{host}:{port}/"


def _stop_on_sigterm() -> None:
    """SIGTERM (kill, a service manager, a test ending) stops the demo as Ctrl-C does: the server
    closes and the example files are removed, where the default action would leave them behind."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.default_int_handler)


def check_port_free(host: str, port: int) -> None:
    """DemoError when `host:port` is taken, before the model and the web framework load (seconds).
    `serve` still names a port taken in between."""
    import socket

    with socket.socket() as probe:
        # As the server binds (uvicorn sets it): a port left in TIME_WAIT by a stopped demo is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise DemoError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); "
                            "choose another port with --port") from None


def run(args) -> None:
    check_port_free(args.host, args.port)
    from tinyclf.serve.webui import MODEL_THREADS

    # The page runs CONCURRENCY_LIMIT classifications at once, each on MODEL_THREADS threads (webui).
    predictor = load_predictor(args.model, backend=args.backend, device=args.device, threads=MODEL_THREADS)
    facts = model_facts(predictor, args.metrics, args.min_confidence)
    example_dir = tempfile.mkdtemp(prefix="tinyclf-demo-")
    try:
        class_ids = [c["id"] for c in predictor.classes]
        examples = write_examples(load_examples(args.examples, args.num_examples, class_ids), example_dir)
        app = build_app(predictor, facts, examples)
        url = serve(app, args.host, args.port)
        accuracy = ("not evaluated" if facts["val_top1"] is None
                    else f"{split_title(facts)} top-1 {facts['val_top1']:.1%}")
        unknown = (f", \"I don't know\" below {facts['min_confidence']:.1%} ({facts['min_confidence_from']})"
                   if facts["min_confidence"] else "")
        print(f"{PROG}: {args.model} ({facts['model']}, {predictor.backend}, {accuracy}"
              f"{', trained on GENERATED data' if facts['generated'] else ''}), {len(examples)} examples{unknown}")
        print(f"{PROG}: open {url} (Ctrl-C stops it)", flush=True)
        _stop_on_sigterm()
        app.block_thread()
    finally:
        shutil.rmtree(example_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    return run_command(PROG, lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
