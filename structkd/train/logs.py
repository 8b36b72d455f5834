"""Run logs: a JSONL file (one JSON object per line) and PNG learning curves drawn with matplotlib (Agg)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

__all__ = ["JsonlLogger", "epoch_mean_loss", "learning_curve_series", "plot_learning_curves", "read_jsonl"]


class JsonlLogger:
    """Append-only JSONL log. ``truncate(offset)`` drops lines written after a checkpoint (on resume)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def offset(self) -> int:
        """Current size of the file in bytes (0 if absent): stored in checkpoints."""
        return self.path.stat().st_size if self.path.exists() else 0

    def truncate(self, offset: int) -> None:
        """Cut the file back to ``offset`` bytes (no-op if it is already shorter or absent)."""
        if self.path.exists() and self.path.stat().st_size > offset:
            with open(self.path, "r+b") as fh:
                fh.truncate(offset)

    def write(self, record: dict[str, Any]) -> None:
        """Append one record (floats that are NaN/inf are written as ``null``) and flush it to disk."""
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(clean, sort_keys=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of a JSONL file (empty list if absent)."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


Series = dict[str, list[tuple[int, float]]]

# eval-record fields that are bookkeeping, not metrics
_NOT_METRICS = {"type", "epoch", "global_step", "time", "best_metric", "best_epoch", "lr"}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def epoch_mean_loss(records: list[dict[str, Any]], epoch: int) -> float | None:
    """Mean training loss of ``epoch`` over its ``train`` records, each weighted by the ``steps`` it averages
    (1 for records written without it); ``None`` if the epoch has none."""
    rows = [(r["loss"], r.get("steps") or 1) for r in records
            if r.get("type") == "train" and r.get("epoch") == epoch and _number(r.get("loss"))]
    total = sum(n for _, n in rows)
    return sum(v * n for v, n in rows) / total if total else None


def learning_curve_series(records: list[dict[str, Any]], metric: str) -> dict[str, Series]:
    """The series of the learning-curve panels, each ``{label: [(global_step, value), ...]}``.

    ``"loss"``: ``train loss`` (the ``train`` records) and ``dev loss`` (an eval metric named ``loss``);
    ``"metrics"``: ``metric`` and every dev metric whose values all lie in [0, 1] (F1, LAS, ...);
    ``"other"``: dev values on another scale (``sentences_per_second``, counts), which would flatten the
    metrics if they shared an axis."""
    train = [(r["global_step"], r["loss"]) for r in records if r.get("type") == "train" and _number(r.get("loss"))]
    evals = [r for r in records if r.get("type") == "eval"]
    names = sorted({k for r in evals for k, v in r.items() if _number(v)} - _NOT_METRICS)
    panels: dict[str, Series] = {"loss": {}, "metrics": {}, "other": {}}
    if train:
        panels["loss"]["train loss"] = train
    for name in names:
        points = [(r["global_step"], float(r[name])) for r in evals if _number(r.get(name))]
        if name == "loss":
            panels["loss"]["dev loss"] = points
        elif name == metric or all(0.0 <= v <= 1.0 for _, v in points):
            panels["metrics"][name] = points
        else:
            panels["other"][name] = points
    return panels


def _draw(ax: Any, series: Series, title: str, ylabel: str, highlight: str | None = None) -> None:
    """Plot each series with markers (a lone point stays visible), a legend when there is one."""
    for label, points in series.items():
        ax.plot([s for s, _ in points], [v for _, v in points], marker="o" if len(points) <= 50 else None,
                markersize=3, label=label, linewidth=2.2 if label == highlight else 1.2)
    ax.set_title(title, fontsize="medium")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(loc="best", fontsize="small")


def plot_learning_curves(log_path: str | os.PathLike, png_path: str | os.PathLike, metric: str) -> Path:
    """Draw :func:`learning_curve_series` of a ``train_log.jsonl`` into ``png_path``: the loss, the dev
    metrics on a [0, 1]-scale axis (``metric`` drawn thicker) and, in a third panel on a log scale, the dev
    values of another scale (speed, counts).  Written to a temporary name, then ``os.replace``d."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    panels = learning_curve_series(read_jsonl(log_path), metric)
    n = 3 if panels["other"] else 2
    fig = Figure(figsize=(5 * n, 4))
    axes = fig.subplots(1, n)
    _draw(axes[0], panels["loss"], "loss", "loss")
    _draw(axes[1], panels["metrics"], f"dev scores (selected: {metric})", "dev metric", highlight=metric)
    if panels["other"]:
        log = all(v > 0 for pts in panels["other"].values() for _, v in pts)
        _draw(axes[2], panels["other"], "dev speed and counts", "value (log scale)" if log else "value")
        if log:
            axes[2].set_yscale("log")
    fig.tight_layout()
    png_path = Path(png_path)
    tmp = png_path.with_name(f".{png_path.name}.tmp.png")
    fig.savefig(tmp, dpi=80)
    os.replace(tmp, png_path)
    return png_path
