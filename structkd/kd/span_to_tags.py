"""Case 4 of structural KD: exact tag and tag-pair marginals of a span (segmentation) teacher.

A span teacher (NER as parsing) is a :class:`~structkd.structs.semimarkov.SemiMarkovCRF` over labeled
segments, where entity labels cover entities and the outside label (``O``) covers single tokens.  A
BIO or BIOES tagger sees the same sentence as a tag sequence; every segmentation maps to exactly one tag
sequence, so the teacher induces a distribution over tag sequences whose marginals are:

* tag marginals ``P(y_t = tag)``: sums of segment marginals by the position of ``t`` in its segment
  (single, first, inside, last);
* tag-pair marginals ``P(y_t = a, y_{t+1} = b)``: segment marginals when ``t`` and ``t + 1`` lie in the same
  segment, and the teacher's *adjacent-segment* marginals
  (:meth:`~structkd.structs.semimarkov.SemiMarkovCRF.boundary_marginals`) when a segment ends at ``t``.

Everything is batched and vectorized; cumulative sums turn the ``O(L^2)`` segment marginals into
per-token quantities in ``O(L^2)`` work.  Every quantity is a sum of segment marginals, never a difference
of two sums: a tag or tag pair the teacher cannot produce (one a constrained student forbids, such as ``I-X``
last in BIOES) gets exactly 0 in any dtype, no result is negative, and each has the relative rounding error of
a sum of non-negative terms (a difference of cumulative sums would carry the absolute error of the whole
prefix, about ``L * eps``: 1e-6 at 60 tokens in float32, 5e-3 at 1,000).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from structkd.schemes import check_scheme, parse_tag
from structkd.structs.semimarkov import SemiMarkovCRF

Tensor = torch.Tensor

# role of a token in its segment
SINGLE, FIRST, INSIDE, LAST = 0, 1, 2, 3


@dataclass(frozen=True)
class SpanTagMap:
    """How span labels become student tags.

    Attributes:
        role_tag: ``LongTensor [4, n_span_labels]``: the student tag index of a token whose segment has
            this label, by its role (SINGLE, FIRST, INSIDE, LAST); the outside label maps every role to ``O``.
        n_tags: size of the student tag inventory.
    """

    role_tag: Tensor
    n_tags: int


def build_span_tag_map(span_labels: Sequence[str], tags: Sequence[str], scheme: str,
                       outside_label: str = "O") -> SpanTagMap:
    """Check that the teacher's span labels and the student's tags describe the same entity types and
    build the role-to-tag table.

    Args:
        span_labels: the span teacher's label names (one of them ``outside_label``).
        tags: the student's tag names in ``scheme`` (``O``, ``B-PER``, ``I-PER``, ...).
        scheme: ``BIO`` or ``BIOES``.
        outside_label: the span label of non-entity tokens.
    """
    scheme = check_scheme(scheme)
    if scheme not in ("BIO", "BIOES"):
        raise ValueError(f"span-to-tag projection supports BIO and BIOES students, not {scheme}")
    index = {tag: i for i, tag in enumerate(tags)}
    if "O" not in index:
        raise ValueError(f"the student's tags {list(tags)} have no 'O' tag")
    if outside_label not in span_labels:
        raise ValueError(f"the span teacher's labels {list(span_labels)} have no outside label {outside_label!r}")
    prefixes = {"BIO": ("B", "B", "I", "I"), "BIOES": ("S", "B", "I", "E")}[scheme]
    student_types = {parse_tag(t)[1] for t in tags} - {None}
    teacher_types = set(span_labels) - {outside_label}
    if student_types != teacher_types:
        raise ValueError(f"label sets differ: span teacher types {sorted(teacher_types)} vs student tag types "
                         f"{sorted(student_types)}")
    role_tag = torch.zeros(4, len(span_labels), dtype=torch.long)
    for c, label in enumerate(span_labels):
        for role, prefix in enumerate(prefixes):
            name = "O" if label == outside_label else f"{prefix}-{label}"
            if name not in index:
                raise ValueError(f"the student's tags lack {name!r}, needed for span label {label!r} in {scheme}")
            role_tag[role, c] = index[name]
    return SpanTagMap(role_tag, len(tags))


def _diagonal(x: Tensor, offset: int) -> Tensor:
    """``x[:, t, t + offset, :]`` as ``[batch_size, seq_len - offset, n_labels]``."""
    return x.diagonal(offset=offset, dim1=1, dim2=2).transpose(1, 2)


def _before(seq_len: int, gap: int, device: torch.device) -> Tensor:
    """``[1, seq_len, seq_len, 1]`` float mask of ``i < j - gap`` at ``[0, i, j, 0]``."""
    i = torch.arange(seq_len, device=device).view(-1, 1)
    j = torch.arange(seq_len, device=device).view(1, -1)
    return (i < j - gap).view(1, seq_len, seq_len, 1)


def _tails(marg: Tensor) -> Tensor:
    """``[batch_size, seq_len, seq_len, n_labels]``: ``tail[b, i, t, c] = sum_{j > t} marg[b, i, j, c]``, the
    segments starting at ``i`` that go on past ``t`` (a reversed cumulative sum: additions only)."""
    through = marg.flip(2).cumsum(2).flip(2)  # sum over j >= t
    return torch.cat([through[:, :, 1:], torch.zeros_like(through[:, :, :1])], 2)


def _started_before(x: Tensor, gap: int) -> Tensor:
    """``[batch_size, seq_len, n_labels]``: ``sum_{i < t - gap} x[b, i, t, c]`` (masked column sums)."""
    return x.masked_fill(~_before(x.shape[1], gap, x.device), 0.0).sum(1)


def span_tag_marginals(teacher: SemiMarkovCRF, tag_map: SpanTagMap, pairs: bool = True
                       ) -> tuple[Tensor, Tensor | None]:
    """Exact tag marginals ``[batch_size, seq_len, n_tags]`` and (if ``pairs``) tag-pair marginals
    ``[batch_size, seq_len - 1, n_tags, n_tags]`` of a span teacher's distribution over tag sequences.

    Every entry is a sum of non-negative segment marginals (see the module docstring): exact zeros stay 0."""
    marg = teacher.marginals  # [B, i, j, C]
    batch_size, seq_len, _, n_labels = marg.shape
    tails = _tails(marg)
    single = _diagonal(marg, 0)  # segment t..t
    first = _diagonal(tails, 0)  # segment starts at t and goes on
    last = _started_before(marg, 0)  # segment ends at t, started before
    inside = _started_before(tails, 0)  # segment started before t, goes on past t
    by_role = torch.stack([single, first, inside, last], 2)  # [B, L, 4, C]
    unary = marg.new_zeros(batch_size, seq_len, tag_map.n_tags)
    unary.index_add_(2, tag_map.role_tag.to(marg.device).flatten(), by_role.flatten(2))
    if not pairs:
        return unary, None
    return unary, _pair_marginals(teacher, tag_map, marg, tails)


def _pair_marginals(teacher: SemiMarkovCRF, tag_map: SpanTagMap, marg: Tensor, tails: Tensor) -> Tensor:
    """Tag-pair marginals ``[batch_size, seq_len - 1, n_tags, n_tags]`` from the segment marginals ``marg`` and
    their :func:`_tails` (both ``[batch_size, seq_len, seq_len, n_labels]``) and the adjacent-segment marginals."""
    batch_size, seq_len, _, n_labels = marg.shape
    n_tags = tag_map.n_tags
    role_tag = tag_map.role_tag.to(marg.device)
    # within-segment pairs (t, t + 1) by (role at t, role at t + 1): segments i..j with
    within = {
        (FIRST, LAST): _diagonal(marg, 1),  # i = t, j = t + 1
        (FIRST, INSIDE): _diagonal(tails, 1),  # i = t, j > t + 1
        (INSIDE, LAST): _started_before(marg, 1)[:, 1:],  # i < t, j = t + 1
        (INSIDE, INSIDE): _started_before(tails, 1)[:, 1:],  # i < t, j > t + 1
    }
    pair_index, values = [], []
    for (ra, rb), value in within.items():
        pair_index.append(role_tag[ra] * n_tags + role_tag[rb])  # [C]
        values.append(value)
    # adjacent segments: boundary[b, t, w, x, w2, y]; the ending segment's role is SINGLE or LAST,
    # the starting one's SINGLE or FIRST
    boundary = teacher.boundary_marginals()
    end_role = torch.stack([role_tag[SINGLE], role_tag[LAST]])  # [2, C]
    start_role = torch.stack([role_tag[SINGLE], role_tag[FIRST]])
    boundary_index = end_role.view(2, n_labels, 1, 1) * n_tags + start_role.view(1, 1, 2, n_labels)
    flat_index = torch.cat([*pair_index, boundary_index.flatten()])
    flat_values = torch.cat([*values, boundary.flatten(2)], -1)  # [B, L - 1, 4C + 4C^2]
    edges = marg.new_zeros(batch_size, seq_len - 1, n_tags * n_tags)
    edges.index_add_(2, flat_index, flat_values)
    return edges.view(batch_size, seq_len - 1, n_tags, n_tags)
