"""Second-order projective dependency trees with sibling parts (Zhang et al. 2020, "Efficient second-order
TreeCRF for neural dependency parsing"; the sibling model of McDonald and Pereira 2006).

The dynamic program is the second-order Eisner algorithm with five span types over positions ``0..n``
(0 the artificial root):

* ``CR(i, j)`` / ``CL(i, j)``: complete spans headed by ``i`` (right) / ``j`` (left);
* ``IR(i, j)`` / ``IL(i, j)``: incomplete spans closed by the arc ``i -> j`` / ``j -> i``;
* ``S(i, j)``: a sibling span, ``CR(i, k) + CL(k + 1, j)``, joining two adjacent modifiers of one head.

It runs in ``O(n)`` sequential steps, one per span width, each batched over every span of that width.
Every chart is kept in two layouts so that all the stripes a step reads are plain slices:
``X_s[b, i, w] = X(i, i + w)`` ("by start") and ``X_e[b, j, L - 1 - w] = X(j - w, j)`` ("by end").

Every step reduces a ``terms`` tensor ``[N, n, K]`` (``n`` spans, ``K`` split points) to ``[N, n]``.  One
explicit reverse pass over the same steps (:func:`_reverse`) computes, for a weighting of the terms of each
reduction, the adjoints of every chart item and every part:

* softmax weights give the marginals (the outside pass, no autograd tape);
* one-hot argmax weights backtrack the Viterbi tree;
* one-hot Gumbel-max weights draw an exact sample top-down through the inside chart.

A max-plus outside pass (:func:`_max_outside`) gives max-marginals of the arcs, from which :class:`_KBest`
finds the exact k best trees with ``O(k)`` batched dynamic programs.  The inside pass also runs under
autograd (``_inside``, double backward included) for differentiable marginals.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache
from typing import NamedTuple

import torch

from structkd.numerics import LOG_ZERO
from structkd.structs.base import StructuredDistribution
from structkd.structs.heads import arc_indicators, check_heads, word_mask

Tensor = torch.Tensor
Weights = Callable[[Tensor, Tensor], Tensor]
"""Maps the ``terms [..., K]`` of reductions and their reduced values ``[...]`` to weights ``[..., K]`` that
sum to 1 over ``K``."""

_CHARTS = ("cr_s", "cr_e", "cl_s", "cl_e", "ir_s", "il_e", "s_s", "s_e")


class _Pieces(NamedTuple):
    """Per-width pieces of the log-potentials, each list indexed by the width ``w`` (entry 0 unused).

    ``arc_r[w]``, ``arc_l[w]``: ``[N, n]`` scores of the arcs ``i -> i + w`` and ``i + w -> i``.
    ``sib_r[w]``, ``sib_l[w]``: ``[B, n, w - 1]`` sibling scores ``(m = i + w, h = i, s = i + t)`` and
    ``(m = i, h = i + w, s = i + t)`` for ``t = 1..w - 1``.
    """

    arc_r: list
    arc_l: list
    sib_r: list
    sib_l: list


# ---------------------------------------------------------------------------------------------- indexing
@lru_cache(maxsize=32)
def _flat_indices(seq_len: int, device: torch.device) -> tuple[Tensor, Tensor, list[int], list[int]]:
    """Flat indices of the per-width pieces in ``arc.view(N, L * L)`` and ``sib.view(B, L ** 3)``.

    Returns ``(arc_index, sib_index, arc_sizes, sib_sizes)``: the arc (sibling) pieces of widths
    ``1..L - 1`` are the consecutive chunks of sizes ``arc_sizes`` (``sib_sizes``), right pieces first.
    """
    L = seq_len
    arc_r, arc_l, sib_r, sib_l = [], [], [], []
    for w in range(1, L):
        i = torch.arange(L - w)
        t = torch.arange(1, w)
        arc_r.append((i + w) * L + i)
        arc_l.append(i * L + i + w)
        sib_r.append((((i + w) * L + i) * L).unsqueeze(-1) + i.unsqueeze(-1) + t)
        sib_l.append(((i * L + i + w) * L).unsqueeze(-1) + i.unsqueeze(-1) + t)
    arc_index = torch.cat(arc_r + arc_l).to(device)
    sib_index = torch.cat([x.flatten() for x in sib_r + sib_l]).to(device)
    return arc_index, sib_index, [x.numel() for x in arc_r + arc_l], [x.numel() for x in sib_r + sib_l]


def _arc_pieces(arc: Tensor) -> tuple[list, list]:
    """Split ``arc [N, L, L]`` (``[n, d, h]``) into the per-width lists ``(arc_r, arc_l)`` of ``[N, n]``."""
    N, L = arc.shape[:2]
    index, _, sizes, _ = _flat_indices(L, arc.device)
    chunks = arc.reshape(N, L * L).index_select(1, index).split(sizes, dim=1)
    return [None, *chunks[:L - 1]], [None, *chunks[L - 1:]]


def _sib_pieces(sib: Tensor) -> tuple[list, list]:
    """Split ``sib [B, L, L, L]`` into the per-width lists ``(sib_r, sib_l)`` of ``[B, n, w - 1]``."""
    B, L = sib.shape[:2]
    _, index, _, sizes = _flat_indices(L, sib.device)
    chunks = sib.reshape(B, L ** 3).index_select(1, index).split(sizes, dim=1)
    shaped = [c.view(B, L - w, w - 1) for c, w in zip(chunks, list(range(1, L)) * 2)]
    return [None, *shaped[:L - 1]], [None, *shaped[L - 1:]]


def _pieces(arc: Tensor, sib: Tensor) -> _Pieces:
    """All per-width pieces of ``arc [N, L, L]`` and ``sib [B, L, L, L]``."""
    return _Pieces(*_arc_pieces(arc), *_sib_pieces(sib))


def _unpieces_arc(arc_r: list, arc_l: list, seq_len: int) -> Tensor:
    """Inverse of :func:`_arc_pieces` for adjoints: ``[N, L, L]``, zero outside the pieces."""
    index, _, _, _ = _flat_indices(seq_len, arc_r[1].device)
    flat = torch.cat(arc_r[1:] + arc_l[1:], dim=1)
    out = flat.new_zeros(flat.shape[0], seq_len * seq_len).index_copy_(1, index, flat)
    return out.view(-1, seq_len, seq_len)


def _unpieces_sib(sib_r: list, sib_l: list, seq_len: int) -> Tensor:
    """Inverse of :func:`_sib_pieces` for adjoints: ``[N, L, L, L]``, zero outside the pieces."""
    _, index, _, _ = _flat_indices(seq_len, sib_r[1].device)
    N = sib_r[1].shape[0]
    flat = torch.cat([x.flatten(1) for x in sib_r[1:] + sib_l[1:]], dim=1)
    out = flat.new_zeros(N, seq_len ** 3).index_copy_(1, index, flat)
    return out.view(N, seq_len, seq_len, seq_len)


def _sib_at(pieces: list, w: int, index: Tensor | None) -> Tensor:
    """The sibling piece of width ``w``, with its batch rows picked by ``index`` (``LongTensor [N]``) if given."""
    piece = pieces[w]
    return piece if index is None else piece.index_select(0, index)


# ---------------------------------------------------------------------------------------------- terms
def _span_terms(F: dict, P: _Pieces, w: int, L: int, index: Tensor | None) -> Tensor:
    """``[3, N, n, w]``: the terms of the reductions of width ``w`` giving ``S``, ``IR - arc`` and ``IL - arc``
    (they read only items of smaller widths from the chart dict ``F``, layouts of the module docstring).

    Column 0 of ``IR``/``IL`` is the first modifier of a head (no sibling score: the rest of the span is one
    complete span of the modifier); column ``t >= 1`` has the previous modifier at ``i + t``.
    """
    n = L - w
    s = F["cr_s"][:, :n, 0:w] + F["cl_e"][:, w:, L - w:]
    ir = F["ir_s"][:, :n, 1:w] + F["s_e"][:, w:, L - w:L - 1] + _sib_at(P.sib_r, w, index)
    il = F["s_s"][:, :n, 1:w] + F["il_e"][:, w:, L - w:L - 1] + _sib_at(P.sib_l, w, index)
    ir = torch.cat([F["cl_e"][:, w:, L - w:L - w + 1], ir], -1)
    il = torch.cat([F["cr_s"][:, :n, w - 1:w], il], -1)
    return torch.stack([s, ir, il])


def _complete_terms(F: dict, w: int, L: int) -> Tensor:
    """``[2, N, n, w]``: the terms of ``CR`` and ``CL`` of width ``w`` (after ``IR``/``IL`` of width ``w``)."""
    n = L - w
    cr = F["ir_s"][:, :n, 1:w + 1] + F["cr_e"][:, w:, L - w:]
    cl = F["cl_s"][:, :n, 0:w] + F["il_e"][:, w:, L - 1 - w:L - 1]
    return torch.stack([cr, cl])


def _scatter_span(G: dict, p: Tensor, w: int, L: int) -> None:
    """Reverse of :func:`_span_terms`: add the weights ``p [3, N, n, w]`` to the adjoints of the chart items."""
    n = L - w
    G["cr_s"][:, :n, 0:w] += p[0]
    G["cl_e"][:, w:, L - w:] += p[0]
    G["cl_e"][:, w:, L - w] += p[1, ..., 0]
    G["ir_s"][:, :n, 1:w] += p[1, ..., 1:]
    G["s_e"][:, w:, L - w:L - 1] += p[1, ..., 1:]
    G["cr_s"][:, :n, w - 1] += p[2, ..., 0]
    G["s_s"][:, :n, 1:w] += p[2, ..., 1:]
    G["il_e"][:, w:, L - w:L - 1] += p[2, ..., 1:]


def _scatter_complete(G: dict, p: Tensor, w: int, L: int) -> None:
    """Reverse of :func:`_complete_terms` for the weights ``p [2, N, n, w]``."""
    n = L - w
    G["ir_s"][:, :n, 1:w + 1] += p[0]
    G["cr_e"][:, w:, L - w:] += p[0]
    G["cl_s"][:, :n, 0:w] += p[1]
    G["il_e"][:, w:, L - 1 - w:L - 1] += p[1]


def _write(F: dict, name: str, w: int, L: int, value: Tensor) -> None:
    """Store the items ``value [N, n]`` of width ``w`` of chart ``name`` in its layouts."""
    n = L - w
    if name in ("cr", "cl", "s"):
        F[name + "_s"][:, :n, w] = value
        F[name + "_e"][:, w:, L - 1 - w] = value
    elif name == "ir":
        F["ir_s"][:, :n, w] = value
    else:
        F["il_e"][:, w:, L - 1 - w] = value


def _item(F: dict, name: str, w: int, L: int) -> Tensor:
    """The adjoint ``[N, n]`` of the items of width ``w`` of chart ``name``: the sum over its layouts."""
    n = L - w
    if name == "ir":
        return F["ir_s"][:, :n, w]
    if name == "il":
        return F["il_e"][:, w:, L - 1 - w]
    return F[name + "_s"][:, :n, w] + F[name + "_e"][:, w:, L - 1 - w]


def _new_charts(N: int, L: int, dtype: torch.dtype, device: torch.device) -> dict[str, Tensor]:
    """Empty charts (``LOG_ZERO``) with the width-0 complete spans set to 0 (log 1)."""
    F = {name: torch.full((N, L, L), LOG_ZERO, dtype=dtype, device=device) for name in _CHARTS}
    for name in ("cr_s", "cl_s"):
        F[name][:, :, 0] = 0
    for name in ("cr_e", "cl_e"):
        F[name][:, :, L - 1] = 0
    return F


# ---------------------------------------------------------------------------------------------- passes
def _forward(P: _Pieces, L: int, reduce: Callable[[Tensor], Tensor], index: Tensor | None = None,
             save: bool = False) -> tuple[dict, list]:
    """Inside pass under ``reduce`` (:func:`_logsumexp` or :func:`_max`, over the last dim).

    Args:
        P: the per-width pieces; the arc pieces have the batch size ``N`` of the result.
        L: ``seq_len >= 2``, positions ``0..L - 1``.
        reduce: ``[..., K] -> [...]``.
        index: ``LongTensor [N]``, the batch row of the sibling pieces of each result row (None: identity).
        save: keep every step's terms and reduced values for :func:`_reverse`.

    Returns:
        ``(charts, saved)``: the charts ``[N, L, L]`` by name, and ``saved[w] = (span terms [3, N, n, w],
        their reductions [3, N, n], complete terms [2, N, n, w], their reductions [2, N, n])`` if ``save``.
    """
    arc = P.arc_r[1]
    F = _new_charts(arc.shape[0], L, arc.dtype, arc.device)
    saved = [None] * L
    for w in range(1, L):
        span = _span_terms(F, P, w, L, index)
        span_red = reduce(span)
        _write(F, "s", w, L, span_red[0])
        _write(F, "ir", w, L, span_red[1] + P.arc_r[w])
        _write(F, "il", w, L, span_red[2] + P.arc_l[w])
        complete = _complete_terms(F, w, L)
        complete_red = reduce(complete)
        _write(F, "cr", w, L, complete_red[0])
        _write(F, "cl", w, L, complete_red[1])
        if save:
            saved[w] = (span, span_red, complete, complete_red)
    return F, saved


_EXP_FLOOR = -80.0
"""Floor of the arguments of ``exp`` in the reductions (not a log-potential).  On x86 CPUs ``exp`` of an
argument that underflows (every term involving :data:`LOG_ZERO`) takes a slow path, 20-90 ns instead of
0.5 ns per element; terms whose weight relative to the largest term is below ``exp(-80) ~ 1.8e-35`` are
clamped to it in ``logsumexp`` (a relative change of ``log Z`` below ``L * 1.8e-35``, far under float64
resolution; their gradient is 0) and get weight exactly 0 in :func:`_softmax`."""


def _logsumexp(x: Tensor) -> Tensor:
    """``logsumexp`` over the last dim (shifted by the detached max: exact gradients of any order)."""
    m = x.detach().amax(-1, keepdim=True)
    return (x - m).clamp(min=_EXP_FLOOR).exp().sum(-1).log() + m.squeeze(-1)


def _max(x: Tensor) -> Tensor:
    return x.amax(-1)


def _softmax(x: Tensor, reduced: Tensor) -> Tensor:
    """Posterior weights of the terms ``x [..., K]`` given their ``logsumexp`` ``reduced [...]`` (terms below
    the :data:`_EXP_FLOOR` get exactly 0, the others are off by at most ``exp(_EXP_FLOOR)``)."""
    return (x - reduced.unsqueeze(-1)).clamp_(min=_EXP_FLOOR).exp_().sub_(math.exp(_EXP_FLOOR))


def _onehot_argmax(x: Tensor, reduced: Tensor | None = None) -> Tensor:
    return torch.zeros_like(x).scatter_(-1, x.argmax(-1, keepdim=True), 1)


def _gumbel_weights(generator: torch.Generator | None) -> Weights:
    """One-hot weights of a Gumbel-max draw: an exact sample from ``softmax(terms)``."""
    def weights(x: Tensor, reduced: Tensor) -> Tensor:
        u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        tiny = torch.finfo(x.dtype).tiny
        exponential = -torch.log(u.clamp(min=tiny))
        gumbel = -torch.log(exponential.clamp(min=tiny))
        return _onehot_argmax(x + gumbel)
    return weights


def _reverse(saved: list, lens: Tensor, weights: Weights, index: Tensor | None = None,
             need_sib: bool = True) -> tuple[Tensor, Tensor | None]:
    """Reverse pass: adjoints of the arcs and sibling parts when the root item ``CR(0, lens[b])`` has
    adjoint 1 and each reduction passes its item's adjoint to its terms in proportion to ``weights``.

    Args:
        saved: the saved steps of :func:`_forward` (``save=True``), read only.
        lens: ``LongTensor [N]`` number of words.
        weights: see :data:`Weights`.
        index: ``LongTensor [N]``: result row ``r`` reverses the saved row ``index[r]`` (None: identity).
        need_sib: whether to return the sibling adjoints.

    Returns:
        ``(arc [N, L, L], sib [N, L, L, L] or None)``.
    """
    L, N = len(saved), lens.shape[0]
    template = saved[1][0]
    G = {name: template.new_zeros(N, L, L) for name in _CHARTS}
    G["cr_s"][torch.arange(N, device=lens.device), 0, lens] = 1
    arc_r, arc_l, sib_r, sib_l = [None] * L, [None] * L, [None] * L, [None] * L
    for w in range(L - 1, 0, -1):
        span, span_red, complete, complete_red = saved[w]
        if index is not None:
            span, span_red = span.index_select(1, index), span_red.index_select(1, index)
            complete, complete_red = complete.index_select(1, index), complete_red.index_select(1, index)
        g = torch.stack([_item(G, "cr", w, L), _item(G, "cl", w, L)])
        _scatter_complete(G, weights(complete, complete_red) * g.unsqueeze(-1), w, L)
        g = torch.stack([_item(G, "s", w, L), _item(G, "ir", w, L), _item(G, "il", w, L)])
        p = weights(span, span_red) * g.unsqueeze(-1)
        _scatter_span(G, p, w, L)
        arc_r[w], arc_l[w], sib_r[w], sib_l[w] = g[1], g[2], p[1, ..., 1:], p[2, ..., 1:]
    sib = _unpieces_sib(sib_r, sib_l, L) if need_sib else None
    return _unpieces_arc(arc_r, arc_l, L), sib


def _raise_to(view: Tensor, value: Tensor) -> None:
    """``view = max(view, value)`` in place."""
    torch.maximum(view, value, out=view)


def _max_outside(F: dict, P: _Pieces, lens: Tensor, index: Tensor | None = None) -> Tensor:
    """Max-marginals of the arcs: ``[N, L, L]``, entry ``[r, d, h]`` is the score of the best tree of row ``r``
    containing the arc ``h -> d`` (about :data:`LOG_ZERO` or below when there is none).

    Args:
        F: the charts of :func:`_forward` under :func:`_max` with the pieces ``P`` and ``index``.
        P, index: as given to :func:`_forward`.
        lens: ``LongTensor [N]`` number of words.

    The outside (max-plus) score of each item is the best completion of it into a tree: every use of an item
    raises it to the parent's outside score plus the other operands of that use, read from ``F`` (never by
    subtraction, so impossible items stay impossible).
    """
    N, L = lens.shape[0], F["cr_s"].shape[1]
    O = {name: torch.full_like(x, LOG_ZERO) for name, x in F.items()}
    O["cr_s"][torch.arange(N, device=lens.device), 0, lens] = 0
    mm_r, mm_l = [None] * L, [None] * L
    for w in range(L - 1, 0, -1):
        n = L - w
        o = torch.maximum(O["cr_s"][:, :n, w], O["cr_e"][:, w:, L - 1 - w]).unsqueeze(-1)
        _raise_to(O["ir_s"][:, :n, 1:w + 1], o + F["cr_e"][:, w:, L - w:])
        _raise_to(O["cr_e"][:, w:, L - w:], o + F["ir_s"][:, :n, 1:w + 1])
        o = torch.maximum(O["cl_s"][:, :n, w], O["cl_e"][:, w:, L - 1 - w]).unsqueeze(-1)
        _raise_to(O["cl_s"][:, :n, 0:w], o + F["il_e"][:, w:, L - 1 - w:L - 1])
        _raise_to(O["il_e"][:, w:, L - 1 - w:L - 1], o + F["cl_s"][:, :n, 0:w])
        o = O["il_e"][:, w:, L - 1 - w]
        mm_l[w] = o + F["il_e"][:, w:, L - 1 - w]
        o = (o + P.arc_l[w]).unsqueeze(-1)
        sib = _sib_at(P.sib_l, w, index)
        _raise_to(O["cr_s"][:, :n, w - 1:w], o)
        _raise_to(O["s_s"][:, :n, 1:w], o + F["il_e"][:, w:, L - w:L - 1] + sib)
        _raise_to(O["il_e"][:, w:, L - w:L - 1], o + F["s_s"][:, :n, 1:w] + sib)
        o = O["ir_s"][:, :n, w]
        mm_r[w] = o + F["ir_s"][:, :n, w]
        o = (o + P.arc_r[w]).unsqueeze(-1)
        sib = _sib_at(P.sib_r, w, index)
        _raise_to(O["cl_e"][:, w:, L - w:L - w + 1], o)
        _raise_to(O["ir_s"][:, :n, 1:w], o + F["s_e"][:, w:, L - w:L - 1] + sib)
        _raise_to(O["s_e"][:, w:, L - w:L - 1], o + F["ir_s"][:, :n, 1:w] + sib)
        o = torch.maximum(O["s_s"][:, :n, w], O["s_e"][:, w:, L - 1 - w]).unsqueeze(-1)
        _raise_to(O["cr_s"][:, :n, 0:w], o + F["cl_e"][:, w:, L - w:])
        _raise_to(O["cl_e"][:, w:, L - w:], o + F["cr_s"][:, :n, 0:w])
    return _unpieces_arc(mm_r, mm_l, L)


def _root(F: dict, lens: Tensor) -> Tensor:
    """``CR(0, lens[b])`` per sentence, ``[N]``: log Z (or the max) of each sentence."""
    return F["cr_s"][torch.arange(lens.shape[0], device=lens.device), 0, lens]


def _heads_from_arcs(arcs: Tensor, lens: Tensor) -> Tensor:
    """Head vectors ``[N, L]`` (-1 outside the words) from one-hot arc adjoints ``[N, L, L]``."""
    heads = arcs.argmax(-1)
    return heads.masked_fill(~word_mask(lens, arcs.shape[1]), -1)


# ---------------------------------------------------------------------------------------------- masks
def _arc_mask(lens: Tensor, seq_len: int) -> Tensor:
    """``BoolTensor [B, L, L]``: entry ``[b, d, h]`` is a possible arc ``h -> d`` of sentence ``b``."""
    words = word_mask(lens, seq_len)
    nodes = words.clone()
    nodes[:, 0] = True
    eye = torch.eye(seq_len, dtype=torch.bool, device=lens.device)
    return words.unsqueeze(2) & nodes.unsqueeze(1) & ~eye


def _sib_mask(lens: Tensor, seq_len: int, multiroot: bool) -> Tensor:
    """``BoolTensor [B, L, L, L]``: entry ``[b, m, h, s]`` is a possible sibling part (``s`` strictly between
    ``h`` and ``m``, all inside sentence ``b``; no sibling of the root unless ``multiroot``)."""
    pos = torch.arange(seq_len, device=lens.device)
    m, h, s = pos.view(-1, 1, 1), pos.view(1, -1, 1), pos.view(1, 1, -1)
    between = (((h < s) & (s < m)) | ((m < s) & (s < h))) & (m > 0)
    if not multiroot:
        between = between & (h > 0)
    inside = (m <= lens.view(-1, 1, 1, 1)) & (h <= lens.view(-1, 1, 1, 1))
    return between.unsqueeze(0) & inside


def sibling_indicators(heads: Tensor, arcs: Tensor) -> Tensor:
    """Sibling parts of trees, vectorized: ``[B, L, L, L]``, entry ``[b, m, h, s]`` is 1 where ``s`` and ``m``
    are adjacent modifiers of ``h`` on the same side, ``s`` closer to ``h``.

    Args:
        heads: ``LongTensor [B, L]`` (only its shape and device are used).
        arcs: ``[B, L, L]`` one-hot arcs (:func:`structkd.structs.heads.arc_indicators`).
    """
    B, L = heads.shape
    A = arcs > 0
    pos = torch.arange(L, device=heads.device)
    lo = torch.minimum(pos.view(-1, 1), pos.view(1, -1))
    hi = torch.maximum(pos.view(-1, 1), pos.view(1, -1))
    # count[b, h, x]: modifiers of h at positions <= x; strictly between lo and hi: count[hi - 1] - count[lo]
    count = A.transpose(1, 2).to(torch.int32).cumsum(-1, dtype=torch.int32)
    inner = count[:, :, (hi - 1).clamp(min=0)] - count[:, :, lo]          # [B, h, m, s]
    m, h, s = pos.view(-1, 1, 1), pos.view(1, -1, 1), pos.view(1, 1, -1)
    between = ((h < s) & (s < m)) | ((m < s) & (s < h))
    adjacent = inner.permute(0, 2, 1, 3) == 0                              # [B, m, h, s]
    both = A.unsqueeze(-1) & A.transpose(1, 2).unsqueeze(1)                # A[b, m, h] & A[b, s, h]
    return (both & adjacent & between).to(arcs.dtype)


# ---------------------------------------------------------------------------------------------- the class
class Dependency2oCRF(StructuredDistribution):
    """Projective dependency trees with first-order arc and second-order sibling scores.

    Args:
        arc_scores: ``[batch_size, seq_len, seq_len]``; ``arc_scores[b, d, h]`` scores the arc from head ``h`` to
            dependent ``d``.  Position 0 is the artificial root, words are ``1..lens[b]``; row 0 is ignored.
        sib_scores: ``[batch_size, seq_len, seq_len, seq_len]``; ``sib_scores[b, m, h, s]`` scores head ``h``
            taking ``s`` and ``m`` as adjacent modifiers on the same side, ``s`` closer to ``h`` than ``m``.
        lens: ``LongTensor [batch_size]`` number of words (without the root); ``None`` = ``seq_len - 1``.
        multiroot: whether several words may attach to the root (default: exactly one).

    The score of a tree is the sum of its arc scores and, for every head and side, the sibling score of each
    pair of consecutive modifiers (the modifier closest to the head has none; the root has right modifiers
    only).  Structures are head vectors ``LongTensor [batch_size, seq_len]`` with ``heads[b, d]`` the head of
    word ``d`` and -1 at position 0 and padding.
    """

    def __init__(self, arc_scores: Tensor, sib_scores: Tensor, lens: Tensor | None = None, multiroot: bool = False):
        if arc_scores.dim() != 3 or arc_scores.shape[1] != arc_scores.shape[2]:
            raise ValueError(f"arc_scores must be [batch_size, seq_len, seq_len], got {list(arc_scores.shape)}")
        B, L = arc_scores.shape[:2]
        if sib_scores.shape != (B, L, L, L):
            raise ValueError(f"sib_scores must be [batch_size, seq_len, seq_len, seq_len] = {[B, L, L, L]}, got "
                             f"{list(sib_scores.shape)}")
        super().__init__((arc_scores, sib_scores), lens, max_len=L - 1)
        self.multiroot = multiroot
        self.seq_len = L
        self._masks = (_arc_mask(self.lens, L), _sib_mask(self.lens, L, multiroot))
        self.potentials = tuple(torch.where(m, p, LOG_ZERO) for p, m in zip(self.potentials, self._masks))

    def _part_masks(self) -> tuple[Tensor, Tensor]:
        return self._masks

    @property
    def sibling_marginals(self) -> Tensor:
        """Detached marginals of the sibling parts, ``[batch_size, seq_len, seq_len, seq_len]``."""
        return self.part_marginals()[1]

    def parts(self, structure: Tensor) -> tuple[Tensor, Tensor]:
        """``(arcs [B, L, L], siblings [B, L, L, L])`` indicators of the projective trees ``structure``
        (``LongTensor [B, L]`` head vectors); raises ``ValueError`` for invalid or non-projective trees."""
        heads = structure.to(self.device)
        check_heads(heads, self.lens, self.multiroot, require_projective=True, seq_len=self.seq_len)
        arcs = arc_indicators(heads, self.lens, self.dtype)
        return arcs, sibling_indicators(heads, arcs)

    # ------------------------------------------------------------------ dynamic programs
    def _inside(self, potentials) -> Tensor:
        arc, sib = potentials
        if self.seq_len == 1:  # only empty sentences: log Z = 0, still connected to the graph
            return arc.sum((1, 2)) * 0 + sib.sum((1, 2, 3)) * 0
        if potentials is self.potentials and not torch.is_grad_enabled():
            F, _ = self._saved_inside()
        else:
            F, _ = _forward(_pieces(arc, sib), self.seq_len, _logsumexp)
        return _root(F, self.lens)

    def _saved_inside(self) -> tuple[dict, list]:
        """The no-grad inside pass of :attr:`potentials` with its saved steps (cached: the marginals and
        the samples reuse it; ``scaled`` copies start with an empty cache)."""
        def run():
            with torch.no_grad():
                return _forward(_pieces(*self.potentials), self.seq_len, _logsumexp, save=True)
        return self._cached("saved_inside", run)

    def _inside_outside(self) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        if self.seq_len == 1:
            return self.potentials[0].new_zeros(self.batch_size), tuple(torch.zeros_like(p) for p in self.potentials)
        F, saved = self._saved_inside()
        self._cache.pop("saved_inside")  # the marginals are cached by the base class from now on
        arcs, sibs = _reverse(saved, self.lens, _softmax)
        return _root(F, self.lens), (arcs, sibs)

    def _viterbi(self) -> tuple[Tensor, Tensor]:
        arc = self.potentials[0]
        if self.seq_len == 1:
            return arc.new_zeros(self.batch_size), torch.full((self.batch_size, 1), -1, dtype=torch.long,
                                                               device=self.device)
        P = _pieces(*self.potentials)
        F, saved = _forward(P, self.seq_len, _max, save=True)
        arcs, _ = _reverse(saved, self.lens, _onehot_argmax, need_sib=False)
        return _root(F, self.lens), _heads_from_arcs(arcs, self.lens)

    def _sample(self, n: int, generator: torch.Generator | None) -> Tensor:
        B, L = self.batch_size, self.seq_len
        if L == 1:
            return torch.full((n, B, L), -1, dtype=torch.long, device=self.device)
        _, saved = self._saved_inside()
        index = torch.arange(B, device=self.device).repeat(n)
        arcs, _ = _reverse(saved, self.lens.index_select(0, index), _gumbel_weights(generator), index,
                           need_sib=False)
        return _heads_from_arcs(arcs, self.lens.index_select(0, index)).view(n, B, L)

    def _topk(self, k: int) -> tuple[Tensor, Tensor]:
        return _KBest(self, k).run()


class _KBest:
    """Exact k-best trees by partitioning the tree space with max-marginals (Nilsson 1998; Yanover and Weiss
    2004): ``O(k)`` batched dynamic programs whatever the sentence length.

    Each subspace of a sentence is a boolean mask of allowed arcs ``[L, L]`` with its best tree and its second
    best score, the best max-marginal of an arc outside the best tree.  The ``r``-th best tree of a sentence is
    the second best of the subspace with the highest second best score; that subspace is split at a word ``d``
    whose head differs in its best and second best trees: one part forces the best head of ``d`` (its best tree
    stays, a new second best is computed), the other forbids it (its best tree is the ``r``-th best overall).
    Every round decodes the new subspaces of all sentences in one batch.
    """

    chunk = 64

    def __init__(self, dist: Dependency2oCRF, k: int):
        self.dist, self.k = dist, k
        B, L = dist.batch_size, dist.seq_len
        self.scores = torch.full((k, B), LOG_ZERO, dtype=dist.dtype, device=dist.device)
        self.heads = torch.full((k, B, L), -1, dtype=torch.long, device=dist.device)
        # per sentence: list of subspaces [second best score, word d to split at, heads [L], allowed [L, L]]
        self.spaces: list[list] = [[] for _ in range(B)]

    def _solve(self, index: Tensor, allowed: Tensor) -> tuple[Tensor, Tensor]:
        """Decode the subspaces ``allowed [N, L, L]`` of the sentences ``index [N]``, queue them and return
        their ``(best scores [N], best heads [N, L])``."""
        scores, heads = [], []
        for start in range(0, index.shape[0], self.chunk):
            score, best = self._solve_chunk(index[start:start + self.chunk], allowed[start:start + self.chunk])
            scores.append(score)
            heads.append(best)
        return torch.cat(scores), torch.cat(heads)

    def _solve_chunk(self, index: Tensor, allowed: Tensor) -> tuple[Tensor, Tensor]:
        dist, L = self.dist, self.dist.seq_len
        lens = dist.lens.index_select(0, index)
        arc = dist.potentials[0].index_select(0, index).masked_fill(~allowed, LOG_ZERO)
        P = _Pieces(*_arc_pieces(arc), *_sib_pieces(dist.potentials[1]))
        F, saved = _forward(P, L, _max, index, save=True)
        best = _root(F, lens)
        arcs, _ = _reverse(saved, lens, _onehot_argmax, need_sib=False)
        heads = _heads_from_arcs(arcs, lens)
        others = ~allowed | (arcs > 0) | ~dist._masks[0].index_select(0, index)
        second, flat = _max_outside(F, P, lens, index).masked_fill(others, LOG_ZERO).view(-1, L * L).max(-1)
        for r in range(index.shape[0]):
            if best[r] > LOG_ZERO / 2:
                self.spaces[int(index[r])].append([float(second[r]), int(flat[r]) // L, heads[r], allowed[r]])
        return best, heads

    def _split(self, b: int) -> tuple[Tensor, Tensor] | None:
        """Pop the subspace of sentence ``b`` with the best second best and return its two parts
        ``(allowed [2, L, L])`` (forcing, then forbidding the best head of the split word), or None when the
        sentence has no tree left."""
        spaces = self.spaces[b]
        if not spaces:
            return None
        top = max(range(len(spaces)), key=lambda q: spaces[q][0])
        if spaces[top][0] <= LOG_ZERO / 2:
            return None
        _, d, heads, allowed = spaces.pop(top)
        force, forbid = allowed.clone(), allowed.clone()
        force[d] = False
        force[d, heads[d]] = True
        forbid[d, heads[d]] = False
        return torch.stack([force, forbid])

    def run(self) -> tuple[Tensor, Tensor]:
        dist = self.dist
        B, L = dist.batch_size, dist.seq_len
        if L == 1 or B == 0:
            self.scores[0] = 0
            return self.scores, self.heads
        everything = torch.ones(B, L, L, dtype=torch.bool, device=dist.device)
        self.scores[0], self.heads[0] = self._solve(torch.arange(B, device=dist.device), everything)
        for rank in range(1, self.k):
            splits = {b: parts for b in range(B) if (parts := self._split(b)) is not None}
            if not splits:
                break
            index = torch.tensor(list(splits), dtype=torch.long, device=dist.device)
            scores, heads = self._solve(index.repeat_interleave(2), torch.cat(list(splits.values())))
            self.scores[rank, index], self.heads[rank, index] = scores[1::2], heads[1::2]
        return self.scores, self.heads


__all__ = ["Dependency2oCRF", "sibling_indicators"]
