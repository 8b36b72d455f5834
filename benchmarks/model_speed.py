"""Inference speed of the models of a benchmark table, measured in interleaved rounds.

Every model makes one pass over the test set per round, the order shifted by one each round, and keeps its
fastest pass: timings on a shared machine only ever err on the slow side, and a machine whose speed drifts
during the measurement slows every model alike, so the ratios between students and teachers hold.  (Measured
one model after the other, a teacher's passes of several seconds and a student's of one second fell into
different spells of the machine: back-to-back runs of the EWT table moved the student/teacher ratios by up to
8%.)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = ["fastest_passes", "speeds_and_sizes"]


def fastest_passes(models: dict[str, Any], run: Callable[[Any], dict], rounds: int,
                   key: str = "sentences_per_second") -> dict[str, dict]:
    """``run(model)`` for every model once per round (round ``k`` starts ``k`` models further along the list),
    ``rounds`` rounds; each model's result with the highest ``key``, by name, in the order of ``models``."""
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    names = list(models)
    best: dict[str, dict] = {}
    for round_ in range(rounds):
        shift = round_ % max(len(names), 1)
        for name in names[shift:] + names[:shift]:
            result = run(models[name])
            if name not in best or result[key] > best[name][key]:
                best[name] = result
    return {name: best[name] for name in names}


def speeds_and_sizes(model_dirs: dict[str, Path], load: Callable[[Path], Any], run: Callable[[Any], dict],
                     scores: tuple[str, ...], rounds: int) -> dict[str, dict]:
    """A table's model rows: each saved model (``load(directory)``) with its ``parameter_count()``, the
    ``scores`` and ``sentences_per_second`` of its fastest ``run(model)`` (:func:`fastest_passes`)."""
    torch.manual_seed(0)
    models = {name: load(directory) for name, directory in model_dirs.items()}
    fastest = fastest_passes(models, run, rounds)
    return {name: {"parameters": models[name].parameter_count(), "sentences_per_second": result["sentences_per_second"],
                   **{score: result[score] for score in scores}} for name, result in fastest.items()}
