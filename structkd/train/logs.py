"""Run logs: a JSONL file (one JSON object per line) and PNG learning curves drawn with matplotlib (Agg)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

__all__ = ["JsonlLogger", "read_jsonl", "plot_learning_curves"]


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


def plot_learning_curves(log_path: str | os.PathLike, png_path: str | os.PathLike, metric: str) -> Path:
    """Draw training loss (``type == "train"`` records) and dev metrics (``type == "eval"``) against the
    global step into ``png_path`` (written to a temporary name, then ``os.replace``d)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    records = read_jsonl(log_path)
    train = [(r["global_step"], r["loss"]) for r in records if r.get("type") == "train" and r.get("loss") is not None]
    evals = [r for r in records if r.get("type") == "eval"]
    fig = Figure(figsize=(10, 4))
    ax_loss, ax_metric = fig.subplots(1, 2)
    if train:
        ax_loss.plot([s for s, _ in train], [v for _, v in train], label="train loss")
    if any(r.get("loss") is not None for r in evals):
        ax_loss.plot([r["global_step"] for r in evals if r.get("loss") is not None],
                     [r["loss"] for r in evals if r.get("loss") is not None], "o-", label="dev loss")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss")
    if ax_loss.get_legend_handles_labels()[0]:  # nothing logged yet before the first log_every steps
        ax_loss.legend(loc="best")
    names = sorted({k for r in evals for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
                   - {"epoch", "global_step", "loss", "time", "best_metric"})
    for name in names:
        pts = [(r["global_step"], r[name]) for r in evals if isinstance(r.get(name), (int, float))]
        ax_metric.plot([s for s, _ in pts], [v for _, v in pts], "o-", label=name, linewidth=2 if name == metric else 1)
    ax_metric.set_xlabel("step")
    ax_metric.set_ylabel("dev metric")
    if names:
        ax_metric.legend(loc="best")
    fig.tight_layout()
    png_path = Path(png_path)
    tmp = png_path.with_name(f".{png_path.name}.tmp.png")
    fig.savefig(tmp, dpi=80)
    os.replace(tmp, png_path)
    return png_path

