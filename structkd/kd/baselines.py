"""The KD baselines that structural KD is compared against (Wang et al., 2021, Section 5).

* token-level KD: KL from the teacher's per-token softmax of its *scores* (emissions, head-selection logits)
  to the student's, ignoring structure;
* posterior KD: KL between the teacher's and the student's per-token *marginals*;
* Top-K: mean negative log-likelihood of the teacher's ``k`` best structures under the student, and Top-WK,
  the same weighted by the teacher's normalized probabilities of those structures;
* sequence-level hard KD: the teacher's best structure as pseudo-gold.

Every loss is per sentence, ``[batch_size]``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from structkd.numerics import LOG_ZERO
from structkd.structs.base import StructuredDistribution

Tensor = torch.Tensor
Convert = Callable[[Tensor], Tensor]


def token_kd_loss(teacher_logits: Tensor, student_logits: Tensor, mask: Tensor, temperature: float = 1.0,
                  class_mask: Tensor | None = None, t2_scaling: bool = True) -> Tensor:
    """``sum_i KL(softmax(t_i / T) || softmax(s_i / T))`` per sentence.

    Args:
        teacher_logits: ``[batch_size, seq_len, n_classes]`` teacher scores (no gradient flows into them).
        student_logits: ``[batch_size, seq_len, n_classes]``.
        mask: ``BoolTensor [batch_size, seq_len]``, the positions that count.
        temperature: ``T > 0``, applied to both.
        class_mask: optional ``BoolTensor`` broadcastable to the logits: classes that exist (for example heads
            inside the sentence for head selection); others are excluded from both softmaxes.
        t2_scaling: multiply by ``T^2``.
    """
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(f"teacher logits {list(teacher_logits.shape)} and student logits "
                         f"{list(student_logits.shape)} differ in shape")
    t = teacher_logits.detach() / temperature
    s = student_logits / temperature
    if class_mask is not None:
        t = t.masked_fill(~class_mask, LOG_ZERO)
        s = s.masked_fill(~class_mask, LOG_ZERO)
    p = t.log_softmax(-1)
    kl = (p.exp() * (p - s.log_softmax(-1))).sum(-1)
    loss = (kl * mask).sum(-1)
    return loss * temperature**2 if t2_scaling else loss


def posterior_kd_loss(teacher: StructuredDistribution, student: StructuredDistribution) -> Tensor:
    """``sum_i KL(P_T(y_i) || P_S(y_i))`` over the main part's substructures (tags of each token, heads of
    each word), with the student's marginals differentiated through its dynamic program."""
    target = teacher.marginals
    student_marg = student.part_marginals(differentiable=True)[0]
    if target.shape != student_marg.shape:
        raise ValueError(f"teacher marginals {list(target.shape)} and student marginals "
                         f"{list(student_marg.shape)} differ in shape")
    tiny = torch.finfo(student_marg.dtype).tiny
    kl = target * (target.clamp(min=tiny).log() - student_marg.clamp(min=tiny).log())
    return kl.reshape(kl.shape[0], -1).sum(-1)


def topk_kd_loss(teacher: StructuredDistribution, student: StructuredDistribution, k: int,
                 weighted: bool = False, convert: Convert | None = None) -> Tensor:
    """Top-K (``weighted=False``, mean) or Top-WK (``weighted=True``, weights = the teacher's probabilities
    of its ``k`` best structures, renormalized) negative log-likelihood under the student.

    Args:
        teacher, student: distributions over the same sentences.
        k: how many of the teacher's best structures.
        weighted: Top-WK instead of Top-K.
        convert: maps a batch of teacher structures to the student's structure layout (identity by default).
    """
    structures = teacher.topk(k)  # [k, B, ...]
    scores = teacher.kmax(k)  # [k, B]
    exists = scores > LOG_ZERO / 2
    best = structures[0]
    if weighted:
        weights = scores.masked_fill(~exists, LOG_ZERO).softmax(0) * exists
    else:
        weights = exists.to(scores.dtype) / exists.sum(0).clamp(min=1)
    total = torch.zeros(teacher.batch_size, dtype=student.dtype, device=student.device)
    for r in range(k):
        structure = torch.where(exists[r].view(-1, *([1] * (best.dim() - 1))), structures[r], best)
        if convert is not None:
            structure = convert(structure)
        total = total - weights[r].to(student.dtype) * student.log_prob(structure)
    return total


def seqlevel_kd_loss(teacher: StructuredDistribution, student: StructuredDistribution,
                     convert: Convert | None = None) -> Tensor:
    """Sequence-level hard KD: ``-log P_S(argmax_y P_T(y))``."""
    structure = teacher.argmax
    return -student.log_prob(structure if convert is None else convert(structure))
