"""The only reader of params.yaml: typed, validated parameter objects with one-line errors.

Every key is declared once below (type, allowed values or range). Loading checks the whole file
before any stage does work, so a typo or a wrong value fails in one line naming the key:

    ParamsError: params.yaml: unknown key 'train.learning_rate' (did you mean 'train.lr'?)
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tinyclf.data.formats import registry
from tinyclf.errors import TinyclfError

# Names users bring from other tools (timm's train.py, Ultralytics, MMPretrain, Lightning, Hugging Face
# Trainer, torchvision's references), which spelling alone would not map to ours: `learning_rate` is
# closer to `decay_rate` than to `lr`. Written with underscores (dashes are read as underscores). A
# name without a dot is ours in the section it was typed in (used where that section has it); a dotted
# one lives in another section (`train.image_size` is data.image_size).
KEY_ALIASES = {
    **dict.fromkeys(("learning_rate", "lr_rate", "lr0", "base_lr", "lr_base", "init_lr", "initial_lr",
                     "max_lr"), "lr"),
    **dict.fromkeys(("num_epochs", "n_epochs", "max_epochs", "num_train_epochs", "total_epochs"), "epochs"),
    **dict.fromkeys(("bs", "batch", "batchsize", "train_batch_size", "per_device_train_batch_size",
                     "batch_size_per_gpu", "samples_per_gpu"), "batch_size"),
    **dict.fromkeys(("wd", "l2", "weight_decay_rate"), "weight_decay"),
    **dict.fromkeys(("optimizer", "optim", "optimizer_name"), "opt"),
    **dict.fromkeys(("scheduler", "lr_scheduler", "lr_scheduler_type", "lr_schedule", "cos_lr"), "sched"),
    **dict.fromkeys(("arch", "architecture", "backbone", "model_name", "network", "net"), "model"),
    **dict.fromkeys(("warmup", "lr_warmup_epochs"), "warmup_epochs"),
    **dict.fromkeys(("warmup_lr_init", "lr_warmup_init"), "warmup_lr"),
    **dict.fromkeys(("lr_min", "eta_min", "final_lr"), "min_lr"),
    **dict.fromkeys(("amp", "mixed_precision", "amp_dtype", "dtype", "fp16", "bf16", "half"), "precision"),
    **dict.fromkeys(("num_workers", "dataloader_num_workers", "n_workers"), "workers"),
    **dict.fromkeys(("smoothing", "label_smooth", "label_smooth_val", "label_smoothing_factor"), "label_smoothing"),
    **dict.fromkeys(("model_ema", "use_ema"), "ema"),
    **dict.fromkeys(("model_ema_decay", "ema_rate", "ema_momentum"), "ema_decay"),
    **dict.fromkeys(("grad_clip", "clip_grad_norm", "max_grad_norm", "gradient_clip_val"), "clip_grad"),
    **dict.fromkeys(("grad_accum_steps", "gradient_accumulation_steps", "accumulate_grad_batches", "accum_iter"),
                    "accum_steps"),
    **dict.fromkeys(("aa", "auto_augment", "autoaugment", "randaugment", "rand_augment"), "policy"),
    **dict.fromkeys(("reprob", "erasing", "random_erase", "re_prob"), "random_erasing"),
    **dict.fromkeys(("fliplr", "horizontal_flip", "hflip_prob"), "hflip"),
    **dict.fromkeys(("mixup_alpha",), "mixup"),
    **dict.fromkeys(("cutmix_alpha",), "cutmix"),
    **dict.fromkeys(("scale", "crop_scale"), "rrc_scale"),
    **dict.fromkeys(("torchcompile", "torch_compile"), "compile"),
    **dict.fromkeys(("sync_batchnorm",), "sync_bn"),
    **dict.fromkeys(("pretrained", "initial_checkpoint", "weights"), "init"),
    **dict.fromkeys(("drop_path_rate", "stochastic_depth", "drop_connect", "drop_connect_rate"), "drop_path"),
    **dict.fromkeys(("lr_layer_decay", "layerwise_lr_decay", "layer_wise_lr_decay", "layer_lr_decay", "ld"),
                    "layer_decay"),
    **dict.fromkeys(("freeze_backbone", "freeze_layers", "frozen"), "freeze"),
    **dict.fromkeys(("freeze_epoch", "unfreeze_epoch", "unfreeze_at", "warmup_head_epochs", "probe_epochs"),
                    "freeze_epochs"),
    **dict.fromkeys(("head_lr", "head_lr_mult", "classifier_lr_scale", "lr_head_scale", "fc_lr_scale"),
                    "head_lr_scale"),
    **dict.fromkeys(("gpus", "num_gpus", "devices"), "nproc_per_node"),
    **dict.fromkeys(("early_stopping_patience", "early_stop", "early_stopping", "es_patience"), "patience"),
    **dict.fromkeys(("eval_metric", "monitor", "metric_for_best_model", "save_best"), "select_metric"),
    **dict.fromkeys(("early_stopping_threshold", "min_improvement"), "min_delta"),
    **dict.fromkeys(("image_size", "img_size", "imgsz", "input_size", "resolution", "crop_size", "train_crop_size"),
                    "data.image_size"),
    **dict.fromkeys(("dataset", "dataset_name", "data"), "data.dataset"),
    **dict.fromkeys(("data_dir", "data_path", "data_root"), "download.source"),
}


# What train.select_metric may name: the val metrics each epoch logs (tinyclf.train.selection).
SELECT_METRICS = ("val/top1", "val/top5", "val/loss")

# Values that an earlier version accepted under another name.
RENAMED_CHOICES = {"batched": "device"}  # train.aug_backend


class ParamsError(TinyclfError, ValueError):
    """A parameter file that cannot be used; the message names the key."""


def _spec(*, choices=None, ge=None, gt=None, le=None, lt=None, pattern=None, length=None):
    """Field metadata: constraints checked by the loader."""
    return {"choices": choices, "ge": ge, "gt": gt, "le": le, "lt": lt, "pattern": pattern, "length": length}


def _f(default, **constraints):
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=_spec(**constraints))
    return field(default=default, metadata=_spec(**constraints))


@dataclass(frozen=True)
class DataParams:
    dataset: str = _f("tiny-imagenet", choices=registry.names())
    image_size: int = _f(0, ge=0, le=1024)
    # folder datasets: how a non-square image becomes square, and the share of each class held out
    # for validation when the source has no val/ folder. The choices are tinyclf.data.images.FITS,
    # copied: importing that module loads OpenCV, which every stage would pay for just to read params
    # (tests/data/test_images.py checks the two are equal).
    resize: str = _f("center_crop", choices=("center_crop", "squash", "pad"))
    val_fraction: float = _f(0.2, gt=0, lt=1)
    # folder datasets without a test/ folder: the share of each class held out as a test split;
    # official datasets: the share of train carved out as val, so the official val set becomes a
    # test split never used for choosing (tinyclf.data.holdout).
    test_fraction: float = _f(0.0, ge=0, lt=1)
    val_from_train: float = _f(0.0, ge=0, lt=1)
    split_seed: int = _f(0, ge=0)
    # A CSV of label fixes (relabel or drop, by source) that preprocess applies; relative to the
    # repository root, where dvc.yaml runs preprocess and watches it (tinyclf.data.corrections).
    corrections: str = _f("corrections.csv", pattern=r"\S(.*\S)?")


@dataclass(frozen=True)
class GeneratedParams:
    num_classes: int = _f(10, ge=2, le=200)
    train_per_class: int = _f(100, ge=1, le=5000)
    val_per_class: int = _f(20, ge=1, le=1000)
    test_images: int = _f(20, ge=0, le=10000)
    seed: int = _f(0, ge=0)


@dataclass(frozen=True)
class DownloadParams:
    source: str = _f("official")
    md5: str = _f("", pattern=r"(|[0-9a-fA-F]{32})")
    retries: int = _f(5, ge=1, le=100)
    timeout: float = _f(60.0, gt=0)
    generated: GeneratedParams = field(default_factory=GeneratedParams)

    @property
    def kind(self) -> str:
        """official | generated | url | path."""
        if self.source in ("official", "generated"):
            return self.source
        if re.match(r"^https?://", self.source):
            return "url"
        return "path"


@dataclass(frozen=True)
class PreprocessParams:
    workers: int = _f(0, ge=0, le=256)
    on_corrupt: str = _f("fail", choices=("fail", "skip"))


@dataclass(frozen=True)
class TrainParams:
    model: str = _f("tiny_resnet50")
    epochs: int = _f(150, ge=1, le=10000)
    batch_size: int = _f(512, ge=1)
    lr: float = _f(0.1, gt=0)
    opt: str = _f("sgd")
    momentum: float = _f(0.9, ge=0, lt=1)
    weight_decay: float = _f(5e-4, ge=0)
    sched: str = _f("cosine", choices=("cosine", "step", "multistep", "plateau", "poly", "tanh"))
    warmup_epochs: int = _f(5, ge=0)
    warmup_lr: float = _f(1e-5, ge=0)
    min_lr: float = _f(1e-6, ge=0)
    cooldown_epochs: int = _f(0, ge=0)
    decay_epochs: int = _f(30, ge=1)
    decay_rate: float = _f(0.1, gt=0, le=1)
    label_smoothing: float = _f(0.1, ge=0, lt=1)
    mixup: float = _f(0.2, ge=0)
    cutmix: float = _f(1.0, ge=0)
    mixup_prob: float = _f(1.0, ge=0, le=1)
    mixup_switch_prob: float = _f(0.5, ge=0, le=1)
    ema: bool = _f(True)
    ema_decay: float = _f(0.9998, gt=0, lt=1)
    save_weights: str = _f("ema", choices=("ema", "raw"))
    # The model file's epoch: the best by select_metric on val, or the last; early stop after
    # `patience` epochs without an improvement larger than min_delta (tinyclf.train.selection).
    keep: str = _f("best", choices=("best", "last"))
    select_metric: str = _f("val/top1", choices=SELECT_METRICS)
    patience: int = _f(0, ge=0, le=10000)
    min_delta: float = _f(0.0, ge=0)
    clip_grad: float = _f(0.0, ge=0)
    accum_steps: int = _f(1, ge=1, le=1024)
    crop: str = _f("random_resized_crop", choices=("pad_crop", "random_resized_crop"))
    pad: int = _f(4, ge=0, le=64)
    rrc_scale: list = _f([0.35, 1.0], length=2)
    hflip: float = _f(0.5, ge=0, le=1)
    color_jitter: float = _f(0.0, ge=0, le=1)
    policy: str = _f("none", choices=("none", "trivial_augment", "randaugment"))
    random_erasing: float = _f(0.0, ge=0, le=1)
    aug_backend: str = _f("auto", choices=("auto", "workers", "device"))
    # The device backend's splits: on the GPU when they fit (auto), always there (device), or in host memory.
    device_data: str = _f("auto", choices=("auto", "device", "host"))
    precision: str = _f("auto", choices=("auto", "fp32", "bf16", "fp16"))
    channels_last: bool = _f(True)
    compile: bool | str = _f("auto")  # true, false or auto
    workers: int = _f(2, ge=0, le=256)
    prefetch_factor: int = _f(4, ge=1, le=64)
    nproc_per_node: int = _f(1, ge=1, le=1024)
    sync_bn: bool = _f(False)
    seed: int = _f(42, ge=0)
    deterministic: bool = _f(False)
    checkpoint_every_steps: int = _f(0, ge=0)
    sync_every: int = _f(50, ge=1, le=100000)
    # Starting weights: none (from scratch), a path (tinyclf model file, or a timm/torchvision state
    # dict as .pt/.pth/.safetensors), or timm:<name> (timm's pretrained weights; needs the internet).
    init: str = _f("none")
    # Class-balanced sampling of the train split: none or sampler.
    balance: str = _f("none", choices=("none", "sampler"))
    # Fine-tuning (tinyclf.train.freeze, tinyclf.train.param_groups): train only the classifier for
    # the first freeze_epochs epochs (freeze: backbone); layer-wise lr decay (0 or 1: off); the
    # classifier's lr as a multiple of the rest; stochastic depth (timm's drop_path_rate).
    freeze: str = _f("none", choices=("none", "backbone"))
    freeze_epochs: int = _f(0, ge=0, le=10000)
    layer_decay: float = _f(0.0, ge=0, le=1)
    head_lr_scale: float = _f(1.0, gt=0, le=1000)
    drop_path: float = _f(0.0, ge=0, lt=1)

    @property
    def mixup_active(self) -> bool:
        return self.mixup_prob > 0 and (self.mixup > 0 or self.cutmix > 0)


@dataclass(frozen=True)
class EvaluateParams:
    batch_size: int = _f(256, ge=1)
    workers: int = _f(2, ge=0, le=256)
    tta_flip: bool = _f(False)
    ece_bins: int = _f(15, ge=1, le=1000)
    misclassified_examples: int = _f(24, ge=0, le=400)
    confused_pairs: int = _f(20, ge=1, le=1000)


@dataclass(frozen=True)
class AuditParams:
    # auto: on for your own photo folders (data.dataset: folder), off for the official datasets
    enabled: bool | str = _f("auto")  # true, false or auto
    batch_size: int = _f(256, ge=1)
    workers: int = _f(2, ge=0, le=256)
    # train images' out-of-sample probabilities for cleanlab (tinyclf.audit.label_issues says why)
    train_probs: str = _f("logistic", choices=("logistic", "knn", "model"))
    folds: int = _f(5, ge=2, le=20)
    neighbours: int = _f(5, ge=1, le=100)
    duplicate_pixel_similarity: float = _f(0.97, gt=0, le=1)
    duplicate_hash_distance: int = _f(12, ge=0, le=64)
    outlier_fence: float = _f(3.0, ge=0)
    sheet_images: int = _f(24, ge=1, le=200)

    def runs_on(self, dataset: str) -> bool:
        """Whether the audit runs for `dataset` (auto: only for own photos)."""
        if self.enabled == "auto":
            return registry.get(dataset).own_images
        return bool(self.enabled)


@dataclass(frozen=True)
class SummarizeParams:
    highlight_classes: int = _f(10, ge=1, le=200)
    price_per_gpu_hour: float = _f(0.0, ge=0)


@dataclass(frozen=True)
class Params:
    data: DataParams = field(default_factory=DataParams)
    download: DownloadParams = field(default_factory=DownloadParams)
    preprocess: PreprocessParams = field(default_factory=PreprocessParams)
    train: TrainParams = field(default_factory=TrainParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    audit: AuditParams = field(default_factory=AuditParams)
    summarize: SummarizeParams = field(default_factory=SummarizeParams)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check_cross_field(params: Params, where: str) -> None:
    """Constraints that involve more than one key."""
    t, d, g = params.train, params.data, params.download.generated
    fmt = registry.get(d.dataset)
    if params.download.kind == "generated":
        _check_generated_classes(fmt, g.num_classes, where)
    if fmt.own_images:
        if d.image_size == 0:
            raise ParamsError(f"{where}: data.image_size must be set (> 0) for data.dataset={fmt.name}: own images "
                              "have no common size; typical: 64-224 (e.g. -S data.image_size=96)")
        if params.download.kind in ("official", "generated"):
            raise ParamsError(f"{where}: download.source must be your images for data.dataset={fmt.name}: a "
                              f"directory, a .zip/.tar/.tar.gz archive or an http(s) URL of one; got {params.download.source!r}")
    _check_holdout(d, fmt, where)
    if t.init.startswith("timm:") and not t.init[len("timm:"):]:
        raise ParamsError(f"{where}: train.init timm:<name> needs a model name, e.g. timm:resnet50.a1_in1k")
    _check_freeze(t, where)
    lo, hi = t.rrc_scale
    if not (0 < lo <= hi <= 1):
        raise ParamsError(f"{where}: train.rrc_scale must be [min, max] with 0 < min <= max <= 1, got {t.rrc_scale}")
    if t.aug_backend == "device" and t.policy != "none":
        raise ParamsError(
            f"{where}: train.policy={t.policy} is albumentations, per image: it needs train.aug_backend "
            "workers (or auto, which picks workers for it); the device backend does crop, flip, color jitter "
            "and erasing"
        )
    if t.min_lr > t.lr:
        raise ParamsError(f"{where}: train.min_lr ({t.min_lr}) is larger than train.lr ({t.lr})")


def _check_freeze(t: TrainParams, where: str) -> None:
    """freeze: backbone needs an epoch count within the run and starting weights worth keeping."""
    if t.freeze == "none":
        if t.freeze_epochs:
            raise ParamsError(f"{where}: train.freeze_epochs={t.freeze_epochs} has no effect with train.freeze: none; "
                              "set train.freeze=backbone to train only the classifier for those epochs")
        return
    if not 1 <= t.freeze_epochs <= t.epochs:
        raise ParamsError(f"{where}: train.freeze=backbone needs train.freeze_epochs between 1 and train.epochs "
                          f"({t.epochs}), got {t.freeze_epochs}: the epochs that train only the classifier")
    if t.init == "none":
        raise ParamsError(f"{where}: train.freeze=backbone keeps the backbone as train.init loaded it, but train.init "
                          "is none (random weights): set train.init to pretrained weights, or train.freeze=none")


def _check_holdout(d: DataParams, fmt: registry.DatasetFormat, where: str) -> None:
    """The held-out shares: each for the kind of dataset it applies to, and something left to train on."""
    if fmt.own_images:
        if d.val_from_train > 0:
            raise ParamsError(f"{where}: data.val_from_train is for the official datasets; your own images hold out "
                              "val and test with data.val_fraction and data.test_fraction (or val/ and test/ folders)")
        if d.val_fraction + d.test_fraction >= 1:
            raise ParamsError(f"{where}: data.val_fraction ({d.val_fraction}) + data.test_fraction ({d.test_fraction}) "
                              "must stay below 1: nothing would be left to train on")
    elif d.test_fraction > 0:
        raise ParamsError(f"{where}: data.test_fraction is for your own images (data.dataset: folder); "
                          f"{fmt.name} keeps its official val set as the test split with data.val_from_train > 0")


def _check_generated_classes(fmt: registry.DatasetFormat, num_classes: int, where: str) -> None:
    if fmt.stand_in_classes is None:
        return  # own images refuse the generated source below
    low, high = fmt.stand_in_classes
    if low == high and num_classes != low:
        raise ParamsError(f"{where}: download.generated.num_classes must be {low} for data.dataset={fmt.name} "
                          f"(the {fmt.title} format has exactly {low} classes), got {num_classes}")
    if not low <= num_classes <= high:
        raise ParamsError(f"{where}: download.generated.num_classes must be {low}-{high} for "
                          f"data.dataset={fmt.name}, got {num_classes}")


def _type_name(expected_type) -> str:
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string", list: "a list",
             bool | str: "true, false or auto"}
    return names.get(expected_type, str(expected_type))


def _coerce(value: Any, expected_type, key: str, where: str) -> Any:
    # bool is a subclass of int in Python: reject `epochs: true` and `ema: 1` explicitly.
    if expected_type == (bool | str):  # true, false or auto
        if isinstance(value, bool) or value == "auto":
            return value
    elif expected_type is bool:
        if isinstance(value, bool):
            return value
    elif expected_type is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif expected_type is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        # YAML 1.1 reads "1e-4" (no dot) as a string; accept numeric strings of that shape.
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif expected_type is str:
        if isinstance(value, str):
            return value
    elif expected_type is list:
        if isinstance(value, list):
            return value
    raise ParamsError(f"{where}: {key} must be {_type_name(expected_type)}, got {value!r}")


def _check_constraints(value: Any, meta: dict, key: str, where: str) -> None:
    if meta.get("choices") is not None and value not in meta["choices"]:
        hint = [RENAMED_CHOICES[value]] if value in RENAMED_CHOICES else difflib.get_close_matches(
            str(value), meta["choices"], n=1)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ParamsError(f"{where}: {key} must be one of {', '.join(meta['choices'])}; got {value!r}{extra}")
    for op, ok, text in (
        ("ge", lambda v, b: v >= b, ">="),
        ("gt", lambda v, b: v > b, ">"),
        ("le", lambda v, b: v <= b, "<="),
        ("lt", lambda v, b: v < b, "<"),
    ):
        bound = meta.get(op)
        if bound is not None and not ok(value, bound):
            raise ParamsError(f"{where}: {key} must be {text} {bound}, got {value!r}")
    if meta.get("pattern") is not None and not re.fullmatch(meta["pattern"], value):
        raise ParamsError(f"{where}: {key} has an invalid value {value!r}")
    if meta.get("length") is not None:
        if len(value) != meta["length"] or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            raise ParamsError(f"{where}: {key} must be a list of {meta['length']} numbers, got {value!r}")


def suggest_key(key: str, prefix: str, fields: list[str]) -> str | None:
    """The dotted key someone who typed `key` in the section `prefix` (with `fields`) most likely meant,
    or None. A name from another tool (KEY_ALIASES) or a spelling of ours in other case or with dashes
    first; then the closest spelling, of ours or of such a name (`lerning_rate` is close to
    `learning_rate`, hence train.lr). Our own names keep difflib's loose cutoff; a name from elsewhere
    must be spelled closely, so that a short one (`bs`, `aa`) does not catch unrelated typos."""
    typed = key.strip().lstrip("-").lower().replace("-", "_")
    aliases = {alias: target for alias, target in KEY_ALIASES.items() if "." in target or target in fields}
    if typed in fields or typed in aliases:
        match = typed
    else:  # the closer of the two spellings; ours on a tie
        close = (difflib.get_close_matches(typed, fields, n=1, cutoff=0.5)
                 + difflib.get_close_matches(typed, list(aliases), n=1, cutoff=0.75))
        match = max(close, key=lambda name: difflib.SequenceMatcher(None, typed, name).ratio(), default=None)
    if match is None:
        return None
    target = match if match in fields else aliases[match]
    return target if "." in target else f"{prefix}{target}"


def _build(cls, raw: Any, prefix: str, where: str):
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsError(f"{where}: {prefix or 'the file'} must be a mapping of keys, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            full = f"{prefix}{key}"
            hint = suggest_key(str(key), prefix, list(fields))
            extra = f" (did you mean '{hint}'?)" if hint else f" (known: {', '.join(fields)})"
            raise ParamsError(f"{where}: unknown key '{full}'{extra}")
    kwargs = {}
    for name, f in fields.items():
        expected_type = hints[name]
        key = f"{prefix}{name}"
        if dataclasses.is_dataclass(expected_type):
            kwargs[name] = _build(expected_type, raw.get(name), f"{key}.", where)
            continue
        if name not in raw:
            continue  # the dataclass default applies
        value = _coerce(raw[name], expected_type, key, where)
        _check_constraints(value, f.metadata, key, where)
        kwargs[name] = value
    return cls(**kwargs)


def params_from_dict(raw: Any, where: str = "params") -> Params:
    """Validate a nested dict (as read from YAML) into Params; raise ParamsError naming the key."""
    params = _build(Params, raw, "", where)
    _check_cross_field(params, where)
    return params


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml. Raises ParamsError (one line, names the key) on any problem."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ParamsError(f"{path}: no such parameter file") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise ParamsError(f"{path}: not valid YAML{line}: {getattr(exc, 'problem', exc)}") from None
    return params_from_dict(raw, where=str(path))
