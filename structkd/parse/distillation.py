"""What a parsing teacher contributes to distillation, computed once and cached, and the student's KD loss.

The teacher cache holds, for each training sentence of ``n`` words (position 0 the root), the fields of
:func:`teacher_fields`:

============  =====================================  ================================================================
field         shape                                  content
============  =====================================  ================================================================
arcs          ``[n + 1, n + 1]``                     the teacher's arc marginals ``P_T(h -> d)`` at ``[d, h]``
                                                     (first-order and sequence-labeling students; exact second-order
                                                     inside-outside for a ``2o`` teacher), of the teacher restricted
                                                     to the trees a tree student can express (projective, single
                                                     root) and renormalized
sibs          ``[n + 1, n + 1, n + 1]``              sibling marginals, for a ``2o`` student only
rels          ``[n + 1, n + 1, n_rels]``             the teacher's relation distribution of *every* arc
gold_rels     ``[n, n_rels]``                        its relation distribution on the gold arcs (``relations=gold``)
arc_logits    ``[n + 1, n + 1]``                     the teacher's arc scores (token KD: head-selection softmax rows)
topk_heads    ``[k, n]``                             the teacher's k best trees (``topk``), -1 where missing
topk_rels     ``[k, n]``                             their relations (the teacher's best relation of each arc)
topk_labels   ``[k, n]``                             for a sequence-labeling student: their ``(offset, relation)``
                                                     label indices (-1 outside the student's inventory)
topk_weights  ``[k]``                                uniform over the trees the student can express, else 0
============  =====================================  ================================================================

The relation distribution of *every* arc is needed, not only of the teacher's best arcs: the sequence-labeling
student's label marginals ``P_T(h -> d) P_T(r | h -> d)`` need it for every head its offsets can reach, and
``relations=marginal`` weights the relation KL of every arc by its arc marginal.  As ``rels`` it is
``2 * n_rels * (n + 1)^2`` bytes a sentence in float16 (about 2,900 bytes a word at EWT's lengths, 51
relations).  A biaffine teacher's relation scores are a biaffine product of two per-word vectors, so the cache
keeps those instead where that is smaller (:func:`cache_form`, the ``factored`` form; nearly always):

============  =====================================  ================================================================
rel_dep       ``[n + 1, rel_hidden]``                the teacher's relation dependent MLP output of each word
rel_head      ``[n + 1, rel_hidden]``                its relation head MLP output
rel_weight    ``[n_rels, rel_hidden + 1, ...]``      its biaffine weight, stored once for the whole cache
arc_scores    ``[n + 1, n + 1]``                     a first-order projective teacher's arc scores, instead of a
                                                     ``2o`` student's ``arcs`` and ``sibs``
============  =====================================  ================================================================

and the loss recomputes ``rels`` per batch (:func:`factored_rel_probs`: the teacher's logits, at ``T``): ``4 *
rel_hidden * (n + 1)`` bytes a sentence, about 430 a word with 100-wide MLPs; and from ``arc_scores`` the arc and
sibling marginals (:func:`first_order_marginals`: the projection of the teacher's tree distribution on the
student's parts, as at build time).  ``relations=gold`` (biaffine students) caches only ``[n, n_rels]``.

Temperature ``T``: with ``temperature_mode=global`` the teacher's trees are cached at ``T`` and the student's
tree distribution is scaled by ``1 / T`` in the loss; with ``local`` each word's head marginals (or label
marginals) are tempered and renormalized at loss time.  Relation distributions are always compared at ``T``
(``softmax(logits / T)`` for both), and every soft loss is multiplied by ``T^2``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from structkd.kd import (
    head_offset_marginals,
    local_temperature,
    project,
    structural_kd_loss_from_marginals,
    token_kd_loss,
)
from structkd.models.parsers import BiaffineRelScorer
from structkd.models.transformer import EncoderOutput
from structkd.numerics import LOG_ZERO, STORED_LOG_ZERO, read_log_potentials, stored_log_potentials
from structkd.parse.config import KdConfig
from structkd.parse.modeling import ParseModel, ParserOutput
from structkd.structs.heads import is_tree, projective, word_mask
from structkd.structs.tree import DependencyCRF, MatrixTree, arc_mask
from structkd.structs.tree2o import Dependency2oCRF

Tensor = torch.Tensor


@dataclass(frozen=True)
class StudentSpec:
    """What the teacher's outputs depend on about the student."""

    kind: str
    tree: str | None
    multiroot: bool
    labels: tuple[tuple[int, int], ...] | None

    @classmethod
    def of(cls, model: ParseModel) -> StudentSpec:
        labels = tuple(model.parser.labels) if model.kind == "seqlabel" else None
        return cls(model.kind, model.tree, model.multiroot, labels)

    @property
    def needs_projective(self) -> bool:
        return self.tree in ("projective", "2o")

    def options(self) -> dict:
        return {"kind": self.kind, "tree": self.tree, "multiroot": self.multiroot,
                "labels": [list(x) for x in self.labels] if self.labels else None}


def inexpressible_trees(spec: StudentSpec, teacher: ParseModel) -> list[str]:
    """What the teacher's trees have that the student's cannot (non-projective arcs, several root words)."""
    if spec.kind != "biaffine":
        return []
    out = []
    if spec.needs_projective and teacher.tree == "nonprojective":
        out.append("non-projective trees")
    if teacher.multiroot and not spec.multiroot:
        out.append("several root words")
    return out


def check_method(kd: KdConfig, spec: StudentSpec, teacher: ParseModel) -> None:
    """Reject combinations the loss cannot express, with the reason."""
    lost = inexpressible_trees(spec, teacher) if kd.method == "structural" else []
    if lost and kd.impossible == "error":
        raise ValueError(f"the teacher's trees have {' and '.join(lost)}, which the {spec.tree} student cannot "
                         f"express: with kd.impossible=error that is refused; kd.impossible=renormalize (the "
                         f"default) distils the teacher restricted to the student's trees, exactly")
    if teacher.kind != "biaffine":
        raise ValueError("the teacher must be a biaffine parser (a tree distribution with relation scores)")
    if kd.method == "token" and spec.kind != "biaffine":
        raise ValueError("token KD compares head-selection softmax rows: it needs a biaffine student, not a "
                         "sequence-labeling one (use kd.method=structural or topk)")
    if kd.method == "structural" and spec.tree == "2o" and teacher.tree == "nonprojective":
        raise ValueError("a non-projective teacher has no sibling marginals for a 2o student")


def teacher_fields(kd: KdConfig, spec: StudentSpec) -> list[str]:
    """Names of the cached fields for a KD method and student."""
    if kd.method == "none":
        return []
    if kd.method == "topk":
        return ["topk_labels" if spec.kind == "seqlabel" else "topk_heads", "topk_weights"] + (
            ["topk_rels"] if spec.kind == "biaffine" else [])
    if spec.kind == "seqlabel":
        return ["arcs", "rels"]
    fields = ["arcs"] if kd.method == "structural" else ["arc_logits"]
    if kd.method == "structural" and spec.tree == "2o":
        fields.append("sibs")
    if kd.relations == "marginal":
        fields += ["rels"] + ([] if "arcs" in fields else ["arcs"])
    elif kd.relations == "gold":
        fields.append("gold_rels")
    return fields


FACTORED = "factored"  # the cache form of the teacher's scores where they are smaller than its marginals
SHARED_CACHE_FIELDS = frozenset({"rel_weight"})
"""Fields of the factored form stored once for the whole cache (the teacher's biaffine relation weight)."""


def rel_bytes_per_word(form: str, n_rels: int, rel_hidden: int, n: int = 20) -> float:
    """Bytes per word of the relation fields of an ``n``-word sentence in ``form`` (float16): ``rels [n + 1,
    n + 1, n_rels]`` (``marginals``) or ``rel_dep`` and ``rel_head`` ``[n + 1, rel_hidden]`` (``factored``; the
    once-stored weight left out)."""
    values = (n + 1) ** 2 * n_rels if form == "marginals" else 2 * (n + 1) * rel_hidden
    return 2 * values / n


def _first_order_scores(kd: KdConfig, spec: StudentSpec, teacher) -> bool:
    """Whether the teacher's arc scores ``[n + 1, n + 1]`` stand for the arc and sibling marginals ``[n + 1]^3``
    of a second-order student: structural KD from a first-order projective teacher with the student's root rule
    (its marginals over the student's parts are then recomputed exactly from its scores per batch)."""
    return (kd.method == "structural" and spec.kind == "biaffine" and spec.tree == "2o"
            and getattr(teacher, "tree", None) == "projective" and teacher.multiroot == spec.multiroot)


def _factored_rels(kd: KdConfig, spec: StudentSpec, teacher) -> bool:
    """Whether a biaffine relation scorer's factors stand for ``rels`` and take fewer bytes."""
    scorer = getattr(getattr(teacher, "parser", None), "rel", None)
    if "rels" not in teacher_fields(kd, spec) or not isinstance(scorer, BiaffineRelScorer):
        return False
    n_rels, width = scorer.weight.shape[:2]
    return rel_bytes_per_word(FACTORED, n_rels, width - 1) < rel_bytes_per_word("marginals", n_rels, width - 1)


def cache_form(kd: KdConfig, spec: StudentSpec, teacher, n_teachers: int = 1) -> str:
    """How the teacher cache stores the method's fields: ``factored`` (:data:`FACTORED`, :func:`factored_rows`)
    where one teacher's scores take fewer bytes than the marginals they determine: a biaffine relation
    scorer's factors instead of the relation distribution of every arc (``rels``; nearly always smaller,
    :func:`rel_bytes_per_word`), and a first-order projective teacher's arc scores instead of a second-order
    student's arc and sibling marginals; ``marginals`` otherwise (a mixture of teachers, whose marginals mix
    and scores do not; a black-box teacher's file; a method without such fields)."""
    if n_teachers != 1 or not (_first_order_scores(kd, spec, teacher) or _factored_rels(kd, spec, teacher)):
        return "marginals"
    return FACTORED


def factored_rows(teacher: ParseModel, sentences: Sequence, kd: KdConfig, spec: StudentSpec
                  ) -> list[dict[str, Tensor]]:
    """The cache's rows in the factored form: the fields of :func:`teacher_fields`, with ``arc_scores [n + 1,
    n + 1]`` (the teacher's arc scores, :func:`~structkd.numerics.stored_log_potentials`) instead of ``arcs``
    and ``sibs`` where :func:`_first_order_scores`, and the teacher's relation factors ``rel_dep``, ``rel_head``
    ``[n + 1, rel_hidden]`` (its weight ``rel_weight`` in the first row: stored once) instead of ``rels``
    where :func:`_factored_rels`."""
    scores, factors = _first_order_scores(kd, spec, teacher), _factored_rels(kd, spec, teacher)
    skipped = ({"arcs", "sibs"} if scores else set()) | ({"rels"} if factors else set())
    fields = [f for f in teacher_fields(kd, spec) if f not in skipped]
    with torch.no_grad():
        out, dep, head = teacher.parser.read_factored(sentences)
        rows = compute_teacher_outputs(teacher, sentences, kd, spec, out=out, fields=fields)
        arc_scores = stored_log_potentials(out.dist.potentials[0], (-1,)) if scores else None
    for b, (row, n) in enumerate(zip(rows, out.dist.lens.tolist())):
        if scores:
            row["arc_scores"] = arc_scores[b, :n + 1, :n + 1].cpu()
        if factors:
            row["rel_dep"], row["rel_head"] = dep[b, :n + 1].float().cpu(), head[b, :n + 1].float().cpu()
    if factors:
        rows[0]["rel_weight"] = teacher.parser.rel.weight.detach().float().cpu()
    return rows


def factored_rel_probs(cached: dict[str, Tensor], temperature: float) -> Tensor:
    """The teacher's relation distribution of every arc at ``T``, ``[batch_size, S, S, n_rels]``, from a batch of
    the factored form (``rel_dep``, ``rel_head`` ``[batch_size, S, rel_hidden]``, ``rel_weight``), as
    :func:`compute_teacher_outputs` gives ``rels``; padded words have zero factors, and weight 0 in the loss."""
    logits = BiaffineRelScorer.logits_of(cached["rel_dep"].float(), cached["rel_head"].float(),
                                         cached["rel_weight"].float())
    return (logits / temperature).softmax(-1)


def first_order_marginals(kd: KdConfig, stored: Tensor, student) -> tuple[Tensor, Tensor]:
    """A first-order projective teacher's marginals over a second-order student's parts (arcs ``[B, S, S]``,
    siblings ``[B, S, S, S]``) from its stored arc scores ``[B, S, S]``, at ``T`` under a global temperature, as
    :func:`compute_teacher_outputs` gives ``arcs`` and ``sibs``."""
    temperature = kd.temperature if kd.temperature_mode == "global" else 1.0
    teacher = DependencyCRF(read_log_potentials(stored, temperature, torch.float32), student.lens, student.multiroot)
    return project(teacher, student, impossible=kd.impossible)


_FACTORED_FIELDS = ("arc_scores", "rel_dep", "rel_head", "rel_weight")


def expand_factored(kd: KdConfig, cached: dict[str, Tensor], student) -> dict[str, Tensor]:
    """A batch of the factored form as the marginals it stands for (``arcs``, ``sibs``, ``rels``, recomputed for
    the ``student``'s tree distribution; the scores themselves dropped, so that expanding again is free); a batch
    of marginals as it is."""
    expanded = {}
    if "arc_scores" in cached:
        expanded.update(zip(("arcs", "sibs"), first_order_marginals(kd, cached["arc_scores"], student)))
    if "rel_dep" in cached:
        expanded["rels"] = factored_rel_probs(cached, kd.temperature)
    if not expanded:
        return cached
    return {**{k: v for k, v in cached.items() if k not in _FACTORED_FIELDS}, **expanded}


def _probe(spec: StudentSpec, lens: Tensor, size: int, dtype=torch.float32):
    """A distribution of the student's tree type (zero scores) that fixes the layout of its parts and the trees it
    can express (any tree for a sequence-labeling student)."""
    zeros = torch.zeros(len(lens), size, size, dtype=dtype, device=lens.device)
    if spec.kind == "seqlabel":
        return MatrixTree(zeros, lens, multiroot=True)
    if spec.tree == "2o":
        return Dependency2oCRF(zeros, zeros.new_zeros(len(lens), size, size, size), lens, spec.multiroot)
    return (MatrixTree if spec.tree == "nonprojective" else DependencyCRF)(zeros, lens, spec.multiroot)


def _top_trees(out: ParserOutput, k: int, spec: StudentSpec, gold_rel_pred: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``heads [k, B, S]``, ``rels [k, B, S]`` (the best relation of each arc) and weights ``[k, B]`` of the
    teacher's k best trees, keeping only trees the student can score (single root unless multiroot,
    projective for a projective student)."""
    dist = out.dist
    trees, scores = dist.topk(k), dist.kmax(k)
    lens = dist.lens
    valid = scores > LOG_ZERO / 2
    for r in range(k):
        ok = is_tree(trees[r].clamp(min=-1), lens, spec.multiroot)
        if spec.needs_projective:
            ok &= projective(trees[r], lens)
        valid[r] &= ok
    weights = valid.to(torch.float32) / valid.sum(0).clamp(min=1)
    rels = gold_rel_pred.unsqueeze(0).expand(k, -1, -1, -1).gather(3, trees.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    rels = torch.where(trees >= 0, rels, torch.full_like(rels, -1))
    return trees, rels, weights


def compute_teacher_outputs(teacher: ParseModel, sentences: Sequence, kd: KdConfig, spec: StudentSpec,
                            out: ParserOutput | None = None, fields: Sequence[str] | None = None
                            ) -> list[dict[str, Tensor]]:
    """The cached fields of :func:`teacher_fields` (or those of them in ``fields``) for a batch of sentences, one
    dict per sentence (from the teacher's output ``out`` on them when given, e.g. on mixed inputs)."""
    fields = teacher_fields(kd, spec) if fields is None else list(fields)
    temp = kd.temperature
    with torch.no_grad():
        out = teacher(sentences) if out is None else out
        dist, lens = out.dist, out.dist.lens
        size = dist.potentials[0].shape[1]
        scaled = dist.scaled(1.0 / temp) if temp != 1.0 and kd.temperature_mode == "global" else dist
        batch: dict[str, Tensor] = {}
        if "arcs" in fields:
            # a teacher with trees the student cannot express (non-projective, multiroot) is restricted to the
            # student's trees and renormalized (kd.impossible=renormalize, the exact, bounded objective), refused
            # (error; prepare_student refuses it before any work) or distilled as it is (ignore)
            marginals = project(scaled, _probe(spec, lens, size), impossible=kd.impossible)
            batch["arcs"] = marginals[0]
            if "sibs" in fields:
                batch["sibs"] = marginals[1]
        if "rels" in fields or "gold_rels" in fields:
            probs = (out.rel_logits.float() / temp).softmax(-1)
            if "rels" in fields:
                batch["rels"] = probs
            if "gold_rels" in fields:
                heads, _ = teacher.parser.gold(sentences, probs.device)
                index = heads.clamp(min=0).view(*heads.shape, 1, 1).expand(-1, -1, 1, probs.shape[-1])
                batch["gold_rels"] = probs.gather(2, index).squeeze(2)[:, 1:]
        if "arc_logits" in fields:
            # impossible arcs are LOG_ZERO, stored as STORED_LOG_ZERO in the float16 cache
            batch["arc_logits"] = dist.potentials[0].float().clamp(STORED_LOG_ZERO, -STORED_LOG_ZERO)
        if kd.method == "topk":
            trees, rels, weights = _top_trees(out, kd.top_k, spec, out.rel_logits.argmax(-1))
            if spec.kind == "seqlabel":
                batch["topk_labels"] = _labels_of(trees, rels, spec.labels)[:, :, 1:].transpose(0, 1)
            else:
                batch["topk_heads"] = trees[:, :, 1:].transpose(0, 1)
                batch["topk_rels"] = rels[:, :, 1:].transpose(0, 1)
            batch["topk_weights"] = weights.t()
    rows = []
    for b, n in enumerate(lens.tolist()):
        row = {}
        for name, value in batch.items():
            if name in ("arcs", "arc_logits"):
                row[name] = value[b, :n + 1, :n + 1]
            elif name == "sibs":
                row[name] = value[b, :n + 1, :n + 1, :n + 1]
            elif name == "rels":
                row[name] = value[b, :n + 1, :n + 1]
            elif name == "gold_rels":
                row[name] = value[b, :n]
            elif name == "topk_weights":
                row[name] = value[b]
            else:
                row[name] = value[b, :, :n]
            row[name] = row[name].float().cpu()
        rows.append(row)
    return rows


def _labels_of(heads: Tensor, rels: Tensor, labels: Sequence[tuple[int, int]]) -> Tensor:
    """Label indices ``[..., S]`` of ``(head - word, relation)`` pairs (-1 outside the inventory, at 0 and
    padding)."""
    index = {tuple(label): k for k, label in enumerate(labels)}
    words = torch.arange(heads.shape[-1], device=heads.device)
    offsets = (heads - words).tolist()
    flat_rels = rels.tolist()
    flat_heads = heads.tolist()

    def walk(o, r, h):
        if isinstance(h, list):
            return [walk(a, b, c) for a, b, c in zip(o, r, h)]
        return index.get((o, r), -1) if h >= 0 else -1

    return torch.tensor(walk(offsets, flat_rels, flat_heads), dtype=torch.long, device=heads.device)


def relation_kd_loss(teacher_probs: Tensor, student_logits: Tensor, weights: Tensor, temperature: float) -> Tensor:
    """``T^2 sum_{d,h} w[d, h] KL(p_T(. | h -> d) || softmax(s[d, h] / T))`` per sentence.

    Args:
        teacher_probs: ``[batch_size, S, S, n_rels]`` (already at ``T``).
        student_logits: ``[batch_size, S, S, n_rels]``.
        weights: ``[batch_size, S, S]`` arc weights (teacher arc marginals or gold arc indicators; 0 at padding).
    """
    log_q = (student_logits.float() / temperature).log_softmax(-1)
    p = teacher_probs.to(log_q.dtype)
    kl = (p * (p.clamp(min=1e-12).log() - log_q)).sum(-1)
    return (weights.to(kl.dtype) * kl).flatten(1).sum(-1) * temperature**2


def _gold_arc_weights(gold_heads: Tensor, size: int) -> Tensor:
    """One-hot ``[batch_size, S, S]`` of the gold arcs (rows of words only)."""
    weights = torch.zeros(gold_heads.shape[0], size, size, device=gold_heads.device)
    mask = gold_heads >= 0
    weights.scatter_(2, gold_heads.clamp(min=0).unsqueeze(-1), mask.unsqueeze(-1).float())
    return weights


def kd_loss(kd: KdConfig, student: ParseModel, out: ParserOutput, cached: dict[str, Tensor], gold_heads: Tensor,
            gold_rels: Tensor) -> Tensor:
    """Per-sentence KD loss ``[batch_size]`` of the student from the batch's padded cached teacher outputs.

    Args:
        out: the student's output on the batch.
        cached: padded fields (``arcs [B, S, S]``, ``rels [B, S, S, R]``, ``topk_heads [B, k, L]``, ...).
        gold_heads, gold_rels: ``LongTensor [B, S]`` gold trees (stand-ins for missing top-k trees).
    """
    temp = kd.temperature
    dist = out.dist
    if kd.method == "none":
        return torch.zeros(dist.batch_size, dtype=dist.dtype, device=dist.device)
    cached = expand_factored(kd, cached, dist)  # the factored form: the marginals recomputed from the scores
    if kd.method == "topk":
        return _topk_loss(student, out, cached, gold_heads, gold_rels)
    if student.kind == "seqlabel":
        marginals = (head_offset_marginals(cached["arcs"], dist.lens, student.parser.labels, cached["rels"]),)
        return _structural(kd, dist, marginals)
    if kd.method == "structural":
        marginals = tuple(cached[f] for f in ("arcs", "sibs") if f in cached)
        loss = _structural(kd, dist, marginals)
    else:  # token
        size = dist.potentials[0].shape[1]
        mask = word_mask(dist.lens, size)
        loss = token_kd_loss(cached["arc_logits"], dist.potentials[0], mask, temp,
                             class_mask=arc_mask(dist.lens, size))
    if kd.relations == "marginal":
        loss = loss + relation_kd_loss(cached["rels"], out.rel_logits, cached["arcs"], temp)
    elif kd.relations == "gold":
        size = out.rel_logits.shape[1]
        index = gold_heads.clamp(min=0).view(*gold_heads.shape, 1, 1).expand(-1, -1, 1, out.rel_logits.shape[-1])
        on_gold = out.rel_logits.gather(2, index).squeeze(2)[:, 1:]                      # [B, L, R]
        teacher = cached["gold_rels"]
        kl = relation_kd_loss(teacher.unsqueeze(2), on_gold.unsqueeze(2), word_mask(dist.lens, size)[:, 1:, None],
                              temp)
        loss = loss + kl
    return loss


def _structural(kd: KdConfig, dist, marginals: tuple[Tensor, ...]) -> Tensor:
    temp = kd.temperature
    if kd.temperature_mode == "local":
        groups = [1, None][:len(marginals)]
        return structural_kd_loss_from_marginals(local_temperature(marginals, temp, groups), dist, impossible="ignore")
    scaled = dist.scaled(1.0 / temp) if temp != 1.0 else dist
    return structural_kd_loss_from_marginals(marginals, scaled, impossible="ignore") * temp**2


def _topk_loss(student: ParseModel, out: ParserOutput, cached: dict, gold_heads: Tensor, gold_rels: Tensor) -> Tensor:
    weights = cached["topk_weights"]                                                       # [B, k]
    dist = out.dist
    total = torch.zeros(dist.batch_size, dtype=torch.float32, device=dist.device)
    if student.kind == "seqlabel":
        logp = dist.potentials[0].float().log_softmax(-1)                                  # [B, L, n_labels]
        labels = cached["topk_labels"].round().long()                                      # [B, k, L]
        for r in range(labels.shape[1]):
            row = labels[:, r]
            picked = logp.gather(2, row.clamp(min=0).unsqueeze(-1)).squeeze(-1) * (row >= 0)
            total = total - weights[:, r] * picked.sum(-1)
        return total
    heads = cached["topk_heads"].round().long()                                            # [B, k, L]
    rels = cached["topk_rels"].round().long()
    pad = torch.full((heads.shape[0], heads.shape[1], 1), -1, dtype=torch.long, device=heads.device)
    heads, rels = torch.cat([pad, heads], -1), torch.cat([pad, rels], -1)                 # [B, k, S]
    for r in range(heads.shape[1]):
        present = (weights[:, r] > 0).unsqueeze(-1)
        tree = torch.where(present, heads[:, r], gold_heads)
        labels = torch.where(present, rels[:, r], gold_rels)
        nll = student.parser.loss(dist, out.rel_logits, tree, labels)
        total = total + weights[:, r] * nll.float()
    return total


# ------------------------------------------------------------------------------------------- toolbox hooks
def encode_states(model: ParseModel, sentences: Sequence, attentions: bool = False
                  ) -> tuple[ParserOutput, EncoderOutput]:
    """The parser's output with its encoder's (:meth:`~structkd.models.parsers.ParserEncoder.encode`: hidden
    states of the words, without the root; a transformer's attentions with ``attentions``)."""
    parser = model.parser
    encoded = parser.encoder.encode(list(sentences), parser.vocab, attentions)
    return _run(model, encoded), encoded


def _run(model: ParseModel, encoded: EncoderOutput) -> ParserOutput:
    """The parser's output from an encoder output (``ParseModel.forward`` reads sentences)."""
    if model.kind == "biaffine":
        return ParserOutput(*model.parser(encoded))
    return ParserOutput(model.parser(encoded), None)


def forward_mixed(model: ParseModel, sentences: Sequence, perm: Tensor, lam: Tensor) -> ParserOutput:
    """The parser's output on mixed input embeddings (:meth:`~structkd.models.parsers.ParserEncoder.mixed`)."""
    parser = model.parser
    return _run(model, parser.encoder.mixed(list(sentences), perm, lam, parser.vocab))


def head_divergence(kd: KdConfig, student: ParseModel, out: ParserOutput, cached: dict[str, Tensor],
                    gold_heads: Tensor, gold_rels: Tensor) -> Tensor:
    """Per-sentence ``sum_d KL(P_T(head of d) || P_S(head of d))`` between the teacher's cached arc marginals
    and a biaffine student's (no gradient): what adversarial augmentation maximizes; the KD loss itself for a
    sequence-labeling student or a method that caches no arc marginals."""
    cached = expand_factored(kd, cached, out.dist)
    if "arcs" not in cached or student.kind != "biaffine":
        return kd_loss(kd, student, out, cached, gold_heads, gold_rels)
    with torch.no_grad():
        mine = out.dist.part_marginals()[0]
        target = cached["arcs"].to(mine.dtype)
        tiny = torch.finfo(mine.dtype).tiny
        kl = target * (target.clamp(min=tiny).log() - mine.clamp(min=tiny).log())
        return kl.flatten(1).sum(-1)
