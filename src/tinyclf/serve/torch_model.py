"""The trained PyTorch model with its input handling built in: RGB uint8 N×S×S×3 in, (logits,
probabilities) out. The same module serves `tinyclf predict --backend torch` and is what the ONNX
export traces, so both backends normalize exactly as the evaluate stage does
(`tinyclf.loading.normalize.to_model_input`: x · 1/(255·std) − mean/std)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from tinyclf.model.file import load_model_file


class ServingModel(nn.Module):
    """`model` behind uint8 NHWC → float NCHW, normalization, and a softmax of the logits divided by
    the model file's temperature (`tinyclf.evaluate.calibration`; the logits themselves unchanged)."""

    def __init__(self, model: nn.Module, mean, std, temperature: float = 1.0):
        super().__init__()
        self.model = model
        self.register_buffer("inverse_temperature", torch.tensor(1.0 / temperature, dtype=torch.float32),
                             persistent=False)
        std_t = torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        mean_t = torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        # Buffers, so they follow .to(device) and become constants of the exported graph.
        self.register_buffer("scale", 1.0 / (255.0 * std_t), persistent=False)
        self.register_buffer("shift", mean_t / std_t, persistent=False)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = images.permute(0, 3, 1, 2).float()
        logits = self.model(x * self.scale - self.shift)
        return logits, (logits * self.inverse_temperature).softmax(dim=1)


def square_size(meta: dict, path: Path) -> int:
    """The model's square input side; a model trained on non-square images cannot be served square."""
    size = meta["image_size"]
    if not isinstance(size, int):
        raise ValueError(f"{path}: the model was trained on {size[0]}x{size[1]} images; serving needs square ones")
    return size


def load_serving_model(path: str | Path, device: str = "cpu") -> tuple[ServingModel, dict]:
    """(ServingModel in eval mode on `device`, the model file's meta); ModelFileError naming `path`."""
    model, meta = load_model_file(path, map_location="cpu")
    # Model files from before calibration have no temperature: their probabilities are the plain softmax.
    serving = ServingModel(model, meta["mean"], meta["std"], float(meta.get("temperature", 1.0))).eval()
    return serving.to(device), meta
