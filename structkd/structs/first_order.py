"""The shared ground of the first-order dependency tree distributions: :class:`FirstOrderTree` (construction,
masks, part indicators), :func:`arc_mask` and :func:`tree_scores`.  The dynamic programs live apart: Eisner's
algorithm in :mod:`structkd.structs.eisner` (:class:`~structkd.structs.eisner.DependencyCRF`, projective), the
Matrix-Tree theorem in :mod:`structkd.structs.matrix_tree` (:class:`~structkd.structs.matrix_tree.MatrixTree`,
non-projective) and k-best maximum spanning trees in :mod:`structkd.structs.spanning_trees`.

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

import torch

from structkd.numerics import LOG_ZERO, compute_dtype, is_impossible
from structkd.structs.base import StructuredDistribution, check_lens
from structkd.structs.heads import arc_indicators, check_heads, word_mask

Tensor = torch.Tensor


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


class FirstOrderTree(StructuredDistribution):
    """Shared construction, masks and part indicators of the first-order tree distributions (subclasses write
    only their dynamic programs)."""

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


__all__ = ["FirstOrderTree", "arc_mask", "tree_scores"]
