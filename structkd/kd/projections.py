"""Projections: a teacher distribution's marginals over the *student's* parts.

Structural KD needs ``P_T(u)`` for every part ``u`` of the student, in the layout of the student's
potentials (:attr:`~structkd.structs.base.StructuredDistribution.potentials`).  A projection computes
exactly that from a teacher of some type for a student of some type.  Projections live in a registry
keyed by ``(teacher type, student type)``; users add their own with :func:`register_projection`.

Built in:

====================================  ===================================  ==========================
teacher                               student                              case
====================================  ===================================  ==========================
LinearChainCRF                        LinearChainCRF                       1 same factorization
MaxEnt                                MaxEnt                               1
DependencyCRF / MatrixTree            DependencyCRF / MatrixTree           1
Dependency2oCRF                       Dependency2oCRF                      1
LinearChainCRF                        MaxEnt                               2 student finer
Dependency2oCRF                       DependencyCRF / MatrixTree           2
any tree (arc marginals)              MaxEnt over head offsets             2 (``offsets=...``)
DependencyCRF                         Dependency2oCRF                      2 (exact sibling marginals)
MaxEnt                                LinearChainCRF                       3 teacher finer
SemiMarkovCRF                         MaxEnt / LinearChainCRF (BIO, BIOES) 4 incompatible
====================================  ===================================  ==========================

Trees the student cannot express.  A tree teacher whose support is not inside the student's (a non-projective
:class:`MatrixTree` teacher of a projective student, a multiroot teacher of a single-root student) has no
finite cross-entropy, and the factorized loss ``log Z_S - E_T[score_S]`` has no lower bound: it falls without
end as the student sharpens.  :func:`project` follows the rule ``impossible``:

* ``"error"`` (default): refuse, naming the way out;
* ``"renormalize"``: distill the teacher restricted to the student's trees and renormalized
  (:func:`restrict_teacher`), exact for every tree teacher: the same arc (and sibling) scores under the
  student's constraints, so a :class:`MatrixTree` teacher of a projective student is run through Eisner;
* ``"ignore"``: distill the unrestricted teacher's marginals, at the risk above (a surrogate loss that can
  fall without end; only bounded training, such as a few epochs mixed with the gold loss, keeps it usable).

Tag sequences the student forbids.  A softmax (:class:`MaxEnt`) or unconstrained CRF teacher puts mass on tag
sequences that a CRF student constrained by its tag scheme cannot produce (``I-X`` after ``O`` in BIO): the
cross-entropy is infinite again.  The same three rules apply: ``"renormalize"`` distills the teacher restricted
to the sequences the student allows (:func:`restrict_chain`: the teacher's potentials with the student's
forbidden transitions, start and end tags made impossible; exact), :func:`restriction_lost_mass` is the mass
that drops; ``"error"`` refuses (in the loss, which checks the marginals against the student's parts);
``"ignore"`` drops the mass on forbidden parts from the unrestricted marginals (a surrogate).  Cached marginals
determine their chain (:func:`chain_from_marginals`), so the rule applies to them too
(:func:`~structkd.kd.structural.structural_kd_loss_from_marginals`).  A span teacher (:class:`SemiMarkovCRF`)
needs none of this: its segmentations map to valid tag sequences of the scheme only.

A head-offset tagger cannot express heads outside its offset inventory: ``renormalize=True`` (default)
renormalizes each word's label marginals over the inventory; ``renormalize=False`` drops that mass, which makes
the loss unbounded in the same way, and is refused unless ``impossible="ignore"``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import torch

from structkd.kd.span_to_tags import build_span_tag_map, span_tag_marginals
from structkd.numerics import LOG_ZERO, is_impossible
from structkd.structs.base import StructuredDistribution
from structkd.structs.chain import LinearChainCRF, MaxEnt
from structkd.structs.semimarkov import SemiMarkovCRF
from structkd.structs.tree import DependencyCRF, MatrixTree
from structkd.structs.tree2o import Dependency2oCRF

Tensor = torch.Tensor
Projection = Callable[..., tuple[Tensor, ...]]

_REGISTRY: dict[tuple[type, type], Projection] = {}

IMPOSSIBLE_RULES = ("error", "renormalize", "ignore")
"""What :func:`project` does with teacher structures the student cannot express (see the module docstring)."""


def register_projection(teacher_type: type, student_type: type) -> Callable[[Projection], Projection]:
    """Decorator registering ``fn(teacher, student, **options) -> marginals`` for a pair of types.

    ``marginals`` is a tuple with one tensor per student potential, same shapes, holding the teacher's
    marginal probability of each student part (0 at padding).  A projection with an ``impossible`` keyword
    receives :func:`project`'s rule (one of :data:`IMPOSSIBLE_RULES`)."""
    def decorate(fn: Projection) -> Projection:
        _REGISTRY[(teacher_type, student_type)] = fn
        return fn
    return decorate


def supported_pairs() -> list[tuple[str, str]]:
    """Names of the registered ``(teacher, student)`` type pairs."""
    return sorted((t.__name__, s.__name__) for t, s in _REGISTRY)


def find_projection(teacher: StructuredDistribution, student: StructuredDistribution) -> Projection:
    """The registered projection for the two distributions' types (most specific first)."""
    for t_type in type(teacher).__mro__:
        for s_type in type(student).__mro__:
            if (t_type, s_type) in _REGISTRY:
                return _REGISTRY[(t_type, s_type)]
    pairs = "\n  ".join(f"{t} -> {s}" for t, s in supported_pairs())
    raise TypeError(f"no KD projection from a {type(teacher).__name__} teacher to a {type(student).__name__} "
                    f"student; supported pairs:\n  {pairs}\nregister one with structkd.kd.register_projection")


def project(teacher: StructuredDistribution, student: StructuredDistribution, impossible: str = "error",
            **options) -> tuple[Tensor, ...]:
    """Teacher marginals over the student's parts (detached), checked against the student's layout.

    Args:
        impossible: what to do when the teacher has structures the student cannot express (see the module
            docstring): ``"error"`` (default), ``"renormalize"`` or ``"ignore"``.
        options: passed to the projection (``span_labels``, ``tags``, ``scheme``; ``offsets``, ``rel_probs``,
            ``renormalize``).
    """
    if impossible not in IMPOSSIBLE_RULES:
        raise ValueError(f"impossible must be one of {IMPOSSIBLE_RULES}, got {impossible!r}")
    if teacher.batch_size != student.batch_size:
        raise ValueError(f"teacher batch size {teacher.batch_size} != student batch size {student.batch_size}")
    teacher = _supported_teacher(teacher, student, impossible)
    projection = find_projection(teacher, student)
    if "impossible" in inspect.signature(projection).parameters:
        options = {**options, "impossible": impossible}
    marginals = projection(teacher, student, **options)
    for m, p in zip(marginals, student.potentials):
        if m.shape != p.shape:
            raise ValueError(f"projection produced marginals of shape {list(m.shape)} for student potentials of "
                             f"shape {list(p.shape)}")
    return tuple(m.detach() for m in marginals)


# ------------------------------------------------------------------------------------------ checks
def _same_lengths(teacher, student, what: str = "tokens") -> None:
    if teacher.max_len != student.max_len or not torch.equal(teacher.lens, student.lens.to(teacher.lens.device)):
        raise ValueError(f"teacher and student disagree on sentence lengths in {what}: teacher "
                         f"{teacher.lens.tolist()} (padded to {teacher.max_len}), student "
                         f"{student.lens.tolist()} (padded to {student.max_len})")


def _same_tags(teacher, student) -> None:
    if teacher.n_tags != student.n_tags:
        raise ValueError(f"teacher has {teacher.n_tags} tags but student has {student.n_tags}; the label sets "
                         f"must match (same inventory, same order)")


def _pair_products(unary: Tensor, lens: Tensor) -> Tensor:
    """``[batch_size, seq_len - 1, n_tags, n_tags]`` products of consecutive token marginals (masked)."""
    edges = unary[:, :-1].unsqueeze(-1) * unary[:, 1:].unsqueeze(-2)
    inside = torch.arange(unary.shape[1] - 1, device=unary.device) < (lens - 1).unsqueeze(-1)
    return edges * inside.view(*inside.shape, 1, 1)


# ------------------------------------------------------------------------------------------ chains
@register_projection(LinearChainCRF, LinearChainCRF)
def _crf_to_crf(teacher: LinearChainCRF, student: LinearChainCRF) -> tuple[Tensor, ...]:
    _same_lengths(teacher, student)
    _same_tags(teacher, student)
    return teacher.part_marginals()


@register_projection(LinearChainCRF, MaxEnt)
@register_projection(MaxEnt, MaxEnt)
def _to_maxent(teacher, student: MaxEnt) -> tuple[Tensor, ...]:
    _same_lengths(teacher, student)
    _same_tags(teacher, student)
    return (teacher.marginals,)


@register_projection(MaxEnt, LinearChainCRF)
def _maxent_to_crf(teacher: MaxEnt, student: LinearChainCRF) -> tuple[Tensor, ...]:
    _same_lengths(teacher, student)
    _same_tags(teacher, student)
    unary = teacher.marginals
    return unary, _pair_products(unary, teacher.lens)


@register_projection(SemiMarkovCRF, MaxEnt)
@register_projection(SemiMarkovCRF, LinearChainCRF)
def _spans_to_tags(teacher: SemiMarkovCRF, student, *, span_labels: Sequence[str], tags: Sequence[str],
                   scheme: str, outside_label: str = "O") -> tuple[Tensor, ...]:
    """Case 4; needs ``span_labels`` (teacher label names), ``tags`` (student tag names) and ``scheme``."""
    _same_lengths(teacher, student)
    if len(span_labels) != teacher.n_labels or len(tags) != student.n_tags:
        raise ValueError(f"{len(span_labels)} span label names for {teacher.n_labels} teacher labels, "
                         f"{len(tags)} tag names for {student.n_tags} student tags")
    tag_map = build_span_tag_map(span_labels, tags, scheme, outside_label)
    unary, edges = span_tag_marginals(teacher, tag_map, pairs=isinstance(student, LinearChainCRF))
    return (unary,) if edges is None else (unary, edges)


# ------------------------------------------------------------------------------------------ restricted chains
def _forbidden_chain_parts(student: LinearChainCRF) -> tuple[Tensor, Tensor]:
    """``BoolTensor`` masks of the student's forbidden parts: ``unary [B, L, N]`` (start and end tags at the first
    and last position) and ``edges [B, L - 1, N, N]`` (transitions)."""
    unary, edges = (p.detach() for p in student.potentials)
    return is_impossible(unary), is_impossible(edges)


def chain_forbids_parts(student: StructuredDistribution) -> bool:
    """Whether ``student`` is a :class:`LinearChainCRF` that forbids some parts (scheme constraints)."""
    return isinstance(student, LinearChainCRF) and any(bool(m.any()) for m in _forbidden_chain_parts(student))


def _constrained_chain_pair(teacher, student) -> bool:
    """Whether ``teacher`` is a chain (MaxEnt or CRF) and ``student`` a CRF that forbids some of its parts."""
    return isinstance(teacher, (MaxEnt, LinearChainCRF)) and chain_forbids_parts(student)


def restrict_chain(teacher: MaxEnt | LinearChainCRF, student: LinearChainCRF) -> LinearChainCRF:
    """The chain teacher restricted to the tag sequences the CRF student allows, renormalized: exactly
    ``P_T(y | y allowed by S)``.

    It is the chain of the teacher's own potentials (a :class:`MaxEnt` teacher's logits as emissions and zero
    transitions; a :class:`LinearChainCRF` teacher's unary and edge potentials) with every part the student
    forbids (a transition such as ``O -> I-X`` in BIO, a start or end tag) made impossible, so its part
    marginals are the exact marginals of the restricted teacher over the student's parts.  Computed in float64;
    :func:`restriction_lost_mass` is the teacher's mass it drops.
    """
    _same_lengths(teacher, student)
    _same_tags(teacher, student)
    banned_unary, banned_edges = _forbidden_chain_parts(student)
    unary = teacher.potentials[0].detach().to(torch.float64)
    batch_size, seq_len, n_tags = unary.shape
    if isinstance(teacher, LinearChainCRF):
        edges = teacher.potentials[1].detach().to(torch.float64)
    else:
        edges = unary.new_zeros(n_tags, n_tags).expand(batch_size, max(seq_len - 1, 0), n_tags, n_tags)
    unary = unary.masked_fill(banned_unary.to(unary.device), LOG_ZERO)
    edges = edges.masked_fill(banned_edges.to(edges.device), LOG_ZERO).contiguous()
    return LinearChainCRF(unary, edges, teacher.lens)


def restriction_lost_mass(teacher: StructuredDistribution, student: StructuredDistribution) -> Tensor:
    """``[batch_size]``: the teacher's mass on structures the student cannot produce, ``1 - Z_R / Z_T`` with
    ``Z_R`` the partition function of :func:`restrict_teacher` (0 when nothing is restricted)."""
    restricted = restrict_teacher(teacher, student)
    if restricted is teacher:
        return torch.zeros(teacher.batch_size, dtype=teacher.dtype, device=teacher.device)
    log_t = teacher.log_partition.detach().to(torch.float64)
    log_r = restricted.log_partition.detach().to(torch.float64)
    return (-torch.expm1(log_r - log_t)).clamp(min=0.0)


def chain_from_marginals(unary: Tensor, edges: Tensor | None, lens: Tensor) -> LinearChainCRF:
    """The chain whose distribution has these marginals (a chain is determined by them): emissions
    ``log P(y_0)`` at the first position, transitions ``log P(y_{i+1} | y_i) = log P(y_i, y_{i+1}) -
    log P(y_i)``; without ``edges`` (a :class:`MaxEnt` teacher) the tokens are independent.  Computed in float64.

    Args:
        unary: ``[B, L, N]`` tag marginals.
        edges: ``[B, L - 1, N, N]`` pair marginals, or ``None``.
        lens: ``LongTensor [B]``.
    """
    unary = unary.detach().to(torch.float64)
    logs = unary.clamp(min=0).log().clamp(min=LOG_ZERO)
    if edges is None:
        return LinearChainCRF(logs, None, lens)
    pairs = edges.detach().to(torch.float64).clamp(min=0)
    given = pairs.log().clamp(min=LOG_ZERO) - logs[:, :-1].unsqueeze(-1)
    given = torch.where(pairs > 0, given, torch.full_like(given, LOG_ZERO))
    emissions = torch.cat([logs[:, :1], torch.zeros_like(logs[:, 1:])], 1)
    return LinearChainCRF(emissions, given.contiguous(), lens)


# ------------------------------------------------------------------------------------------ trees
def _same_words(teacher, student) -> None:
    _same_lengths(teacher, student, what="words")


_TREES = (DependencyCRF, MatrixTree, Dependency2oCRF)


def _tree_support(dist: StructuredDistribution) -> tuple[bool, bool]:
    """``(projective only, multiroot)`` of a tree distribution."""
    return not isinstance(dist, MatrixTree), bool(dist.multiroot)


def _inexpressible(teacher, student) -> list[str]:
    """The kinds of teacher trees a tree student cannot express (empty when its support holds the teacher's)."""
    t_projective, t_multiroot = _tree_support(teacher)
    s_projective, s_multiroot = _tree_support(student)
    return ((["non-projective"] if s_projective and not t_projective else [])
            + (["multiroot"] if t_multiroot and not s_multiroot else []))


def restrict_teacher(teacher: StructuredDistribution, student: StructuredDistribution) -> StructuredDistribution:
    """A tree teacher restricted to the trees a tree student can express, renormalized: exactly
    ``P_T(y | y in support(S))``, as a distribution of the same scores under the student's constraints.
    A chain teacher (:class:`MaxEnt` or :class:`LinearChainCRF`) of a constrained :class:`LinearChainCRF`
    student becomes the chain of :func:`restrict_chain`.

    A first-order teacher (:class:`DependencyCRF`, :class:`MatrixTree`) becomes a :class:`DependencyCRF` when
    the student is projective (Eisner on the teacher's arc scores) and loses its multiroot trees when the
    student is single-root; a :class:`Dependency2oCRF` teacher (projective) can only lose its multiroot trees.
    The teacher itself is returned when the student expresses all its trees (or either is not a tree)."""
    if _constrained_chain_pair(teacher, student):
        return restrict_chain(teacher, student)
    if not (isinstance(teacher, _TREES) and isinstance(student, _TREES)) or not _inexpressible(teacher, student):
        return teacher
    multiroot = teacher.multiroot and student.multiroot
    if isinstance(teacher, Dependency2oCRF):
        return Dependency2oCRF(*teacher.potentials, teacher.lens, multiroot)
    projective = _tree_support(teacher)[0] or _tree_support(student)[0]
    return (DependencyCRF if projective else MatrixTree)(teacher.potentials[0], teacher.lens, multiroot)


def _supported_teacher(teacher, student, impossible: str):
    """The teacher to project under the rule ``impossible``: itself, or restricted (``"renormalize"``); raises
    ``ValueError`` (``"error"``) when a tree student cannot express some of a tree teacher's trees.  A chain
    teacher of a constrained CRF student is restricted under ``"renormalize"``; under ``"error"`` its mass on
    forbidden parts is refused by the loss (which sees the marginals)."""
    if impossible == "renormalize" and _constrained_chain_pair(teacher, student):
        return restrict_chain(teacher, student)
    if not (isinstance(teacher, _TREES) and isinstance(student, _TREES)) or impossible == "ignore":
        return teacher
    missing = _inexpressible(teacher, student)
    if not missing:
        return teacher
    if impossible == "renormalize":
        return restrict_teacher(teacher, student)
    raise ValueError(
        f"the {type(teacher).__name__} teacher (multiroot={teacher.multiroot}) puts mass on "
        f"{' and '.join(missing)} trees that the {type(student).__name__} student (multiroot={student.multiroot}) "
        f"cannot express: the cross-entropy is infinite and the factorized loss has no lower bound (it falls "
        f"without end as the student sharpens). Restrict and renormalize the teacher to the student's trees with "
        f"impossible='renormalize' (exact; structkd.kd.restrict_teacher gives that teacher), give the student the "
        f"teacher's support, or pass impossible='ignore' to distill the unrestricted marginals at that risk")


@register_projection(DependencyCRF, DependencyCRF)
@register_projection(DependencyCRF, MatrixTree)
@register_projection(MatrixTree, DependencyCRF)
@register_projection(MatrixTree, MatrixTree)
@register_projection(Dependency2oCRF, DependencyCRF)
@register_projection(Dependency2oCRF, MatrixTree)
def _arcs(teacher, student) -> tuple[Tensor, ...]:
    """Arc marginals.  A student that cannot express some of the teacher's trees (non-projective or multiroot
    ones) gets here only under ``impossible="ignore"`` (see :func:`project`): it then sees the unrestricted
    teacher's arc marginals, the unbounded factorized loss ``log Z_S - E_T[score_S]``."""
    _same_words(teacher, student)
    return (teacher.marginals,)


@register_projection(Dependency2oCRF, Dependency2oCRF)
def _sibling_parts(teacher: Dependency2oCRF, student: Dependency2oCRF) -> tuple[Tensor, ...]:
    _same_words(teacher, student)
    return teacher.part_marginals()


@register_projection(DependencyCRF, Dependency2oCRF)
def _first_order_siblings(teacher: DependencyCRF, student: Dependency2oCRF) -> tuple[Tensor, ...]:
    """Exact sibling marginals of a first-order projective teacher: the same distribution written as a
    second-order CRF with zero sibling scores."""
    _same_words(teacher, student)
    arcs = teacher.potentials[0]
    zeros = arcs.new_zeros(*arcs.shape, arcs.shape[-1])
    return Dependency2oCRF(arcs, zeros, teacher.lens, teacher.multiroot).part_marginals()


def head_offset_marginals(arc_marginals: Tensor, lens: Tensor, offsets: Sequence[int | tuple[int, int]],
                          rel_probs: Tensor | None = None, renormalize: bool = True) -> Tensor:
    """Teacher marginals of "parsing as sequence labeling" labels.

    Args:
        arc_marginals: ``[batch_size, seq_len + 1, seq_len + 1]`` teacher arc marginals ``[b, d, h]``
            (position 0 the root).
        lens: ``LongTensor [batch_size]`` number of words.
        offsets: the student's label inventory: each label is a head offset ``head - dependent`` or a pair
            ``(offset, relation index)``.  Offset labels that point at the root use ``-dependent``.
        rel_probs: ``[batch_size, seq_len + 1, seq_len + 1, n_rels]`` teacher relation probabilities per
            arc (``[b, d, h, r]``), needed when labels carry relations.
        renormalize: divide each word's marginals by the mass the inventory covers (heads at offsets outside
            the inventory cannot be expressed by the student); otherwise that mass is dropped, and a KD loss on
            these marginals has no lower bound (the projection refuses that unless ``impossible="ignore"``).

    Returns:
        ``[batch_size, seq_len, n_labels]`` where position ``i`` is word ``i + 1``.
    """
    batch_size, size, _ = arc_marginals.shape
    seq_len = size - 1
    offset_list = [o if isinstance(o, int) else o[0] for o in offsets]
    rel_list = [None if isinstance(o, int) else o[1] for o in offsets]
    if any(r is not None for r in rel_list) and rel_probs is None:
        raise ValueError("labels carry relations but no rel_probs were given")
    dep = torch.arange(1, size, device=arc_marginals.device).view(1, -1, 1)  # words 1..seq_len
    offset = torch.tensor(offset_list, device=arc_marginals.device).view(1, 1, -1)
    head = dep + offset  # [1, L, K]
    valid = (head >= 0) & (head <= lens.view(-1, 1, 1)) & (dep <= lens.view(-1, 1, 1)) & (offset != 0)
    head = head.clamp(0, seq_len).expand(batch_size, -1, -1)
    words = arc_marginals[:, 1:]  # [B, L, L + 1]
    out = words.gather(2, head) * valid
    if rel_probs is not None and any(r is not None for r in rel_list):
        rel_index = torch.tensor([0 if r is None else r for r in rel_list], device=arc_marginals.device)
        per_head = rel_probs[:, 1:].gather(2, head.unsqueeze(-1).expand(-1, -1, -1, rel_probs.shape[-1]))
        rel = per_head.gather(3, rel_index.view(1, 1, -1, 1).expand(batch_size, seq_len, -1, 1)).squeeze(-1)
        has_rel = torch.tensor([r is not None for r in rel_list], device=arc_marginals.device)
        out = torch.where(has_rel, out * rel, out)
    if renormalize:
        mass = out.sum(-1, keepdim=True)
        out = torch.where(mass > 0, out / mass.clamp(min=torch.finfo(out.dtype).tiny), out)
    return out


def _arcs_to_offsets(teacher, student: MaxEnt, *, offsets: Sequence[int | tuple[int, int]],
                     rel_probs: Tensor | None = None, renormalize: bool = True, impossible: str = "error"
                     ) -> tuple[Tensor, ...]:
    """Trees to a MaxEnt tagger over head-offset labels (``offsets`` as in :func:`head_offset_marginals`).

    ``renormalize=False`` leaves each word's label marginals summing to less than one, and the loss
    ``sum_w logsumexp(s_w) - sum_k m_wk s_wk`` then falls without end as all the word's logits fall: it is
    refused unless ``impossible="ignore"``."""
    if not renormalize and impossible != "ignore":
        raise ValueError("renormalize=False drops the teacher's mass on heads outside the offset inventory, and the "
                         "KD loss then has no lower bound (it falls without end as all the student's logits "
                         "fall): keep renormalize=True (the teacher restricted to the inventory, renormalized), or "
                         "pass impossible='ignore' to accept that risk")
    if student.n_tags != len(offsets):
        raise ValueError(f"the student has {student.n_tags} labels but {len(offsets)} offsets were given")
    if student.max_len != teacher.max_len or not torch.equal(student.lens, teacher.lens):
        raise ValueError(f"teacher and student disagree on sentence lengths in words: {teacher.lens.tolist()} vs "
                         f"{student.lens.tolist()}")
    return (head_offset_marginals(teacher.marginals, teacher.lens, offsets, rel_probs, renormalize),)


for _tree in (DependencyCRF, MatrixTree, Dependency2oCRF):
    register_projection(_tree, MaxEnt)(_arcs_to_offsets)
