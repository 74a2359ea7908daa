"""Using a trained model: the ONNX export and its parity check, `tinyclf predict`, the Gradio demo
and the Hugging Face Space bundle. Everything here reads a model file or an ONNX file, never the
training code; `onnx_model.py` imports neither torch nor tinyclf, so the Space can copy it as is."""
