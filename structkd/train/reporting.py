"""The trainer's built-in callbacks: a console line per epoch (:class:`ConsoleReport`) and the learning curves
(:class:`LearningCurves`); :func:`default_callbacks` adds the experiment trackers of ``training.report_to``."""

from __future__ import annotations

import logging
from typing import Any

from .callbacks import StepContext, TrainerCallback
from .config import TrainConfig
from .logs import epoch_mean_loss, plot_learning_curves, read_jsonl
from .tracking import ExperimentTrackers

__all__ = ["ConsoleReport", "LearningCurves", "default_callbacks", "epoch_line", "format_metric"]

logger = logging.getLogger("structkd.train")


def format_metric(name: str, value: float) -> str:
    """A dev value as the console shows it: a score in [0, 1] in percent (``0.5567`` -> ``55.67``), a loss
    or any other value with 4 significant digits."""
    if "loss" not in name and 0.0 <= value <= 1.0:
        return f"{100 * value:.2f}"
    return f"{value:.4g}"


def epoch_line(step: StepContext, loss: float | None, metric: str | None = None,
               metrics: dict[str, float] | None = None, best: float | None = None,
               best_epoch: int | None = None) -> str:
    """``epoch 3/10  step 150/500  dev f1 55.67 (best 55.67 @ epoch 3)  loss 1.234  312 sent/s``: the dev
    part only with ``metrics`` (which hold ``metric``), the loss only when known, the speed when ``metrics`` have
    ``sentences_per_second``.  Epochs count from 1 here."""
    parts = [f"epoch {step.epoch + 1}/{step.epochs}", f"step {step.global_step}/{step.total_steps}"]
    if metrics is not None and metric is not None:
        dev = f"dev {metric} {format_metric(metric, metrics[metric])}"
        if best is not None and best_epoch is not None:
            dev += f" (best {format_metric(metric, best)} @ epoch {best_epoch + 1})"
        parts.append(dev)
    if loss is not None:
        parts.append(f"loss {loss:.4g}")
    if metrics is not None and "sentences_per_second" in metrics:
        parts.append(f"{metrics['sentences_per_second']:.0f} sent/s")
    return "  ".join(parts)


class ConsoleReport(TrainerCallback):
    """One INFO line of the ``structkd.train`` logger per epoch (:func:`epoch_line`) with the epoch's mean
    training loss and, where the trainer evaluated, the dev metric and the best so far.  Independent of the
    progress bars (``training.progress``); silence it with
    ``logging.getLogger("structkd.train").setLevel(logging.WARNING)``."""

    def on_epoch_end(self, trainer: Any, step: StepContext) -> None:
        if not trainer.is_main or not logger.isEnabledFor(logging.INFO):
            return
        p = trainer.progress
        record = p.history[-1] if p.history and p.history[-1].get("epoch") == step.epoch else None
        loss = epoch_mean_loss(read_jsonl(trainer.log.path), step.epoch)
        logger.info("%s", epoch_line(step, loss, trainer.config.metric, record, p.best_metric, p.best_epoch))


class LearningCurves(TrainerCallback):
    """Redraw ``output_dir/learning_curves.png`` from ``train_log.jsonl`` at each epoch end (main process)."""

    def on_epoch_end(self, trainer: Any, step: StepContext) -> None:
        if trainer.is_main:
            plot_learning_curves(trainer.log.path, trainer.output_dir / "learning_curves.png", trainer.config.metric)


def default_callbacks(config: TrainConfig) -> list[TrainerCallback]:
    """What every trainer runs before the caller's callbacks: the console line, the learning curves and, with
    ``config.report_to``, the experiment trackers."""
    callbacks: list[TrainerCallback] = [ConsoleReport(), LearningCurves()]
    if config.report_to:
        callbacks.append(ExperimentTrackers(config.report_to, config.tracker_project))
    return callbacks
