"""Models: the reference `tiny_resnet50` and any timm architecture, built by name.

`create_model(name, num_classes)` builds `tiny_resnet50` (ours, see `../shared/reference-model.md`)
or passes any other name to `timm.create_model(name, pretrained=False, ...)`.

Only the architecture lives here, because the train stage depends on this file: the model file
(`tinyclf.model.file`), the summary table (`tinyclf.model.summary`) and the environment record
(`tinyclf.environment`) are separate modules, so editing them re-runs only the stages that use them.
"""

from __future__ import annotations

import difflib
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from tinyclf.errors import TinyclfError


class ModelError(TinyclfError, ValueError):
    """An unknown model name or an impossible model request."""


# --------------------------------------------------------------------------------------------
# The reference model
# --------------------------------------------------------------------------------------------
class GlobalAvgPool2d(nn.AdaptiveAvgPool2d):
    """AdaptiveAvgPool2d(1) computed as a mean over H and W: the same numbers, and a backward with a
    deterministic CUDA kernel (AdaptiveAvgPool2d's CUDA backward has none, so `train.deterministic`
    would refuse to train)."""

    def __init__(self) -> None:
        super().__init__(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3), keepdim=True)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (carries the stride) -> 1x1 expand, plus a shortcut, then ReLU. With
    `drop_path` > 0 the residual branch is dropped per sample with that probability in training
    (stochastic depth, timm's DropPath, as timm's ResNet places it)."""

    def __init__(self, in_channels: int, width: int, out_channels: int, stride: int = 1,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        else:
            self.shortcut = nn.Identity()
        # None rather than an Identity when off: the default model's module table stays as published.
        self.drop_path = _drop_path(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Functional ReLUs: they hold no state, and one module per call would only pad the table.
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = F.relu(self.bn2(self.conv2(out)), inplace=True)
        out = self.bn3(self.conv3(out))
        if self.drop_path is not None:
            out = self.drop_path(out)
        return F.relu(out + self.shortcut(x), inplace=True)


def _drop_path(rate: float) -> nn.Module | None:
    if rate <= 0:
        return None
    from timm.layers import DropPath

    return DropPath(rate)


class TinyResNet50(nn.Module):
    """The ResNet-50 variant of the reference Tiny ImageNet result (64x64 input, 20.5M params at 200 classes).

    Differs from torchvision/timm `resnet50`: a 3x3 stride-1 stem conv with bias and no max-pool;
    every stage downsamples (stage 1 included); a stage's first block is `in_channels / 4` wide;
    the head is a 1x1 conv with bias after global average pooling.
    """

    STAGE_BLOCKS = (3, 4, 6, 3)
    STAGE_OUT = (256, 512, 1024, 2048)

    def __init__(self, num_classes: int, in_chans: int = 3, *, zero_init_last: bool = True,
                 drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, 64, 3, stride=1, padding=1, bias=True),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
        )
        in_channels = 64
        stages = []
        # Stochastic depth grows linearly with depth, 0 for the first block (timm's ResNet rule).
        total = sum(self.STAGE_BLOCKS)
        rates = iter([drop_path_rate * index / (total - 1) for index in range(total)])
        for blocks, out_channels in zip(self.STAGE_BLOCKS, self.STAGE_OUT):
            layers = [Bottleneck(in_channels, in_channels // 4, out_channels, stride=2, drop_path=next(rates))]
            layers += [Bottleneck(out_channels, out_channels // 4, out_channels, drop_path=next(rates))
                       for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*layers))
            in_channels = out_channels
        self.stage1, self.stage2, self.stage3, self.stage4 = stages
        self.num_features = in_channels
        self.head = nn.Sequential(
            GlobalAvgPool2d(),
            nn.Conv2d(in_channels, num_classes, 1, bias=True),
            nn.Flatten(1),
        )
        self._init_weights(zero_init_last)

    def _init_weights(self, zero_init_last: bool) -> None:
        classifier = self.head[1]
        for module in self.modules():
            if isinstance(module, nn.Conv2d) and module is not classifier:
                # He et al. 2015 for convs followed by ReLU (torchvision's and timm's choice).
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        # The classifier keeps PyTorch's default init (the same as nn.Linear's): a 1x1 conv after
        # pooling *is* a linear layer, and fan-out Kaiming would start it with needlessly large logits.
        if zero_init_last:
            # Zero gamma on each block's last BN makes every residual branch output 0 at the start,
            # so each block begins as its shortcut: better-conditioned early training, especially
            # with large batches and warmup (Goyal et al. 2017; timm's resnet default is the same).
            for module in self.modules():
                if isinstance(module, Bottleneck):
                    nn.init.zeros_(module.bn3.weight)

    def group_matcher(self, coarse: bool = False) -> dict[str, str]:
        """timm's layer grouping (used by layer-wise lr decay, `timm.optim`): the stem, then one group per
        block (per stage when `coarse`); what no pattern matches, the classifier, comes last."""
        return {"stem": r"^stem", "blocks": r"^stage(\d+)" if coarse else r"^stage(\d+)\.(\d+)"}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.stage1(x)
        x = self.stage2(x)
        x = self.stage3(x)
        return self.stage4(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def tiny_resnet50(num_classes: int, *, zero_init_last: bool = True, in_chans: int = 3,
                  drop_path_rate: float = 0.0) -> TinyResNet50:
    return TinyResNet50(num_classes, in_chans, zero_init_last=zero_init_last, drop_path_rate=drop_path_rate)


# A plain dict rather than timm's @register_model: timm passes pretrained_cfg and friends to
# registered entry points, which our constructor has no use for.
MODELS: dict[str, Callable[..., nn.Module]] = {"tiny_resnet50": tiny_resnet50}


def _timm():
    import timm  # imported lazily: it takes a second and only non-reference models need it

    return timm


def available_models() -> list[str]:
    """Our own model names followed by every timm architecture name."""
    return sorted(MODELS) + _timm().list_models()


def create_model(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
    """Build `name` from scratch with a `num_classes`-way classifier.

    `tiny_resnet50` is ours; any other name is a timm architecture (`resnet18`, `convnext_nano`,
    a tagged name such as `resnet50.a1_in1k` is accepted; weights are never downloaded).
    Extra keyword arguments go to the constructor (e.g. `zero_init_last=False`).
    Raises ModelError for an unknown name, listing close matches.
    """
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ModelError(f"num_classes must be a positive integer, got {num_classes!r}")
    check_model_name(name)
    if name in MODELS:
        return MODELS[name](num_classes, **kwargs)
    return _timm().create_model(name, pretrained=False, num_classes=num_classes, **kwargs)


def check_model_name(name: str) -> None:
    """ModelError, listing close matches, unless `name` is ours or a timm architecture (builds nothing)."""
    if name in MODELS or _timm().is_model(name):
        return
    close = difflib.get_close_matches(name, available_models(), n=5, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see timm.list_models() for the choices"
    raise ModelError(f"unknown model {name!r} (neither tinyclf's {', '.join(sorted(MODELS))} nor a timm model){hint}")
