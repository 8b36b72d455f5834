"""Exact marginals in numpy (float64): the confidences of :func:`structkd.runtime.load`'s taggers and parsers.

The numpy counterparts of :mod:`structkd.inference.scores` and of the marginals of :mod:`structkd.structs`
(``tests/test_export.py`` checks them against brute-force enumeration and the runtime's results against
``structkd.load``'s):

* chains (:func:`chain_event_probabilities`): forward-backward in log space; an entity's probability is the sum
  over its clamps (:func:`structkd.runtime.spans.entity_events`) of the clamped partition function of a window
  that reads the rest of the sentence from the forward and backward charts, over ``Z``;
* independent tokens (MaxEnt, :func:`maxent_event_probabilities`): the product rule;
* non-projective trees (:func:`matrix_tree_marginals`): the Matrix-Tree theorem with the Laplacian's inverse
  (Koo et al., 2007), single root or several, as :class:`structkd.structs.tree.MatrixTree`;
* projective trees (:func:`eisner_marginals`): Eisner's inside-outside in log space, as
  :class:`structkd.structs.tree.DependencyCRF`;
* parsing as sequence labeling (:func:`label_head_probabilities`, :func:`label_rel_probabilities`): sums of label
  marginals.

Tree conventions as in :mod:`structkd.runtime.decoding`: one sentence of ``n`` words has scores ``[n + 1, n + 1]``
``[d, h]``, position 0 the root.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from structkd.runtime.decoding import LOG_ZERO, arc_mask
from structkd.runtime.spans import Clamp, event_sums

MARGINAL_TOLERANCE = 1e-9
"""Fast Matrix-Tree marginals are trusted when every word's row sums to one and none is negative within this
(``structkd.structs.matrix_tree.MARGINAL_TOLERANCE``)."""

MAX_CONDITION = 1e6
"""Fast Matrix-Tree marginals are refused (NaN) when the Laplacian's 1-norm condition number exceeds this: the
inverse's entries are then off by up to ``condition * 1e-16`` relative (rows can still sum to one)."""


def logsumexp(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """``log sum exp`` over ``axis`` (dropped), stable for finite inputs."""
    top = x.max(axis, keepdims=True)
    return (top + np.log(np.exp(x - top).sum(axis, keepdims=True))).squeeze(axis)


def softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, in float64."""
    x = x.astype(np.float64)
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


# ------------------------------------------------------------------------------------------- chains
def chain_log_partition(unary: np.ndarray, trans: np.ndarray) -> float:
    """``log Z`` of a chain: ``unary [n, N]`` (``n >= 1``), ``trans [N, N]`` (from, to)."""
    alpha = unary[0]
    for i in range(1, len(unary)):
        alpha = logsumexp(alpha[:, None] + trans, 0) + unary[i]
    return float(logsumexp(alpha))


def forward_backward(unary: np.ndarray, trans: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``alpha, beta [n, N]``: ``alpha[i, t]`` the log-sum of the prefixes ``y_0..y_i`` with ``y_i = t``,
    ``beta[i, t]`` that of the suffixes ``y_{i+1}..`` given ``y_i = t`` (0 at the last position)."""
    alpha, beta = np.empty_like(unary), np.zeros_like(unary)
    alpha[0] = unary[0]
    for i in range(1, len(unary)):
        alpha[i] = logsumexp(alpha[i - 1][:, None] + trans, 0) + unary[i]
    for i in range(len(unary) - 2, -1, -1):
        beta[i] = logsumexp(trans + (unary[i + 1] + beta[i + 1])[None, :], 1)
    return alpha, beta


def chain_event_probabilities(unary: np.ndarray, trans: np.ndarray, clamps: Sequence[Clamp]) -> np.ndarray:
    """``P(y satisfies clamp)`` for each clamp, ``[n_clamps]`` float64.

    Args:
        unary: ``[n, N]`` and ``trans [N, N]``: one sentence's chain (:func:`.decoding.chain_potentials`).
        clamps: ``{position: allowed tags}``, each naming at least one position.
    """
    unary, trans = unary.astype(np.float64), trans.astype(np.float64)
    if not clamps:
        return np.zeros(0)
    alpha, beta = forward_backward(unary, trans)
    log_z = logsumexp(alpha[-1])
    out = np.empty(len(clamps))
    for n, clamp in enumerate(clamps):
        w0, w1 = min(clamp), max(clamp)
        window = unary[w0:w1 + 1].copy()
        for position, allowed in clamp.items():
            forbid = np.ones(window.shape[1], dtype=bool)
            forbid[list(allowed)] = False
            window[position - w0, forbid] = LOG_ZERO
        if w0 > 0:
            window[0] += logsumexp(alpha[w0 - 1][:, None] + trans, 0)
        window[-1] += beta[w1]
        out[n] = np.exp(chain_log_partition(window, trans) - log_z)
    return out


def maxent_event_probabilities(probs: np.ndarray, clamps: Sequence[Clamp]) -> np.ndarray:
    """``P(y satisfies clamp)`` for independent tokens with marginals ``probs [n, N]``, ``[n_clamps]``."""
    return np.array([np.prod([probs[position, list(allowed)].sum() for position, allowed in clamp.items()])
                     for clamp in clamps], dtype=np.float64)


def entity_probabilities(entities: Sequence[tuple[int, int, str]], tags: Sequence[str], length: int,
                         chain: tuple[np.ndarray, np.ndarray] | None = None, probs: np.ndarray | None = None
                         ) -> list[float]:
    """The probability of each entity ``(start, end_inclusive, kind)`` of one sentence of ``length`` tokens,
    from a chain ``(unary [length, N], trans [N, N])`` or MaxEnt marginals ``probs [length, N]`` (one of the two),
    as :func:`structkd.inference.scores.entity_probabilities`."""
    if chain is not None:
        return event_sums(entities, tags, length, lambda clamps: chain_event_probabilities(*chain, clamps))
    return event_sums(entities, tags, length, lambda clamps: maxent_event_probabilities(probs, clamps))


# ------------------------------------------------------------------------------------------- trees
def matrix_tree_marginals(scores: np.ndarray, multiroot: bool = False) -> np.ndarray:
    """Arc marginals ``[n + 1, n + 1]`` (``[d, h]``; 0 on row 0, the diagonal) of the non-projective trees of
    one sentence with arc scores ``[n + 1, n + 1]``, by the inverse of the Laplacian (float64).

    Each dependent's scores are shifted by their maximum before the exponential.  With a single root the first
    row of the word Laplacian holds the root weights and the first word's terms drop out of the closed form.
    Very peaked scores make the Laplacian nearly singular and the result inexact: NaN where its 1-norm condition
    number exceeds :data:`MAX_CONDITION`; :func:`trusted` tells, and :func:`head_probabilities` then uses the
    log-space elimination (:func:`matrix_tree_log_partition`).
    """
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # peaked scores: refused below (NaN)
        return _matrix_tree_marginals(scores, multiroot)


def _matrix_tree_marginals(scores: np.ndarray, multiroot: bool) -> np.ndarray:
    size = scores.shape[0]
    if size < 2:
        return np.zeros((size, size))
    mask = arc_mask(np.array([size - 1]), size)[0]
    arcs = np.where(mask, scores.astype(np.float64), -np.inf)
    top = np.where(mask.any(-1, keepdims=True), arcs.max(-1, keepdims=True), 0.0)
    weights = np.exp(arcs - top)                                        # [d, h], 0 off the possible arcs
    laplacian = -weights[1:, 1:].T                                      # [h, d]
    laplacian[np.diag_indices(size - 1)] += (weights[1:] if multiroot else weights[1:, 1:]).sum(-1)
    if not multiroot:
        laplacian[0] = weights[1:, 0]
    try:
        inverse = np.linalg.inv(laplacian)                              # M [d, h] in word indices
    except np.linalg.LinAlgError:                                       # singular in float64: very peaked scores
        return np.full((size, size), np.nan)
    if np.abs(laplacian).sum(0).max() * np.abs(inverse).sum(0).max() > MAX_CONDITION:
        return np.full((size, size), np.nan)
    out = np.zeros_like(weights)
    if multiroot:
        out[1:, 0] = weights[1:, 0] * np.diag(inverse)
    else:
        out[1:, 0] = weights[1:, 0] * inverse[:, 0]
        inverse[:, 0] = 0.0
    out[1:, 1:] = weights[1:, 1:] * (np.diag(inverse)[:, None] - inverse)
    return out


def trusted(marginals: np.ndarray) -> bool:
    """Whether fast Matrix-Tree marginals ``[n + 1, n + 1]`` can be trusted: finite, every word's row summing to one
    and no entry below zero, within :data:`MARGINAL_TOLERANCE` (the test of ``structs.matrix_tree.MatrixTree``)."""
    rows = marginals[1:]
    return bool(np.isfinite(rows).all() and np.abs(rows.sum(-1) - 1.0).max(initial=0.0) <= MARGINAL_TOLERANCE
                and rows.min(initial=0.0) >= -MARGINAL_TOLERANCE)


def _eliminate(scores: np.ndarray, keep: int) -> tuple[float, list[float], list[np.ndarray]]:
    """Subtraction-free Gaussian elimination of a Laplacian in log space, last node first (as
    ``structs.matrix_tree._eliminate``): eliminating ``k`` adds ``A(h->k) A(k->d) / p_k`` to every arc ``h -> d`` left,
    ``p_k = sum_h A(h->k)``.  Returns the sum of the log pivots, the log pivots and the log weights of the arcs
    ``k -> d`` (``d < k``) of each eliminated node ``k = S-1 .. keep+1``."""
    current, log_det, pivots, outgoing = scores, 0.0, [], []
    for k in range(scores.shape[0] - 1, keep, -1):
        into, out = current[k, :k], current[:k, k]
        log_p = float(logsumexp(into))
        log_det += log_p
        current = np.logaddexp(current[:k, :k], out[:, None] + into[None, :] - log_p)
        pivots.append(log_p)
        outgoing.append(out)
    return log_det, pivots, outgoing


def _single_root_terms(arcs: np.ndarray) -> tuple[float, np.ndarray]:
    """``(log C_1, log r_d u_d [n])`` of masked ``arcs [n + 1, n + 1]`` (``n >= 1``): the word Laplacian's first
    cofactor and each word's share of the trees with it as the root's only child (see
    :func:`matrix_tree_log_partition`)."""
    size = arcs.shape[0]
    no_root = arcs.copy()
    no_root[:, 0] = LOG_ZERO
    log_det, pivots, outgoing = _eliminate(no_root, 1)
    log_u = [0.0]
    for k in range(2, size):
        step = size - 1 - k
        log_u.append(float(logsumexp(outgoing[step][1:] + np.array(log_u))) - pivots[step])
    return log_det, arcs[1:, 0] + np.array(log_u)


def matrix_tree_log_partition(scores: np.ndarray, multiroot: bool = False) -> float:
    """``log Z`` of the non-projective trees of one sentence (scores ``[n + 1, n + 1]``) by the log-space
    elimination, exact however peaked the scores (``O(n^3)``).  Single root: the word Laplacian's cofactors are
    ``C_1 u_d`` with ``u`` its null vector (``u_1 = 1``, by back-substitution), ``Z = C_1 sum_d r_d u_d``."""
    size = scores.shape[0]
    if size < 2:
        return 0.0
    arcs = np.where(arc_mask(np.array([size - 1]), size)[0], scores.astype(np.float64), LOG_ZERO)
    if multiroot:
        return _eliminate(arcs, 0)[0]
    log_det, terms = _single_root_terms(arcs)
    return log_det + float(logsumexp(terms))


def _eisner_pairs(inside: dict[str, np.ndarray], i: np.ndarray, j: np.ndarray, k: np.ndarray,
                  multiroot: bool) -> np.ndarray:
    """The candidates ``cr[i, k] + cl[k + 1, j]`` ``[n_spans, w]`` of the incomplete spans ``(i, j)``; with a
    single root, the root's incomplete span takes no earlier root child (only ``k = 0`` at ``i = 0``)."""
    pair = inside["cr"][i[:, None], k] + inside["cl"][k + 1, j[:, None]]
    if not multiroot and len(i) and i[0] == 0:
        pair[0, 1:] = LOG_ZERO
    return pair


def _eisner_inside(arcs: np.ndarray, multiroot: bool) -> dict[str, np.ndarray]:
    """Eisner's log-space inside charts ``[S, S]`` of one sentence (names as in ``decoding._eisner_charts``:
    ``cl``/``cr`` complete spans headed by ``j``/``i``, ``il``/``ir`` incomplete spans with the arc ``j -> i`` /
    ``i -> j``); ``arcs [S, S]`` ``[d, h]`` masked (``LOG_ZERO`` off the possible arcs)."""
    size = arcs.shape[0]
    inside = {name: np.full((size, size), LOG_ZERO) for name in ("cl", "cr", "il", "ir")}
    inside["cl"][np.diag_indices(size)] = inside["cr"][np.diag_indices(size)] = 0.0
    for w in range(1, size):
        i = np.arange(size - w)
        j = i + w
        k = i[:, None] + np.arange(w)[None, :]                          # split points i..j-1
        pair = logsumexp(_eisner_pairs(inside, i, j, k, multiroot))
        inside["il"][i, j] = pair + arcs[i, j]
        inside["ir"][i, j] = pair + arcs[j, i]
        inside["cl"][i, j] = logsumexp(inside["cl"][i[:, None], k] + inside["il"][k, j[:, None]])
        inside["cr"][i, j] = logsumexp(inside["ir"][i[:, None], k + 1] + inside["cr"][k + 1, j[:, None]])
    return inside


def _spread(outside: dict[str, np.ndarray], item: tuple[str, np.ndarray, np.ndarray], value: np.ndarray,
            left: tuple[str, np.ndarray, np.ndarray], right: tuple[str, np.ndarray, np.ndarray],
            candidates: np.ndarray) -> None:
    """Outside step: the items ``item`` (chart name, ``i``, ``j``), inside values ``value [n_spans]``, hand their
    marginal to their operands ``left``/``right`` (chart name, row and column indices ``[n_spans, w]``) in
    proportion to each candidate's share ``exp(candidates - value)``."""
    name, i, j = item
    share = np.exp(candidates - value[:, None]) * outside[name][i, j][:, None]
    outside[left[0]][left[1], left[2]] += share                         # indices are distinct within a width
    outside[right[0]][right[1], right[2]] += share


def eisner_marginals(scores: np.ndarray, multiroot: bool = False) -> np.ndarray:
    """Arc marginals ``[n + 1, n + 1]`` (``[d, h]``) of the projective trees of one sentence with arc scores
    ``[n + 1, n + 1]``: Eisner's inside-outside in log space, float64.  The outside pass goes down the widths;
    within a width, the complete spans hand their marginal on before the incomplete ones they contain."""
    size = scores.shape[0]
    mask = arc_mask(np.array([size - 1]), size)[0]
    if size < 2:
        return np.zeros((size, size))
    arcs = np.where(mask, scores.astype(np.float64), LOG_ZERO)
    inside = _eisner_inside(arcs, multiroot)
    outside = {name: np.zeros((size, size)) for name in inside}
    outside["cr"][0, size - 1] = 1.0
    for w in range(size - 1, 0, -1):
        i = np.arange(size - w)
        j = i + w
        k = i[:, None] + np.arange(w)[None, :]
        ii, jj = i[:, None], j[:, None]
        _spread(outside, ("cr", i, j), inside["cr"][i, j], ("ir", ii, k + 1), ("cr", k + 1, jj),
                inside["ir"][ii, k + 1] + inside["cr"][k + 1, jj])
        _spread(outside, ("cl", i, j), inside["cl"][i, j], ("cl", ii, k), ("il", k, jj),
                inside["cl"][ii, k] + inside["il"][k, jj])
        pair = _eisner_pairs(inside, i, j, k, multiroot)
        outside["pair"] = np.zeros((size, size))
        outside["pair"][i, j] = outside["il"][i, j] + outside["ir"][i, j]
        _spread(outside, ("pair", i, j), logsumexp(pair), ("cr", ii, k), ("cl", k + 1, jj), pair)
    return np.where(mask, outside["il"] + outside["ir"].T, 0.0)          # il: arc j -> i; ir: arc i -> j


def tree_marginals(scores: np.ndarray, tree: str, multiroot: bool = False) -> np.ndarray:
    """:func:`eisner_marginals` for ``tree == "projective"``, else :func:`matrix_tree_marginals`."""
    return (eisner_marginals if tree == "projective" else matrix_tree_marginals)(scores, multiroot)


def head_probabilities(scores: np.ndarray, heads: Sequence[int], tree: str, multiroot: bool = False) -> np.ndarray:
    """``[n]``: the marginal probability of each word's head ``heads[d - 1]`` under the tree distribution of
    scores ``[n + 1, n + 1]``: :func:`eisner_marginals` (projective), else :func:`matrix_tree_marginals`, and
    where those cannot be trusted, ``Z(word d forced to its head) / Z`` by :func:`matrix_tree_log_partition`."""
    words = np.arange(1, len(heads) + 1)
    heads = np.asarray(heads, dtype=np.int64)
    if tree == "projective":
        return eisner_marginals(scores, multiroot)[words, heads]
    fast = matrix_tree_marginals(scores, multiroot)
    if trusted(fast):
        return fast[words, heads]
    arcs = np.where(arc_mask(np.array([len(heads)]), len(heads) + 1)[0], scores.astype(np.float64), LOG_ZERO)
    log_z = matrix_tree_log_partition(arcs, multiroot)
    out = np.empty(len(heads))
    if not multiroot:  # the root's only child d: r_d u_d / sum (forcing it would leave d no head without the root)
        terms = _single_root_terms(arcs)[1]
        out[:] = np.exp(terms - logsumexp(terms))
    for d, h in zip(words.tolist(), heads.tolist()):
        if h == 0 and not multiroot:
            continue
        forced = arcs.copy()
        forced[d] = LOG_ZERO
        forced[d, h] = arcs[d, h]
        out[d - 1] = np.exp(matrix_tree_log_partition(forced, multiroot) - log_z)
    return out


# ------------------------------------------------------------------------------------------- labels
def label_head_probabilities(probs: np.ndarray, offsets: np.ndarray, heads: Sequence[int]) -> np.ndarray:
    """For parsing as sequence labeling: ``[n]``, the probability that word ``d``'s label points at its head
    ``heads[d - 1]`` (the summed marginals ``probs [n, n_labels]`` of its labels with offset ``head - d``)."""
    wanted = np.asarray(heads) - np.arange(1, len(heads) + 1)
    return (probs * (offsets[None, :] == wanted[:, None])).sum(-1)


def label_rel_probabilities(probs: np.ndarray, offsets: np.ndarray, label_rels: np.ndarray, heads: Sequence[int],
                            rels: Sequence[int], head_probs: np.ndarray) -> np.ndarray:
    """``P(label = (head - d, rel)) / P(offset = head - d)`` per word ``[n]``, 0 where no label expresses it."""
    out = np.zeros(len(heads))
    for d, (h, r) in enumerate(zip(heads, rels)):
        match = np.flatnonzero((offsets == h - d - 1) & (label_rels == r))
        if match.size and head_probs[d] > 0:
            out[d] = probs[d, match[0]] / head_probs[d]
    return out


__all__ = ["MARGINAL_TOLERANCE", "MAX_CONDITION", "chain_event_probabilities", "chain_log_partition",
           "eisner_marginals", "entity_probabilities", "forward_backward", "head_probabilities",
           "label_head_probabilities", "label_rel_probabilities", "logsumexp", "matrix_tree_log_partition",
           "matrix_tree_marginals", "maxent_event_probabilities", "softmax", "tree_marginals", "trusted"]
