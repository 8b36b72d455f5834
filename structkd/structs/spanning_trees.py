"""The k best maximum spanning trees of one sentence (:func:`kbest_msts`, Lawler's partitioning over
constrained Chu-Liu-Edmonds trees), in numpy: ``scores [S, S]`` with ``scores[d, h]`` the score of ``h -> d``
and :data:`~structkd.numerics.LOG_ZERO` where impossible; trees are heads arrays ``[S]`` (``heads[0]`` unused).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Sequence

import numpy as np

from structkd.numerics import LOG_ZERO
from structkd.runtime.decoding import mst_one


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


def kbest_msts(scores: np.ndarray, k: int, multiroot: bool) -> list[np.ndarray]:
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


__all__ = ["kbest_msts"]
