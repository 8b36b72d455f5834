"""The end of a pipeline run, shared by the NER and parser commands: :func:`finish_run`."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from .checkpoint import load_checkpoint
from .distributed import is_main_process


def finish_run(model: nn.Module, output_dir: str | Path, splits: dict[str, Sequence[Any]],
               evaluate: Callable[[nn.Module, Sequence[Any]], dict], extra: dict | None = None,
               json_default: Callable[[Any], Any] | None = None) -> dict:
    """Load the best weights (``output_dir/best`` when it exists), save the model (``model.save(output_dir /
    "model")``), evaluate it on each non-empty split and write ``output_dir/results.json``.

    Args:
        model: a trained model with a ``save(directory)`` method.
        output_dir: the run's directory (``training.output_dir``).
        splits: evaluation sentences by split name (``{"dev": [...], "test": [...]}``); empty ones are skipped.
        evaluate: ``evaluate(model, sentences) -> results``.
        extra: entries added to the results.
        json_default: ``default`` of ``json.dumps`` for values it cannot write (e.g. numpy numbers).

    Returns:
        ``{split: results, **extra}``; ``{}`` on the non-main processes of a launched run, where the main
        process alone saves and evaluates the (identical) trained model.
    """
    if not is_main_process():
        return {}
    out = Path(output_dir)
    if splits.get("dev") and (out / "best").exists():
        load_checkpoint(out / "best", model)
    model.save(out / "model")
    results = {name: evaluate(model, sentences) for name, sentences in splits.items() if sentences}
    results.update(extra or {})
    (out / "results.json").write_text(json.dumps(results, indent=2, default=json_default), encoding="utf-8")
    return results


__all__ = ["finish_run"]
