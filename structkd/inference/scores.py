"""Exact confidences: the model's marginal probability of each predicted entity and of each predicted head.

An entity ``(i, j, X)`` (tokens ``i..j`` inclusive) *as read from the tags* by :func:`structkd.schemes.spans` is
an event on the tags of positions ``i - 1 .. j + 1`` only: the reader's state after a tag depends on that tag
alone.  :func:`entity_events` (torch-free, in :mod:`structkd.runtime.spans`) writes it as a union of disjoint
events, each a set of allowed tags per position (a *clamp*).  Its probability is then

* for a :class:`~structkd.structs.chain.LinearChainCRF`: ``sum_clamps Z_clamped / Z``, the clamped partition
  functions computed on windows of the chain that read the rest of the sentence from the forward and backward
  charts (:func:`chain_event_probabilities`): exact, and ``O(width)`` per entity;
* for a :class:`~structkd.structs.chain.MaxEnt`: ``sum_clamps prod_positions P(y_k in S_k)``;
* for a span head (:class:`~structkd.structs.semimarkov.SemiMarkovCRF`): the segment marginal.

Head scores of parsers are arc marginals of the tree distribution (:func:`tree_head_probabilities`) or, for
parsing as sequence labeling, the summed marginals of the labels pointing at the head
(:func:`label_head_probabilities`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from structkd.numerics import LOG_ZERO

# the entity events are torch-free, shared with the numpy runtime (structkd.runtime.marginals)
from structkd.runtime.spans import Clamp, entity_events, event_sums  # noqa: F401
from structkd.structs.chain import backward_scan, chain_log_partition, forward_scan

Tensor = torch.Tensor


def _window_potentials(unary: Tensor, edges: Tensor, alpha: Tensor, beta: Tensor, clamp: Clamp
                       ) -> tuple[Tensor, Tensor]:
    """One clamp's window ``w0..w1`` as a chain of its own: ``unary [W, N]`` with the forward messages into
    ``w0`` and the backward chart at ``w1`` folded in, forbidden tags at :data:`LOG_ZERO`; ``edges [W - 1, N, N]``."""
    w0, w1 = min(clamp), max(clamp)
    window = unary[w0:w1 + 1].clone()
    for position, allowed in clamp.items():
        forbid = torch.ones(window.shape[1], dtype=torch.bool, device=window.device)
        forbid[list(allowed)] = False
        window[position - w0] = window[position - w0].masked_fill(forbid, LOG_ZERO)
    if w0 > 0:
        window[0] = window[0] + torch.logsumexp(alpha[w0 - 1].unsqueeze(-1) + edges[w0 - 1], 0)
    window[-1] = window[-1] + beta[w1]
    return window, edges[w0:w1]


@torch.no_grad()
def chain_event_probabilities(unary: Tensor, edges: Tensor, clamps: Sequence[Clamp]) -> Tensor:
    """``P(y satisfies clamp)`` of one sentence's chain for each clamp, ``[n_clamps]`` in float64.

    Args:
        unary: ``[length, n_tags]`` and ``edges [length - 1, n_tags, n_tags]``: one sentence's potentials
            (:attr:`LinearChainCRF.potentials` cut to its length); computed in float64.
        clamps: ``{position: allowed tags}``, each naming at least one position.
    """
    unary, edges = unary.double(), edges.double()
    if not clamps:
        return unary.new_zeros(0)
    lens = torch.tensor([unary.shape[0]], device=unary.device)
    alpha = forward_scan(unary[None], edges[None], lens, dtype=torch.float64)[0]
    beta = backward_scan(unary[None], edges[None], lens, dtype=torch.float64)[0]
    log_z = torch.logsumexp(alpha[-1], -1)
    windows = [_window_potentials(unary, edges, alpha, beta, clamp) for clamp in clamps]
    width = max(w.shape[0] for w, _ in windows)
    n_tags = unary.shape[1]
    batch_unary = unary.new_zeros(len(windows), width, n_tags)
    batch_edges = unary.new_zeros(len(windows), max(width - 1, 0), n_tags, n_tags)
    for n, (window, window_edges) in enumerate(windows):
        batch_unary[n, :window.shape[0]] = window
        batch_edges[n, :window_edges.shape[0]] = window_edges
    window_lens = torch.tensor([w.shape[0] for w, _ in windows], device=unary.device)
    return (chain_log_partition(batch_unary, batch_edges, window_lens) - log_z).exp()


def maxent_event_probabilities(probs: Tensor, clamps: Sequence[Clamp]) -> Tensor:
    """``P(y satisfies clamp)`` for independent tokens with marginals ``probs [length, n_tags]``, ``[n_clamps]``."""
    out = []
    for clamp in clamps:
        value = probs.new_ones(())
        for position, allowed in clamp.items():
            value = value * probs[position, list(allowed)].sum()
        out.append(value)
    return torch.stack(out) if out else probs.new_zeros(0)


def entity_probabilities(entities: Sequence[tuple[int, int, str]], tags: Sequence[str], length: int,
                         chain: tuple[Tensor, Tensor] | None = None, probs: Tensor | None = None) -> list[float]:
    """The probability of each entity ``(start, end_inclusive, kind)`` of one sentence of ``length`` tokens,
    from a chain's potentials ``(unary [length, N], edges [length - 1, N, N])`` or MaxEnt marginals
    ``probs [length, N]`` (one of the two)."""
    if chain is not None:
        return event_sums(entities, tags, length, lambda clamps: chain_event_probabilities(*chain, clamps).tolist())
    probs = probs.double()
    return event_sums(entities, tags, length, lambda clamps: maxent_event_probabilities(probs, clamps).tolist())


def tree_head_probabilities(marginals: Tensor, heads: Tensor) -> Tensor:
    """``P(heads[b, d] heads d)`` from arc marginals ``[batch_size, seq_len + 1, seq_len + 1]`` (``[b, d, h]``) and
    heads ``LongTensor [batch_size, seq_len + 1]`` (-1 at the root and padding, where the result is 0)."""
    picked = marginals.gather(2, heads.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return torch.where(heads >= 0, picked, torch.zeros_like(picked))


def label_head_probabilities(probs: Tensor, label_offsets: Tensor, heads: Tensor) -> Tensor:
    """For parsing as sequence labeling: the probability that word ``d``'s label points at ``heads[b, d]``, the
    sum of the marginals of its labels with offset ``heads[b, d] - d``.

    Args:
        probs: ``[batch_size, seq_len, n_labels]`` label marginals (word ``d`` at ``d - 1``).
        label_offsets: ``LongTensor [n_labels]`` head offset of each label.
        heads: ``LongTensor [batch_size, seq_len + 1]`` (-1 at the root and padding).

    Returns:
        ``[batch_size, seq_len + 1]``, 0 at the root and padding.
    """
    words = torch.arange(heads.shape[1], device=heads.device)
    offsets = (heads - words)[:, 1:]                                        # [B, L]
    match = label_offsets.to(heads.device).view(1, 1, -1) == offsets.unsqueeze(-1)
    summed = (probs * match).sum(-1)
    out = torch.cat([summed.new_zeros(summed.shape[0], 1), summed], 1)
    return torch.where(heads >= 0, out, torch.zeros_like(out))
