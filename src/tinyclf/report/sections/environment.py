"""The report's "Environment" section: the software versions the model was trained with, from the
model file's meta."""

from __future__ import annotations

from tinyclf.report.markdown import md_table, value_text


def environment_section(meta: dict) -> str:
    env = meta.get("environment", {})
    table = md_table(["component", "version"], [[k, value_text(v)] for k, v in sorted(env.items())])
    return "\n".join(["## Environment", "", "Software the model was trained with (from the model file):", "",
                      table.rstrip("\n")]) + "\n"

