"""Internal-representation KD for transformer students (TinyBERT, Jiao et al. 2020; Aguilar et al. 2020).

* :class:`HiddenStateKD`: mean squared error between student hidden states, passed through a learned linear
  projection to the teacher's width, and the teacher's hidden states of the mapped layers;
* :func:`attention_kd_loss`: KL divergence between the teacher's and the student's attention distributions
  of the mapped layers.

Hidden states and attentions are what ``transformers`` models return with ``output_hidden_states=True`` and
``output_attentions=True``: sequences of ``[batch_size, seq_len, hidden]`` and
``[batch_size, n_heads, seq_len, seq_len]`` tensors.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

Tensor = torch.Tensor
LayerMap = Sequence[tuple[int, int]]


def uniform_layer_map(n_student: int, n_teacher: int) -> list[tuple[int, int]]:
    """Map student layer ``i`` (1-based, as in ``hidden_states[i]``) to teacher layer ``i * n_teacher //
    n_student``, plus the embeddings (0 to 0): the "uniform" strategy of TinyBERT."""
    if n_student < 1 or n_teacher < n_student:
        raise ValueError(f"need 1 <= n_student <= n_teacher, got {n_student} and {n_teacher}")
    return [(0, 0)] + [(i, i * n_teacher // n_student) for i in range(1, n_student + 1)]


class HiddenStateKD(nn.Module):
    """Learned-projection hidden-state matching.

    Args:
        student_dim: width of the student's hidden states.
        teacher_dim: width of the teacher's hidden states.
        layer_map: pairs ``(student layer, teacher layer)`` indexing the hidden-state sequences.
        shared_projection: one projection for all pairs instead of one per pair.
    """

    def __init__(self, student_dim: int, teacher_dim: int, layer_map: LayerMap, shared_projection: bool = False):
        super().__init__()
        self.layer_map = [tuple(pair) for pair in layer_map]
        if not self.layer_map:
            raise ValueError("layer_map is empty")
        count = 1 if shared_projection else len(self.layer_map)
        self.projections = nn.ModuleList(nn.Linear(student_dim, teacher_dim) for _ in range(count))

    def forward(self, student_hidden: Sequence[Tensor], teacher_hidden: Sequence[Tensor], mask: Tensor) -> Tensor:
        """Per-sentence loss ``[batch_size]``: for each mapped pair, the squared error averaged over the
        teacher's width and the tokens in ``mask`` (``BoolTensor [batch_size, seq_len]``), summed over pairs."""
        tokens = mask.sum(-1).clamp(min=1)
        total = 0.0
        for n, (s_layer, t_layer) in enumerate(self.layer_map):
            if s_layer >= len(student_hidden) or t_layer >= len(teacher_hidden):
                raise ValueError(f"layer pair ({s_layer}, {t_layer}) is out of range for {len(student_hidden)} "
                                 f"student and {len(teacher_hidden)} teacher hidden states")
            projection = self.projections[n if len(self.projections) > 1 else 0]
            diff = projection(student_hidden[s_layer]) - teacher_hidden[t_layer].detach()
            per_token = (diff**2).mean(-1)
            total = total + (per_token * mask).sum(-1) / tokens
        return total


def attention_kd_loss(student_attentions: Sequence[Tensor], teacher_attentions: Sequence[Tensor], mask: Tensor,
                      layer_map: LayerMap) -> Tensor:
    """Per-sentence ``KL(teacher attention || student attention)`` averaged over heads and query tokens in
    ``mask``, summed over mapped layers ``(student layer, teacher layer)`` (0-based attention indices).
    When head counts differ, both sides are averaged over heads first."""
    tiny = 1e-12
    queries = mask.sum(-1).clamp(min=1)
    total = 0.0
    for s_layer, t_layer in layer_map:
        s_att, t_att = student_attentions[s_layer], teacher_attentions[t_layer].detach()
        if s_att.shape[1] != t_att.shape[1]:
            s_att, t_att = s_att.mean(1, keepdim=True), t_att.mean(1, keepdim=True)
        kl = (t_att * ((t_att + tiny).log() - (s_att + tiny).log())).sum(-1).mean(1)  # [B, L]
        total = total + (kl * mask).sum(-1) / queries
    return total


def hidden_layer_map(spec: str | Sequence[tuple[int, int]], n_student: int, n_teacher: int
                     ) -> list[tuple[int, int]]:
    """The ``(student, teacher)`` hidden-state pairs of ``kd.hidden_layers`` for models with ``n_student`` and
    ``n_teacher`` hidden states (a transformer's embeddings and layers; a BiLSTM's one output).

    ``"uniform"``: a BiLSTM student's output to the teacher's top layer, a transformer student's
    :func:`uniform_layer_map` (embeddings to embeddings, layer ``i`` to ``i * n_t // n_s``); ``"last"``: top to
    top; explicit pairs are checked against both ranges."""
    if spec == "last" or (spec == "uniform" and n_student == 1):
        return [(n_student - 1, n_teacher - 1)]
    if spec == "uniform":
        if n_student > n_teacher:
            raise ValueError(f"kd.hidden_layers=uniform maps {n_student - 1} student layers onto {n_teacher - 1} "
                             f"teacher layers: give explicit student-teacher pairs")
        return uniform_layer_map(n_student - 1, n_teacher - 1)
    pairs = [(int(s), int(t)) for s, t in spec]
    bad = [p for p in pairs if not (0 <= p[0] < n_student and 0 <= p[1] < n_teacher)]
    if bad:
        raise ValueError(f"kd.hidden_layers: pairs {bad} are out of range for {n_student} student and {n_teacher} "
                         f"teacher hidden states (0 is the embeddings' output)")
    return pairs


def attention_layer_map(n_student: int, n_teacher: int) -> list[tuple[int, int]]:
    """0-based attention pairs: student layer ``i`` (1-based) to teacher layer ``i * n_teacher // n_student``,
    so the top layers match (TinyBERT's uniform strategy)."""
    if not 1 <= n_student <= n_teacher:
        raise ValueError(f"attention matching needs 1 <= student layers <= teacher layers, got {n_student} and "
                         f"{n_teacher}")
    return [(i - 1, i * n_teacher // n_student - 1) for i in range(1, n_student + 1)]
