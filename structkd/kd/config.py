"""The ``kd`` section of every task's config: the distillation options the task runner reads.

A task narrows :attr:`KdConfig.METHODS` to the methods it implements and may add options of its own (the
parser's ``relations``); everything else is shared, so an option is written once for every task.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from structkd.kd.schedules import teacher_annealing

__all__ = ["KdConfig", "KD_METHODS", "kd_weight"]

KD_METHODS = ("structural", "posterior", "token", "topk", "topwk", "seqlevel", "none")


@dataclass
class KdConfig:
    """Distillation options (see :mod:`structkd.kd`).

    ``method``: which teacher output the student learns from; ``temperature`` and ``temperature_mode``
    (``global``: the whole distribution, ``local``: per substructure); ``kd_weight``: the KD loss's share on
    labeled sentences (unlabeled ones get the KD loss alone); ``annealing: teacher`` moves that share from 1 to 0
    over training; ``top_k`` for the top-K methods; ``teacher``: the saved teacher's directory; ``cache_dir``:
    where its outputs are cached (default ``output_dir/teacher_cache``); ``impossible``: what to do with teacher
    mass on structures the student cannot produce (``renormalize``: the teacher restricted to the student's
    structures, exact; ``ignore``; ``error``; see :mod:`structkd.kd.projections` and ``docs/teachers.md``).
    """

    method: str = "structural"
    temperature: float = 1.0
    temperature_mode: str = "global"
    kd_weight: float = 0.5
    annealing: str = "none"
    top_k: int = 5
    teacher: str | None = None
    cache_dir: str | None = None
    impossible: str = "renormalize"

    METHODS: ClassVar[tuple[str, ...]] = KD_METHODS

    def __post_init__(self):
        checks = (("method", self.METHODS), ("annealing", ("none", "teacher")),
                  ("temperature_mode", ("global", "local")), ("impossible", ("renormalize", "ignore", "error")))
        for name, allowed in checks:
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"kd.{name} must be one of {', '.join(allowed)}, got {value!r}")
        if self.temperature <= 0 or not 0.0 <= self.kd_weight <= 1.0:
            raise ValueError(f"kd.temperature must be positive and kd.kd_weight in [0, 1], got "
                             f"{self.temperature} and {self.kd_weight}")


def kd_weight(kd: KdConfig, step: int, total_steps: int) -> float:
    """The weight of the KD loss at ``step``: constant, or linearly annealed from 1 to 0 (teacher annealing)."""
    if kd.annealing == "teacher":
        return teacher_annealing(step, total_steps, start=1.0, end=0.0)
    return kd.kd_weight
