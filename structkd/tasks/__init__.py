"""Tasks behind one runner: the :class:`Task` contract (:mod:`structkd.tasks.base`) and the commands that drive
any task (:mod:`structkd.tasks.runner`).  Each task is registered by name in :data:`TASKS` (imported on
demand: the parser never loads the NER modules and the other way round)."""

from __future__ import annotations

import importlib

from structkd.tasks.base import Prepared, Task, TaskData

__all__ = ["Prepared", "Task", "TaskData", "TASKS", "get_task"]

TASKS = {"ner": ("structkd.ner.pipeline", "named entity recognition"),
         "parse": ("structkd.parse.pipeline", "dependency parsing"),
         "upos": ("structkd.tasks.upos", "part-of-speech tagging (UPOS, CoNLL-U)")}
"""Task name -> (the module whose ``TASK`` is that task, a one-line description)."""


def get_task(name: str) -> Task:
    """The registered task called ``name``."""
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    return importlib.import_module(TASKS[name][0]).TASK
