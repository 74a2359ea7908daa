"""The result this project reproduces (README), and every sentence of the report and card that names it.

`REFERENCE` holds its facts once; the functions below build each sentence from it when called, so
changing the constant changes the verdict, the results line, the timing row, the cost line, the
comparability notes and the GENERATED banner alike (tests/report/test_report_reference.py). Other
modules use these functions and never spell out the reference themselves.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Reference:
    """A published result: its accuracy, on what, and what it took to train."""

    top1: float  # validation top-1, 0–1
    dataset: str  # its data.dataset: only runs on this dataset can be compared with it
    dataset_name: str  # the dataset as sentences name it
    model: str
    epochs: int  # how long it trained, in passes over the training set
    minutes: float  # training wall-clock time
    gpus: str  # the hardware those minutes ran on
    cost_usd: float  # what that training cost, as it is quoted


REFERENCE = Reference(top1=0.70, dataset="tiny-imagenet", dataset_name="Tiny ImageNet", model="ResNet-50",
                      epochs=150, minutes=50, gpus="3× NVIDIA A40", cost_usd=1.20)


def reference_text() -> str:
    """The reference in one clause: accuracy, dataset, model, epochs, time and hardware."""
    r = REFERENCE
    return (f"{_top1()} top-1 on the {r.dataset_name} validation set with the reference {r.model}, "
            f"{r.epochs} epochs in about {r.minutes:g} minutes on {r.gpus}")


def reference_verdict(top1: float, comparable: bool = True) -> str:
    """How `top1` (0–1) compares: "beats the reference 70% top-1 by 1.23 points" and the like."""
    if not comparable:
        # A win on generated data or on another dataset says nothing about the reference result.
        return f"cannot be compared with the reference {_top1()} top-1"
    points = (top1 - REFERENCE.top1) * 100
    if abs(points) < 0.005:
        return f"matches the reference {_top1()} top-1"
    word = "beats" if points > 0 else "falls short of"
    return f"{word} the reference {_top1()} top-1 by {abs(points):.2f} points"


def comparability_note(dataset: str, generated: bool) -> str | None:
    """Why a run cannot be compared with the reference, or None when it can."""
    name = REFERENCE.dataset_name
    if generated:
        return f"Not comparable: this model was trained and evaluated on generated data, not {name}."
    if dataset == "folder":
        return f"Not comparable: the reference is a {name} result and this run used your own images."
    if not is_reference_dataset(dataset):
        return f"Not comparable: the reference is a {name} result and this run used {dataset}."
    return None


def is_reference_dataset(dataset: str) -> bool:
    """Whether `dataset` (data.dataset) is the one the reference was measured on."""
    return dataset == REFERENCE.dataset


def reference_time_text() -> str:
    """How long the reference trained, for the timing table: "about 50 min on 3× NVIDIA A40"."""
    return f"about {REFERENCE.minutes:g} min on {REFERENCE.gpus}"


def reference_cost_text() -> str:
    """What the reference cost to train, as it is quoted: "about $1.20 for ~50 min on 3× NVIDIA A40"."""
    return f"about ${REFERENCE.cost_usd:.2f} for ~{REFERENCE.minutes:g} min on {REFERENCE.gpus}"


def generated_banner() -> str:
    """The warning that heads the report and the card of a model trained on generated data."""
    return (f"> **⚠ Trained on GENERATED data — not a {REFERENCE.dataset_name} result.** The images are "
            "synthetic (download.source: generated); the numbers below show that the pipeline works end to "
            "end and say nothing about accuracy on real images.")


def _top1() -> str:
    # :g drops the float noise of 0.7 * 100 and keeps a half point: 0.705 -> "70.5%".
    return f"{REFERENCE.top1 * 100:g}%"
