"""The report's "Parameters that differ from the defaults" section: every params.yaml key whose value
is not `tinyclf.params.Params()`'s, with both values."""

from __future__ import annotations

from typing import Any

from tinyclf.params import Params
from tinyclf.report.facts import source_text
from tinyclf.report.inputs import Inputs
from tinyclf.report.markdown import flatten, md_table, value_text


def params_section(inputs: Inputs) -> str:
    diffs = params_differences(inputs.params)
    out = ["## Parameters that differ from the defaults", ""]
    if not diffs:
        out.append("None: every key in params.yaml has its default value (see `tinyclf.params`).")
        return "\n".join(out) + "\n"
    out.append("Defaults are those of `tinyclf.params.Params()`; everything not listed has its default value.")
    out.append("")
    out.append(md_table(["key", "default", "value"],
                        [[f"`{k}`", value_text(d), value_text(v)] for k, d, v in diffs]).rstrip("\n"))
    return "\n".join(out) + "\n"


def params_differences(params: Params) -> list[tuple[str, Any, Any]]:
    """(key, default, value) for every key whose value differs from the dataclass default."""
    defaults, current = flatten(Params().to_dict()), flatten(params.to_dict())
    rows = []
    for key in current:
        if current[key] != defaults.get(key):
            default, value = defaults.get(key), current[key]
            if key == "download.source":
                default, value = source_text(default), source_text(value)
            rows.append((key, default, value))
    return rows

