"""The web page of a trained classifier, shared by `tinyclf demo` and the Hugging Face Space.

An image (uploaded, pasted or from the webcam, or a validation image clicked in the gallery) goes
in; the top-5 classes come out with their names and probability bars, and the server-side latency
of the request (decode, model). The model's facts sit beside it, under a GENERATED banner when the
model was trained on generated data. The same answer is an API endpoint, `/predict`
(`gradio_client.Client(url).predict(handle_file(path), api_name="/predict")`).

Self-contained on purpose (gradio, numpy and the standard library only, no torch, no other tinyclf
module): the Space bundle copies this file as is, so the Space shows the page the demo shows. The
model comes in as a `Classifier`, three functions the caller builds from its own model code.

Gradio hands the handlers the uploaded file as it was stored, original bytes and name (no
preprocessing), so the decode is the Classifier's, exactly `tinyclf predict`'s, and not PIL's.
"""

from __future__ import annotations

import html
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

# Gradio reports usage to its makers and checks for a newer release unless told not to: a demo of
# a private model has no reason to call out, and on a closed network each try waits for a timeout.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402 - after the setting above, which gradio reads on import
import numpy as np  # noqa: E402

TOP_K = 5
# Uploads larger than this (bytes) are refused by the server before the handler runs: the limit
# tinyclf.data.images puts on an image file (MAX_IMAGE_BYTES).
MAX_UPLOAD = 64 * 2**20
# Uploaded files are deleted an hour after upload, checked every hour: a demo left running for
# days must not fill the disk.
DELETE_CACHE = (3600, 3600)
# How many classifications run at once, page and API together (one Gradio concurrency group), and
# the onnxruntime threads each one uses (0: one per core). Two at once on one thread each: one
# request's decode (OpenCV, no GIL) overlaps the other's model run instead of two threads spinning
# on a batch of one; of four settings measured under 16 users it had the lowest tail latency and the
# most requests/s (docs/benchmarks.md, "The demo under load").
CONCURRENCY_LIMIT = 2
MODEL_THREADS = 1
# Tiny ImageNet's images are 64 px: shown at their own size they are stamps, so the input fills
# its box, scaled up with its shape kept.
CSS = "#image img { width: 100%; height: 100%; object-fit: contain; }"


@dataclass(frozen=True)
class Classifier:
    """A model as the page uses it.

    decode: image file bytes -> S×S×3 uint8 RGB, ValueError (the reason) for a file it cannot use;
    probabilities: uint8 N×S×S×3 -> float32 N×C; top_k: (probabilities, k) -> per image, the k best
    (class dict with "index", "id", "name"; probability)."""

    decode: Callable[[bytes], np.ndarray]
    probabilities: Callable[[np.ndarray], np.ndarray]
    top_k: Callable[[np.ndarray, int], list]


def classify(classifier: Classifier, data: bytes, k: int = TOP_K) -> dict:
    """{"predictions": [{"rank", "index", "id", "name", "probability"}] best first, "latency_ms":
    {"decode", "model", "total"}} for one image file's bytes; ValueError for a file it cannot use."""
    start = time.perf_counter()
    image = classifier.decode(data)
    decoded = time.perf_counter()
    top = classifier.top_k(classifier.probabilities(image[None]), k)[0]
    done = time.perf_counter()
    predictions = [{"rank": rank, "index": int(c["index"]), "id": c["id"], "name": c["name"], "probability": float(p)}
                   for rank, (c, p) in enumerate(top, start=1)]
    latency = {"decode": (decoded - start) * 1e3, "model": (done - decoded) * 1e3, "total": (done - start) * 1e3}
    return {"predictions": predictions, "latency_ms": {key: round(ms, 3) for key, ms in latency.items()}}


def _classify_file(classifier: Classifier, upload) -> dict:
    """classify() on a file the browser or an API client uploaded (a FileData or its dict, as Gradio
    hands it over unprocessed); a gr.Error the user sees, naming the file, when it is not a usable
    image."""
    path = upload["path"] if isinstance(upload, dict) else upload.path
    name = (upload.get("orig_name") if isinstance(upload, dict) else upload.orig_name) or Path(path).name
    try:
        return classify(classifier, Path(path).read_bytes())
    except ValueError as exc:
        raise gr.Error(f"cannot use {name}: {exc}") from None


# ------------------------------------------------------------------------------ rendering
def predictions_html(result: dict | None) -> str:
    """One row per class, best first: name, a probability bar, the percentage. Each row carries
    its class id and probability as data attributes, for scripts and tests reading the page."""
    if not result:
        return '<p id="top5-empty">Upload, paste or take a picture, or click an example below.</p>'
    rows = []
    for p in result["predictions"]:
        pct = 100 * p["probability"]
        rows.append(
            f'<li class="tc-row" data-rank="{p["rank"]}" data-class-id="{html.escape(p["id"])}" '
            f'data-probability="{p["probability"]:.6f}" style="margin:0.35em 0;list-style:none">'
            f'<div style="display:flex;justify-content:space-between;gap:1em">'
            f'<span class="tc-name" style="font-weight:600">{html.escape(p["name"])}</span>'
            f'<span class="tc-prob" style="font-variant-numeric:tabular-nums">{pct:.1f}%</span></div>'
            f'<div style="background:#e5e7eb;border-radius:4px;height:0.6em">'
            f'<div style="background:#f97316;border-radius:4px;height:100%;width:{pct:.2f}%"></div></div></li>')
    return f'<ol id="top5" style="padding:0;margin:0">{"".join(rows)}</ol>'


def latency_text(result: dict | None) -> str:
    if not result:
        return ""
    ms = result["latency_ms"]
    return (f"Latency of this request, on the server: **{ms['total']:.1f} ms** "
            f"(decode {ms['decode']:.1f} ms, model {ms['model']:.1f} ms)")


def facts_html(facts: dict) -> str:
    """The model's facts as a table."""
    top1, top5 = facts.get("val_top1"), facts.get("val_top5")
    accuracy = (f"top-1 {100 * top1:.1f}%" + (f", top-5 {100 * top5:.1f}%" if top5 is not None else "")
                if top1 is not None else "not evaluated")
    rows = [("architecture", facts["model"]), ("parameters", f"{facts['parameters']:,}"),
            ("trained on", f"{facts['dataset']}{' (GENERATED)' if facts['generated'] else ''}"),
            ("classes", f"{facts['num_classes']}"), ("input", f"{facts['image_size']}×{facts['image_size']} px RGB"),
            # demo.split_title's rule, written out: this page is copied into the Space and imports no tinyclf.
            (f"{'test' if facts.get('evaluated_split') == 'test' else 'validation'} accuracy", accuracy),
            ("runs on", facts.get("backend", "?"))]
    table = "".join(f"<tr><th style='text-align:left;padding-right:1em'>{html.escape(k)}</th>"
                    f"<td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f'<table id="model-facts">{table}</table>'


def generated_banner(facts: dict) -> str:
    """A red banner for a model trained on generated data; "" otherwise."""
    if not facts["generated"]:
        return ""
    return ('<div id="generated-banner" style="background:#b91c1c;color:white;padding:0.6em 1em;border-radius:6px;'
            'font-weight:700">GENERATED DATA: this model was trained on a generated dataset, not on real photos. '
            'Its classes and accuracy say nothing about real images.</div>')


# ------------------------------------------------------------------------------ the page
def build_blocks(classifier: Classifier, facts: dict, examples: list[tuple[str, str]], *,
                 title: str | None = None) -> gr.Blocks:
    """The page. `facts`: model, parameters, dataset, generated, num_classes, image_size, backend,
    val_top1 and val_top5 (None when not evaluated). `examples`: (image file, caption) pairs shown
    in a gallery; a click classifies that file."""
    title = title or f"tinyclf: {facts['model']} on {facts['dataset']}"
    with gr.Blocks(title=title, delete_cache=DELETE_CACHE) as blocks:
        gr.Markdown(f"# {html.escape(title)}")
        gr.HTML(generated_banner(facts), visible=facts["generated"])
        with gr.Row():
            with gr.Column():
                image = gr.Image(type="filepath", image_mode=None, format="png", label="Image", height=320,
                                 sources=["upload", "clipboard", "webcam"], elem_id="image")
            with gr.Column():
                top5 = gr.HTML(predictions_html(None), elem_id="predictions")
                latency = gr.Markdown(elem_id="latency")
                gr.HTML(facts_html(facts), elem_id="facts")
        gallery = gr.Gallery(value=examples, label="Validation images: click one", columns=8, height=300,
                             allow_preview=False, interactive=False, elem_id="examples", visible=bool(examples))
        _wire(classifier, image, gallery, [top5, latency], examples)
    return blocks


def _wire(classifier: Classifier, image, gallery, outputs, examples) -> None:
    """The page's events, and the API endpoint (called inside the Blocks context)."""
    def show(upload):
        result = _classify_file(classifier, upload) if upload else None
        return predictions_html(result), latency_text(result)

    def pick(evt: gr.SelectData):
        return examples[evt.index][0]

    def predict(image: gr.FileData) -> dict:
        """Top-5 classes of an image file: {"predictions": [{"rank", "index", "id", "name",
        "probability"}], "latency_ms": {"decode", "model", "total"}}."""
        return _classify_file(classifier, image)

    # The page and the API share one concurrency group, so CONCURRENCY_LIMIT bounds the model's work
    # whoever asks; each event would otherwise get its own group of Gradio's default limit, 1.
    limits = {"concurrency_limit": CONCURRENCY_LIMIT, "concurrency_id": "classify"}
    # preprocess=False: the handler gets the upload as Gradio stored it. gr.Image's own preprocessing
    # opens the file with PIL first, which refuses a decompression bomb with PIL's words (or a file
    # that is not an image with a traceback's) before tinyclf's decoder can name the problem.
    image.change(show, image, outputs, api_visibility="private", preprocess=False, **limits)
    gallery.select(pick, None, image, api_visibility="private", concurrency_limit=None)  # no model work
    # /predict is the one endpoint, with a JSON answer. gradio_client and the page always go through
    # Gradio's queue (gradio 6.31), where the limits apply; queue=False only also opens the one-call
    # REST route (POST /gradio_api/run/predict) to plain HTTP clients, which skips the queue's limit
    # (Gradio's 40 worker threads bound it).
    gr.api(predict, api_name="predict", queue=False, **limits)


def launch_options(host: str, port: int | None) -> dict:
    """Blocks.launch() keyword arguments for serving the page on host:port (None: Gradio's own
    choice, GRADIO_SERVER_PORT or 7860)."""
    return {"server_name": host, "server_port": port, "max_file_size": MAX_UPLOAD, "show_error": True,
            "footer_links": ["api", "gradio"], "css": CSS}
