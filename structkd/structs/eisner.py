"""Eisner's algorithm: first-order projective dependency trees (:class:`DependencyCRF`), exact in ``O(n^3)``
work and ``O(n)`` sequential steps, each step batched over all spans of one width.  Inside (log-sum-exp), an
explicit outside pass for the marginals, k-best (max) charts for ``argmax``/``topk`` and Gumbel-max sampling
share one chart layout (below).  Shapes follow :mod:`structkd.structs.first_order`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from structkd.numerics import LOG_ZERO, exp_floor
from structkd.structs.first_order import FirstOrderTree
from structkd.structs.heads import word_mask

Tensor = torch.Tensor

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


def _lse_reduce(a: Tensor, b: Tensor) -> tuple[Tensor, None]:
    """Inside (log-sum-exp) combination of operand stripes ``[..., n, w, 1]`` into ``[..., n, 1]``.

    Terms whose difference to the maximum is below ``cut``, the exp floor (:func:`~structkd.numerics.exp_floor`),
    are clamped there before ``exp``: their contribution to a sum that is at least 1 is below the rounding
    of that sum, and their gradient is 0."""
    x = a + b
    top = x.detach().amax(-2, keepdim=True)
    cut = exp_floor(x.dtype)
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
    (log-weights below the exp floor are clamped there, :func:`~structkd.numerics.exp_floor`: such a weight is
    below ``2e-38`` of the item's marginal, and the marginals of impossible arcs are masked to exact zeros
    afterwards).

    Args:
        grad: ``[..., n, 1]`` marginal probability of the items.
        value: ``[..., n, 1]`` their inside values (the log-sum-exp of the candidates).
        ops: operand stripes ``[..., n, w, 1]`` (inside values).
        grads: the matching stripes of the gradient charts, updated in place.
    """
    weight = (ops[0] + ops[1]).sub_(value.unsqueeze(-2))
    weight = weight.clamp_(min=exp_floor(weight.dtype)).exp_().mul_(grad.unsqueeze(-2))
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


class DependencyCRF(FirstOrderTree):
    r"""First-order projective dependency trees (Eisner's algorithm), exact in ``O(n^3)`` work and ``O(n)``
    sequential steps, each step batched over all spans of one width.

    Args:
        scores: ``[batch_size, seq_len, seq_len]``; ``scores[b, d, h]`` is the score of the arc ``h -> d``,
            position 0 being the root (row 0, the diagonal and padding are ignored).
        lens: ``LongTensor [batch_size]``, number of words (root excluded); ``None`` = ``seq_len - 1``.
        multiroot: if False (default) exactly one word attaches to the root.

    Marginals come from an explicit outside pass (no autograd tape); ``argmax`` and ``topk`` from the
    k-best Eisner chart (the k best items of every span) followed top-down; ``sample`` draws exact samples
    top-down through the inside chart.  Heads are ``[batch_size, seq_len]`` (see :mod:`structkd.structs.first_order`).
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



def nearest_projective(heads: Tensor, lens: Tensor | None = None, multiroot: bool = False) -> Tensor:
    """The projective tree closest to each tree: the most arcs in common, and among those trees the one whose
    changed words hang as close above their own heads as possible (each is lifted to the nearest ancestor of
    its head that a projective tree allows, as in pseudo-projective lifting).  Projective trees come back
    unchanged.

    Eisner's argmax over float64 arc scores: 1 for an arc of the tree, ``1 / (2 S k)`` for an arc from the
    ``k``-th ancestor of the word (``k >= 2``), 0 otherwise.  The bonuses of all words sum below ``1/2``, so no
    bonus ever outweighs a kept arc.

    Args:
        heads: ``LongTensor [batch_size, seq_len]``, trees as in :mod:`structkd.structs.first_order` (``-1`` at
            position 0 and padding).
        lens: ``LongTensor [batch_size]``, number of words; ``None`` = ``seq_len - 1``.
        multiroot: whether the projective tree may attach several words to the root.

    Returns:
        ``LongTensor [batch_size, seq_len]`` projective heads, on ``heads``' device.
    """
    batch_size, seq_len = heads.shape
    lens = torch.full((batch_size,), seq_len - 1, dtype=torch.long) if lens is None else lens.cpu()
    scores = torch.zeros(batch_size, seq_len, seq_len, dtype=torch.float64)
    for b, (row, n) in enumerate(zip(heads.tolist(), lens.tolist())):
        for d in range(1, n + 1):
            head, k = row[d], 1
            scores[b, d, head] = 1.0
            while head != 0 and k < seq_len:  # the ancestors of the head, nearest first
                head, k = row[head], k + 1
                scores[b, d, head] = 1.0 / (2 * seq_len * k)
    return DependencyCRF(scores, lens, multiroot).argmax.to(heads.device)


__all__ = ["DependencyCRF", "nearest_projective"]
