"""A run's output directory: a new run never mixes with an older one (:func:`prepare_output_dir`).

A directory that holds an earlier run (any of :data:`RUN_FILES`) is refused unless the run continues it
(``--resume``) or replaces it (``--overwrite``, which removes the earlier run's files and nothing else).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from .distributed import is_main_process, wait_for_everyone

__all__ = ["RUN_FILES", "RunDirectoryError", "prepare_output_dir"]

logger = logging.getLogger("structkd.train")

# what structkd writes into a run's output_dir: the pipelines' configs, the Trainer's config, log, curves and
# checkpoints, finish_run's model and results, and the teacher cache when kd.cache_dir is not set
RUN_FILES = ("ner_config.json", "parse_config.json", "config.json", "train_log.jsonl", "learning_curves.png",
             "results.json", "last", "best", "model", "teacher_cache")
# the config every task's runner saves (structkd.tasks.Task.config_file: ner_config.json, upos_config.json, ...)
TASK_CONFIGS = "*_config.json"
# the atomic writes' leftovers next to those directories (structkd.train.atomic)
_ATOMIC_DIRS = ("last", "best", "model", "teacher_cache")
# enough to tell a structkd run directory from any other that happens to have a config.json or a model/
_MARKERS = ("ner_config.json", "parse_config.json", "train_log.jsonl", "last/trainer_state.json",
            "best/trainer_state.json")


class RunDirectoryError(FileExistsError):
    """The output directory holds an earlier run (or is not a run directory that may be overwritten)."""


def _run_entries(directory: Path) -> list[Path]:
    """The entries of ``directory`` that a structkd run wrote (including atomic-write leftovers)."""
    entries = [directory / name for name in RUN_FILES if os.path.lexists(directory / name)]
    entries += sorted(p for p in directory.glob(TASK_CONFIGS) if p not in entries)  # any task's saved config
    for name in _ATOMIC_DIRS:
        for kind in ("tmp", "old", "trash"):
            entries.extend(sorted(directory.glob(f".{name}.{kind}-*")))
    return entries


def _is_run_directory(directory: Path) -> bool:
    """Whether ``directory`` holds one of the files only a structkd run writes (:data:`_MARKERS`), or a
    ``config.json`` that is a structkd training config."""
    if any((directory / marker).is_file() for marker in _MARKERS) or any(directory.glob(TASK_CONFIGS)):
        return True
    try:
        saved = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(saved, dict) and {"output_dir", "epochs", "seed", "metric"} <= set(saved)


def _inside(path: Path, protected: Iterable[Path]) -> bool:
    """Whether removing ``path`` would remove one of ``protected`` (or ``path`` lies inside one)."""
    real = path.resolve()
    return any(real == p or real in p.parents or p in real.parents for p in protected)


def _remove(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        path.unlink()
    else:
        shutil.rmtree(path)


def _overwrite(directory: Path, entries: list[Path], protect: Iterable[str | os.PathLike | None]) -> None:
    """Remove the earlier run's ``entries`` but those holding (or inside) a ``protect`` path."""
    protected = [Path(p).resolve() for p in protect if p]
    kept = [e for e in entries if _inside(e, protected)]
    for entry in entries:
        if entry not in kept:
            _remove(entry)
    logger.info("--overwrite: removed the earlier run's files in %s%s", directory,
                f" (kept {', '.join(e.name for e in kept)}: this run reads them)" if kept else "")


def prepare_output_dir(output_dir: str | os.PathLike, resume: bool = False, overwrite: bool = False,
                       protect: Iterable[str | os.PathLike | None] = ()) -> None:
    """Make ``output_dir`` ready for a run, before any expensive work.

    - A new or empty directory, or one without any file a structkd run writes: nothing to do.
    - ``resume=True``: the directory is the run to continue (``check_resumable`` checks its checkpoint).
    - Otherwise a directory holding an earlier run raises :class:`RunDirectoryError` naming it and the two
      options, unless ``overwrite=True``: then the earlier run's files (:data:`RUN_FILES` and the atomic
      writes' leftovers) are removed (by the main process of a launched run, once every process has checked
      the directory) and everything else in the directory stays.  A directory that does not look like a
      structkd run directory (no ``ner_config.json``, ``parse_config.json``, ``train_log.jsonl``, checkpoint
      or training ``config.json``) is never emptied: ``overwrite`` refuses it too.  Entries that hold a
      ``protect`` path (the teacher, a configured ``kd.cache_dir``) are kept.
    """
    if resume and overwrite:
        raise ValueError("--resume continues the run in output_dir and --overwrite replaces it: pass one of them")
    directory = Path(output_dir)
    if directory.exists() and not directory.is_dir():
        raise RunDirectoryError(f"output_dir {directory} is a file, not a directory")
    if resume:
        return
    entries = _run_entries(directory) if directory.is_dir() else []
    if entries and not overwrite:
        raise RunDirectoryError(f"output_dir {directory} holds an earlier run ({entries[0].name}, ...): pass "
                                f"--resume to continue it or --overwrite to replace it, or choose another output_dir")
    if entries and not _is_run_directory(directory):
        raise RunDirectoryError(f"output_dir {directory} does not look like a structkd run directory (no "
                                f"ner_config.json, parse_config.json, train_log.jsonl or checkpoint), so --overwrite "
                                f"removes nothing there: choose another output_dir")
    # every process of a launched run decides on the same untouched directory before any of them writes there
    wait_for_everyone()
    if entries:
        if is_main_process():
            _overwrite(directory, entries, protect)
        wait_for_everyone()
