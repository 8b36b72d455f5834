"""First-order dependency trees: projective (:class:`DependencyCRF`) and non-projective (:class:`MatrixTree`).

Conventions shared by both classes (and by :mod:`structkd.structs.heads`):

* ``scores``: ``[batch_size, seq_len, seq_len]``.  Position 0 is the artificial root and the words of
  sentence ``b`` are ``1..lens[b]``; ``scores[b, d, h]`` is the log-potential of the arc from head ``h`` to
  dependent ``d``.  Row 0 (the root has no head), the diagonal and everything outside the sentence are
  ignored: they are set to :data:`~structkd.numerics.LOG_ZERO` in ``__init__`` (so garbage or NaN there
  never reaches a dynamic program).  This masked tensor is the single potential.
* ``lens``: ``LongTensor [batch_size]``, the number of words of each sentence, *without* the root
  (``None``: every sentence has ``seq_len - 1`` words).
* ``multiroot``: ``False`` (default) allows exactly one word attached to the root, ``True`` several.
* trees (``argmax``, ``parts``, ``score``): heads ``LongTensor [batch_size, seq_len]`` with ``heads[b, d]``
  the head of word ``d`` for ``d`` in ``1..lens[b]`` and -1 elsewhere; ``topk``/``sample`` add a leading
  ``k``/``n`` axis.
* ``marginals[b, d, h]``: the probability that ``h`` heads ``d``; each word's row sums to one; exactly 0 on
  row 0, on the diagonal and at padding.
"""

from __future__ import annotations

import functools
import heapq
import itertools
from collections.abc import Callable, Sequence

import numpy as np
import torch

from structkd.numerics import LOG_ZERO, compute_dtype, is_impossible

# the numpy maximum spanning tree, shared with the torch-free runtime of exported parsers
from structkd.runtime.decoding import mst_one
from structkd.structs.base import StructuredDistribution, check_lens
from structkd.structs.heads import arc_indicators, check_heads, word_mask

Tensor = torch.Tensor

MARGINAL_TOLERANCE = 1e-9
"""The fast Matrix-Tree path (LU in float64) is trusted only when every word's marginals sum to one and are
non-negative within this tolerance and every pivot is at least :data:`PIVOT_TOLERANCE`; other sentences go
through the subtraction-free log-space elimination."""

PIVOT_TOLERANCE = 1e-6
"""Smallest LU pivot of the shifted Laplacian (whose columns have entries of order 1) for which the
determinant is trusted: a smaller pivot means the diagonal cancelled its off-diagonal sum (very peaked
scores), with a relative error of about ``n * 1e-16 / pivot``."""


# ---------------------------------------------------------------------------------------------- shared
def arc_mask(lens: Tensor, seq_len: int) -> Tensor:
    """``BoolTensor [batch_size, seq_len, seq_len]``: True at ``[b, d, h]`` when ``d`` is a word (``1..lens[b]``),
    ``h`` is the root or a word (``0..lens[b]``) and ``h != d``.

    Built by one comparison per entry: an arc is possible when its farther end ``max(d, h)`` lies within the
    sentence, and arcs that are never possible (into the root, self-loops) get the end ``seq_len``.

    Args:
        lens: ``LongTensor [batch_size]`` number of words.
        seq_len: the padded length, root included.
    """
    return _farther_ends(seq_len, lens.device) <= lens.view(-1, 1, 1)


@functools.lru_cache(maxsize=64)
def _farther_ends(seq_len: int, device: torch.device) -> Tensor:
    """``LongTensor [seq_len, seq_len]``: ``max(d, h)`` at ``[d, h]``, ``seq_len`` where no arc is ever possible
    (row 0, the diagonal).  Cached per length and device (a batch of trees builds one per distribution, and
    its seven small operations cost as much as the comparison); read only."""
    positions = torch.arange(seq_len, device=device)
    farther_end = torch.maximum(positions.unsqueeze(1), positions)
    farther_end[0] = seq_len
    return farther_end.fill_diagonal_(seq_len)


def tree_scores(scores: Tensor, heads: Tensor, lens: Tensor) -> Tensor:
    """Scores of trees, ``[..., batch_size]``; a tree with -1 in a word slot (a missing tree) scores LOG_ZERO.

    Args:
        scores: ``[batch_size, seq_len, seq_len]`` masked arc scores ``[b, d, h]``.
        heads: ``LongTensor [..., batch_size, seq_len]``.
        lens: ``LongTensor [batch_size]`` number of words.
    """
    seq_len = scores.shape[-1]
    words = word_mask(lens, seq_len)
    arcs = scores.expand(*heads.shape, seq_len).gather(-1, heads.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    total = torch.where(words, arcs, torch.zeros((), dtype=arcs.dtype, device=arcs.device)).sum(-1)
    missing = ((heads < 0) & words).any(-1)
    return total.masked_fill(missing, LOG_ZERO)


class _FirstOrderTree(StructuredDistribution):
    """Shared construction, masks and part indicators of the first-order tree distributions."""

    projective: bool = False

    def __init__(self, scores: Tensor, lens: Tensor | None = None, multiroot: bool = False):
        if scores.dim() != 3 or scores.shape[1] != scores.shape[2] or scores.shape[1] < 1:
            raise ValueError(f"scores must have shape [batch_size, seq_len, seq_len], got {list(scores.shape)}")
        batch_size, seq_len = scores.shape[:2]
        lens = check_lens(lens, batch_size, seq_len - 1, scores.device)
        mask = arc_mask(lens, seq_len)
        scores = torch.where(mask, scores.to(compute_dtype(scores.dtype)), LOG_ZERO)
        super().__init__((scores,), lens, seq_len - 1, lens_checked=True)
        self.seq_len: int = seq_len
        self.multiroot: bool = bool(multiroot)
        self._arc_mask: Tensor = mask

    def _part_masks(self) -> tuple[Tensor, ...]:
        return (self._arc_mask,)

    def parts(self, structure: Tensor) -> tuple[Tensor, ...]:
        """Arc indicators ``[batch_size, seq_len, seq_len]`` of ``heads`` ``LongTensor [batch_size, seq_len]``;
        raises ``ValueError`` if a sentence's heads are not a tree (or not projective for DependencyCRF)."""
        heads = torch.as_tensor(structure, device=self.device)
        if heads.dtype.is_floating_point or heads.dtype == torch.bool:
            raise TypeError(f"heads must be an integer tensor, got dtype {heads.dtype}")
        heads = heads.long()
        check_heads(heads, self.lens, self.multiroot, self.projective, self.seq_len)
        return (arc_indicators(heads, self.lens, self.dtype),)

    def _finish_topk(self, scores: Tensor, heads: Tensor) -> tuple[Tensor, Tensor]:
        """Set missing trees (impossible scores) to LOG_ZERO / -1: ``scores [k, B]``, ``heads [k, B, S]``."""
        missing = is_impossible(scores)
        return scores.masked_fill(missing, LOG_ZERO), heads.masked_fill(missing.unsqueeze(-1), -1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(scores={list(self.potentials[0].shape)}, lens={self.lens.tolist()}, " \
               f"multiroot={self.multiroot})"


# ---------------------------------------------------------------------------------------------- Eisner
# Charts are ``[L, S, S, K]`` tensors (L: batch, or samples x batch; K: items kept per cell).  Cell ``(h, e)``
# of ``comp`` is the complete span headed by ``h`` reaching ``e``; ``compT`` holds the same values transposed
# (cell ``(e, h)``) so that every stripe read below has unit stride; ``inc`` cell ``(h, d)`` is the incomplete
# span of the arc ``h -> d``; ``pair`` cell ``(i, j)``, ``i < j``, the two complete halves under an arc.
# At width ``w`` the spans are ``(i, i + w)``, ``i = 0..S-w-1``, and the stripes used are (cell offsets):
#   pair(i, j)  = sum_t comp[i, i+t]   * comp[j, i+1+t]       offsets 0 and w*S+1 of comp
#   comp[i, j]  = sum_t inc[i, i+1+t]  * compT[j, i+1+t]      offsets 1 (inc) and w*S+1 (compT)
#   comp[j, i]  = sum_t compT[i, i+t]  * inc[j, i+t]          offsets 0 (compT) and w*S (inc)


def _stripe(chart: Tensor, n: int, w: int, offset: int) -> Tensor:
    """``[L, n, w, K]`` view of a contiguous ``chart [L, S, S, K]``: element ``[l, i, t]`` is cell number
    ``offset + i * (S + 1) + t`` (row-major) of ``chart[l]``."""
    size, seq_len, _, k = chart.shape
    strides = (seq_len * seq_len * k, (seq_len + 1) * k, k, 1)
    return chart.as_strided((size, n, w, k), strides, chart.storage_offset() + offset * k)


def _diag(chart: Tensor, n: int, offset: int) -> Tensor:
    """``[L, n, K]`` view of the cells ``offset + i * (S + 1)``, ``i < n``, of a contiguous ``chart``."""
    size, seq_len, _, k = chart.shape
    strides = (seq_len * seq_len * k, (seq_len + 1) * k, 1)
    return chart.as_strided((size, n, k), strides, chart.storage_offset() + offset * k)


def _width_stripes(charts: Sequence[Tensor], n: int, w: int) -> tuple[tuple[Tensor, Tensor], ...]:
    """The ``(left, right)`` operand stripes ``[L, n, w, K]`` of the pair, right and left items at width w,
    read from ``charts = (inc, comp, compT, ...)``."""
    inc, comp, comp_t = charts[:3]
    far = w * comp.shape[1] + 1
    return ((_stripe(comp, n, w, 0), _stripe(comp, n, w, far)),
            (_stripe(inc, n, w, 1), _stripe(comp_t, n, w, far)),
            (_stripe(comp_t, n, w, 0), _stripe(inc, n, w, far - 1)))


def _fused(store: Tensor, n: int, w: int, block: int, offset: int, step: int) -> Tensor:
    """A view of both directions at once in ``store [blocks, L, S, S, K]`` (contiguous).

    Direction ``r`` (0 or 1), item ``i`` and candidate ``t`` read cell ``offset + r * step + i * (S + 1) + t`` of
    block ``block`` (cells counted across block boundaries, a block being ``L * S * S`` cells).  Returns
    ``[2, L, n, w, K]``, or ``[2, L, n, K]`` (items only) when ``w == 0``.

    The forward pass stores ``(inc, compT, inc)`` as the three blocks, so the left and right complete items
    of one width are a single reduction: left reads ``compT[i, i+t] * inc[i+w, i+t]``, right reads
    ``inc[i, i+1+t] * compT[i+w, i+1+t]``; both operands step by one block plus one cell.
    """
    _, size, seq_len, _, k = store.shape
    shape = (2, size, n) + ((w,) if w else ()) + (k,)
    strides = (step * k, seq_len * seq_len * k, (seq_len + 1) * k) + ((k,) if w else ()) + (1,)
    start = store.storage_offset() + (block * size * seq_len * seq_len + offset) * k
    return store.as_strided(shape, strides, start)


def _complete_operands(store: Tensor, n: int, w: int) -> tuple[Tensor, Tensor]:
    """Operands ``[2, L, n, w, K]`` of the (left, right) complete items of width ``w`` (see :func:`_fused`)."""
    _, size, seq_len = store.shape[:3]
    step = size * seq_len * seq_len + 1
    return _fused(store, n, w, 1, 0, step), _fused(store, n, w, 0, w * seq_len, step)


def _both_diagonals(store: Tensor, n: int, block: int) -> Tensor:
    """``[2, L, n, K]`` view of the cells ``(i, i+w)`` and ``(i+w, i)`` of one block, ``w = S - n``."""
    seq_len = store.shape[2]
    w = seq_len - n
    return _fused(store, n, 0, block, w, w * seq_len - w)


Reduce = Callable[[Tensor, Tensor], "tuple[Tensor, Tensor | None]"]


def _exp_cut(dtype: torch.dtype) -> float:
    """Arguments below ``-cut`` have an exponential that is negligible next to 1 (and close to the subnormal
    range, where vectorized ``exp`` takes a slow path costing tens of times a normal call): they are clamped."""
    return 80.0 if dtype == torch.float32 else 700.0


def _lse_reduce(a: Tensor, b: Tensor) -> tuple[Tensor, None]:
    """Inside (log-sum-exp) combination of operand stripes ``[..., n, w, 1]`` into ``[..., n, 1]``.

    Terms more than ``cut`` below the maximum are clamped there before ``exp`` (see :func:`_exp_cut`): their
    contribution to a sum that is at least 1 is below the rounding of that sum, and their gradient is 0."""
    x = a + b
    top = x.detach().amax(-2, keepdim=True)
    cut = -_exp_cut(x.dtype)
    if torch.is_grad_enabled() and x.requires_grad:
        return (x - top).clamp(min=cut).exp().sum(-2).log() + top.squeeze(-2), None
    return x.sub_(top).clamp_(min=cut).exp_().sum(-2).log_().add_(top.squeeze(-2)), None


def _kbest_reduce(k: int) -> Reduce:
    """k-best (max) combination of operand stripes ``[..., n, w, k]``: the k best of the ``w * k * k`` sums,
    ``([..., n, k] values, [..., n, k] flat indices over (t, k1, k2))``."""
    def reduce(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
        candidates = (a.unsqueeze(-1) + b.unsqueeze(-2)).flatten(-3)
        if k == 1:  # the same choice as topk(1), at the cost of a max
            return candidates.max(-1, keepdim=True)
        return candidates.topk(k, -1)
    return reduce


def _eisner(arc: Tensor, multiroot: bool, reduce: Reduce, k: int):
    """Eisner's inside pass over all spans of one width at a time.

    Args:
        arc: ``[batch_size, S, S, 1]`` contiguous arc scores in ``(head, dependent)`` layout.
        multiroot: if False the root's complete spans are withheld from every larger span, so that the root
            takes exactly one dependent.
        reduce: combines operand stripes (see :func:`_lse_reduce`, :func:`_kbest_reduce`).
        k: items per chart cell.

    Returns:
        ``(top [batch_size, S, k], charts (inc, comp, compT, pair, store), aux)``: ``top[:, w]`` the root's
        complete span of width ``w`` (``log Z`` of a sentence of ``w`` words); ``store`` the ``(inc, compT,
        inc)`` blocks (see :func:`_fused`); per width the ``reduce`` auxiliaries ``(pair, right, left)``.
    """
    batch_size, seq_len = arc.shape[:2]
    store = arc.new_full((3, batch_size, seq_len, seq_len, k), LOG_ZERO)
    comp, pair_chart = (arc.new_full((batch_size, seq_len, seq_len, k), LOG_ZERO) for _ in range(2))
    for chart in (comp, store[1]):
        _diag(chart, seq_len, 0)[..., 0] = 0
    root_item = torch.zeros(2, 1, seq_len, 1, dtype=torch.bool, device=arc.device)
    root_item[1, 0, 0] = not multiroot
    arcs = arc.unsqueeze(0)
    tops, aux = [_diag(comp, 1, 0).clone()], []
    for w in range(1, seq_len):
        n, down = seq_len - w, w * seq_len
        pair, aux_pair = reduce(_stripe(comp, n, w, 0), _stripe(comp, n, w, down + 1))
        _diag(pair_chart, n, w).copy_(pair)
        inc = pair + _both_diagonals(arcs, n, 0)
        _both_diagonals(store, n, 0).copy_(inc)
        _both_diagonals(store, n, 2).copy_(inc)
        both, aux_both = reduce(*_complete_operands(store, n, w))
        tops.append(both[1, :, :1].clone())
        both = both.masked_fill(root_item[:, :, :n], LOG_ZERO)
        _both_diagonals(store, n, 1).copy_(both)
        _diag(comp, n, down).copy_(both[0])
        _diag(comp, n, w).copy_(both[1])
        aux.append((aux_pair, None, None) if aux_both is None else (aux_pair, aux_both[1], aux_both[0]))
    return torch.cat(tops, 1), (store[0], comp, store[1], pair_chart, store), aux


def _root_value(top: Tensor, lens: Tensor) -> Tensor:
    """``top [B, S, K]`` at each sentence's length: ``[B, K]``."""
    index = lens.view(-1, 1, 1).expand(-1, 1, top.shape[-1])
    return top.gather(1, index).squeeze(1)


def _spread(grad: Tensor, value: Tensor, ops: tuple[Tensor, Tensor], grads: tuple[Tensor, Tensor]) -> None:
    """Outside step of log-sum-exp items: add ``grad * softmax`` of their candidates to both operands
    (log-weights below ``-cut`` are clamped there, see :func:`_exp_cut`: such a weight is below ``2e-35`` of the
    item's marginal, and the marginals of impossible arcs are masked to exact zeros afterwards).

    Args:
        grad: ``[..., n, 1]`` marginal probability of the items.
        value: ``[..., n, 1]`` their inside values (the log-sum-exp of the candidates).
        ops: operand stripes ``[..., n, w, 1]`` (inside values).
        grads: the matching stripes of the gradient charts, updated in place.
    """
    weight = (ops[0] + ops[1]).sub_(value.unsqueeze(-2))
    weight = weight.clamp_(min=-_exp_cut(weight.dtype)).exp_().mul_(grad.unsqueeze(-2))
    grads[0].add_(weight)
    grads[1].add_(weight)


def _eisner_outside(charts: Sequence[Tensor], top: Tensor, lens: Tensor, multiroot: bool) -> Tensor:
    """Explicit outside pass: the marginal of every incomplete span, i.e. of every arc.

    It is the backward pass of :func:`_eisner` written by hand: going down the widths, each item hands its
    marginal to its candidates in proportion to their softmax weight (recomputed from the chart, so every
    weight is at most 1 and no log-space accumulation is needed).

    Args:
        charts: ``(inc, comp, compT, pair, store)`` from :func:`_eisner` with ``k = 1``.
        top: ``[B, S, 1]`` root values from :func:`_eisner`.
        lens: ``LongTensor [B]``.
        multiroot: as given to :func:`_eisner`.

    Returns:
        ``[B, S, S, 1]`` arc marginals in ``(head, dependent)`` layout.
    """
    _, comp, _, pair, store = charts
    seq_len = comp.shape[1]
    g_store, g_comp = torch.zeros_like(store), torch.zeros_like(comp)
    g_comp[:, 0, :, 0].scatter_(1, lens.unsqueeze(1), 1.0)
    for w in range(seq_len - 1, 0, -1):
        n, down = seq_len - w, w * seq_len
        value = _both_diagonals(store, n, 1)
        if not multiroot:
            value = value.clone()
            value[1, :, 0] = top[:, w]
        grad = _both_diagonals(g_store, n, 1) + torch.stack([_diag(g_comp, n, down), _diag(g_comp, n, w)])
        _spread(grad, value, _complete_operands(store, n, w), _complete_operands(g_store, n, w))
        g_pair = (_both_diagonals(g_store, n, 0) + _both_diagonals(g_store, n, 2)).sum(0)
        ops = (_stripe(comp, n, w, 0), _stripe(comp, n, w, down + 1))
        _spread(g_pair, _diag(pair, n, w), ops, (_stripe(g_comp, n, w, 0), _stripe(g_comp, n, w, down + 1)))
    return g_store[0] + g_store[2]


def _route(grad: Tensor, index: Tensor, grads: tuple[Tensor, Tensor]) -> None:
    """Top-down step of a discrete pass: each used item sends its use count to its chosen candidate.

    Args:
        grad: ``[L, n, K]`` use counts of the items (L = trees x batch).
        index: ``LongTensor [L, n, K]`` the chosen candidate, a flat index over ``(t, k1, k2)``.
        grads: the two operand stripes ``[L, n, w, K]`` of the count charts, updated in place.
    """
    k = grad.shape[-1]
    split = torch.div(index, k * k, rounding_mode="floor")
    ranks = (torch.div(index, k, rounding_mode="floor") % k, index % k)
    for target, rank in zip(grads, ranks):
        flat = grad.new_zeros(grad.shape[0], grad.shape[1], target.shape[2] * k)
        flat.scatter_add_(2, split * k + rank, grad)
        target.add_(flat.view(target.shape))


def _eisner_backtrack(top_shape: torch.Size, lens: Tensor, n_trees: int, ranks: Tensor,
                      choose: Callable[[int], Sequence[Tensor]]) -> Tensor:
    """Follow discrete choices (max, k-best or sampled) top-down through an Eisner chart, for several trees
    at once.

    Args:
        top_shape: ``[B, S, K]``, the shape of :func:`_eisner`'s ``top``.
        lens: ``LongTensor [B]``.
        n_trees: number of trees followed at once.
        ranks: ``LongTensor [n_trees]``, the rank of the root item each tree starts from.
        choose: ``choose(w)`` gives the chosen candidates of the pair, right and left items of width ``w``,
            each ``LongTensor [n_trees or 1, B, n, K]`` (flat indices over ``(t, k1, k2)``).

    Returns:
        ``[n_trees, B, S, S]`` arc indicators in ``(head, dependent)`` layout (0/1, float).
    """
    batch_size, seq_len, k = top_shape
    size = n_trees * batch_size
    g_inc, g_comp, g_comp_t = (torch.zeros(size, seq_len, seq_len, k, device=lens.device) for _ in range(3))
    tree_index = torch.arange(n_trees, device=lens.device).unsqueeze(1).expand(n_trees, batch_size)
    batch_index = torch.arange(batch_size, device=lens.device).expand(n_trees, batch_size)
    g_comp.view(n_trees, batch_size, seq_len, seq_len, k)[
        tree_index, batch_index, 0, lens[batch_index], ranks.to(lens.device)[tree_index]] = 1.0
    g_charts = (g_inc, g_comp, g_comp_t)
    for w in range(seq_len - 1, 0, -1):
        n, down = seq_len - w, w * seq_len
        pair_ops, right_ops, left_ops = _width_stripes(g_charts, n, w)
        pair_idx, right_idx, left_idx = (i.expand(n_trees, batch_size, n, k).reshape(size, n, k) for i in choose(w))
        _route(_diag(g_comp, n, w) + _diag(g_comp_t, n, down), right_idx, right_ops)
        _route(_diag(g_comp, n, down) + _diag(g_comp_t, n, w), left_idx, left_ops)
        _route(_diag(g_inc, n, w) + _diag(g_inc, n, down), pair_idx, pair_ops)
    return g_inc.view(n_trees, batch_size, seq_len, seq_len, k).sum(-1)


def _best_heads(aux: Sequence[tuple[Tensor, Tensor, Tensor]], lens: Tensor, seq_len: int) -> Tensor:
    """The best tree of each sentence, followed top-down through the 1-best Eisner choices on the host.

    A tree has ``2n - 1`` items to visit, so a per-sentence walk costs far less than the vectorized
    :func:`_eisner_backtrack` (``3 (S - 1)`` batched scatters over ``[B, S, S]`` count charts), which stays the
    route of ``topk`` and ``sample``.

    Args:
        aux: per width ``w`` (entry ``w - 1``) the chosen candidates ``(pair, right, left)``, each
            ``LongTensor [B, S - w, 1]`` (``t``: split ``i + t`` of a pair, modifier ``i + 1 + t`` of a right
            item, ``i + t`` of a left item ``i``).
        lens: ``LongTensor [B]``.
        seq_len: ``S``, root included.

    Returns:
        heads ``LongTensor [B, S]`` (-1 at position 0 and padding), on ``lens``' device.
    """
    batch_size = lens.shape[0]
    table = torch.zeros(3, seq_len, batch_size, seq_len, dtype=torch.long, device=lens.device)
    for w, parts in enumerate(aux, start=1):
        for kind, chosen in enumerate(parts):
            table[kind, w, :, :chosen.shape[1]] = chosen[..., 0]
    pair, right, left = table.cpu().numpy()
    heads = np.full((batch_size, seq_len), -1, dtype=np.int64)
    for b, n in enumerate(lens.tolist()):
        out = heads[b]
        stack = [(1, 0, n)]  # (kind, i, j), i < j: 0 the arc item over (i, j) with head ``h``, 1 the complete span
        while stack:         # headed by i reaching right to j, 2 the one headed by j reaching left to i
            kind, i, j, *h = stack.pop()
            if i == j:
                continue
            w = j - i
            if kind == 1:
                m = i + 1 + int(right[w, b, i])
                stack += [(0, i, m, i), (1, m, j)]
            elif kind == 2:
                m = i + int(left[w, b, i])
                stack += [(2, i, m), (0, m, j, j)]
            else:
                head = h[0]
                out[j if head == i else i] = head
                r = i + int(pair[w, b, i])
                stack += [(1, i, r), (2, r + 1, j)]
    return torch.from_numpy(heads).to(lens.device)


def _heads_from_arcs(arcs: Tensor, lens: Tensor) -> Tensor:
    """``LongTensor [..., B, S]`` heads from 0/1 arc indicators ``[..., B, S, S]`` in ``(head, dependent)``
    layout; -1 at non-words and where a word received no head."""
    words = word_mask(lens, arcs.shape[-1])
    has_head = arcs.sum(-2) > 0.5
    return torch.where(has_head & words, arcs.argmax(-2), torch.full_like(words, -1, dtype=torch.long))


def _gumbel_chooser(charts: Sequence[Tensor], n: int, generator: torch.Generator | None):
    """``choose(w)`` for :func:`_eisner_backtrack` drawing each item's candidate from its softmax by the
    Gumbel-max trick, independently for ``n`` samples: ``LongTensor [n, B, n_w, 1]`` each."""
    seq_len = charts[0].shape[1]

    def choose(w: int) -> list[Tensor]:
        out = []
        for a, b in _width_stripes(charts, seq_len - w, w):
            logits = (a + b).squeeze(-1)
            u = torch.rand((n, *logits.shape), generator=generator, dtype=logits.dtype, device=logits.device)
            gumbel = -torch.log(-torch.log(u.clamp_(min=torch.finfo(u.dtype).tiny)))
            out.append((logits + gumbel).argmax(-1, keepdim=True))
        return out
    return choose


class DependencyCRF(_FirstOrderTree):
    r"""First-order projective dependency trees (Eisner's algorithm), exact in ``O(n^3)`` work and ``O(n)``
    sequential steps, each step batched over all spans of one width.

    Args:
        scores: ``[batch_size, seq_len, seq_len]``; ``scores[b, d, h]`` is the score of the arc ``h -> d``,
            position 0 being the root (row 0, the diagonal and padding are ignored).
        lens: ``LongTensor [batch_size]``, number of words (root excluded); ``None`` = ``seq_len - 1``.
        multiroot: if False (default) exactly one word attaches to the root.

    Marginals come from an explicit outside pass (no autograd tape); ``argmax`` and ``topk`` from the
    k-best Eisner chart (the k best items of every span) followed top-down; ``sample`` draws exact samples
    top-down through the inside chart.  Heads are ``[batch_size, seq_len]`` (see the module docstring).
    """

    projective = True

    @staticmethod
    def _arcs(potentials: Sequence[Tensor]) -> Tensor:
        """Arc scores in the ``(head, dependent)`` chart layout, ``[B, S, S, 1]`` contiguous."""
        return potentials[0].transpose(1, 2).unsqueeze(-1).contiguous()

    def _inside(self, potentials: Sequence[Tensor]) -> Tensor:
        top, _, _ = _eisner(self._arcs(potentials), self.multiroot, _lse_reduce, 1)
        return _root_value(top, self.lens)[:, 0]

    def _inside_outside(self) -> tuple[Tensor, tuple[Tensor, ...]]:
        top, charts, _ = _eisner(self._arcs(self.potentials), self.multiroot, _lse_reduce, 1)
        g_inc = _eisner_outside(charts, top, self.lens, self.multiroot)
        return _root_value(top, self.lens)[:, 0], (g_inc[..., 0].transpose(1, 2),)

    def _topk(self, k: int) -> tuple[Tensor, Tensor]:
        top, _, aux = _eisner(self._arcs(self.potentials), self.multiroot, _kbest_reduce(k), k)
        ranks = torch.arange(k, device=self.device)
        arcs = _eisner_backtrack(top.shape, self.lens, k, ranks, lambda w: [a.unsqueeze(0) for a in aux[w - 1]])
        return self._finish_topk(_root_value(top, self.lens).t(), _heads_from_arcs(arcs, self.lens))

    def _viterbi(self) -> tuple[Tensor, Tensor]:
        top, _, aux = _eisner(self._arcs(self.potentials), self.multiroot, _kbest_reduce(1), 1)
        heads = _best_heads(aux, self.lens, self.seq_len)
        scores, heads = self._finish_topk(_root_value(top, self.lens).t(), heads.unsqueeze(0))
        return scores[0], heads[0]

    def _sample(self, n: int, generator: torch.Generator | None) -> Tensor:
        top, charts, _ = _eisner(self._arcs(self.potentials), self.multiroot, _lse_reduce, 1)
        ranks = torch.zeros(n, dtype=torch.long, device=self.device)
        arcs = _eisner_backtrack(top.shape, self.lens, n, ranks, _gumbel_chooser(charts, n, generator))
        return _heads_from_arcs(arcs, self.lens)


# ---------------------------------------------------------------------------------------------- Matrix-Tree
def _shifted_weights(scores: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Arc weights with each dependent's scores shifted by its own maximum, as float64.

    The exponentials are taken in the scores' own dtype (a float32 weight is the exact weight of a score
    perturbed by one rounding, which changes log Z by at most ``n * 6e-8``); the Laplacian built from them is
    float64, where its cancellations happen.

    Args:
        scores: ``[B, S, S]`` masked arc scores ``[b, d, h]`` (LOG_ZERO off the possible arcs).
        mask: ``BoolTensor [B, S, S]``, the possible arcs (:func:`arc_mask`).

    Returns:
        ``(weights [B, S, S], shift [B], words [B, S])``: ``weights = exp(scores - max_h scores)`` (exactly 0
        off the possible arcs; arguments below ``-cut`` are clamped there, see :func:`_exp_cut`; the best head
        of each word weighs 1), the sum of the shifts over words, so that ``log Z = log det + shift``, and the
        float64 word mask (1.0 at ``1..lens[b]``, the rows whose root arc is possible).
    """
    top = scores.detach().amax(-1, keepdim=True)  # LOG_ZERO on rows without arcs, whose weights are masked
    roots = mask[:, :, 0]  # the words: every word may attach to the root
    shift = (top.squeeze(-1) * roots).sum(-1, dtype=torch.float64)
    arcs = mask.to(torch.float64)  # masks multiply: selecting with a boolean tensor costs several times more
    if torch.is_grad_enabled() and scores.requires_grad:
        weights = (scores - top).clamp(min=-_exp_cut(scores.dtype)).exp().double() * arcs
    else:  # in place: no further [B, S, S] buffers
        weights = arcs.mul_((scores - top).clamp_(min=-_exp_cut(scores.dtype)).exp_())
    return weights, shift, roots.to(torch.float64)


def _laplacian(weights: Tensor, words: Tensor, multiroot: bool) -> Tensor:
    """The (Koo et al., 2007) Laplacian over words, ``[B, S-1, S-1]``, identity at padding.

    ``L[h, d] = -A(h -> d)`` off the diagonal and ``L[d, d]`` the total weight of arcs into ``d`` (including
    the root's when ``multiroot``); with a single root the first row is replaced by the root weights (the
    first unit vector for an empty sentence).  Each matrix is stored column-major, the layout LAPACK reads.

    Args:
        weights: ``[B, S, S]`` arc weights ``[b, d, h]`` from :func:`_shifted_weights`.
        words: ``[B, S]`` float word mask (:func:`_shifted_weights`).
        multiroot: see the module docstring.
    """
    padding = 1.0 - words[:, 1:]
    between = weights[:, 1:, 1:]
    incoming = (weights[:, 1:, :] if multiroot else between).sum(-1)
    laplacian = between.transpose(1, 2).neg()  # a fresh tensor: the in-place writes below are safe for autograd
    laplacian.diagonal(dim1=1, dim2=2).add_(incoming + padding)
    if not multiroot and weights.shape[1] > 1:
        laplacian[:, 0] = weights[:, 1:, 0]
        laplacian[:, 0, 0] += padding[:, 0]
    return laplacian


def _marginals_from_inverse(weights: Tensor, inverse: Tensor, multiroot: bool) -> Tensor:
    """Closed-form arc marginals ``[B, S, S]`` (``[b, d, h]``) from the inverse Laplacian ``M [B, S-1, S-1]``:
    ``mu(h, d) = A(h -> d) * (M[d, d] - M[d, h])`` (Koo et al., 2007); with a single root the root arcs are
    ``A(0 -> d) M[d, 0]`` and the terms of the first word's row/column drop out.

    Written into ``weights`` (returned; exactly 0 wherever the weight is, row 0 included), and ``inverse`` is
    overwritten: fresh buffers of this size cost page faults on every call on CPU.
    """
    if inverse.shape[-1] == 0:
        return weights
    if multiroot:
        weights[:, 1:, 0].mul_(inverse.diagonal(dim1=1, dim2=2))
    else:
        weights[:, 1:, 0].mul_(inverse[:, :, 0])
        inverse[:, :, 0] = 0.0  # also M[0, 0]: the first word's terms drop out
    diag = inverse.diagonal(dim1=1, dim2=2).unsqueeze(2).clone()
    weights[:, 1:, 1:].mul_(torch.sub(diag, inverse, out=inverse))
    return weights


def _lu_logdet_inverse(matrix: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(log |det|, ok, inverse)`` of ``[B, n, n]`` matrices (``n >= 1``) from one LU factorization; ``ok`` is
    False where the determinant is not positive or a pivot is below :data:`PIVOT_TOLERANCE` (cancellation; a
    zero pivot gives ``log |det| = -inf``)."""
    lu, pivots, _ = torch.linalg.lu_factor_ex(matrix)
    diag = lu.diagonal(dim1=1, dim2=2)
    size = diag.abs()
    # sign of the determinant: parity of the negative pivots plus the row swaps
    flips = ((diag < 0) ^ (pivots != torch.arange(1, matrix.shape[-1] + 1, device=matrix.device))).sum(-1)
    ok = (flips % 2 == 0) & (size.amin(-1) >= PIVOT_TOLERANCE)
    eye = torch.eye(matrix.shape[-1], dtype=matrix.dtype, device=matrix.device).expand_as(matrix)
    return size.log().sum(-1), ok, torch.linalg.lu_solve(lu, pivots, eye)


def _matrix_tree_fast(scores: Tensor, mask: Tensor, multiroot: bool):
    """LU-based float64 ``(log Z [B], marginals [B, S, S], trusted [B])`` of masked ``scores`` (no autograd) with
    possible arcs ``mask`` (:func:`arc_mask`);
    ``trusted`` is False where cancellation (very peaked scores) made the result inaccurate.  The marginals
    are exactly 0 off the possible arcs."""
    weights, shift, words = _shifted_weights(scores, mask)
    if scores.shape[1] == 1:
        return shift, torch.zeros_like(weights), torch.ones_like(shift, dtype=torch.bool)
    logdet, ok, inverse = _lu_logdet_inverse(_laplacian(weights, words, multiroot))
    marginals = _marginals_from_inverse(weights, inverse, multiroot)
    row_error = (marginals.sum(-1) - words).abs_().amax(-1)
    trusted = ok & (row_error <= MARGINAL_TOLERANCE) & (marginals.flatten(1).amin(-1) >= -MARGINAL_TOLERANCE)
    return logdet + shift, marginals, trusted


def _eliminate(scores: Tensor, lens: Tensor, keep: int) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """Subtraction-free (GTH-style) Gaussian elimination of a Laplacian in log space, last node first.

    Eliminating node ``k`` replaces the weight of every arc ``h -> d`` between remaining nodes by
    ``A(h->d) + A(h->k) A(k->d) / p_k`` with ``p_k = sum_h A(h->k)``: only sums of positive terms, so no
    cancellation however peaked the scores.

    Args:
        scores: ``[B, S, S]`` log-weights ``[b, d, h]`` (LOG_ZERO where impossible).
        lens: ``LongTensor [B]``; only pivots of words (``k <= lens``) count.
        keep: nodes ``0..keep`` are kept.

    Returns:
        ``(sum of log pivots [B], log pivots, log weights of arcs k -> d (d < k))`` per eliminated node
        ``k = S-1, ..., keep+1``.
    """
    current, log_det = scores, torch.zeros_like(scores[:, 0, 0])
    pivots, outgoing = [], []
    for k in range(scores.shape[1] - 1, keep, -1):
        into, out = current[:, k, :k], current[:, :k, k]
        log_p = torch.logsumexp(into, -1)
        log_det = log_det + torch.where(k <= lens, log_p, torch.zeros_like(log_p))
        current = torch.logaddexp(current[:, :k, :k], out.unsqueeze(2) + into.unsqueeze(1) - log_p[:, None, None])
        pivots.append(log_p)
        outgoing.append(out)
    return log_det, pivots, outgoing


def _matrix_tree_robust(scores: Tensor, lens: Tensor, multiroot: bool) -> Tensor:
    """``log Z [B]`` by the subtraction-free log-space elimination (differentiable, ``O(n)`` steps).

    Multiroot: ``log Z`` is the sum of the log pivots of every word.  Single root: with the root removed,
    the word Laplacian's cofactors ``C_d`` (trees of words rooted at ``d``) are ``C_1 u_d`` where ``u`` is its
    null vector (``u_1 = 1``), found by back-substitution; ``Z = C_1 sum_d r_d u_d``.

    Args:
        scores: ``[B, S, S]`` float64 masked arc scores ``[b, d, h]``.
        lens: ``LongTensor [B]``.
        multiroot: see the module docstring.
    """
    if multiroot:
        log_det, _, _ = _eliminate(scores, lens, 0)
        return log_det
    no_root = torch.cat([torch.full_like(scores[:, :, :1], LOG_ZERO), scores[:, :, 1:]], 2)
    log_det, pivots, outgoing = _eliminate(no_root, lens, 1)
    seq_len = scores.shape[1]
    log_u = [torch.zeros_like(log_det)]
    for k in range(2, seq_len):
        step = seq_len - 1 - k
        log_u.append(torch.logsumexp(outgoing[step][:, 1:] + torch.stack(log_u, 1), -1) - pivots[step])
    if seq_len < 2:
        return torch.zeros_like(log_det)
    total = log_det + torch.logsumexp(scores[:, 1:, 0] + torch.stack(log_u, 1), -1)
    return torch.where(lens > 0, total, torch.zeros_like(total))


def _matrix_tree_solve(scores: Tensor, lens: Tensor, multiroot: bool, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Float64 ``(log Z [B], marginals [B, S, S])`` of masked ``scores``: the LU path, and for the sentences it
    cannot be trusted on, the log-space elimination differentiated once."""
    log_z, marginals, trusted = _matrix_tree_fast(scores, mask, multiroot)
    if not bool(trusted.all()):
        bad = (~trusted).nonzero().squeeze(1)
        with torch.enable_grad():
            leaf = scores[bad].detach().double().requires_grad_()
            robust = _matrix_tree_robust(leaf, lens[bad], multiroot)
            (grad,) = torch.autograd.grad(robust.sum(), leaf)
        log_z = log_z.index_put((bad,), robust.detach())
        marginals = marginals.index_put((bad,), torch.where(mask[bad], grad, torch.zeros_like(grad)))
    return log_z, marginals


def _feasible(scores: np.ndarray, heads: np.ndarray, multiroot: bool) -> bool:
    """Whether ``heads`` uses only possible arcs of ``scores`` and (single root) one root child."""
    arcs = scores[np.arange(1, len(heads)), heads[1:]]
    return bool((arcs > LOG_ZERO / 2).all()) and (multiroot or int((heads[1:] == 0).sum()) == 1)


def _constrained(scores: np.ndarray, forced: dict[int, int], excluded: Sequence[tuple[int, int]]) -> np.ndarray:
    """``scores`` with the arcs ``forced`` (dependent -> head) imposed and the ``excluded`` arcs removed."""
    out = scores.copy()
    for d, h in forced.items():
        keep = out[d, h]
        out[d] = LOG_ZERO
        out[d, h] = keep
    for d, h in excluded:
        out[d, h] = LOG_ZERO
    return out


def _kbest_msts(scores: np.ndarray, k: int, multiroot: bool) -> list[np.ndarray]:
    """The ``k`` best trees (heads arrays), best first, by Lawler's partitioning: after the best tree of a
    subspace is emitted, the subspace minus that tree is split by forcing its first arcs and excluding the
    next one, and every part is solved by a constrained maximum spanning tree."""
    counter = itertools.count()
    heap: list = []

    def push(forced: dict[int, int], excluded: tuple[tuple[int, int], ...]) -> None:
        constrained = _constrained(scores, forced, excluded)
        heads = mst_one(constrained, multiroot)
        if _feasible(constrained, heads, multiroot):
            score = float(scores[np.arange(1, len(heads)), heads[1:]].sum())
            heapq.heappush(heap, (-score, next(counter), heads, forced, excluded))

    push({}, ())
    out = []
    while heap and len(out) < k:
        _, _, heads, forced, excluded = heapq.heappop(heap)
        out.append(heads)
        free = [d for d in range(1, len(heads)) if d not in forced]
        for i, d in enumerate(free):
            fixed = dict(forced)
            fixed.update({x: int(heads[x]) for x in free[:i]})
            push(fixed, excluded + ((d, int(heads[d])),))
    return out


class MatrixTree(_FirstOrderTree):
    r"""First-order non-projective dependency trees by the Matrix-Tree theorem (Koo et al., 2007).

    Args:
        scores: ``[batch_size, seq_len, seq_len]``; ``scores[b, d, h]`` is the score of the arc ``h -> d``,
            position 0 being the root (row 0, the diagonal and padding are ignored).
        lens: ``LongTensor [batch_size]``, number of words (root excluded); ``None`` = ``seq_len - 1``.
        multiroot: if False (default) exactly one word attaches to the root (Koo's first-row replacement).

    ``log Z`` is a log-determinant and the marginals come in closed form from the inverse Laplacian, both in
    float64 with each dependent's scores shifted by its maximum (results are cast back to the scores' compute
    dtype).  Sentences whose LU result fails a consistency check (very peaked scores, where the Laplacian's
    diagonal cancels its off-diagonal sum) are recomputed by a subtraction-free log-space elimination, so
    results stay finite and accurate for any score magnitude.  ``argmax`` is Chu-Liu-Edmonds (single root via
    a root-arc penalty, exact), ``topk`` Lawler's partitioning over constrained spanning trees, ``sample``
    exact sequential conditioning on each word's head marginals.
    """

    projective = False

    _exact_zero_outside_parts = True

    def _inside(self, potentials: Sequence[Tensor]) -> Tensor:
        scores = potentials[0]
        with torch.no_grad():
            _, _, trusted = _matrix_tree_fast(scores.detach(), self._arc_mask, self.multiroot)
        weights, shift, words = _shifted_weights(scores, self._arc_mask)
        laplacian = _laplacian(weights, words, self.multiroot)
        eye = torch.eye(laplacian.shape[-1], dtype=laplacian.dtype, device=laplacian.device)
        laplacian = torch.where(trusted[:, None, None], laplacian, eye)
        log_z = torch.linalg.slogdet(laplacian)[1] + shift
        bad = (~trusted).nonzero().squeeze(1)
        if bad.numel():
            robust = _matrix_tree_robust(scores[bad].double(), self.lens[bad], self.multiroot)
            log_z = log_z.index_put((bad,), robust)
        return log_z.to(potentials[0].dtype)

    def _inside_outside(self) -> tuple[Tensor, tuple[Tensor, ...]]:
        log_z, marginals = _matrix_tree_solve(self.potentials[0], self.lens, self.multiroot, self._arc_mask)
        return log_z.to(self.dtype), (marginals.to(self.dtype),)

    def _numpy_scores(self) -> np.ndarray:
        return self.potentials[0].detach().double().cpu().numpy()

    def _viterbi(self) -> tuple[Tensor, Tensor]:
        scores = self._numpy_scores()
        heads = torch.full((self.batch_size, self.seq_len), -1, dtype=torch.long)
        for b, n in enumerate(self.lens.tolist()):
            if n:
                heads[b, 1:n + 1] = torch.from_numpy(mst_one(scores[b, :n + 1, :n + 1], self.multiroot)[1:])
        heads = heads.to(self.device)
        return tree_scores(self.potentials[0], heads, self.lens), heads

    def _topk(self, k: int) -> tuple[Tensor, Tensor]:
        scores = self._numpy_scores()
        heads = torch.full((k, self.batch_size, self.seq_len), -1, dtype=torch.long)
        found = torch.ones(self.batch_size, dtype=torch.long)
        for b, n in enumerate(self.lens.tolist()):
            if n:
                trees = _kbest_msts(scores[b, :n + 1, :n + 1], k, self.multiroot)
                found[b] = len(trees)
                for rank, tree in enumerate(trees):
                    heads[rank, b, 1:n + 1] = torch.from_numpy(tree[1:])
        heads = heads.to(self.device)
        values = tree_scores(self.potentials[0], heads, self.lens)
        missing = torch.arange(k).unsqueeze(1) >= found.unsqueeze(0)
        values = values.masked_fill(missing.to(self.device), LOG_ZERO)
        return self._finish_topk(values, heads)

    def _sample(self, n: int, generator: torch.Generator | None) -> Tensor:
        scores, mask = self.potentials[0].double(), self._arc_mask
        size, seq_len = n * self.batch_size, self.seq_len
        current = scores.repeat(n, 1, 1)
        lens, mask = self.lens.repeat(n), mask.repeat(n, 1, 1)
        heads = torch.full((size, seq_len), -1, dtype=torch.long, device=self.device)
        first = torch.zeros(seq_len, dtype=scores.dtype, device=self.device)
        first[0] = 1.0
        for d in range(1, seq_len):
            active = d <= lens
            _, marginals = _matrix_tree_solve(current, lens, self.multiroot, mask)
            probs = marginals[:, d].clamp(min=0)
            fallback = torch.nn.functional.one_hot(current[:, d].argmax(-1), seq_len).to(probs.dtype)
            probs = torch.where(probs.sum(-1, keepdim=True) > 0, probs, fallback)
            probs = torch.where(active.unsqueeze(1), probs, first)
            head = torch.multinomial(probs, 1, generator=generator).squeeze(1)
            heads[:, d] = torch.where(active, head, heads[:, d])
            chosen = torch.arange(seq_len, device=self.device) == head.unsqueeze(1)
            clamp = active.unsqueeze(1) & ~chosen
            current[:, d] = current[:, d].masked_fill(clamp, LOG_ZERO)
        return heads.view(n, self.batch_size, seq_len)


__all__ = ["DependencyCRF", "MatrixTree", "arc_mask", "tree_scores"]
