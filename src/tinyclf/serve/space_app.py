"""A tinyclf image classifier as a Gradio app: the Hugging Face Space's app.py.

`tinyclf space` copies this file into the Space folder as app.py, next to what it imports: the
ONNX model and its metadata reader (onnx_model.py), tinyclf's image decoder (images.py) and the page
(webui.py). It needs numpy, OpenCV, onnxruntime and Gradio only (requirements.txt): no torch, no
tinyclf. It is not imported inside the tinyclf package, only run in the folder.

An image is decoded exactly as `tinyclf predict` decodes it (the same images.py, the model's input
size and fit from the ONNX metadata), so the top-5 here equal `tinyclf predict model.onnx`'s.

Run it locally: `python app.py`, then open http://127.0.0.1:7860 (GRADIO_SERVER_NAME and
GRADIO_SERVER_PORT change the address; Hugging Face sets them on a Space).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from images import MAX_IMAGE_BYTES, decode_photo
from onnx_model import OnnxModel, top_k
from webui import MODEL_THREADS, Classifier, build_blocks, launch_options

HERE = Path(__file__).resolve().parent


def load_classifier(model: OnnxModel) -> Classifier:
    """The model as the page uses it; the decode is tinyclf.serve.predictor.read_image's."""
    meta = model.meta

    def decode(data: bytes):
        if len(data) > MAX_IMAGE_BYTES:
            raise ValueError(f"{len(data):,} bytes, over the limit of {MAX_IMAGE_BYTES:,} (images.MAX_IMAGE_BYTES)")
        if not data:
            raise ValueError("empty file")
        return decode_photo(data, meta["image_size"], fit=meta["fit"]).image

    return Classifier(decode=decode, probabilities=lambda images: model.run(images)[1],
                      top_k=lambda probs, k: top_k(probs, meta["classes"], k))


def load_demo():
    """The page for model.onnx, facts.json and the example images listed in examples.json."""
    # The page runs CONCURRENCY_LIMIT classifications at once, each on MODEL_THREADS threads (webui).
    model = OnnxModel(HERE / "model.onnx", threads=MODEL_THREADS)
    facts = json.loads((HERE / "facts.json").read_text())
    examples = [(str(HERE / "examples" / e["file"]), e["caption"])
                for e in json.loads((HERE / "examples.json").read_text())]
    return build_blocks(load_classifier(model), facts, examples)


# A module-level `demo`: what Hugging Face runs, and what `gradio app.py` (auto-reload) looks for.
demo = load_demo()

if __name__ == "__main__":
    port = os.environ.get("GRADIO_SERVER_PORT")
    demo.launch(**launch_options(os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"), int(port) if port else None))
