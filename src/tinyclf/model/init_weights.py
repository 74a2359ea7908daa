"""Starting weights for a fresh run (`train.init`), loaded into the freshly created model.

`train.init` is one of:
- `none`: from scratch (nothing is read);
- a path: a tinyclf model file (`models/model.pt`, `tinyclf.model.file`), a torch state dict
  (`.pt`, `.pth`, `.bin`: `torch.load(weights_only=True)`, so a checkpoint that pickles other
  objects, such as an argparse Namespace, is refused), possibly wrapped as `{"state_dict": …}`,
  `{"model": …}`, `{"state_dict_ema": …}` (EMA weights are preferred when there are both), or a
  `.safetensors` file;
- a folder in Hugging Face / timm layout, as `hf download timm/<name> --local-dir DIR` (or the
  older `huggingface-cli download`) leaves it: model.safetensors (or pytorch_model.bin) beside
  config.json, whose `architecture` and tag name the weights in the record;
- `timm:<name>`: timm's pretrained weights for `<name>` (`timm.create_model(name, pretrained=True)`):
  from the local Hugging Face cache when they are there, else downloaded from the Hub; with
  `HF_HUB_OFFLINE=1` from the cache only. Weights neither cached nor reachable fail in one line
  that says how to get them onto the machine.

Matching: after dropping wrapper prefixes (`module.` from DDP, `_orig_mod.` from torch.compile,
and one leading name shared by every key when that matches more, such as Lightning's `model.`),
every tensor of the model whose name AND shape are in the source is loaded; the rest keep their
fresh initialisation. The classifier (timm's `get_classifier()`, or the last layer with one output
per class) thus stays freshly initialised when the class count differs.

`apply_init` returns a plain dict (stored in the model file's meta as `init`, and in the resume
checkpoint) saying what was loaded and what was not, and why. A source that cannot be read, is not
a state dict or matches nothing raises `InitWeightsError`, one line naming `train.init` and the file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from tinyclf.errors import TinyclfError
from tinyclf.model.file import MODEL_FILE_FORMAT, load_error_text

SCRATCH = "none"
TIMM_PREFIX = "timm:"
# Keys under which checkpoints nest their weights, best first: EMA weights are usually the better
# set (timm's own load_checkpoint prefers them too). `ema`/`model` are tinyclf's checkpoints/last.pt.
WRAPPER_KEYS = ("state_dict_ema", "model_ema", "ema", "state_dict", "model")
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
FOLDER_WEIGHTS = ("model.safetensors", "pytorch_model.bin")  # a Hugging Face / timm folder's, preferred first
MAX_GROUPS = 50  # not-loaded groups kept in the record (the rest are counted)


class InitWeightsError(TinyclfError):
    """train.init cannot be used: missing, unreadable, not a state dict, or nothing in it fits the model."""


@dataclass(frozen=True)
class SourceWeights:
    """The tensors `train.init` points at, and what to call them in messages and the report."""

    state: dict[str, torch.Tensor]
    kind: str  # file | folder | timm
    description: str  # "a tinyclf model file (resnet18, 10 classes)", "a state dict", …
    md5: str | None  # of the file; None for timm's download


def apply_init(model: nn.Module, init: str, *, model_name: str) -> dict:
    """Load `train.init` into `model` (in place); returns the record of what was loaded (plain types)."""
    if init == SCRATCH:
        return {"source": SCRATCH}
    source = read_source(init)
    targets = model.state_dict()
    state = normalised_names(source.state, targets)
    loadable, not_loaded = match_tensors(targets, state, classifier_names(model))
    if not any(targets[name].is_floating_point() for name in loadable):
        raise InitWeightsError(f"train.init={init!r}: no tensor of {source.description} matches {model_name} by name "
                               f"and shape ({len(state)} tensors there, e.g. {_examples(state)}; the model has e.g. "
                               f"{_examples(targets)})")
    model.load_state_dict(loadable, strict=False)
    return {
        "source": init, "kind": source.kind, "description": source.description, "md5": source.md5,
        "loaded": len(loadable), "total": len(targets), "unused": len(set(state) - set(loadable)),
        "classifier_reinitialised": any(reason.startswith("classifier") for _, reason in not_loaded),
        "not_loaded": group_not_loaded(not_loaded),
    }


def describe_init(record: dict | None) -> str:
    """One line for the console and the report: where the weights came from and how much was loaded."""
    if not record or record.get("source") == SCRATCH:
        return "from scratch (train.init: none)"
    md5 = f", md5 {record['md5']}" if record.get("md5") else ""
    head = f"{init_source_text(record['source'])} ({record['description']}{md5})"
    classifier = "; classifier re-initialised" if record.get("classifier_reinitialised") else ""
    return f"{head}: loaded {record['loaded']}/{record['total']} tensors{classifier}"


def init_source_text(source: str) -> str:
    """train.init for people: an absolute path shows only its file name (reports hold no absolute paths)."""
    return Path(source).name if Path(source).is_absolute() else source


# ------------------------------------------------------------------------------------ reading
def read_source(init: str) -> SourceWeights:
    if init.startswith(TIMM_PREFIX):
        return timm_pretrained(init[len(TIMM_PREFIX):], init)
    if Path(init).is_dir():
        return read_weights_folder(Path(init), init)
    return read_weights_file(Path(init), init)


def read_weights_file(path: Path, init: str) -> SourceWeights:
    """A state dict from a tinyclf model file, a torch file or a .safetensors file."""
    if not path.is_file():
        raise InitWeightsError(f"train.init={init!r}: no such file or folder; give a .pt/.pth/.safetensors file, a "
                               "folder holding model.safetensors, timm:<name>, or none")
    if path.suffix == ".safetensors":
        return SourceWeights(_read_safetensors(path, init), "file", "a safetensors state dict", file_md5(path))
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - garbage bytes make the unpickler fail in many ways
        raise InitWeightsError(f"train.init={init!r}: not readable by torch.load(weights_only=True): "
                               f"{load_error_text(exc)}") from None
    description = "a state dict"
    if isinstance(payload, Mapping) and payload.get("format") == MODEL_FILE_FORMAT:
        meta = payload.get("meta") if isinstance(payload.get("meta"), Mapping) else {}
        description = f"a tinyclf model file ({meta.get('model', '?')}, {meta.get('num_classes', '?')} classes)"
    return SourceWeights(unwrap_state_dict(payload, init), "file", description, file_md5(path))


def read_weights_folder(path: Path, init: str) -> SourceWeights:
    """The weights of a Hugging Face / timm folder: model.safetensors, else pytorch_model.bin, named
    by its config.json when it has one."""
    weights = next((path / name for name in FOLDER_WEIGHTS if (path / name).is_file()), None)
    if weights is None:
        raise InitWeightsError(f"train.init={init!r}: a folder without {' or '.join(FOLDER_WEIGHTS)} (as "
                               "`hf download timm/<name> --local-dir DIR` leaves it)")
    source = read_weights_file(weights, init)
    return SourceWeights(source.state, "folder", f"{folder_config_name(path)} in {weights.name}", source.md5)


def folder_config_name(path: Path) -> str:
    """What a folder's config.json says the weights are: timm's `architecture` and pretrained tag."""
    import json

    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return "weights without a readable config.json"
    if not isinstance(config, dict) or not isinstance(config.get("architecture"), str):
        return "weights (config.json names no architecture)"
    tag = (config.get("pretrained_cfg") or {}).get("tag") if isinstance(config.get("pretrained_cfg"), dict) else None
    classes = f", {config['num_classes']} classes" if isinstance(config.get("num_classes"), int) else ""
    return f"timm's {config['architecture']}{'.' + tag if tag else ''}{classes}"


def _read_safetensors(path: Path, init: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # noqa: BLE001 - SafetensorError, OSError, …: the message names the file
        raise InitWeightsError(f"train.init={init!r}: not a readable safetensors file "
                               f"({type(exc).__name__}: {_first_line(exc)})") from None


def timm_pretrained(name: str, init: str) -> SourceWeights:
    """timm's pretrained weights for `name`, downloaded by timm (from the Hugging Face Hub)."""
    import timm
    from timm.models import get_pretrained_cfg

    if not timm.is_model(name):
        raise InitWeightsError(f"train.init={init!r}: {name!r} is not a timm model (see timm.list_pretrained())")
    try:
        cfg = get_pretrained_cfg(name)
    except RuntimeError:  # timm's "Invalid pretrained tag"
        cfg = None
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        raise InitWeightsError(f"train.init={init!r}: timm has no pretrained weights for {name!r} "
                               "(see timm.list_pretrained())")
    cached = hub_cache_file(cfg.hf_hub_id)
    try:
        # The pretrained head is kept (timm's own class count): the matching then re-initialises our
        # classifier by its shape, instead of loading timm's freshly drawn one as if it were trained.
        source = timm.create_model(name, pretrained=True)
    except Exception as exc:  # noqa: BLE001 - offline, hub errors, a broken cache: all end here
        if cached:
            raise InitWeightsError(f"train.init={init!r}: timm could not load the cached weights {cached} "
                                   f"({type(exc).__name__}: {_first_line(exc)})") from None
        raise InitWeightsError(f"train.init={init!r}: {unreachable_text(name, cfg.hf_hub_id, exc)}") from None
    where = ("the Hugging Face cache" if cached else "the Hugging Face Hub") if cfg.hf_hub_id else "timm's download"
    found = cached or hub_cache_file(cfg.hf_hub_id)  # a download has just put it there
    return SourceWeights(dict(source.state_dict()), "timm", f"timm's pretrained {name}, from {where}",
                         file_md5(Path(found)) if found else None)


def hub_cache_file(repo_id: str | None) -> str | None:
    """The path of `repo_id`'s model.safetensors in the local Hugging Face cache, or None."""
    if not repo_id:
        return None
    from huggingface_hub import try_to_load_from_cache

    repo, _, revision = repo_id.partition("@")
    found = try_to_load_from_cache(repo, "model.safetensors", revision=revision or None)
    return found if isinstance(found, str) else None


def unreachable_text(name: str, repo_id: str | None, exc: Exception) -> str:
    """Why timm's weights could not be had, and how to get them onto this machine."""
    from huggingface_hub import constants

    cause = f"{type(exc).__name__}: {_first_line(exc)}"
    if constants.HF_HUB_OFFLINE:
        cause = type(exc).__name__  # its text only says it is offline again
    if not repo_id:
        return f"could not download timm's pretrained weights for {name!r} ({cause}); this needs the internet"
    offline = "HF_HUB_OFFLINE=1 is set" if constants.HF_HUB_OFFLINE else "the Hub was not reachable"
    return (f"timm's weights for {name!r} are not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and "
            f"{offline} ({cause}); where there is internet, run `hf download {repo_id} --local-dir DIR` "
            "and set train.init to DIR")


def unwrap_state_dict(payload, init: str) -> dict[str, torch.Tensor]:
    """The {name: tensor} inside a checkpoint (`{"state_dict": …}`, `{"model": …}`, …); InitWeightsError if none."""
    for _ in range(4):  # wrappers nest at most a few levels deep
        if not isinstance(payload, Mapping):
            break
        inner = next((payload[k] for k in WRAPPER_KEYS if isinstance(payload.get(k), Mapping)), None)
        if inner is None:
            break
        payload = inner
    tensors = {k: v for k, v in payload.items() if isinstance(k, str) and isinstance(v, torch.Tensor)} \
        if isinstance(payload, Mapping) else {}
    if not tensors:
        found = f"a dict with keys {_examples(payload)}" if isinstance(payload, Mapping) else type(payload).__name__
        raise InitWeightsError(f"train.init={init!r}: not a state dict (found {found}); give a model file, "
                               "a state dict or a checkpoint holding one under state_dict/model")
    return tensors


def file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ------------------------------------------------------------------------------------ matching
def normalised_names(state: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor]) -> dict:
    """`state` with wrapper prefixes removed; also without a first name component shared by every key
    (Lightning's `model.`, a `backbone.`) when that makes more names match the model's."""
    stripped = _without_wrapper_prefixes(state)
    heads = {key.split(".", 1)[0] for key in stripped}
    if len(heads) == 1 and all("." in key for key in stripped):
        shorter = _without_wrapper_prefixes({key.split(".", 1)[1]: tensor for key, tensor in stripped.items()})
        if len(shorter.keys() & targets.keys()) > len(stripped.keys() & targets.keys()):
            return shorter
    return stripped


def _without_wrapper_prefixes(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, tensor in state.items():
        while key.startswith(WRAPPER_PREFIXES):
            key = key.split(".", 1)[1]
        out[key] = tensor
    return out


def classifier_names(model: nn.Module) -> set[str]:
    """State-dict names of the model's classifier: timm's `get_classifier()`, else the last Linear or
    conv layer with one output per class (tiny_resnet50's 1x1 conv head)."""
    heads = []
    get_classifier = getattr(model, "get_classifier", None)
    if callable(get_classifier):
        found = get_classifier()
        heads = [h for h in (found if isinstance(found, (tuple, list)) else [found]) if isinstance(h, nn.Module)]
    if not heads:
        num_classes = getattr(model, "num_classes", None)
        layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))
                  and (num_classes is None or m.weight.shape[0] == num_classes)]
        heads = layers[-1:]
    names = set()
    for module_name, module in model.named_modules():
        if any(module is head for head in heads):
            names |= {f"{module_name}.{key}" if module_name else key for key in module.state_dict()}
    return names


def match_tensors(targets: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor],
                  classifier: set[str]) -> tuple[dict[str, torch.Tensor], list[tuple[str, str]]]:
    """(the tensors to load, [(name, why not loaded)]) for every tensor of the model."""
    loadable, not_loaded = {}, []
    for name, target in targets.items():
        tensor = state.get(name)
        if tensor is not None and tuple(tensor.shape) == tuple(target.shape):
            loadable[name] = tensor
        elif name in classifier:
            there = f"{tensor.shape[0]} in the source" if tensor is not None and tensor.dim() else "not in the source"
            not_loaded.append((name, f"classifier: re-initialised for {target.shape[0] if target.dim() else '?'} "
                                     f"classes ({there})"))
        elif tensor is None:
            not_loaded.append((name, "missing in the source"))
        else:
            not_loaded.append((name, f"shape {list(target.shape)} here, {list(tensor.shape)} in the source"))
    return loadable, not_loaded


def group_not_loaded(not_loaded: list[tuple[str, str]]) -> list[dict]:
    """[{"module", "tensors", "reason"}]: one entry per layer and reason, in the model's order, at most
    MAX_GROUPS (then one entry counting the rest), so a record stays short for a large model."""
    groups: dict[tuple[str, str], list[str]] = {}
    for name, reason in not_loaded:
        module, _, leaf = name.rpartition(".")
        groups.setdefault((module, reason), []).append(leaf)
    entries = [{"module": module, "tensors": leaves, "reason": reason} for (module, reason), leaves in groups.items()]
    if len(entries) > MAX_GROUPS:
        rest = entries[MAX_GROUPS:]
        entries = entries[:MAX_GROUPS] + [{"module": f"{len(rest)} more layers", "tensors": [],
                                           "reason": "not listed"}]
    return entries


def _examples(mapping, count: int = 3) -> str:
    keys = [str(k) for k in list(mapping)[:count]]
    return ", ".join(keys) + (", …" if len(mapping) > count else "") if keys else "(none)"


def _first_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:200]
