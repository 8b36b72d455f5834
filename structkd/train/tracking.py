"""Experiment trackers (``training.report_to``): TensorBoard, Weights & Biases, MLflow through Accelerate's.

:func:`check_report_to` reads the setting when the config is built and refuses a tracker whose package is not
installed, with the ``pip`` command that installs it.  :class:`ExperimentTrackers` is the trainer callback that
starts the trackers of :mod:`accelerate.tracking` on the main process (no ``Accelerator`` is needed, so it works
the same with and without ``accelerate launch``), logs each train record as ``train/loss``, ``train/lr``,
``train/grad_norm`` and each evaluation as ``dev/<metric>`` and ``dev/best_<metric>`` at the global step, and
closes them when training ends.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .callbacks import StepContext, TrainerCallback

__all__ = ["TRACKERS", "ExperimentTrackers", "check_report_to", "flat_settings", "tracker_installed"]

# tracker -> (modules any one of which makes it usable, how to install it)
TRACKERS: dict[str, tuple[tuple[str, ...], str]] = {
    "tensorboard": (("tensorboard", "tensorboardX"), "pip install tensorboard"),
    "wandb": (("wandb",), "pip install wandb"),
    "mlflow": (("mlflow",), "pip install mlflow"),
}


def tracker_installed(name: str) -> bool:
    """Whether the package behind tracker ``name`` (a key of :data:`TRACKERS`) can be imported."""
    return any(importlib.util.find_spec(module) is not None for module in TRACKERS[name][0])


def check_report_to(value: str | Sequence[str] | None, key: str = "report_to") -> list[str]:
    """The trackers ``value`` names, checked: ``none`` (or nothing) -> ``[]``; ``all`` -> every installed one;
    otherwise names of :data:`TRACKERS` (a list, or one string with commas).

    Raises ``ValueError`` naming ``key`` for an unknown name, for ``none``/``all`` mixed with others, and for
    a tracker whose package is not installed (with the ``pip install`` command)."""
    items = [value] if value is None or isinstance(value, str) else list(value)
    names = [part.strip().lower() for item in items for part in str(item).split(",") if part.strip()]
    names = list(dict.fromkeys(names))  # repeated names count once
    choices = ", ".join(["none", *TRACKERS, "all"])
    if names in ([], ["none"], ["null"]):
        return []
    if ({"none", "null", "all"} & set(names)) and len(names) > 1:
        raise ValueError(f"{key}: 'none' and 'all' stand alone, got {names}")
    if names == ["all"]:
        found = [name for name in TRACKERS if tracker_installed(name)]
        if not found:
            raise ValueError(f"{key}: all, but no tracker is installed ({'; '.join(TRACKERS[n][1] for n in TRACKERS)})")
        return found
    unknown = [name for name in names if name not in TRACKERS]
    if unknown:
        raise ValueError(f"{key}: unknown tracker(s) {', '.join(unknown)}; choose from {choices}")
    for name in names:
        if not tracker_installed(name):
            raise ValueError(f"{key}: {name} is not installed here: {TRACKERS[name][1]} (or leave it out of {key})")
    return names


def flat_settings(settings: dict[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    """``{"training": {"lr": 0.1}}`` -> ``{"training.lr": 0.1}``: the scalar values trackers store as
    hyper-parameters (lists and ``None`` as their JSON text)."""
    out: dict[str, bool | int | float | str] = {}
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_settings(value, f"{name}."))
        elif isinstance(value, (bool, int, float, str)):
            out[name] = value
        else:
            out[name] = json.dumps(value, default=str)
    return out


def _make_tracker(name: str, output_dir: Path, project: str, resume_step: int) -> Any:
    """An :mod:`accelerate.tracking` tracker, not yet started.  TensorBoard writes ``output_dir/tensorboard``;
    on a resumed run (``resume_step`` > 0) it purges what the interrupted run logged after its checkpoint."""
    from accelerate import PartialState, tracking

    PartialState(cpu=not torch.cuda.is_available())  # accelerate's logging wants its process state, even unlaunched
    if name == "tensorboard":
        kwargs = {"purge_step": resume_step + 1} if resume_step else {}
        tracker = tracking.TensorBoardTracker("tensorboard", output_dir, **kwargs)
    elif name == "wandb":
        tracker = tracking.WandBTracker(project, name=output_dir.name, dir=str(output_dir))
    else:
        tracker = tracking.MLflowTracker(experiment_name=project, run_name=output_dir.name)
    tracker.main_process_only = False  # only the trainer's main process makes trackers
    return tracker


class ExperimentTrackers(TrainerCallback):
    """Log a run to the trackers ``names`` (checked by :func:`check_report_to`) under ``project`` (the W&B
    project, the MLflow experiment).  Main process only."""

    def __init__(self, names: Sequence[str], project: str = "structkd") -> None:
        self.names = check_report_to(list(names))
        self.project = project
        self.trackers: list[Any] = []

    def on_train_begin(self, trainer: Any, step: StepContext) -> None:
        if not trainer.is_main or not self.names:
            return
        self.trackers = [_make_tracker(n, trainer.output_dir, self.project, step.global_step) for n in self.names]
        settings = {"training": trainer.config.to_dict(), **(trainer.run_config or {})}
        for tracker in self.trackers:
            tracker.start()
            tracker.store_init_configuration(flat_settings(settings))

    def log(self, values: dict[str, float], step: int) -> None:
        """Send ``values`` to every started tracker at global step ``step``."""
        for tracker in self.trackers:
            tracker.log(values, step=step)

    def on_log(self, trainer: Any, step: StepContext, values: dict[str, Any]) -> None:
        self.log({f"train/{k}": float(values[k]) for k in ("loss", "lr", "grad_norm") if values.get(k) is not None},
                 step.global_step)

    def on_evaluate(self, trainer: Any, step: StepContext, metrics: dict[str, float]) -> None:
        values = {f"dev/{name}": float(v) for name, v in metrics.items()}
        if trainer.progress.best_metric is not None:
            values[f"dev/best_{trainer.config.metric}"] = float(trainer.progress.best_metric)
        self.log(values, step.global_step)

    def on_train_end(self, trainer: Any, step: StepContext) -> None:
        trackers, self.trackers = self.trackers, []
        for tracker in trackers:
            tracker.finish()
