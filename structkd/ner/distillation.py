"""What a teacher contributes to NER distillation, computed once and cached, and the student's KD loss.

Per KD method, the teacher cache holds for each sentence of ``n`` words:

=========== ==================================================================================
structural  the teacher's marginals over the student's parts: ``unary [n, N]`` and, for a CRF
            student, ``edges [n - 1, N, N]`` (any teacher: CRF, MaxEnt or span, via projections)
posterior   the teacher's tag marginals ``unary [n, N]``
token       the teacher's per-token scores ``logits [n, N]`` (CRF or MaxEnt teachers)
topk/topwk  the teacher's ``k`` best tag sequences ``topk_tags [k, n]`` and their weights ``[k]``
seqlevel    the same with ``k = 1``
=========== ==================================================================================

With the global temperature the teacher is cached at temperature ``T`` and the student is scaled by
``1 / T`` when the loss is computed; with the local one, cached marginals are tempered per substructure.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from structkd.kd import (
    local_temperature,
    project,
    structural_kd_loss_from_marginals,
    token_kd_loss,
)
from structkd.models.span import chart_to_tags
from structkd.ner.config import KdConfig
from structkd.ner.modeling import NerModel
from structkd.numerics import LOG_ZERO, STORED_LOG_ZERO
from structkd.structs.base import StructuredDistribution, length_mask
from structkd.structs.chain import LinearChainCRF, MaxEnt
from structkd.structs.semimarkov import SemiMarkovCRF

Tensor = torch.Tensor


def _probe(student_head: str, lens: Tensor, n_tags: int, dtype=torch.float32) -> StructuredDistribution:
    """A distribution of the student's type (zero scores) that fixes the layout of its parts."""
    scores = torch.zeros(len(lens), int(lens.max()), n_tags, dtype=dtype, device=lens.device)
    return LinearChainCRF(scores, lens=lens) if student_head == "crf" else MaxEnt(scores, lens)


def _projection_options(teacher: NerModel, student_tags: Sequence[str], scheme: str) -> dict:
    if teacher.head_kind == "span":
        return {"span_labels": teacher.tagger.span_labels, "tags": list(student_tags), "scheme": scheme}
    return {}


def teacher_fields(method: str, student_head: str) -> list[str]:
    """Names of the cached fields of a KD method."""
    if method == "structural":
        return ["unary", "edges"] if student_head == "crf" else ["unary"]
    return {"posterior": ["unary"], "token": ["logits"], "topk": ["topk_tags", "topk_weights"],
            "topwk": ["topk_tags", "topk_weights"], "seqlevel": ["topk_tags", "topk_weights"], "none": []}[method]


def _top_structures(teacher: NerModel, dist: StructuredDistribution, k: int, weighted: bool, tag_index: dict
                    ) -> tuple[Tensor, Tensor]:
    """``tags [k, B, L]`` (-1 for missing) and weights ``[k, B]`` of the teacher's k best structures."""
    structures, scores = dist.topk(k), dist.kmax(k)
    exists = scores > LOG_ZERO / 2
    if isinstance(dist, SemiMarkovCRF):
        rows = []
        for r in range(k):
            names = chart_to_tags(structures[r], dist.lens, teacher.tagger.span_labels, teacher.tagger.scheme)
            row = torch.full(structures.shape[1:3], -1, dtype=torch.long)
            for b, seq in enumerate(names):
                row[b, :len(seq)] = torch.tensor([tag_index[t] for t in seq], dtype=torch.long)
            rows.append(row)
        structures = torch.stack(rows).to(scores.device)
    if weighted:
        weights = scores.masked_fill(~exists, LOG_ZERO).softmax(0) * exists
    else:
        weights = exists.to(scores.dtype) / exists.sum(0).clamp(min=1)
    return structures, weights


def compute_teacher_outputs(teacher: NerModel, sentences: Sequence, kd: KdConfig, student_head: str,
                            student_tags: Sequence[str], scheme: str) -> list[dict[str, Tensor]]:
    """The cached fields of :func:`teacher_fields` for a batch of sentences, one dict per sentence."""
    with torch.no_grad():
        dist = teacher(sentences)
        if kd.temperature != 1.0 and kd.temperature_mode == "global":
            dist = dist.scaled(1.0 / kd.temperature)
        lens = dist.lens
        per_batch: dict[str, Tensor] = {}
        if kd.method in ("structural", "posterior"):
            head = student_head if kd.method == "structural" else "maxent"
            probe = _probe(head, lens, len(student_tags))
            marginals = project(dist, probe, **_projection_options(teacher, student_tags, scheme))
            per_batch["unary"] = marginals[0]
            if len(marginals) > 1:
                per_batch["edges"] = marginals[1]
        elif kd.method == "token":
            if isinstance(dist, SemiMarkovCRF):
                raise ValueError("token KD needs per-token teacher scores: use a CRF or MaxEnt teacher")
            # impossible tags (constraints) are LOG_ZERO, stored as STORED_LOG_ZERO in the float16 cache
            per_batch["logits"] = dist.potentials[0].clamp(min=STORED_LOG_ZERO)
        elif kd.method in ("topk", "topwk", "seqlevel"):
            k = 1 if kd.method == "seqlevel" else kd.top_k
            index = {t: i for i, t in enumerate(student_tags)}
            tags, weights = _top_structures(teacher, dist, k, kd.method == "topwk", index)
            per_batch["topk_tags"] = tags.transpose(0, 1)  # [B, k, L]
            per_batch["topk_weights"] = weights.t()
    out = []
    for b, n in enumerate(lens.tolist()):
        row = {}
        for name, value in per_batch.items():
            if name == "edges":
                row[name] = value[b, :max(n - 1, 0)].float().cpu()
            elif name == "topk_tags":
                row[name] = value[b, :, :n].float().cpu()
            elif name == "topk_weights":
                row[name] = value[b].float().cpu()
            else:
                row[name] = value[b, :n].float().cpu()
        out.append(row)
    return out


def kd_loss(kd: KdConfig, student: StructuredDistribution, cached: dict[str, Tensor]) -> Tensor:
    """Per-sentence KD loss ``[batch_size]`` of the student from the batch's cached teacher outputs
    (padded: ``unary [B, L, N]``, ``edges [B, L - 1, N, N]``, ``logits [B, L, N]``, ``topk_tags [B, k, L]``,
    ``topk_weights [B, k]``)."""
    temp = kd.temperature
    if kd.method == "structural":
        marginals = tuple(cached[f] for f in ("unary", "edges") if f in cached)
        if kd.temperature_mode == "local":
            marginals = local_temperature(marginals, temp, [1, 2][:len(marginals)])
            return structural_kd_loss_from_marginals(marginals, student)
        scaled = student.scaled(1.0 / temp) if temp != 1.0 else student
        return structural_kd_loss_from_marginals(marginals, scaled) * temp**2
    if kd.method == "posterior":
        target = cached["unary"]
        mine = student.part_marginals(differentiable=True)[0]
        tiny = torch.finfo(mine.dtype).tiny
        kl = target * (target.clamp(min=tiny).log() - mine.clamp(min=tiny).log())
        return kl.flatten(1).sum(-1)
    if kd.method == "token":
        mask = length_mask(student.lens, student.max_len)
        return token_kd_loss(cached["logits"], student.potentials[0], mask, temp)
    if kd.method in ("topk", "topwk", "seqlevel"):
        tags = cached["topk_tags"].round().long()  # [B, k, L]
        weights = cached["topk_weights"]
        total = torch.zeros(student.batch_size, dtype=student.dtype, device=student.device)
        inside = length_mask(student.lens, student.max_len)
        for r in range(tags.shape[1]):
            row = tags[:, r]
            present = weights[:, r] > 0
            row = torch.where(present.unsqueeze(-1) & inside, row, torch.where(inside, tags[:, 0], -1))
            total = total - weights[:, r].to(student.dtype) * student.log_prob(row)
        return total
    return torch.zeros(student.batch_size, dtype=student.dtype, device=student.device)
