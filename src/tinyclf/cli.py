"""The `tinyclf` command: small tools around the pipeline (the pipeline itself runs with `dvc repro`).

    tinyclf check-params [params.yaml]     validate a parameter file, one line per problem
    tinyclf info models/model.pt           what a model file holds: architecture, data, metrics source
    tinyclf predict models/model.pt a.jpg  top-5 classes of images with a trained model
    tinyclf remote-check [-r NAME] [push]  check a DVC remote and explain what is wrong with it
    tinyclf quickstart                     the whole pipeline on generated data (same as make quickstart)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tinyclf.errors import ArgumentParser, TinyclfError


def _check_params(args) -> int:
    from tinyclf.models import ModelError, check_model_name
    from tinyclf.params import ParamsError, load_params

    params = load_params(args.path)
    # The model name is checked against timm's registry too, as the train stage will (params.py
    # alone cannot: importing timm takes seconds, too long for every stage's first check).
    try:
        check_model_name(params.train.model)
    except ModelError as exc:
        raise ParamsError(f"{args.path}: train.model: {exc}") from None
    print(f"{args.path}: ok ({params.data.dataset}, source {params.download.source}, model {params.train.model})")
    return 0


def _info(args) -> int:
    from tinyclf.model_file import load_model_file
    from tinyclf.model_summary import count_parameters

    model, meta = load_model_file(args.model)
    size = meta["image_size"]
    print(f"{args.model}")
    print(f"  model        {meta['model']} ({count_parameters(model):,} parameters, {meta['weights']} weights)")
    print(f"  data         {meta['dataset']}{' (GENERATED)' if meta['generated'] else ''}, "
          f"{meta['num_classes']} classes, {size}x{size} px")
    print(f"  trained      {meta.get('epochs_trained')} epochs")
    env = meta.get("environment", {})
    print(f"  environment  torch {env.get('torch')}, timm {env.get('timm')}, device {env.get('device')}")
    return 0


def _predict(args) -> int:
    import cv2
    import numpy as np
    import torch

    from tinyclf.model_file import load_model_file

    model, meta = load_model_file(args.model)
    model.eval()
    size = meta["image_size"]
    mean = torch.tensor(meta["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(meta["std"]).view(1, 3, 1, 1)
    names = [c["name"] for c in meta["classes"]]
    for path in args.images:
        data = np.fromfile(path, dtype=np.uint8) if Path(path).is_file() else None
        image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data is not None and data.size else None
        if image is None:
            print(f"tinyclf predict: cannot read an image from {path}", file=sys.stderr)
            return 1
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        if image.shape[:2] != (size, size):
            image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
        x = torch.from_numpy(image).permute(2, 0, 1).unsqueeze(0).float().div(255)
        with torch.no_grad():
            probs = model((x - mean) / std).softmax(dim=1)[0]
        top = probs.topk(min(5, len(names)))
        print(path)
        for p, i in zip(top.values.tolist(), top.indices.tolist()):
            print(f"  {p:6.1%}  {names[i]}")
    return 0


def _remote_check(args) -> int:
    from tinyclf.remote_check import main as remote_check_main

    return remote_check_main(args.rest)


def _quickstart(args) -> int:
    from tinyclf.quickstart import main as quickstart_main

    return quickstart_main([])


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="tinyclf", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("check-params", help="validate a params.yaml")
    p.add_argument("path", nargs="?", default="params.yaml")
    p.set_defaults(func=_check_params)
    p = sub.add_parser("info", help="describe a trained model file")
    p.add_argument("model", nargs="?", default="models/model.pt")
    p.set_defaults(func=_info)
    p = sub.add_parser("predict", help="top-5 predictions for image files")
    p.add_argument("model")
    p.add_argument("images", nargs="+")
    p.set_defaults(func=_predict)
    p = sub.add_parser("remote-check", help="check a DVC remote (or run a dvc push/pull) and explain failures",
                       add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=_remote_check)
    p = sub.add_parser("quickstart", help="run the pipeline on a small generated dataset")
    p.set_defaults(func=_quickstart)
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["remote-check"]:  # its own parser owns every option, --help included
        return _remote_check(argparse.Namespace(rest=argv[1:]))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except TinyclfError as exc:
        print(f"tinyclf {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
