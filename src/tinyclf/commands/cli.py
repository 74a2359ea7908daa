"""The `tinyclf` command: small tools around the pipeline (the pipeline itself runs with `dvc repro`).

    tinyclf check-params [params.yaml]     validate a parameter file, one line per problem
    tinyclf info models/model.pt           what a model file holds: architecture, data, metrics source
    tinyclf predict models/model.pt a.jpg  top-5 classes of images, folders, globs (--backend onnx, --format json)
    tinyclf compare [RUN ...]              runs side by side, best top-1 first (--format md|csv|json, --plot)
    tinyclf remote-check [-r NAME] [push]  check a DVC remote and explain what is wrong with it
    tinyclf demo models/model.onnx         a local Gradio demo of a trained model
    tinyclf space ...                      the Hugging Face Space bundle of a trained model
    tinyclf quickstart                     the whole pipeline on generated data (same as make quickstart)
"""

from __future__ import annotations

import argparse
import sys

from tinyclf.errors import ArgumentParser, run_command


def _check_params(args) -> int:
    from tinyclf.model.architectures import ModelError, check_model_name
    from tinyclf.params import ParamsError, load_params

    params = load_params(args.path)
    # The model name is checked against timm's registry too, as the train stage will (params.py
    # alone cannot: importing timm takes seconds, too long for every stage's first check).
    try:
        check_model_name(params.train.model)
    except ModelError as exc:
        raise ParamsError(f"{args.path}: train.model: {exc}") from None
    _check_finetune_model(params, args.path)
    _check_corrections(params, args.path)
    print(f"{args.path}: ok ({params.data.dataset}, source {params.download.source}, model {params.train.model})")
    return 0


def _check_corrections(params, path) -> None:
    """data.corrections reads as a corrections file (its lines are checked against the data by preprocess)."""
    from tinyclf.data.corrections import read_corrections
    from tinyclf.errors import PrepareError
    from tinyclf.params import ParamsError

    try:
        read_corrections(params.data.corrections)
    except PrepareError as exc:
        raise ParamsError(f"{path}: data.corrections: {exc}") from None


def _check_finetune_model(params, path) -> None:
    """What train.drop_path, train.freeze and train.head_lr_scale need of the model, as the train stage
    will check it (building the model: only when one of them is set)."""
    from tinyclf.params import ParamsError
    from tinyclf.train.recipe import TrainingError
    from tinyclf.train.setup import check_finetune_model

    try:
        check_finetune_model(params.train)
    except TrainingError as exc:
        raise ParamsError(f"{path}: {exc}") from None


def _info(args) -> int:
    from tinyclf.model.file import load_model_file
    from tinyclf.model.parameters import count_parameters
    from tinyclf.report.facts import kept_epoch_text

    model, meta = load_model_file(args.model)
    size = meta["image_size"]
    print(f"{args.model}")
    print(f"  model        {meta['model']} ({count_parameters(model):,} parameters, {meta['weights']} weights)")
    print(f"  data         {meta['dataset']}{' (GENERATED)' if meta['generated'] else ''}, "
          f"{meta['num_classes']} classes, {size}x{size} px")
    print(f"  trained      {meta.get('epochs_trained')} epochs; weights of {kept_epoch_text(meta)}")
    env = meta.get("environment", {})
    print(f"  environment  torch {env.get('torch')}, timm {env.get('timm')}, device {env.get('device')}")
    return 0


def _predict(args) -> int:
    from tinyclf.serve.predict_files import predict_files
    from tinyclf.serve.predictor import load_predictor

    # A model that cannot be loaded raises PredictError (one line naming it) before any output.
    predictor = load_predictor(args.model, backend=args.backend, device=args.device)
    return predict_files(predictor, args.inputs, top_k=args.top_k, fmt=args.format, batch_size=args.batch_size,
                         min_confidence=args.min_confidence)


def _min_confidence(text: str) -> float:
    from tinyclf.serve.predict_files import min_confidence_arg  # imported when used: `tinyclf --help` stays quick

    return min_confidence_arg(text)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _delegate(name: str, argv: list[str]) -> int:
    """`tinyclf demo|space|remote-check …`: the module's own parser owns every option, --help included."""
    import importlib

    return importlib.import_module(_DELEGATED[name][0]).main(argv)


def _quickstart(args) -> int:
    from tinyclf.commands.quickstart import main as quickstart_main

    return quickstart_main([])


# Subcommands whose module parses its own options.
_DELEGATED = {
    "compare": ("tinyclf.commands.compare.command",
                "runs side by side: differing params, top-1, top-5, time, cost (best first)"),
    "remote-check": ("tinyclf.commands.remote_check",
                     "check a DVC remote (or run a dvc push/pull) and explain failures"),
    "audit": ("tinyclf.commands.audit", "act on the audit's findings: `audit accept` prints corrections lines"),
    "demo": ("tinyclf.serve.demo", "a local Gradio demo of a trained model"),
    "space": ("tinyclf.serve.space", "write a Hugging Face Space folder (app.py, model.onnx, pinned requirements, "
                                     "no torch) for a trained model"),
}


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="top-k classes of image files, folders and globs")
    p.add_argument("model", help="models/model.pt (PyTorch) or models/model.onnx (onnxruntime)")
    p.add_argument("inputs", nargs="+", help="image files, folders (searched recursively) or quoted globs")
    p.add_argument("--top-k", type=_positive, default=5, help="classes per image (default 5)")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table", help="output format (default table)")
    p.add_argument("--backend", choices=("auto", "torch", "onnx"), default="auto",
                   help="auto: by the model's suffix; naming the other one uses the sibling .pt/.onnx file")
    p.add_argument("--batch-size", type=_positive, default=64, help="images per batch (default 64)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--min-confidence", type=_min_confidence, default=None, metavar="P",
                   help="answer 'unknown' when the top-1 probability (calibrated) is below P, 0 < P < 1; the "
                        "report proposes one chosen on val (results/evaluate/per_class.json unknown_threshold)")
    p.set_defaults(func=_predict)


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="tinyclf", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("check-params", help="validate a params.yaml")
    p.add_argument("path", nargs="?", default="params.yaml")
    p.set_defaults(func=_check_params)
    p = sub.add_parser("info", help="describe a trained model file")
    p.add_argument("model", nargs="?", default="models/model.pt")
    p.set_defaults(func=_info)
    _add_predict(sub)
    for name, (_, text) in _DELEGATED.items():
        p = sub.add_parser(name, help=text, add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER)
    p = sub.add_parser("quickstart", help="run the pipeline on a small generated dataset")
    p.set_defaults(func=_quickstart)
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] and argv[0] in _DELEGATED:  # its own parser owns every option, --help included
        return _delegate(argv[0], argv[1:])
    args = parser.parse_args(argv)
    return run_command(f"tinyclf {args.command}", lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
