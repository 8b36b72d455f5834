"""Parsing as sequence labeling decoded in numpy: :meth:`structkd.models.seqlabel_parser.SeqLabelingParser.decode`.

Each word's best label gives a head and a relation; where they do not make a valid single-root tree (and,
for ``eisner``, a projective one), label-derived arc scores are decoded by Chu-Liu-Edmonds (``mst``), Eisner
(``eisner``) or :func:`~structkd.runtime.decoding.repair_tree` (``repair``), and each arc takes the relation of
its best label.
"""

from __future__ import annotations

import numpy as np

from structkd.runtime import decoding

LOG_ZERO = decoding.LOG_ZERO


def log_softmax(x: np.ndarray) -> np.ndarray:
    """``log_softmax`` over the last axis, in float64."""
    x = x.astype(np.float64)
    top = x.max(-1, keepdims=True)
    return x - top - np.log(np.exp(x - top).sum(-1, keepdims=True))


def label_arcs(logp: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Arc scores ``[n + 1, n + 1]`` (``[d, h]``) of one sentence from its labels' log-probabilities ``[n,
    n_labels]``: the best label with offset ``h - d``; arcs no label expresses score 10 below the lowest
    expressible arc (as ``SeqLabelingParser._label_arcs``)."""
    n = len(logp)
    scores = np.full((n + 1, n + 1), LOG_ZERO)
    words = np.repeat(np.arange(1, n + 1), len(offsets))
    heads = words + np.tile(offsets, n)
    keep = (heads >= 0) & (heads <= n)
    np.maximum.at(scores, (words[keep], heads[keep]), logp.reshape(-1)[keep])
    mask = decoding.arc_mask(np.array([n]), n + 1)[0]
    expressible = mask & (scores > LOG_ZERO / 2)
    floor = scores[expressible].min() - 10.0 if expressible.any() else 0.0
    return np.where(mask & ~expressible, floor, scores)


def relations(logp: np.ndarray, heads: np.ndarray, offsets: np.ndarray, label_rels: np.ndarray,
              n_rels: int) -> np.ndarray:
    """Relation of each word ``[n]`` (heads ``[n]``): that of its best label (lowest index among ties) with the
    offset of its head, else its most probable relation summed over offsets."""
    out = np.empty(len(heads), dtype=np.int64)
    for i, h in enumerate(heads.tolist()):
        members = np.flatnonzero(offsets == h - (i + 1))
        if members.size:
            out[i] = label_rels[members[int(logp[i, members].argmax())]]
        else:
            mass = np.zeros(n_rels)
            np.add.at(mass, label_rels, np.exp(np.maximum(logp[i], -80.0)))
            out[i] = int(mass.argmax())
    return out


def _own_tree(best: np.ndarray, offsets: np.ndarray, method: str) -> np.ndarray | None:
    """The heads ``[n]`` of the best labels when they make a tree the decoder would keep."""
    heads = np.arange(1, len(best) + 1) + offsets[best]
    ok = decoding.is_tree(heads.tolist()) and (method != "eisner" or decoding.is_projective(heads.tolist()))
    return heads if ok else None


def decode_labels(logits: np.ndarray, lens: np.ndarray, offsets: np.ndarray, label_rels: np.ndarray, n_rels: int,
                  method: str = "mst") -> tuple[np.ndarray, np.ndarray]:
    """``(heads, rels)`` ``[batch_size, seq_len + 1]`` (-1 at 0 and padding) from label logits ``[batch_size,
    seq_len, n_labels]`` (labels outside the sentence at ``LOG_ZERO``)."""
    if method not in ("mst", "eisner", "repair"):
        raise ValueError(f"decoder must be mst, eisner or repair, got {method!r}")
    batch_size, seq_len, _ = logits.shape
    heads = np.full((batch_size, seq_len + 1), -1, dtype=np.int64)
    rels = np.full((batch_size, seq_len + 1), -1, dtype=np.int64)
    for b, n in enumerate(lens.tolist()):
        if n == 0:
            continue
        best = logits[b, :n].argmax(-1)
        own = _own_tree(best, offsets, method)
        if own is not None:
            heads[b, 1:n + 1], rels[b, 1:n + 1] = own, label_rels[best]
            continue
        logp = log_softmax(logits[b, :n])
        scores = label_arcs(logp, offsets)
        if method == "mst":
            tree = decoding.mst(scores[None], np.array([n]))[0, 1:]
        elif method == "eisner":
            tree = decoding.eisner(scores[None], np.array([n]))[0, 1:]
        else:
            proposed = (np.arange(1, n + 1) + offsets[best]).tolist()
            tree = np.array(decoding.repair_tree(proposed, scores))
        heads[b, 1:n + 1] = tree
        rels[b, 1:n + 1] = relations(logp, tree, offsets, label_rels, n_rels)
    return heads, rels


__all__ = ["decode_labels", "label_arcs", "log_softmax", "relations"]
