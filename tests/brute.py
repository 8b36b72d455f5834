"""Brute-force enumeration of every structure of tiny sentences: the ground truth of the DP tests.

Each enumerator yields plain Python tuples; the ``brute_*`` helpers turn a list of structures and a
scoring function into exact log Z, marginals, entropy and so on, in float64, by explicit summation.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Sequence

import torch


def tag_sequences(length: int, n_tags: int) -> Iterable[tuple[int, ...]]:
    """Every tag sequence of ``length`` tokens over ``n_tags`` tags."""
    return itertools.product(range(n_tags), repeat=length)


def segmentations(length: int, n_labels: int, max_width: int | None = None) -> list[tuple[tuple[int, int, int], ...]]:
    """Every labeled segmentation of ``length`` tokens: tuples of ``(start, end_inclusive, label)``."""
    max_width = length if max_width is None else max_width
    if length == 0:
        return [()]
    out = []
    for width in range(1, min(max_width, length) + 1):
        for rest in segmentations(length - width, n_labels, max_width):
            for label in range(n_labels):
                out.append(rest + ((length - width, length - 1, label),))
    return out


def is_tree(heads: Sequence[int], multiroot: bool) -> bool:
    """``heads[d - 1]`` is the head of word ``d`` (0 = root): True if it is a tree rooted at 0."""
    n = len(heads)
    if any(not 0 <= h <= n for h in heads) or any(h == d + 1 for d, h in enumerate(heads)):
        return False
    if not multiroot and sum(h == 0 for h in heads) != 1:
        return False
    for d in range(1, n + 1):
        seen, node = set(), d
        while node != 0:
            if node in seen:
                return False
            seen.add(node)
            node = heads[node - 1]
    return True


def is_projective(heads: Sequence[int]) -> bool:
    """True if no two arcs cross (the root is position 0, to the left of every word)."""
    arcs = [(min(h, d + 1), max(h, d + 1)) for d, h in enumerate(heads)]
    for (a, b), (c, e) in itertools.combinations(arcs, 2):
        if a < c < b < e or c < a < e < b:
            return False
    return True


def trees(n: int, multiroot: bool, projective: bool) -> list[tuple[int, ...]]:
    """Every dependency tree over ``n`` words (heads tuples as in :func:`is_tree`)."""
    out = []
    for heads in itertools.product(range(n + 1), repeat=n):
        if is_tree(heads, multiroot) and (not projective or is_projective(heads)):
            out.append(heads)
    return out


def siblings(heads: Sequence[int]) -> list[tuple[int, int, int]]:
    """Second-order sibling parts ``(m, h, s)`` of a tree: ``s`` and ``m`` are adjacent modifiers of ``h``
    on the same side, ``s`` closer to ``h``.  The root (0) takes right modifiers only."""
    n = len(heads)
    out = []
    for h in range(n + 1):
        deps = [d for d in range(1, n + 1) if heads[d - 1] == h]
        left = sorted((d for d in deps if d < h), reverse=True)
        right = sorted(d for d in deps if d > h)
        for side in (left, right):
            for s, m in zip(side, side[1:]):
                out.append((m, h, s))
    return out


def log_partition(structures: Sequence, score: Callable[[object], float]) -> float:
    """Exact ``log sum_y exp(score(y))`` in float64."""
    values = torch.tensor([float(score(y)) for y in structures], dtype=torch.float64)
    return float(torch.logsumexp(values, 0))


def probabilities(structures: Sequence, score: Callable[[object], float]) -> list[float]:
    """Exact probability of each structure."""
    log_z = log_partition(structures, score)
    return [math.exp(float(score(y)) - log_z) for y in structures]


def entropy(structures: Sequence, score: Callable[[object], float]) -> float:
    probs = probabilities(structures, score)
    return -sum(p * math.log(p) for p in probs if p > 0)


def cross_entropy(structures: Sequence, score_p: Callable, score_q: Callable) -> float:
    """``-sum_y P(y) log Q(y)``."""
    probs = probabilities(structures, score_p)
    log_zq = log_partition(structures, score_q)
    return -sum(p * (float(score_q(y)) - log_zq) for p, y in zip(probs, structures))
