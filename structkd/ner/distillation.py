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

The cache stores the smaller of the teacher's marginals and its potentials (:func:`cache_form`, the one place
that decides).  For structural KD into a CRF student from one chain teacher (a CRF, case 1, or a MaxEnt
tagger, case 3) that is the potentials: ``emissions [n, N]`` per sentence (the teacher's unary scores, start
and end folded in, less their maximum at each word, which leaves its distribution unchanged) and one
``transitions [N, N]`` for the whole cache (a CRF teacher's; none for a MaxEnt teacher, whose chain has zero
transitions); each batch's exact marginals are recomputed from them by forward-backward at ``T``
(potentials ``/ T``), restricted to the student's sequences under ``kd.impossible=renormalize`` (the chain
of those emissions with the student's allowed transitions).  That is ``2 N`` bytes per word instead of
``2 (N + (n - 1) N^2 / n)``: 18 instead of 172 at 9 tags, 74 instead of 2,675 at 37 (``n = 20``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from structkd.kd import (
    local_temperature,
    project,
    structural_kd_loss_from_marginals,
    token_kd_loss,
)
from structkd.kd.projections import chain_forbids_parts, restrict_chain
from structkd.kd.structural import restricted_chain_marginals
from structkd.models.span import chart_to_tags
from structkd.models.transformer import EncoderOutput
from structkd.ner.config import KdConfig
from structkd.ner.modeling import NerModel
from structkd.numerics import LOG_ZERO, STORED_LOG_ZERO, is_impossible, read_log_potentials, stored_log_potentials
from structkd.schemes import check_scheme, check_tag, label_scheme
from structkd.structs.base import StructuredDistribution, length_mask
from structkd.structs.chain import LinearChainCRF, MaxEnt, _shared_transitions
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


# ------------------------------------------------------------------------------------------- cache forms
SHARED_CACHE_FIELDS = frozenset({"transitions"})
"""Fields of the potentials form stored once for the whole cache (a CRF teacher's transition matrix)."""
_CHAIN_TEACHERS = ("crf", "maxent")


def cached_field_shapes(form: str, method: str, student_head: str, n: int, n_tags: int, top_k: int = 1
                        ) -> dict[str, tuple[int, ...]]:
    """The shape of every field the cache stores per sentence of ``n`` words in ``form`` (``"marginals"``: the
    fields of :func:`teacher_fields`; ``"potentials"``: ``emissions``; the once-stored ``transitions`` are not
    listed: they cost ``N^2`` values per cache, not per sentence)."""
    if form == "potentials":
        return {"emissions": (n, n_tags)}
    k = 1 if method == "seqlevel" else top_k
    shapes = {"unary": (n, n_tags), "edges": (max(n - 1, 0), n_tags, n_tags), "logits": (n, n_tags),
              "topk_tags": (k, n), "topk_weights": (k,)}
    return {name: shapes[name] for name in teacher_fields(method, student_head)}


def cache_bytes_per_word(form: str, method: str, student_head: str, n_tags: int, n: int = 20, top_k: int = 1
                         ) -> float:
    """Bytes per word of the cache (float16) for sentences of ``n`` words, from :func:`cached_field_shapes`."""
    shapes = cached_field_shapes(form, method, student_head, n, n_tags, top_k)
    return 2.0 * sum(int(np.prod(shape)) for shape in shapes.values()) / n


def cache_form(method: str, teacher_head: str | None, student_head: str, n_tags: int, n_teachers: int = 1) -> str:
    """How the teacher cache stores a method's fields: ``"potentials"`` where one chain teacher's (CRF or MaxEnt)
    potentials take fewer bytes than its marginals and the loss can recompute those (structural KD into a CRF
    student), else ``"marginals"`` (a tie keeps the marginals: nothing to recompute).  A span teacher, a mixture
    of teachers (whose marginals average, its potentials do not) and the other methods store marginals."""
    if method != "structural" or student_head != "crf" or teacher_head not in _CHAIN_TEACHERS or n_teachers != 1:
        return "marginals"
    sizes = {form: cache_bytes_per_word(form, method, student_head, n_tags) for form in ("marginals", "potentials")}
    return "potentials" if sizes["potentials"] < sizes["marginals"] else "marginals"


def potential_rows(dist: StructuredDistribution) -> list[dict[str, Tensor]]:
    """The cache's rows in the potentials form from a chain teacher's distribution on a batch: ``emissions
    [n, N]`` per sentence and, for a CRF, ``transitions [N, N]`` (its one transition matrix; a batch of one-word
    sentences has none to give)."""
    if not isinstance(dist, (LinearChainCRF, MaxEnt)):
        raise ValueError(f"the potentials form needs a chain teacher (CRF or MaxEnt), not a {type(dist).__name__}")
    unary = stored_log_potentials(dist.potentials[0], (-1,))
    transitions = None
    if isinstance(dist, LinearChainCRF) and dist.potentials[1].shape[1] > 0:
        shared = _shared_transitions(dist.potentials[1])
        if shared is None:
            raise ValueError("the teacher's transition scores vary by position or sentence: its potentials cannot "
                             "be stored once per cache")
        transitions = stored_log_potentials(shared, (0, 1)).cpu()
    rows = []
    for b, n in enumerate(dist.lens.tolist()):
        row = {"emissions": unary[b, :n].cpu()}
        if transitions is not None:
            row["transitions"] = transitions
        rows.append(row)
    return rows


def compute_potential_rows(teacher: NerModel, sentences: Sequence, scheme: str | None) -> list[dict[str, Tensor]]:
    """:func:`potential_rows` of the teacher's distribution on ``sentences`` (without gradient)."""
    check_teacher_scheme(teacher, scheme)
    with torch.no_grad():
        return potential_rows(teacher(sentences))


def teacher_chain(cached: dict[str, Tensor], lens: Tensor, temperature: float = 1.0, dtype=torch.float32
                  ) -> LinearChainCRF:
    """The teacher's chain at ``T`` from a batch of the potentials form: ``emissions [B, L, N]`` and, from a CRF
    teacher, the cache's ``transitions [N, N]`` (else zero transitions: a MaxEnt teacher's chain)."""
    unary = read_log_potentials(cached["emissions"], temperature, dtype)
    transitions = cached.get("transitions")
    if transitions is not None:
        transitions = read_log_potentials(transitions.to(unary.device), temperature, dtype)
    return LinearChainCRF(unary, transitions, lens.to(unary.device))


def _restrict_to(teacher: LinearChainCRF, student: LinearChainCRF) -> LinearChainCRF:
    """The teacher chain with every part the student forbids made impossible (:func:`restrict_chain`), keeping
    one shared transition matrix when the student's transitions are shared (the fast forward-backward)."""
    shared = _shared_transitions(student.potentials[1].detach())
    unary, edges = teacher.potentials
    own = _shared_transitions(edges)
    if shared is None or (own is None and edges.shape[1] > 0):
        return restrict_chain(teacher, student)
    banned = is_impossible(student.potentials[0].detach()).to(unary.device)
    matrix = own if own is not None else unary.new_zeros(teacher.n_tags, teacher.n_tags)
    matrix = matrix.masked_fill(is_impossible(shared).to(unary.device), LOG_ZERO)
    return LinearChainCRF(unary.masked_fill(banned, LOG_ZERO), matrix, teacher.lens)


def _chain_marginals(kd: KdConfig, teacher: LinearChainCRF, student: StructuredDistribution
                     ) -> tuple[tuple[Tensor, ...], str]:
    """The teacher chain's marginals over the student's parts under ``kd.impossible`` (as :func:`_restricted`
    gives cached marginals): of the chain restricted to the student's sequences under ``renormalize`` (its lost
    mass logged as for cached marginals), else as they are; and the rule the loss then applies."""
    if kd.impossible != "renormalize" or not chain_forbids_parts(student):
        return teacher.part_marginals(), kd.impossible
    restricted = _restrict_to(teacher, student)
    if _lost_mass_wanted():
        _log_lost_mass((-torch.expm1(restricted.log_partition.double() - teacher.log_partition.double())).clamp(min=0))
    return restricted.part_marginals(), "ignore"


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


def _lost_mass_wanted() -> bool:
    """Whether the next :func:`_log_lost_mass` would be written (the lost mass of recomputed chains costs a
    forward pass)."""
    return logger.isEnabledFor(logging.DEBUG if _LOGGED["lost_mass"] else logging.INFO)


def _log_lost_mass(lost: Tensor) -> None:
    """The teacher mass the restriction drops: INFO on a run's first batch, DEBUG afterwards."""
    level = logging.DEBUG if _LOGGED["lost_mass"] else logging.INFO
    _LOGGED["lost_mass"] = True
    logger.log(level, "the teacher puts mean mass %.4f (max %.4f, %d sentences of this batch) on tag sequences the "
               "student's constraints forbid; kd.impossible=renormalize distils the teacher restricted to the "
               "student's sequences, renormalized", float(lost.mean()), float(lost.max()), len(lost))


def check_teacher_scheme(teacher: NerModel, scheme: str | None, name: str = "the teacher") -> None:
    """Refuse a teacher (``name`` in the message) whose labels are not tags of the task's scheme
    (``data.convert_to`` or ``data.scheme``), or are BIOES tags while the data is not, or the other way round:
    the student takes the teacher's labels, constrained by the data's scheme."""
    if scheme is None:
        return
    misfits = []
    for tag in teacher.tags:
        try:
            check_tag(tag, scheme)
        except ValueError:
            misfits.append(tag)
    own = getattr(teacher.tagger, "scheme", None) or label_scheme(teacher.tags)  # a tagger's own, else its labels
    if misfits or (own == "BIOES") != (check_scheme(scheme) == "BIOES"):
        raise ValueError(f"{name} has {own} labels ({', '.join(misfits or teacher.tags)}) but the data is read as "
                         f"{scheme}: set data.convert_to={own} to convert it to the teacher's scheme (or data.scheme, "
                         f"if the files are not written in {scheme})")


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


def _structural_loss(kd: KdConfig, student: StructuredDistribution, cached: dict[str, Tensor]) -> Tensor:
    """Structural KD ``[batch_size]`` from cached marginals, or from cached potentials (``emissions``): the
    teacher chain's marginals recomputed at ``T`` (global) or at 1 and then tempered (local), the same loss."""
    temp = kd.temperature
    if kd.temperature_mode == "local":
        if "emissions" in cached:
            marginals = teacher_chain(cached, student.lens, 1.0, student.dtype).part_marginals()
        else:
            marginals = tuple(cached[f] for f in ("unary", "edges") if f in cached)
        marginals = local_temperature(marginals, temp, [1, 2][:len(marginals)])
        marginals, rule = _restricted(kd, marginals, student)
        return structural_kd_loss_from_marginals(marginals, student, rule)
    scaled = student.scaled(1.0 / temp) if temp != 1.0 else student
    if "emissions" in cached:  # the forbidden parts are the same at every temperature: the unscaled student's
        marginals, rule = _chain_marginals(kd, teacher_chain(cached, student.lens, temp, student.dtype), student)
    else:
        marginals, rule = _restricted(kd, tuple(cached[f] for f in ("unary", "edges") if f in cached), scaled)
    return structural_kd_loss_from_marginals(marginals, scaled, rule) * temp**2


def kd_loss(kd: KdConfig, student: StructuredDistribution, cached: dict[str, Tensor]) -> Tensor:
    """Per-sentence KD loss ``[batch_size]`` of the student from the batch's cached teacher outputs
    (padded: ``unary [B, L, N]``, ``edges [B, L - 1, N, N]``, or in the potentials form ``emissions [B, L, N]``
    with the cache's ``transitions [N, N]``; ``logits [B, L, N]``, ``topk_tags [B, k, L]``, ``topk_weights
    [B, k]``)."""
    temp = kd.temperature
    if kd.method == "structural":
        return _structural_loss(kd, student, cached)
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
    """The model's distribution with the encoder output it came from (its tagger's ``encode_states``: a
    transformer's word-pooled hidden states and attentions, a BiLSTM's output as its one hidden state)."""
    return model.tagger.encode_states(sentences, attentions)


def forward_mixed(model: NerModel, sentences: Sequence, perm: Tensor, lam: Tensor) -> StructuredDistribution:
    """The model's distribution on mixed input embeddings (its tagger's ``forward_mixed``): sentence ``b`` with
    ``perm[b]`` at weight ``lam[b]``."""
    return model.tagger.forward_mixed(sentences, perm, lam)


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
