"""`tinyclf compare`'s table: which params it shows, the order, every format, the figure.

The runs here are built directly (what `collect_runs` reads from DVC); reading real experiments
through DVC, a queued grid and the command line are tested on a real repository in
pipeline/test_pipeline.py.
"""

from __future__ import annotations

import csv
import io
import json

from matplotlib.text import Text

from tinyclf.commands.compare.plot import figure, write_plot
from tinyclf.commands.compare.rendering import render
from tinyclf.commands.compare.runs import Run, _without_unchanged_workspace, compare


def run_of(name: str, top1: float, lr: float, wd: float = 5e-4, minutes: float | None = 1.5,
           cost: float | None = None) -> Run:
    params = {"train.lr": lr, "train.weight_decay": wd, "train.epochs": 2, "data.dataset": "cifar10"}
    metrics = {"top1": top1, "top5": min(1.0, top1 + 0.2), "train_minutes": minutes, "images_per_s": 300.0,
               "cost_usd": cost}
    return Run(name, f"rev-{name}", params, metrics)


def test_best_top1_first_with_only_the_params_that_differ():
    runs = compare([run_of("a", 0.61, 0.1), run_of("b", 0.70, 0.2), run_of("c", 0.65, 0.2, wd=1e-4)])
    assert [r.name for r in runs] == ["b", "c", "a"]
    assert [list(r.differing) for r in runs] == [["train.lr", "train.weight_decay"]] * 3
    table = render(runs, "table").splitlines()
    assert table[0].split() == ["run", "train.lr", "train.weight_decay", "top-1", "top-5", "train", "min",
                                "images/s", "cost"]
    assert table[2].split()[:4] == ["b", "0.2", "0.0005", "70.00%"]
    assert len({len(line) for line in table}) == 1  # aligned columns


def test_every_format_holds_the_same_rows():
    runs = compare([run_of("slow", 0.7, 0.1, minutes=None), run_of("paid", 0.6, 0.2, cost=12.5)])
    rows = json.loads(render(runs, "json"))
    assert [(r["name"], r["params"], r["metrics"]["top1"], r["metrics"]["cost_usd"]) for r in rows] == [
        ("slow", {"train.lr": 0.1}, 0.7, None), ("paid", {"train.lr": 0.2}, 0.6, 12.5)]
    parsed = list(csv.DictReader(io.StringIO(render(runs, "csv"))))
    assert [(r["run"], r["train.lr"], r["top1"]) for r in parsed] == [("slow", "0.1", "0.7"), ("paid", "0.2", "0.6")]
    md = render(runs, "md").splitlines()
    assert md[0] == "| run | train.lr | top-1 | top-5 | train min | images/s | cost |"
    assert md[2] == "| slow | 0.1 | 70.00% | 90.00% | — | 300 | — |"  # unknown time and cost: a dash
    assert md[3].endswith("| $12.50 |")


def test_one_run_or_identical_params_show_no_param_column():
    runs = compare([run_of("only", 0.5, 0.1)])
    assert runs[0].differing == {} and render(runs, "md").splitlines()[0].startswith("| run | top-1 |")


def test_the_workspace_is_left_out_when_it_repeats_a_run():
    committed, workspace = run_of("main", 0.6, 0.1), run_of("workspace", 0.6, 0.1)
    workspace.rev = "workspace"
    assert [r.name for r in _without_unchanged_workspace([workspace, committed])] == ["main"]
    changed = run_of("workspace", 0.62, 0.3)
    changed.rev = "workspace"
    assert [r.name for r in _without_unchanged_workspace([changed, committed])] == ["workspace", "main"]


def test_the_figure_as_png_and_as_a_page(tmp_path):
    runs = compare([run_of("a", 0.61, 0.1), run_of("b", 0.70, 0.2, minutes=None)])
    histories = {"a": ([1, 2], [0.4, 0.61]), "b": ([1, 2, 3], [0.3, 0.6, 0.7])}
    write_plot(tmp_path / "c.png", runs, histories)
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    write_plot(tmp_path / "c.html", runs, histories)
    page = (tmp_path / "c.html").read_text()
    assert "<th>train.lr</th>" in page and "<td>70.00%</td>" in page and "data:image/png;base64," in page


def test_runs_on_one_spot_get_names_that_cover_no_other_name_or_point():
    # A 1-epoch sweep: four runs with the same top-1 within a second of each other, one elsewhere.
    same = [run_of(f"run-{i}", 0.281, 0.1 * i, minutes=0.0110 + 0.0004 * i) for i in range(4)]
    runs = compare([*same, run_of("longer", 0.437, 0.5, minutes=0.0216)])
    fig = figure(runs, {})
    fig.draw_without_rendering()
    renderer = fig.canvas.get_renderer()
    scatter = fig.axes[0]
    labels = {text.get_text(): text for text in scatter.texts}
    assert set(labels) == {run.name for run in runs}
    # The names' own boxes (an Annotation's extent would include its leader line).
    boxes = {name: Text.get_window_extent(label, renderer) for name, label in labels.items()}
    assert not any(a.overlaps(b) for i, a in enumerate(boxes.values()) for b in list(boxes.values())[i + 1:])
    dots = {run.name: scatter.transData.transform((run.metrics["train_minutes"], run.top1 * 100)) for run in runs}
    for name, box in boxes.items():
        assert not any(box.contains(*xy) for other, xy in dots.items() if other != name), name
    colours = [tuple(dot.get_facecolor()[0]) for dot in scatter.collections]
    assert [tuple(labels[run.name].get_color()) for run in runs] == colours  # a name in its point's colour
    # The lone run keeps its name beside it; a name that had to move is tied to its point.
    assert labels["longer"].arrow_patch is None
    moved = [name for name, label in labels.items() if label.xyann[1] != labels["longer"].xyann[1]]
    assert moved and all(labels[name].arrow_patch is not None for name in moved)


def test_outside_a_repository_one_line_names_the_folder(tmp_path, capsys):
    from tinyclf.commands.compare.command import main

    assert main(["--repo", str(tmp_path)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"tinyclf compare: {tmp_path.resolve()}: not a tinyclf repository (no dvc.yaml); run it from "
                   "the repository root or give --repo"]


def test_a_plot_that_is_neither_png_nor_html_is_refused_before_reading_runs(tmp_path, capsys):
    from tinyclf.commands.compare.command import main

    assert main(["--repo", str(tmp_path), "--plot", str(tmp_path / "compare.svg")]) != 0
    assert capsys.readouterr().err.strip() == (f"tinyclf compare: {tmp_path / 'compare.svg'}: "
                                               "--plot writes a .png or an .html file")
    assert not (tmp_path / "compare.svg").exists()
