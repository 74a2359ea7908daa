"""The folder dataset run the way its stages run it: params for a folder source, the download stage
(which packs a directory into one archive), then preprocess with the params' options."""

from __future__ import annotations

import hashlib

from tinyclf.data.download import run_download
from tinyclf.data.formats.contract import PrepareOptions
from tinyclf.data.preprocess import prepare
from tinyclf.params import params_from_dict

SIZE = 40


def folder_params(source, **data) -> object:
    return params_from_dict({"data": {"dataset": "folder", "image_size": SIZE, **data},
                             "download": {"source": str(source)}})


def md5(path) -> str:
    return hashlib.md5(open(path, "rb").read()).hexdigest()


def download_and_prepare(source, tmp_path, name="out", on_corrupt="fail", **data):
    """(the archive in <tmp_path>/<name>/raw, the PrepareSummary); the arrays are in <name>/prepared."""
    params = folder_params(source, **data)
    archive = run_download(params, tmp_path / name / "raw", progress=False, backoff=0.01)
    options = PrepareOptions(image_size=SIZE, workers=1, on_corrupt=on_corrupt, progress=False,
                             resize=params.data.resize, val_fraction=params.data.val_fraction,
                             split_seed=params.data.split_seed)
    summary = prepare(archive, tmp_path / name / "prepared", "folder", options)
    return archive, summary
