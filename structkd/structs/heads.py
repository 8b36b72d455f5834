"""Checks and conversions for dependency trees given as head vectors.

Convention shared by every tree structure: a batch of trees is ``heads``, ``LongTensor [batch_size,
seq_len]`` where position 0 is the artificial root and ``heads[b, d]`` (for ``d`` in ``1..lens[b]``) is the
head of word ``d`` (0 = the root).  Every other entry (position 0 and padding) is -1.  ``lens`` counts
words, without the root, so ``seq_len >= lens.max() + 1``.  All checks are vectorized over the batch;
:func:`iter_cycles` walks one head vector (Python ints), for the decoders and file checks that need the
cycles themselves.
"""

from __future__ import annotations

import torch

# one walk over a head vector, shared with the torch-free runtime of exported parsers (re-exported here)
from structkd.runtime.decoding import iter_cycles  # noqa: F401

Tensor = torch.Tensor


def word_mask(lens: Tensor, seq_len: int) -> Tensor:
    """``BoolTensor [batch_size, seq_len]``: True at word positions ``1..lens[b]`` (not the root)."""
    positions = torch.arange(seq_len, device=lens.device)
    return (positions >= 1) & (positions <= lens.unsqueeze(-1))


def _default_lens(heads: Tensor, lens: Tensor | None) -> Tensor:
    if lens is None:
        return (heads[:, 1:] >= 0).sum(-1)
    return lens.to(heads.device)


def heads_in_range(heads: Tensor, lens: Tensor | None = None) -> Tensor:
    """``BoolTensor [batch_size]``: every word's head lies in ``0..lens[b]`` and is not the word itself."""
    lens = _default_lens(heads, lens)
    mask = word_mask(lens, heads.shape[1])
    positions = torch.arange(heads.shape[1], device=heads.device)
    ok = (heads >= 0) & (heads <= lens.unsqueeze(-1)) & (heads != positions)
    return (ok | ~mask).all(-1)


def is_tree(heads: Tensor, lens: Tensor | None = None, multiroot: bool = True) -> Tensor:
    """``BoolTensor [batch_size]``: True where ``heads`` is a tree rooted at position 0 (acyclic, heads in
    range, and exactly one word attached to the root unless ``multiroot``).

    Args:
        heads: ``LongTensor [batch_size, seq_len]``, see the module docstring.
        lens: ``LongTensor [batch_size]`` number of words; ``None`` counts the non-negative entries.
        multiroot: whether several words may attach to the root.
    """
    lens = _default_lens(heads, lens)
    seq_len = heads.shape[1]
    mask = word_mask(lens, seq_len)
    ok = heads_in_range(heads, lens)
    # Follow head pointers: after seq_len doublings every word of a tree has reached the root (0);
    # a word on or under a cycle never does.  The root points to itself.
    pointer = torch.where(mask & (heads >= 0), heads, torch.zeros_like(heads)).clamp(0, seq_len - 1)
    steps = max(1, (seq_len).bit_length())
    for _ in range(steps):
        pointer = pointer.gather(1, pointer)
    ok &= ((pointer == 0) | ~mask).all(-1)
    if not multiroot:
        ok &= ((heads == 0) & mask).sum(-1) == 1
    return ok | (lens == 0)


def projective(heads: Tensor, lens: Tensor | None = None) -> Tensor:
    """``BoolTensor [batch_size]``: True where no two arcs of ``heads`` cross (heads assumed in range).

    Args:
        heads: ``LongTensor [batch_size, seq_len]``, see the module docstring.
        lens: ``LongTensor [batch_size]`` number of words; ``None`` counts the non-negative entries.
    """
    lens = _default_lens(heads, lens)
    mask = word_mask(lens, heads.shape[1])
    positions = torch.arange(heads.shape[1], device=heads.device).expand_as(heads)
    left = torch.minimum(heads, positions)
    right = torch.maximum(heads, positions)
    # arcs (a, b) and (c, e) cross when a < c < b < e
    a, b = left.unsqueeze(2), right.unsqueeze(2)
    c, e = left.unsqueeze(1), right.unsqueeze(1)
    crossing = (a < c) & (c < b) & (b < e)
    both = mask.unsqueeze(2) & mask.unsqueeze(1)
    return ~(crossing & both).flatten(1).any(-1)


def check_heads(heads: Tensor, lens: Tensor, multiroot: bool, require_projective: bool, seq_len: int) -> None:
    """Raise ``ValueError`` naming the first offending sentence if ``heads`` are not valid trees (or not
    projective when ``require_projective``)."""
    if heads.dim() != 2 or heads.shape[1] != seq_len or heads.shape[0] != lens.shape[0]:
        raise ValueError(f"heads must have shape [batch_size, seq_len] = [{lens.shape[0]}, {seq_len}], got "
                         f"{list(heads.shape)}")
    in_range = heads_in_range(heads, lens)
    if not bool(in_range.all()):
        b = int((~in_range).nonzero()[0])
        raise ValueError(f"sentence {b}: heads {heads[b, 1:int(lens[b]) + 1].tolist()} must lie in "
                         f"0..{int(lens[b])} and differ from the word itself")
    tree = is_tree(heads, lens, multiroot)
    if not bool(tree.all()):
        b = int((~tree).nonzero()[0])
        cyclic = not bool(is_tree(heads[b:b + 1], lens[b:b + 1], multiroot=True))
        what = "has a cycle" if cyclic else "has several words attached to the root (multiroot=False)"
        raise ValueError(f"sentence {b}: heads {heads[b, 1:int(lens[b]) + 1].tolist()} {what}")
    if require_projective:
        proj = projective(heads, lens)
        if not bool(proj.all()):
            b = int((~proj).nonzero()[0])
            raise ValueError(f"sentence {b}: heads {heads[b, 1:int(lens[b]) + 1].tolist()} form a "
                             f"non-projective tree, which a projective structure cannot score; use MatrixTree "
                             f"or projectivize the treebank")


def arc_indicators(heads: Tensor, lens: Tensor, dtype: torch.dtype) -> Tensor:
    """One-hot arcs ``[batch_size, seq_len, seq_len]``: entry ``[b, d, h]`` is 1 if ``h`` heads ``d``."""
    seq_len = heads.shape[1]
    mask = word_mask(lens, seq_len)
    out = torch.zeros(heads.shape[0], seq_len, seq_len, dtype=dtype, device=heads.device)
    out.scatter_(2, heads.clamp(min=0).unsqueeze(-1), mask.unsqueeze(-1).to(dtype))
    return out
