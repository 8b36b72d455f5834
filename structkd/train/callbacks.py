"""The trainer's events: :class:`StepContext` (where a run stands) and :class:`TrainerCallback` (handlers).

The :class:`~structkd.train.Trainer` fires these events on every process, each with the trainer and a
:class:`StepContext` first (the trainer's files are written on the main process only: ``trainer.is_main``):

=====================================================  ===========================================================
``on_train_begin(trainer, step)``                      once per ``train()`` call, after a resume (``step`` says
                                                       where the run goes on)
``on_step_end(trainer, step, loss)``                   after each optimizer step; ``loss`` is the step's detached
                                                       0-dim tensor (``float(loss)`` waits for the device)
``on_log(trainer, step, values)``                      each ``train`` record of ``train_log.jsonl`` (every
                                                       ``log_every`` steps and at each epoch end): ``loss`` (mean
                                                       since the previous record), ``steps``, ``lr``, ``grad_norm``
``on_evaluate(trainer, step, metrics)``                after each evaluation; ``trainer.progress`` already holds
                                                       the best value and epoch
``on_epoch_end(trainer, step)``                        after the evaluation, before the epoch's checkpoint
``on_train_end(trainer, step)``                        when ``train()`` returns or raises (close files here)
=====================================================  ===========================================================

The built-in behaviours are callbacks themselves (:mod:`structkd.train.reporting`): the console line per
evaluation, the learning curves and the experiment trackers of ``training.report_to``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

__all__ = ["EVENTS", "StepContext", "TrainerCallback", "callback_table", "check_callbacks"]

EVENTS = ("on_train_begin", "on_step_end", "on_log", "on_evaluate", "on_epoch_end", "on_train_end")


@dataclass(frozen=True)
class StepContext:
    """Where a run stands.  ``global_step`` and ``step_in_epoch`` count the optimizer steps already done: in
    ``loss_fn(model, batch, step)`` that is the index of the step being computed (0 for the first one); in
    ``on_step_end`` it includes the step just taken.  ``epoch`` is 0-based (``epoch + 1`` of ``epochs`` on the
    console)."""

    global_step: int
    total_steps: int
    epoch: int
    epochs: int
    step_in_epoch: int
    steps_per_epoch: int

    @property
    def fraction(self) -> float:
        """Progress through the run in ``[0, 1]``: ``global_step / total_steps`` (what teacher annealing and
        other KD-weight schedules read)."""
        if self.total_steps <= 0:
            return 1.0
        return min(max(self.global_step / self.total_steps, 0.0), 1.0)


class TrainerCallback:
    """Base of the trainer's event handlers.

    A subclass defines a method for each event of :data:`EVENTS` it handles, with that event's signature (see
    the module docstring); the trainer calls only the events a callback defines, so the base defines none.  A
    method named ``on_...`` that is no event (a typo such as ``on_step_ended``) is refused when the class is
    defined, instead of never being called."""

    events: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        names = {name for klass in cls.__mro__ for name in vars(klass) if name.startswith("on_")}
        unknown = sorted(names - set(EVENTS))
        if unknown:
            raise TypeError(f"{cls.__name__} defines {', '.join(unknown)}, which the trainer never fires; "
                            f"events are {', '.join(EVENTS)}")
        cls.events = tuple(e for e in EVENTS if e in names)

    def handles(self, event: str) -> bool:
        """Whether this callback defines ``event``."""
        if event not in EVENTS:
            raise ValueError(f"unknown trainer event {event!r}; events are {', '.join(EVENTS)}")
        return event in self.events


def check_callbacks(callbacks: Sequence[Any]) -> list[TrainerCallback]:
    """``callbacks`` as a list; raises ``TypeError`` naming an entry that is not a :class:`TrainerCallback`."""
    for i, callback in enumerate(callbacks):
        if not isinstance(callback, TrainerCallback):
            raise TypeError(f"callbacks[{i}] is a {type(callback).__name__}, not a TrainerCallback "
                            f"(subclass structkd.train.TrainerCallback and define the events it handles)")
    return list(callbacks)


def callback_table(callbacks: Sequence[TrainerCallback]) -> dict[str, list[Any]]:
    """``{event: [bound handler, ...]}`` in the callbacks' order, for every event of :data:`EVENTS`
    (checked by :func:`check_callbacks`)."""
    callbacks = check_callbacks(callbacks)
    return {event: [getattr(c, event) for c in callbacks if c.handles(event)] for event in EVENTS}
