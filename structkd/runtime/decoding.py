"""Exact decoders in numpy: constrained Viterbi, Eisner, Chu-Liu-Edmonds and tree repair.

Each gives the structure the torch distributions of :mod:`structkd.structs` give (``tests/test_export.py``
compares them on random float64 scores): :func:`viterbi` is ``LinearChainCRF(...).argmax`` with the same
transition and start/end constraints, :func:`eisner` is ``DependencyCRF(...).argmax`` (single root or several),
:func:`mst` is ``MatrixTree(...).argmax`` (its Chu-Liu-Edmonds and single-root penalty search, ported line for
line).  Conventions as in torch: ``lens`` counts tokens or words; tree arrays are ``[batch_size, n + 1, n + 1]``
``[b, d, h]`` with position 0 the root; padding is -1.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

LOG_ZERO = -1e12
"""``structkd.numerics.LOG_ZERO`` (not imported: that module imports torch)."""


# ------------------------------------------------------------------------------------------- chains
def viterbi(emissions: np.ndarray, lens: np.ndarray, transitions: np.ndarray | None = None,
            start: np.ndarray | None = None, end: np.ndarray | None = None, allowed: np.ndarray | None = None,
            allowed_start: np.ndarray | None = None, allowed_end: np.ndarray | None = None) -> np.ndarray:
    """Best tag sequence of a linear-chain CRF, ``[batch_size, seq_len]`` (-1 at padding), in float64.

    Args:
        emissions: ``[batch_size, seq_len, n_tags]``; transitions ``[n_tags, n_tags]`` (from, to); start, end
            ``[n_tags]``; allowed ``[n_tags, n_tags]``, allowed_start, allowed_end ``[n_tags]`` boolean masks.
    """
    batch_size, seq_len, n_tags = emissions.shape
    tags = np.full((batch_size, seq_len), -1, dtype=np.int64)
    for b in range(batch_size):
        n = int(lens[b])
        if n:
            tags[b, :n] = viterbi_path(*chain_potentials(emissions[b, :n], transitions, start, end, allowed,
                                                         allowed_start, allowed_end))
    return tags


def chain_potentials(emissions: np.ndarray, transitions: np.ndarray | None = None, start: np.ndarray | None = None,
                     end: np.ndarray | None = None, allowed: np.ndarray | None = None,
                     allowed_start: np.ndarray | None = None, allowed_end: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """One sentence's chain as ``LinearChainCRF.potentials`` builds it, in float64: ``unary [n, n_tags]`` (the
    emissions ``[n, n_tags]`` of its ``n >= 1`` tokens with the start and end scores folded into the first and
    last position, forbidden first/last tags at ``LOG_ZERO``) and ``trans [n_tags, n_tags]`` (from, to; forbidden
    transitions at ``LOG_ZERO``).  Arguments as in :func:`viterbi`."""
    n, n_tags = emissions.shape
    trans = np.zeros((n_tags, n_tags)) if transitions is None else transitions.astype(np.float64)
    if allowed is not None:
        trans = np.where(allowed, trans, LOG_ZERO)
    unary = emissions.astype(np.float64)
    if start is not None:
        unary[0] += start
    if end is not None:
        unary[n - 1] += end
    if allowed_start is not None:
        unary[0] = np.where(allowed_start, unary[0], LOG_ZERO)
    if allowed_end is not None:
        unary[n - 1] = np.where(allowed_end, unary[n - 1], LOG_ZERO)
    return unary, trans


def viterbi_path(unary: np.ndarray, trans: np.ndarray) -> list[int]:
    """Best path of one sentence (a list of ``n`` tag indices): ``unary [n, n_tags]``, ``trans [n_tags, n_tags]``
    (:func:`chain_potentials`)."""
    score = unary[0]
    pointers = []
    for i in range(1, len(unary)):
        candidates = score[:, None] + trans                 # [prev, next]
        best = candidates.argmax(0)
        pointers.append(best)
        score = candidates[best, np.arange(len(best))] + unary[i]
    path = [int(score.argmax())]
    for best in reversed(pointers):
        path.append(int(best[path[-1]]))
    return path[::-1]


def maxent(logits: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Best label of every token ``[batch_size, seq_len]`` (-1 at padding)."""
    best = logits.argmax(-1)
    mask = np.arange(logits.shape[1])[None, :] < lens[:, None]
    return np.where(mask, best, -1)


# ------------------------------------------------------------------------------------------- trees
def arc_mask(lens: np.ndarray, size: int) -> np.ndarray:
    """``[batch_size, size, size]``: ``[b, d, h]`` possible (``d`` a word, ``h`` the root or another word)."""
    d = np.arange(size)[:, None]
    h = np.arange(size)[None, :]
    farther = np.where((d == 0) | (d == h), size, np.maximum(d, h))
    return farther[None] <= lens[:, None, None]


def masked(scores: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Arc scores in float64 with impossible arcs at ``LOG_ZERO``."""
    return np.where(arc_mask(lens, scores.shape[1]), scores.astype(np.float64), LOG_ZERO)


def eisner(scores: np.ndarray, lens: np.ndarray, multiroot: bool = False) -> np.ndarray:
    """Best projective tree per sentence, ``heads [batch_size, n + 1]`` (-1 at 0 and padding).

    Args:
        scores: ``[batch_size, n + 1, n + 1]`` arc scores ``[b, d, h]``.
        multiroot: allow several words attached to the root (else exactly one).
    """
    arcs = masked(scores, lens)
    batch_size, size, _ = arcs.shape
    heads = np.full((batch_size, size), -1, dtype=np.int64)
    if size < 2:
        return heads
    charts = _eisner_charts(arcs, multiroot)
    for b in range(batch_size):
        n = int(lens[b])
        if n:
            _backtrack(charts, b, 0, n, "cr", heads[b])
    return heads


def _eisner_charts(arcs: np.ndarray, multiroot: bool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Eisner's four charts and their split points, vectorized over the batch and the span starts.

    ``cl[i, j]``/``cr[i, j]``: complete spans headed by ``j``/``i``; ``il[i, j]``/``ir[i, j]``: incomplete
    spans with the arc ``j -> i`` / ``i -> j``.  Single root: a span headed by the root takes one child only.
    """
    batch_size, size, _ = arcs.shape
    names = ("cl", "cr", "il", "ir")
    values = {k: np.full((batch_size, size, size), -np.inf) for k in names}
    splits = {k: np.zeros((batch_size, size, size), dtype=np.int64) for k in names}
    diagonal = np.arange(size)
    values["cl"][:, diagonal, diagonal] = 0.0
    values["cr"][:, diagonal, diagonal] = 0.0
    for w in range(1, size):
        i = np.arange(size - w)
        j = i + w
        k = i[:, None] + np.arange(w)[None, :]                          # split points i..j-1
        pair = values["cr"][:, i[:, None], k] + values["cl"][:, k + 1, j[:, None]]
        if not multiroot:  # the root's incomplete span: no earlier root child to its left
            pair[:, 0, 1:] = -np.inf
        _store(values, splits, "il", i, j, pair, k, arcs[:, i, j])
        _store(values, splits, "ir", i, j, pair, k, arcs[:, j, i])
        _store(values, splits, "cl", i, j, values["cl"][:, i[:, None], k] + values["il"][:, k, j[:, None]], k)
        k_right = k + 1                                                 # split points i+1..j
        _store(values, splits, "cr", i, j,
               values["ir"][:, i[:, None], k_right] + values["cr"][:, k_right, j[:, None]], k_right)
    return {name: (values[name], splits[name]) for name in names}


def _store(values, splits, name: str, i, j, candidates, k, arc=None) -> None:
    best = candidates.argmax(-1)                                         # [B, n_spans]
    value = np.take_along_axis(candidates, best[..., None], -1)[..., 0]
    values[name][:, i, j] = value if arc is None else value + arc
    splits[name][:, i, j] = np.take_along_axis(np.broadcast_to(k, candidates.shape), best[..., None], -1)[..., 0]


def _backtrack(charts, b: int, i: int, j: int, name: str, heads: np.ndarray) -> None:
    stack = [(i, j, name)]
    while stack:
        i, j, name = stack.pop()
        if i == j:
            continue
        k = int(charts[name][1][b, i, j])
        if name == "il":
            heads[i] = j
            stack += [(i, k, "cr"), (k + 1, j, "cl")]
        elif name == "ir":
            heads[j] = i
            stack += [(i, k, "cr"), (k + 1, j, "cl")]
        elif name == "cl":
            stack += [(i, k, "cl"), (k, j, "il")]
        else:
            stack += [(i, k, "ir"), (k, j, "cr")]


def iter_cycles(heads: Sequence[int]) -> Iterator[list[int]]:
    """The cycles of one head vector, found lazily (``next(iter_cycles(h), None)`` is the first or None).

    Args:
        heads: ``heads[d]`` the head of node ``d`` for nodes ``0..n``, as Python ints; a negative head (the
            root's, a detached word's) ends a walk.

    Yields:
        each cycle once, as its nodes in head order from the node where a walk first enters it (walks start
        at node 0, 1, 2, ...).  ``O(n)`` in all.
    """
    state = [0] * len(heads)  # 0 unseen, 1 on the current walk, 2 done
    for start in range(len(heads)):
        path, node = [], start
        while node >= 0 and state[node] == 0:
            state[node] = 1
            path.append(node)
            node = heads[node]
        if node >= 0 and state[node] == 1:
            yield path[path.index(node):]
        for x in path:
            state[x] = 2


def chu_liu_edmonds(scores: np.ndarray) -> np.ndarray:
    """Maximum spanning arborescence rooted at 0 (several root children allowed).

    Every cycle of the greedy head choice is contracted at once (they are disjoint, and each keeps all its
    arcs but one in some best arborescence), so the recursion is about ``log n`` deep rather than ``n``.

    Args:
        scores: ``[m, m]`` float64 arc scores ``[d, h]``; row 0 and the diagonal impossible (LOG_ZERO).

    Returns:
        heads ``[m]`` with ``heads[0] = -1``.
    """
    m = len(scores)
    heads = scores.argmax(1)
    heads[0] = -1
    cycles = list(iter_cycles(heads.tolist()))
    if not cycles:
        return heads
    in_cycle = np.zeros(m, dtype=bool)
    for cycle in cycles:
        in_cycle[cycle] = True
    rest = np.flatnonzero(~in_cycle)                         # the root first
    order = np.concatenate([rest] + [np.asarray(c) for c in cycles])
    sizes = np.array([1] * len(rest) + [len(c) for c in cycles])
    starts = np.cumsum(sizes) - sizes
    # entering a cycle node d replaces its cycle arc: scores relative to it
    own = np.where(in_cycle, scores[np.arange(m), np.maximum(heads, 0)], 0.0)[order]
    relative = scores[order[:, None], order] - own[:, None]
    contracted = np.maximum.reduceat(np.maximum.reduceat(relative, starts, axis=1), starts, axis=0)
    size = len(sizes)
    contracted[np.arange(size), np.arange(size)] = LOG_ZERO
    contracted[0] = LOG_ZERO
    sub = chu_liu_edmonds(contracted)
    out = heads.copy()
    single = (sizes[1:] == 1) & (sizes[sub[1:]] == 1)         # a plain node taking a plain head
    groups = np.arange(1, size)
    out[order[starts[groups[single]]]] = order[starts[sub[groups[single]]]]
    for g in groups[~single].tolist():                       # the arc that enters a cycle or leaves one
        h = sub[g]
        block = relative[starts[g]:starts[g] + sizes[g], starts[h]:starts[h] + sizes[h]]
        d, c = divmod(int(block.argmax()), sizes[h])
        out[order[starts[g] + d]] = order[starts[h] + c]
    return out


ROOT_PENALTY_GROWTH = 64.0
"""How much larger each root penalty tried by :func:`mst_one` is than the one before."""


def _root_penalties(scores: np.ndarray, possible: np.ndarray) -> list[float]:
    """Root-arc penalties for :func:`mst_one` to try in turn, smallest first.

    The first is ``1 + n (hi - lo)`` with ``hi`` the best possible arc score and ``lo`` the lowest of the words'
    best possible head scores (the range a best tree spans, blind to arcs scored near :data:`LOG_ZERO` that no
    best tree takes); each next one is :data:`ROOT_PENALTY_GROWTH` times larger, up to the last, ``1 + n`` times
    the range of every possible score, which exceeds the score range of all trees (so it always succeeds)."""
    words = possible[1:].any(1)
    best = np.where(possible, scores, -np.inf)[1:][words].max(1)
    hi, lo = float(best.max()), float(best.min())
    n = len(scores)
    first = 1.0 + n * (hi - lo)
    last = 1.0 + n * (hi - float(scores[possible].min()))
    penalties = [first]
    while penalties[-1] * ROOT_PENALTY_GROWTH < last:
        penalties.append(penalties[-1] * ROOT_PENALTY_GROWTH)
    return penalties + [last] if last > first else penalties


def mst_one(scores: np.ndarray, multiroot: bool) -> np.ndarray:
    """Best tree of one sentence, ``heads [m]`` (``heads[0] = -1``), from masked ``scores [m, m]`` (``[d, h]``).

    Single root: when the best arborescence has one root child, that is the answer (no single-root tree
    scores more).  Otherwise every possible root arc is penalized by the same ``P`` and the best arborescence is
    recomputed: once it has a single root child it is exactly the best single-root tree (every single-root tree
    pays ``P`` once, the others more).  ``P`` starts from the range of the words' best head scores and grows
    (:func:`_root_penalties`) only while several root children remain, so root arcs keep their precision next to
    an arc scored near :data:`LOG_ZERO` (a penalty derived from that arc, about 1e12 or more, would round away
    root-score differences below 1e-4)."""
    if multiroot or len(scores) < 2:
        return chu_liu_edmonds(scores)
    free = chu_liu_edmonds(scores)
    if int((free[1:] == 0).sum()) == 1 and bool((scores[np.arange(1, len(scores)), free[1:]] > LOG_ZERO / 2).all()):
        return free
    possible = scores > LOG_ZERO / 2
    if not possible[1:, 0].any():
        return free
    heads = free
    for penalty in _root_penalties(scores, possible):
        penalized = scores.copy()
        penalized[1:, 0] = np.where(possible[1:, 0], scores[1:, 0] - penalty, scores[1:, 0])
        heads = chu_liu_edmonds(penalized)
        if int((heads[1:] == 0).sum()) == 1:
            break
    return heads


def mst(scores: np.ndarray, lens: np.ndarray, multiroot: bool = False) -> np.ndarray:
    """Best (non-projective) tree per sentence by Chu-Liu-Edmonds, ``heads [batch_size, n + 1]``."""
    arcs = masked(scores, lens)
    heads = np.full(arcs.shape[:2], -1, dtype=np.int64)
    for b, n in enumerate(lens.tolist()):
        if n:
            heads[b, 1:n + 1] = mst_one(arcs[b, :n + 1, :n + 1], multiroot)[1:]
    return heads


# ------------------------------------------------------------------------------------------- tree checks
def is_tree(heads: Sequence[int]) -> bool:
    """Whether ``heads`` (word ``d``'s head at ``d - 1``) is a tree with exactly one root word."""
    n = len(heads)
    if any(not 0 <= h <= n or h == d for d, h in enumerate(heads, start=1)):
        return False
    return sum(h == 0 for h in heads) == 1 and next(iter_cycles([-1, *heads]), None) is None


def is_projective(heads: Sequence[int]) -> bool:
    """Whether no two arcs of ``heads`` (word ``d``'s head at ``d - 1``) cross."""
    arcs = [(min(d, h), max(d, h)) for d, h in enumerate(heads, start=1)]
    return not any(a < c < b < e for a, b in arcs for c, e in arcs)


def repair_tree(heads: Sequence[int], scores: np.ndarray | None = None) -> list[int]:
    """Turn any head sequence into a valid single-root tree, keeping every arc the rule below does not change.

    Args:
        heads: ``heads[i]`` the proposed head of word ``i + 1`` (anything outside ``0..n`` or the word itself
            counts as missing).
        scores: ``[n + 1, n + 1]`` arc scores ``[d, h]`` (row 0 unused); default ``-|h - d|`` (short arcs).

    The rule:

    1. Out-of-range heads are removed (the word is *detached*).
    2. The root word is the best-scoring (``scores[d, 0]``) word among those attached to the root, else among
       the detached words, else among all words; it is attached to the root, every other root-attached word
       is detached.
    3. Until every word reaches the root: take the leftmost detached word not yet connected, or, when none is
       left, the word of a cycle whose arc scores lowest; reattach it to the best-scoring word already
       connected to the root (never to the root itself, nor inside its own subtree).

    A valid single-root tree is returned unchanged; every step connects at least one word, so at most ``n``
    steps are taken.
    """
    n = len(heads)
    if scores is None:
        position = np.arange(n + 1)
        scores = -np.abs(position[None, :] - position[:, None]).astype(float)
    out = [int(h) if 0 <= int(h) <= n and int(h) != d else -1 for d, h in enumerate(heads, start=1)]
    if n == 0:
        return out
    words = range(1, n + 1)
    pool = [d for d in words if out[d - 1] == 0] or [d for d in words if out[d - 1] < 0] or list(words)
    root = max(pool, key=lambda d: (scores[d, 0], -d))
    for d in words:
        if out[d - 1] == 0 and d != root:
            out[d - 1] = -1
    out[root - 1] = 0
    while True:
        connected = _connected(out)
        loose = [d for d in words if not connected[d]]
        if not loose:
            return out
        detached = [d for d in loose if out[d - 1] < 0]
        if detached:
            word = detached[0]
        else:
            cycle = next(iter_cycles([-1, *out]))  # the first loose word's: the ones before reach the root
            word = min(cycle, key=lambda d: (scores[d, out[d - 1]], d))
        targets = [h for h in words if connected[h]]
        out[word - 1] = max(targets, key=lambda h: (scores[word, h], -abs(h - word), -h))


def _connected(heads: list[int]) -> list[bool]:
    """``connected[d]``: following the heads from word ``d`` reaches the root (index 0 is the root)."""
    n = len(heads)
    state = [0] * (n + 1)  # 0 unknown, 1 connected, 2 not connected, 3 on the current path
    state[0] = 1
    for start in range(1, n + 1):
        path, node = [], start
        while node >= 0 and state[node] == 0:
            state[node] = 3
            path.append(node)
            node = heads[node - 1]
        result = 1 if node >= 0 and state[node] == 1 else 2
        for p in path:
            state[p] = result
    return [s == 1 for s in state]


