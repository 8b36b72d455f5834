"""The Matrix-Tree theorem: first-order non-projective dependency trees (:class:`MatrixTree`, Koo et al., 2007).

``log Z`` is a log-determinant of the Laplacian and the marginals come from its inverse, in float64 with an LU
path checked for cancellation and a subtraction-free log-space elimination for the sentences it cannot be
trusted on.  ``argmax`` is Chu-Liu-Edmonds (:func:`structkd.runtime.decoding.mst_one`), ``topk`` Lawler's
partitioning (:mod:`structkd.structs.spanning_trees`).  Shapes follow :mod:`structkd.structs.first_order`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from structkd.numerics import LOG_ZERO, exp_floor

# the numpy maximum spanning tree, shared with the torch-free runtime of exported parsers
from structkd.runtime.decoding import mst_one
from structkd.structs.first_order import FirstOrderTree, tree_scores
from structkd.structs.spanning_trees import kbest_msts

Tensor = torch.Tensor

MARGINAL_TOLERANCE = 1e-9
"""The fast Matrix-Tree path (LU in float64) is trusted only when every word's marginals sum to one and are
non-negative within this tolerance and every pivot is at least :data:`PIVOT_TOLERANCE`; other sentences go
through the subtraction-free log-space elimination."""

PIVOT_TOLERANCE = 1e-6
"""Smallest LU pivot of the shifted Laplacian (whose columns have entries of order 1) for which the
determinant is trusted: a smaller pivot means the diagonal cancelled its off-diagonal sum (very peaked
scores), with a relative error of about ``n * 1e-16 / pivot``."""


def _shifted_weights(scores: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Arc weights with each dependent's scores shifted by its own maximum, as float64.

    The exponentials are taken in the scores' own dtype (a float32 weight is the exact weight of a score
    perturbed by one rounding, which changes log Z by at most ``n * 6e-8``); the Laplacian built from them is
    float64, where its cancellations happen.

    Args:
        scores: ``[B, S, S]`` masked arc scores ``[b, d, h]`` (LOG_ZERO off the possible arcs).
        mask: ``BoolTensor [B, S, S]``, the possible arcs (:func:`~structkd.structs.first_order.arc_mask`).

    Returns:
        ``(weights [B, S, S], shift [B], words [B, S])``: ``weights = exp(scores - max_h scores)`` (exactly 0
        off the possible arcs; arguments below the exp floor are clamped there,
        :func:`~structkd.numerics.exp_floor`; the best head of each word weighs 1), the sum of the shifts over
        words, so that ``log Z = log det + shift``, and the float64 word mask (1.0 at ``1..lens[b]``, the rows
        whose root arc is possible).
    """
    top = scores.detach().amax(-1, keepdim=True)  # LOG_ZERO on rows without arcs, whose weights are masked
    roots = mask[:, :, 0]  # the words: every word may attach to the root
    shift = (top.squeeze(-1) * roots).sum(-1, dtype=torch.float64)
    arcs = mask.to(torch.float64)  # masks multiply: selecting with a boolean tensor costs several times more
    if torch.is_grad_enabled() and scores.requires_grad:
        weights = (scores - top).clamp(min=exp_floor(scores.dtype)).exp().double() * arcs
    else:  # in place: no further [B, S, S] buffers
        weights = arcs.mul_((scores - top).clamp_(min=exp_floor(scores.dtype)).exp_())
    return weights, shift, roots.to(torch.float64)


def _laplacian(weights: Tensor, words: Tensor, multiroot: bool) -> Tensor:
    """The (Koo et al., 2007) Laplacian over words, ``[B, S-1, S-1]``, identity at padding.

    ``L[h, d] = -A(h -> d)`` off the diagonal and ``L[d, d]`` the total weight of arcs into ``d`` (including
    the root's when ``multiroot``); with a single root the first row is replaced by the root weights (the
    first unit vector for an empty sentence).  Each matrix is stored column-major, the layout LAPACK reads.

    Args:
        weights: ``[B, S, S]`` arc weights ``[b, d, h]`` from :func:`_shifted_weights`.
        words: ``[B, S]`` float word mask (:func:`_shifted_weights`).
        multiroot: ``False``: exactly one word attaches to the root; ``True``: several may.
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
    possible arcs ``mask`` (:func:`~structkd.structs.first_order.arc_mask`);
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
        multiroot: ``False``: exactly one word attaches to the root; ``True``: several may.
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


class MatrixTree(FirstOrderTree):
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
                trees = kbest_msts(scores[b, :n + 1, :n + 1], k, self.multiroot)
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


__all__ = ["MatrixTree", "MARGINAL_TOLERANCE", "PIVOT_TOLERANCE"]
