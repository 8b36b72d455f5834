"""Process roles under ``accelerate launch`` / ``torchrun``, for the work around the training loop.

The :class:`~structkd.train.Trainer` handles sharding, gradient synchronization and main-only checkpoints
itself; the pipelines use these helpers for what happens before and after it: the teacher cache is computed
once, each process its share of the segments (:func:`process_role`), and the final model, configs and results are
written by the main process only.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch


def running_under_accelerate() -> bool:
    """True inside ``accelerate launch`` (which exports ``ACCELERATE_MIXED_PRECISION``) or ``torchrun``."""
    return "ACCELERATE_MIXED_PRECISION" in os.environ or int(os.environ.get("WORLD_SIZE", "1")) > 1


def _state():
    """Accelerate's process state (initializing the process group, as the Trainer's Accelerator would)."""
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def launched_device() -> torch.device:
    """This process's device in a launched run (its GPU, or the CPU)."""
    return _state().device


def is_main_process() -> bool:
    """Whether this process writes shared files (always True outside a launched run)."""
    return _state().is_main_process if running_under_accelerate() else True


def process_role() -> tuple[int, int]:
    """``(index, count)`` of this process among the launched ones; ``(0, 1)`` outside a launched run."""
    if not running_under_accelerate():
        return 0, 1
    state = _state()
    return int(state.process_index), int(state.num_processes)


@contextlib.contextmanager
def main_process_first() -> Iterator[None]:
    """Run the block on the main process first, then on the others (which then find its results on disk)."""
    if not running_under_accelerate():
        yield
        return
    with _state().main_process_first():
        yield


def wait_for_everyone() -> None:
    """A barrier between the launched processes (nothing outside a launched run)."""
    if running_under_accelerate():
        _state().wait_for_everyone()


__all__ = ["is_main_process", "launched_device", "main_process_first", "process_role", "running_under_accelerate",
           "wait_for_everyone"]
