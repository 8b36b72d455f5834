"""How the KD loss is mixed with the gold loss over training.

* :func:`interpolate`: ``lambda * KD + (1 - lambda) * gold NLL``;
* :func:`teacher_annealing`: lambda decays linearly from ``start`` to ``end`` with training progress
  (Clark et al., 2019, "BAM!": the student relies on the teacher early and on gold labels late);
* :class:`AnnealingKD` (Jafari et al., 2021): phase 1 regresses the student's scores on the teacher's scores
  scaled by ``phi(T) = 1 - (T - 1) / tau_max`` while ``T`` steps down from ``tau_max`` to 1; phase 2 trains
  on gold labels only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

Tensor = torch.Tensor


def interpolate(kd_loss: Tensor, gold_loss: Tensor, kd_weight: float) -> Tensor:
    """``kd_weight * kd_loss + (1 - kd_weight) * gold_loss``; ``kd_weight`` in ``[0, 1]``."""
    if not 0.0 <= kd_weight <= 1.0:
        raise ValueError(f"kd_weight (lambda) must lie in [0, 1], got {kd_weight}")
    return kd_weight * kd_loss + (1.0 - kd_weight) * gold_loss


def teacher_annealing(step: int, total_steps: int, start: float = 1.0, end: float = 0.0) -> float:
    """KD weight at ``step`` of ``total_steps``: linear from ``start`` (step 0) to ``end`` (last step)."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    progress = min(max(step / total_steps, 0.0), 1.0)
    return start + (end - start) * progress


@dataclass(frozen=True)
class AnnealingKD:
    """Annealing KD schedule and loss.

    Attributes:
        tau_max: the initial temperature (an integer >= 1 in the paper).
        phase1_steps: steps of phase 1, split into ``tau_max`` equal stages with ``T = tau_max, ..., 1``.
    """

    tau_max: int
    phase1_steps: int

    def __post_init__(self):
        if self.tau_max < 1 or self.phase1_steps < 1:
            raise ValueError(f"tau_max and phase1_steps must be >= 1, got {self.tau_max}, {self.phase1_steps}")

    def phase(self, step: int) -> int:
        """1 (regression on annealed teacher scores) or 2 (gold labels)."""
        return 1 if step < self.phase1_steps else 2

    def temperature(self, step: int) -> int:
        """``T`` at ``step``: ``tau_max`` in the first stage, down to 1 in the last stage of phase 1."""
        stage = min(step * self.tau_max // self.phase1_steps, self.tau_max - 1)
        return self.tau_max - stage

    def scale(self, step: int) -> float:
        """``phi(T) = 1 - (T - 1) / tau_max``."""
        return 1.0 - (self.temperature(step) - 1) / self.tau_max

    def loss(self, student_scores: Tensor, teacher_scores: Tensor, mask: Tensor, step: int) -> Tensor:
        """Per-sentence phase-1 loss ``[batch_size]``: squared error between the student's scores and the
        teacher's scores times ``phi(T)``, summed over the classes and the positions in ``mask``.

        Args:
            student_scores: ``[batch_size, seq_len, ...]`` (emissions, arc scores, ...).
            teacher_scores: same shape (no gradient flows into them).
            mask: ``BoolTensor [batch_size, seq_len]``.
        """
        if student_scores.shape != teacher_scores.shape:
            raise ValueError(f"student scores {list(student_scores.shape)} and teacher scores "
                             f"{list(teacher_scores.shape)} differ in shape")
        diff = (student_scores - teacher_scores.detach() * self.scale(step)) ** 2
        diff = diff.reshape(*diff.shape[:2], -1).sum(-1)
        return (diff * mask).sum(-1)

