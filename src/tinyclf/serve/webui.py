"""The web page of a trained classifier, shared by `tinyclf demo` and the Hugging Face Space.

An image (uploaded, pasted or from the webcam, or a validation image clicked in the gallery) goes
in; the top-5 classes come out with their names and probability bars, and the server-side latency
of the request (decode, model). Below a confidence the page's slider sets, the answer is "I don't
know" (`tinyclf predict --min-confidence`): the slider starts at the facts' `min_confidence` (the
threshold the evaluate stage proposed, or the command's --min-confidence), 0 answering always. The
model's facts sit beside it, under a GENERATED banner when the model was trained on generated data. The same answer is an API endpoint, `/predict`
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


UNKNOWN = "unknown"  # the answer below the threshold: `tinyclf predict --min-confidence`'s word


def classify(classifier: Classifier, data: bytes, k: int = TOP_K, min_confidence: float | None = None) -> dict:
    """{"predictions": [{"rank", "index", "id", "name", "probability"}] best first, "latency_ms":
    {"decode", "model", "total"}} for one image file's bytes; ValueError for a file it cannot use.
    With `min_confidence` also "min_confidence" and "answer": the top-1 class id, or "unknown" when its
    probability is below the threshold."""
    start = time.perf_counter()
    image = classifier.decode(data)
    decoded = time.perf_counter()
    top = classifier.top_k(classifier.probabilities(image[None]), k)[0]
    done = time.perf_counter()
    predictions = [{"rank": rank, "index": int(c["index"]), "id": c["id"], "name": c["name"], "probability": float(p)}
                   for rank, (c, p) in enumerate(top, start=1)]
    latency = {"decode": (decoded - start) * 1e3, "model": (done - decoded) * 1e3, "total": (done - start) * 1e3}
    result = {"predictions": predictions, "latency_ms": {key: round(ms, 3) for key, ms in latency.items()}}
    if min_confidence is not None:
        result.update(min_confidence=min_confidence, answer=answer(result, min_confidence))
    return result


def answer(result: dict, min_confidence: float | None) -> str:
    """The top-1 class id, or UNKNOWN when its probability is below `min_confidence` (None or 0: always
    the top-1)."""
    best = result["predictions"][0]
    return UNKNOWN if min_confidence and best["probability"] < min_confidence else best["id"]


def _classify_file(classifier: Classifier, upload, min_confidence: float | None = None) -> dict:
    """classify() on a file the browser or an API client uploaded (a FileData or its dict, as Gradio
    hands it over unprocessed); a gr.Error the user sees, naming the file, when it is not a usable
    image."""
    path = upload["path"] if isinstance(upload, dict) else upload.path
    name = (upload.get("orig_name") if isinstance(upload, dict) else upload.orig_name) or Path(path).name
    try:
        return classify(classifier, Path(path).read_bytes(), min_confidence=min_confidence)
    except ValueError as exc:
        # Until the user closes it (Gradio's default closes it after 10 s): the message names the file
        # to replace, and a busy machine once took longer than that to show the page's next state.
        raise gr.Error(f"cannot use {name}: {exc}", duration=None) from None


# ------------------------------------------------------------------------------ rendering
def predictions_html(result: dict | None, min_confidence: float | None = None) -> str:
    """One row per class, best first: name, a probability bar, the percentage. Each row carries
    its class id and probability as data attributes, for scripts and tests reading the page; the list
    carries the answer (`data-answer`: the top-1 id, or "unknown" below `min_confidence`, said above
    the list in words)."""
    if not result:
        return '<p id="top5-empty">Upload, paste or take a picture, or click an example below.</p>'
    said = answer(result, min_confidence)
    best = result["predictions"][0]
    unknown = ("" if said != UNKNOWN else
               f'<p id="unknown-answer" style="font-weight:700;margin:0 0 0.5em">I don\'t know: the best guess, '
               f'{html.escape(best["name"])}, has {100 * best["probability"]:.1f}%, under the '
               f'{100 * min_confidence:.1f}% threshold (the slider below).</p>')
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
    return (f'{unknown}<ol id="top5" data-answer="{html.escape(said)}" style="padding:0;margin:0">'
            f'{"".join(rows)}</ol>')


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
            ("\"I don't know\" below", unknown_setting(facts)), ("runs on", facts.get("backend", "?"))]
    table = "".join(f"<tr><th style='text-align:left;padding-right:1em'>{html.escape(k)}</th>"
                    f"<td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f'<table id="model-facts">{table}</table>'


def unknown_setting(facts: dict) -> str:
    """Where the page's "I don't know" threshold starts, and who set it."""
    threshold = facts.get("min_confidence")
    if not threshold:
        return "off (the slider sets one)"
    return f"{100 * threshold:.1f}% ({facts.get('min_confidence_from') or 'set by the command'})"


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
                threshold = gr.Slider(0, 0.99, value=facts.get("min_confidence") or 0, step=0.001,
                                      label="Answer \"I don't know\" below this top-1 probability (0: always answer)",
                                      elem_id="min-confidence")
                gr.HTML(facts_html(facts), elem_id="facts")
        gallery = gr.Gallery(value=examples, label="Validation images: click one", columns=8, height=300,
                             allow_preview=False, interactive=False, elem_id="examples", visible=bool(examples))
        _wire(classifier, Inputs(image, gallery, threshold), [top5, latency], examples, facts.get("min_confidence"))
    return blocks


@dataclass(frozen=True)
class Inputs:
    """The page's input components."""

    image: gr.Image
    gallery: gr.Gallery
    threshold: gr.Slider


def _wire(classifier: Classifier, inputs: Inputs, outputs, examples, min_confidence: float | None) -> None:
    """The page's events, and the API endpoint (called inside the Blocks context). The last answer
    stays in the session's state, so moving the slider redraws it without running the model again."""
    last = gr.State(None)

    def show(upload, threshold):
        result = _classify_file(classifier, upload) if upload else None
        return predictions_html(result, threshold), latency_text(result), result

    def redraw(result, threshold):
        return predictions_html(result, threshold)

    def pick(evt: gr.SelectData):
        return examples[evt.index][0]

    def predict(image: gr.FileData) -> dict:
        """Top-5 classes of an image file: {"predictions": [{"rank", "index", "id", "name",
        "probability"}], "latency_ms": {"decode", "model", "total"}}, and with an "I don't know"
        threshold set (the page's starting one) "min_confidence" and "answer" (class id or "unknown")."""
        return _classify_file(classifier, image, min_confidence or None)

    # The page and the API share one concurrency group, so CONCURRENCY_LIMIT bounds the model's work
    # whoever asks; each event would otherwise get its own group of Gradio's default limit, 1.
    limits = {"concurrency_limit": CONCURRENCY_LIMIT, "concurrency_id": "classify"}
    # preprocess=False: the handler gets the upload as Gradio stored it. gr.Image's own preprocessing
    # opens the file with PIL first, which refuses a decompression bomb with PIL's words (or a file
    # that is not an image with a traceback's) before tinyclf's decoder can name the problem.
    inputs.image.change(show, [inputs.image, inputs.threshold], [*outputs, last], api_visibility="private",
                        preprocess=False, **limits)
    inputs.threshold.change(redraw, [last, inputs.threshold], outputs[0], api_visibility="private",
                            concurrency_limit=None)  # no model work
    inputs.gallery.select(pick, None, inputs.image, api_visibility="private", concurrency_limit=None)
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
