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

import logging
from collections.abc import Sequence

import torch

from structkd.kd import (
    local_temperature,
    project,
    structural_kd_loss_from_marginals,
    token_kd_loss,
)
from structkd.kd.projections import chain_forbids_parts
from structkd.kd.structural import restricted_chain_marginals
from structkd.models.hf_teacher import HFTokenClassifier
from structkd.models.span import chart_to_tags
from structkd.models.transformer import EncoderOutput, TransformerTagger
from structkd.ner.config import KdConfig
from structkd.ner.modeling import NerModel
from structkd.numerics import LOG_ZERO, STORED_LOG_ZERO, is_impossible
from structkd.schemes import check_scheme, check_tag
from structkd.structs.base import StructuredDistribution, length_mask
from structkd.structs.chain import LinearChainCRF, MaxEnt
from structkd.structs.semimarkov import SemiMarkovCRF

Tensor = torch.Tensor
logger = logging.getLogger("structkd.ner")


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
                            student_tags: Sequence[str], scheme: str, dist: StructuredDistribution | None = None
                            ) -> list[dict[str, Tensor]]:
    """The cached fields of :func:`teacher_fields` for a batch of sentences, one dict per sentence (from the
    teacher's distribution ``dist`` on them when given, e.g. on mixed inputs)."""
    check_teacher_scheme(teacher, scheme)
    with torch.no_grad():
        dist = teacher(sentences) if dist is None else dist
        raw = dist  # token KD caches the teacher's own scores: token_kd_loss applies the temperature to both sides
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
            per_batch["logits"] = raw.potentials[0].clamp(min=STORED_LOG_ZERO)
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


def _restricted(kd: KdConfig, marginals: tuple[Tensor, ...], student: StructuredDistribution
                ) -> tuple[tuple[Tensor, ...], str]:
    """Cached chain marginals under ``kd.impossible`` for ``student``: restricted to the sequences a constrained
    CRF student allows and renormalized (``renormalize``, the lost mass logged once), or as they are; and the
    rule the loss then applies to them."""
    if kd.impossible != "renormalize" or not chain_forbids_parts(student):
        return marginals, kd.impossible
    restricted, lost = restricted_chain_marginals(marginals, student)
    _log_lost_mass(lost)
    return restricted, "ignore"  # restricted: no mass left on forbidden parts


_LOGGED = {"lost_mass": False}


def start_lost_mass_report() -> None:
    """Report the lost mass of the next batch at INFO again: each distillation run reports its first batch."""
    _LOGGED["lost_mass"] = False


def _log_lost_mass(lost: Tensor) -> None:
    """The teacher mass the restriction drops: INFO on a run's first batch, DEBUG afterwards."""
    level = logging.DEBUG if _LOGGED["lost_mass"] else logging.INFO
    _LOGGED["lost_mass"] = True
    logger.log(level, "the teacher puts mean mass %.4f (max %.4f, %d sentences of this batch) on tag sequences the "
               "student's constraints forbid; kd.impossible=renormalize distils the teacher restricted to the "
               "student's sequences, renormalized", float(lost.mean()), float(lost.max()), len(lost))


def check_teacher_scheme(teacher: NerModel, scheme: str | None) -> None:
    """Refuse a Hugging Face teacher whose labels are not tags of the task's scheme (``data.convert_to`` or
    ``data.scheme``), listing them."""
    if scheme is None or not isinstance(teacher.tagger, HFTokenClassifier):
        return
    misfits = []
    for tag in teacher.tags:
        try:
            check_tag(tag, scheme)
        except ValueError:
            misfits.append(tag)
    if misfits or (teacher.tagger.scheme == "BIOES") != (check_scheme(scheme) == "BIOES"):
        raise ValueError(f"the teacher {teacher.tagger.name_or_path} has {teacher.tagger.scheme} labels "
                         f"({', '.join(misfits or teacher.tags)}) but the data is {scheme}: set data.convert_to "
                         f"(or data.scheme) to the teacher's scheme")


def _allowed_weights(rule: str, weights: Tensor, log_probs: Tensor) -> Tensor:
    """Weights ``[B, k]`` of the teacher's k best sequences under ``kd.impossible``: sequences the student
    cannot produce (``log_probs`` impossible) refused (``error``), dropped (``ignore``) or dropped with the rest
    renormalized, the k-best list restricted to the student's sequences (``renormalize``)."""
    banned = is_impossible(log_probs) & (weights > 0)
    if not bool(banned.any()):
        return weights
    if rule == "error":
        b = int(banned.any(1).nonzero()[0])
        mass = float((weights * banned)[b].sum())
        raise ValueError(f"sentence {b}: the teacher's top sequences put weight {mass:.3g} on tag sequences the "
                         f"student forbids; set kd.impossible=renormalize or ignore")
    kept = weights.masked_fill(banned, 0.0)
    if rule == "ignore":
        return kept
    total = kept.sum(1, keepdim=True)
    return torch.where(total > 0, kept / total.clamp(min=torch.finfo(kept.dtype).tiny), kept)


def kd_loss(kd: KdConfig, student: StructuredDistribution, cached: dict[str, Tensor]) -> Tensor:
    """Per-sentence KD loss ``[batch_size]`` of the student from the batch's cached teacher outputs
    (padded: ``unary [B, L, N]``, ``edges [B, L - 1, N, N]``, ``logits [B, L, N]``, ``topk_tags [B, k, L]``,
    ``topk_weights [B, k]``)."""
    temp = kd.temperature
    if kd.method == "structural":
        marginals = tuple(cached[f] for f in ("unary", "edges") if f in cached)
        if kd.temperature_mode == "local":
            marginals = local_temperature(marginals, temp, [1, 2][:len(marginals)])
            marginals, rule = _restricted(kd, marginals, student)
            return structural_kd_loss_from_marginals(marginals, student, rule)
        scaled = student.scaled(1.0 / temp) if temp != 1.0 else student
        marginals, rule = _restricted(kd, marginals, scaled)
        return structural_kd_loss_from_marginals(marginals, scaled, rule) * temp**2
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
        inside = length_mask(student.lens, student.max_len)
        rows = []
        for r in range(tags.shape[1]):
            row = tags[:, r]
            present = weights[:, r] > 0
            rows.append(torch.where(present.unsqueeze(-1) & inside, row, torch.where(inside, tags[:, 0], -1)))
        log_probs = torch.stack([student.log_prob(row) for row in rows], 1)  # [B, k]
        weights = _allowed_weights(kd.impossible, weights.to(student.dtype), log_probs.detach())
        return -(weights * log_probs.masked_fill(weights == 0, 0.0)).sum(1)
    return torch.zeros(student.batch_size, dtype=student.dtype, device=student.device)


# ------------------------------------------------------------------------------------------- toolbox hooks
def encode_states(model: NerModel, sentences: Sequence, attentions: bool = False
                  ) -> tuple[StructuredDistribution, EncoderOutput]:
    """The model's distribution with the encoder output it came from: a transformer's word-pooled hidden states
    (embeddings and every layer) and, with ``attentions``, its subword attentions; a BiLSTM's output as its one
    hidden state (``hidden_states = (features,)``, no attentions)."""
    tagger = model.tagger
    if isinstance(tagger, TransformerTagger):
        encoded = tagger.encoder([s.tokens for s in sentences], output_hidden_states=True,
                                 output_attentions=attentions)
        return tagger(encoded), encoded
    inputs = model.vocab.encode(sentences, device=model.device)
    features = tagger.encoder(inputs["words"], inputs["chars"], inputs["lens"])
    mask = length_mask(inputs["lens"], features.shape[1]).long()
    return tagger.head(features, inputs["lens"]), EncoderOutput(features, inputs["lens"], (features,), None, mask)


def forward_mixed(model: NerModel, sentences: Sequence, perm: Tensor, lam: Tensor) -> StructuredDistribution:
    """The model's distribution on mixed input embeddings: sentence ``b`` with ``perm[b]`` at weight ``lam[b]``
    (:meth:`~structkd.models.transformer.SubwordEncoder.mixed`, or :func:`structkd.kd.mix_embeddings` of a
    BiLSTM's word and character embeddings), over ``max(len_b, len_perm[b])`` words."""
    from structkd.kd.mixup import mix_embeddings

    tagger = model.tagger
    if isinstance(tagger, TransformerTagger):
        return tagger(tagger.encoder.mixed([s.tokens for s in sentences], perm, lam))
    inputs = model.vocab.encode(sentences, device=model.device)
    lens = inputs["lens"]
    x, mixed_lens = mix_embeddings(tagger.encoder.embed(inputs["words"], inputs["chars"]), lens,
                                   lam.to(lens.device), perm.to(lens.device))
    return tagger.head(tagger.encoder.contextualize(x, mixed_lens), mixed_lens)


def token_divergence(kd: KdConfig, student: StructuredDistribution, cached: dict[str, Tensor]) -> Tensor:
    """Per-sentence ``sum_i KL(P_T(y_i) || P_S(y_i))`` between the teacher's cached tag marginals ``unary`` and
    the student's (no gradient): what adversarial augmentation maximizes; the KD loss itself for methods that
    cache no marginals."""
    if "unary" not in cached:
        return kd_loss(kd, student, cached)
    with torch.no_grad():
        target = cached["unary"].to(student.dtype)
        mine = student.part_marginals()[0]
        tiny = torch.finfo(mine.dtype).tiny
        kl = target * (target.clamp(min=tiny).log() - mine.clamp(min=tiny).log())
        return kl.flatten(1).sum(-1)
