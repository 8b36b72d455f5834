"""Tag sequences: the linear-chain CRF and the per-token MaxEnt (softmax) tagger.

Both share one tag-index convention so that teachers and students of either kind are interchangeable:
a structure is ``LongTensor [batch_size, seq_len]`` of tag indices, -1 at padding (with a leading ``k``
or ``n`` axis for :meth:`topk` and :meth:`sample`).
"""

from __future__ import annotations

import torch

from structkd.numerics import LOG_ZERO, autocast_off, exp_nonpositive, to_compute
from structkd.structs.base import StructuredDistribution, check_lens, length_mask

Tensor = torch.Tensor


# ---------------------------------------------------------------------------------------------- scans
def _shared_transitions(edges: Tensor) -> Tensor | None:
    """The ``[n_tags, n_tags]`` matrix behind ``edges`` when it is one matrix expanded over batch and
    positions (zero strides), else ``None``."""
    if edges.dim() == 4 and edges.shape[0] > 0 and edges.shape[1] > 0 and edges.stride(0) == 0 and edges.stride(1) == 0:
        return edges[0, 0]
    return None


# The exp-space scans run in float64 whatever the scores' dtype: their vectors are small ([B, N] per step, so
# the cost is the same) and float64's range (e^-708 against float32's e^-87) keeps peaked scores, such as a
# trained tagger's late in training, on this path instead of the log-space fallback.
_EXP_DTYPE = torch.float64
# Smallest trustworthy value of an exp-space step (see _exp_transitions); below it, terms that underflowed may
# have mattered and the scan is redone in log space.
_TRUSTED = 1e-280


def _exp_transitions(edges: Tensor) -> tuple[Tensor, Tensor, bool]:
    """``exp(edges - c)`` in :data:`_EXP_DTYPE` with ``c`` the maximum of each transition matrix, for scans in exp
    space.

    Returns ``(E, c, shared)``: ``E [N, N]`` and ``c []`` for transitions shared over positions, else
    ``E [B, L - 1, N, N]`` and ``c [B, L - 1]``.  Impossible transitions (:data:`LOG_ZERO`) become exactly 0.
    """
    shared = _shared_transitions(edges)
    if shared is not None:
        shared = shared.to(_EXP_DTYPE)
        c = shared.max()
        return exp_nonpositive(shared - c), c, True
    edges = edges.to(_EXP_DTYPE)
    c = edges.flatten(2).amax(-1)
    return exp_nonpositive(edges - c[..., None, None]), c, False


def _scaled_unary(unary: Tensor) -> tuple[Tensor, Tensor]:
    """``(exp(unary - m), m)`` with ``m [B, L, 1]`` the maximum over tags, for the exp-space scans (weights
    below the smallest normal number are 0, see :func:`~structkd.numerics.exp_nonpositive`)."""
    m = unary.amax(-1, keepdim=True)
    return exp_nonpositive(unary - m), m


def _log_scaled(weights: Tensor, offsets: Tensor) -> Tensor:
    """``log(weights) + offsets`` with weights that underflowed to 0 (terms far below the precision of the
    sums they enter) kept at :data:`LOG_ZERO` instead of ``-inf``."""
    return weights.log().clamp_(min=LOG_ZERO).add_(offsets)


def _exp_scan_forward(unary: Tensor, edges: Tensor, lens: Tensor) -> Tensor | None:
    """Forward scan in exp space with matrix products (the scaled forward algorithm).

    Each step keeps ``p_i = exp(alpha_i - K_i)`` with its largest entry 1: ``q = (p_{i-1} @ exp(T - c)) *
    exp(unary_i - m_i)``, ``p_i = q / max q`` and ``K_i = K_{i-1} + c + m_i + log max q``, so a step costs four
    small operations and the logarithms are taken once for all positions.  Computed in :data:`_EXP_DTYPE`, exact
    up to rounding as long as every step's sum ``p_{i-1} @ exp(T - c)`` stays above :data:`_TRUSTED` (terms that
    underflow are then below the precision of the result); returns ``None`` otherwise, so the caller falls back
    to the log-space scan.  The chart is returned in :data:`_EXP_DTYPE`.
    """
    E, c, shared = _exp_transitions(edges)
    weights, top = _scaled_unary(unary.to(_EXP_DTYPE))
    steps = weights.unbind(1)  # per-position views taken at once: fewer small operations in the loop
    transitions = None if shared else E.unbind(1)
    p = steps[0]
    ps, sums, scales = [p], [], []
    for i in range(1, unary.shape[1]):
        r = p @ E if shared else torch.bmm(p.unsqueeze(1), transitions[i - 1]).squeeze(1)
        q = r * steps[i]
        scale = q.amax(-1, keepdim=True)
        p = q / scale
        sums.append(r)
        scales.append(scale)
        ps.append(p)
    inside = torch.arange(1, unary.shape[1], device=unary.device) < lens.unsqueeze(-1)  # [B, L - 1]
    if _untrusted(torch.stack(sums, 1), inside):
        return None
    steps = torch.stack(scales, 1).log_().add_(top[:, 1:]).add_(c if shared else c.unsqueeze(-1))
    offsets = torch.cat([top[:, :1], steps], 1).cumsum(1)  # K_i, [B, L, 1]
    return _log_scaled(torch.stack(ps, 1), offsets)


def _untrusted(sums: Tensor, inside: Tensor) -> bool:
    """Whether any exp-space step sum ``[B, L - 1, N]`` at a real position fell below :data:`_TRUSTED`."""
    return bool(((sums < _TRUSTED) & inside.unsqueeze(-1)).any())


def _exp_scan_backward(unary: Tensor, edges: Tensor, lens: Tensor) -> Tensor | None:
    """Backward scan in exp space, scaled as :func:`_exp_scan_forward`: ``pb_i = exp(beta_i - K_i)`` with
    ``r = exp(T - c) @ (exp(unary_{i+1} - m_{i+1}) * pb_{i+1})``, ``pb_i = r / max r``; at and beyond each
    sentence's last position ``pb = 1`` and the offset is 0.  ``None`` when a step is not trusted."""
    E, c, shared = _exp_transitions(edges)
    weights, top = _scaled_unary(unary.to(_EXP_DTYPE))
    batch_size, seq_len, n_tags = unary.shape
    inside = torch.arange(seq_len - 1, device=unary.device) < (lens - 1).unsqueeze(-1)  # [B, L - 1]
    keep = inside.unsqueeze(-1)  # beta is 0 at and beyond the last position
    E_t = E.t() if shared else None
    steps, keeps = weights.unbind(1), keep.unbind(1)
    transitions = None if shared else E.unbind(1)
    ones = weights.new_ones(batch_size, n_tags)
    pb = ones
    pbs, sums, scales = [pb], [], []
    for i in range(seq_len - 2, -1, -1):
        q = steps[i + 1] * pb
        r = q @ E_t if shared else torch.bmm(transitions[i], q.unsqueeze(-1)).squeeze(-1)
        scale = r.amax(-1, keepdim=True)
        pb = torch.where(keeps[i], r / scale, ones)
        sums.append(r)
        scales.append(scale)
        pbs.append(pb)
    if _untrusted(torch.stack(sums[::-1], 1), inside):
        return None
    steps = torch.stack(scales[::-1], 1).log_().add_(top[:, 1:]).add_(c if shared else c.unsqueeze(-1))
    steps = torch.where(keep, steps, 0.0)  # [B, L - 1, 1]; the offset of position i sums steps i..L-2
    offsets = torch.cat([steps.flip(1).cumsum(1).flip(1), steps.new_zeros(batch_size, 1, 1)], 1)
    return _log_scaled(torch.stack(pbs[::-1], 1), offsets)


def _scores_to(unary: Tensor, edges: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """``unary`` and ``edges`` in ``dtype``, transitions shared over positions staying one expanded matrix."""
    shared = _shared_transitions(edges)
    if shared is not None:
        return unary.to(dtype), shared.to(dtype).expand(edges.shape)
    return unary.to(dtype), edges.to(dtype)


def forward_scan(unary: Tensor, edges: Tensor, lens: Tensor | None = None, dtype: torch.dtype | None = None
                 ) -> Tensor:
    """Forward log-scores of a linear chain.

    Args:
        unary: ``[batch_size, seq_len, n_tags]`` log-potential of tag ``t`` at position ``i``.
        edges: ``[batch_size, seq_len - 1, n_tags, n_tags]`` log-potential of tags ``(a, b)`` at
            positions ``(i, i + 1)``.
        lens: ``LongTensor [batch_size]``; when given and no gradient is being recorded, the scan runs in
            exp space with matrix products (:func:`_exp_scan_forward`), falling back to log space when a step
            could have lost precision.
        dtype: the chart's dtype, by default the scores'.  Charts whose sums of large scores will cancel
            (marginals) are asked for in float64: at scores of 1e4 a float32 chart entry is off by 1e-2.

    Returns:
        ``alpha [batch_size, seq_len, n_tags]``: ``alpha[b, i, t]`` is the log-sum of the scores of all
        prefixes ``y_0..y_i`` with ``y_i = t``.
    """
    dtype = unary.dtype if dtype is None else dtype
    if lens is not None and not torch.is_grad_enabled() and unary.shape[1] > 1:
        fast = _exp_scan_forward(unary, edges, lens)
        if fast is not None:
            return fast.to(dtype)
    unary, edges = _scores_to(unary, edges, dtype)
    seq_len = unary.shape[1]
    shared = _shared_transitions(edges)
    alphas = [unary[:, 0]]
    for i in range(1, seq_len):
        trans = shared if shared is not None else edges[:, i - 1]
        alphas.append(torch.logsumexp(alphas[-1].unsqueeze(-1) + trans, dim=-2) + unary[:, i])
    return torch.stack(alphas, 1)


def backward_scan(unary: Tensor, edges: Tensor, lens: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """Backward log-scores: ``beta[b, i, t]`` is the log-sum of the scores of all suffixes
    ``y_{i+1}..y_{lens-1}`` given ``y_i = t`` (0 at and beyond the last position).  Shapes and ``dtype`` as in
    :func:`forward_scan`; ``lens`` is ``LongTensor [batch_size]``.  Without gradient recording it runs in exp
    space when that is exact (see :func:`forward_scan`)."""
    dtype = unary.dtype if dtype is None else dtype
    if not torch.is_grad_enabled() and unary.shape[1] > 1:
        fast = _exp_scan_backward(unary, edges, lens)
        if fast is not None:
            return fast.to(dtype)
    unary, edges = _scores_to(unary, edges, dtype)
    batch_size, seq_len, n_tags = unary.shape
    shared = _shared_transitions(edges)
    beta = unary.new_zeros(batch_size, n_tags)
    betas = [beta]
    for i in range(seq_len - 2, -1, -1):
        trans = shared if shared is not None else edges[:, i]
        step = torch.logsumexp(trans + (unary[:, i + 1] + beta).unsqueeze(-2), dim=-1)
        beta = torch.where((i < lens - 1).unsqueeze(-1), step, torch.zeros_like(step))
        betas.append(beta)
    return torch.stack(betas[::-1], 1)


def _gather_last(x: Tensor, lens: Tensor) -> Tensor:
    """``x[b, lens[b] - 1]`` for ``x [batch_size, seq_len, ...]`` (index 0 when ``lens[b] == 0``)."""
    index = (lens - 1).clamp(min=0).view(-1, *([1] * (x.dim() - 1))).expand(-1, 1, *x.shape[2:])
    return x.gather(1, index).squeeze(1)


def chain_log_partition(unary: Tensor, edges: Tensor, lens: Tensor) -> Tensor:
    """``log Z [batch_size]`` of a chain (0 for empty sentences); shapes as in :func:`forward_scan`."""
    if unary.shape[1] == 0:  # a sum over no positions: 0, still a function of the potentials for autograd
        return unary.sum((1, 2))
    alpha = forward_scan(unary, edges, lens)
    log_z = torch.logsumexp(_gather_last(alpha, lens), -1)
    return torch.where(lens > 0, log_z, torch.zeros_like(log_z))


def chain_viterbi(unary: Tensor, edges: Tensor | None, lens: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The ``k`` best tag sequences of a chain by k-best Viterbi, batched.

    Args:
        unary: ``[batch_size, seq_len, n_tags]`` log-potentials.
        edges: ``[batch_size, seq_len - 1, n_tags, n_tags]`` log-potentials, or ``None`` for independent
            tokens (MaxEnt).
        lens: ``LongTensor [batch_size]``.
        k: how many sequences.

    Returns:
        ``scores [k, batch_size]`` (best first, :data:`LOG_ZERO` for missing ones) and
        ``tags [k, batch_size, seq_len]`` (-1 at padding and for missing sequences).
    """
    batch_size, seq_len, n_tags = unary.shape
    device = unary.device
    if seq_len == 0:  # every sentence is empty: one structure (the empty one) of score 0
        scores = unary.new_full((k, batch_size), LOG_ZERO)
        scores[0] = 0.0
        return scores, torch.full((k, batch_size, 0), -1, dtype=torch.long, device=device)
    score, pointers = _kbest_forward(unary, edges, lens, k)
    final, flat = score.reshape(batch_size, n_tags * k).topk(min(k, n_tags * k), dim=-1)  # [B, k']
    tags = _kbest_backtrack(pointers, flat, lens, k, seq_len)
    return _kbest_finish(final, tags, lens, k)


def _kbest_forward(unary: Tensor, edges: Tensor | None, lens: Tensor, k: int) -> tuple[Tensor, list[Tensor]]:
    """k-best Viterbi's forward pass: ``score [batch_size, n_tags, k]``, the ``r``-th best score of a whole
    sentence ending in tag ``t`` (unfilled ranks below any real score), and ``pointers``, one
    ``[batch_size, n_tags, k]`` tensor per position ``i >= 1`` holding each entry's predecessor as the flat index
    ``prev_tag * k + prev_rank`` (positions beyond a sentence point to themselves)."""
    batch_size, seq_len, n_tags = unary.shape
    device = unary.device
    shared = None if edges is None else _shared_transitions(edges)
    filler = 4 * LOG_ZERO
    score = unary.new_full((batch_size, n_tags, k), filler)
    score[:, :, 0] = unary[:, 0]
    identity = (torch.arange(n_tags, device=device).view(1, -1, 1) * k
                + torch.arange(k, device=device).view(1, 1, -1)).expand(batch_size, n_tags, k)
    pointers = []
    for i in range(1, seq_len):
        if edges is None:
            trans = unary.new_zeros(n_tags, n_tags)
        else:
            trans = shared if shared is not None else edges[:, i - 1]
        cand = score.unsqueeze(2) + trans.unsqueeze(-1)  # [B, prev, next, k]
        cand = cand.permute(0, 2, 1, 3).reshape(batch_size, n_tags, n_tags * k)
        best, index = cand.topk(min(k, n_tags * k), dim=-1)
        new = unary.new_full((batch_size, n_tags, k), filler)
        new[..., :best.shape[-1]] = best + unary[:, i].unsqueeze(-1)
        ptr = torch.zeros(batch_size, n_tags, k, dtype=torch.long, device=device)
        ptr[..., :index.shape[-1]] = index
        active = (i < lens).view(-1, 1, 1)
        score = torch.where(active, new, score)
        pointers.append(torch.where(active, ptr, identity))
    return score, pointers


def _kbest_backtrack(pointers: list[Tensor], flat: Tensor, lens: Tensor, k: int, seq_len: int) -> Tensor:
    """``tags [batch_size, k', seq_len]`` of the sequences ending in ``flat [batch_size, k']`` (flat indices
    ``tag * k + rank`` of the last position), -1 at padding."""
    batch_size, k_found = flat.shape
    tags = torch.full((batch_size, k_found, seq_len), -1, dtype=torch.long, device=flat.device)
    state = flat
    for i in range(seq_len - 1, -1, -1):
        tag = torch.div(state, k, rounding_mode="floor")
        tags[:, :, i] = torch.where((i < lens).unsqueeze(-1), tag, torch.full_like(tag, -1))
        if i > 0:
            state = pointers[i - 1].flatten(1).gather(1, state)
    return tags


def _kbest_finish(final: Tensor, tags: Tensor, lens: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """:func:`chain_viterbi`'s outputs from the ``k' <= k`` found: an empty sentence has exactly one (empty)
    structure, of score 0; missing sequences get :data:`LOG_ZERO` and tags -1; ranks padded to ``k``."""
    batch_size, k_found, seq_len = tags.shape
    rank = torch.arange(k_found, device=final.device)
    empty = (lens == 0).unsqueeze(-1)
    final = torch.where(empty & (rank == 0), torch.zeros_like(final), final)
    missing = (final <= LOG_ZERO / 2) | (empty & (rank > 0))
    final = torch.where(missing, torch.full_like(final, LOG_ZERO), final)
    tags = torch.where(missing.unsqueeze(-1), torch.full_like(tags, -1), tags)
    if k_found < k:
        final = torch.cat([final, final.new_full((batch_size, k - k_found), LOG_ZERO)], -1)
        tags = torch.cat([tags, tags.new_full((batch_size, k - k_found, seq_len), -1)], 1)
    return final.t().contiguous(), tags.transpose(0, 1).contiguous()


def _check_tags(tags: Tensor, lens: Tensor, n_tags: int, seq_len: int) -> Tensor:
    """Validate tag indices ``[batch_size, seq_len]`` inside the lengths; returns them with padding = 0."""
    if tags.shape != (lens.shape[0], seq_len):
        raise ValueError(f"tags must have shape [batch_size, seq_len] = [{lens.shape[0]}, {seq_len}], "
                         f"got {list(tags.shape)}")
    mask = length_mask(lens, seq_len)
    bad = mask & ((tags < 0) | (tags >= n_tags))
    if bool(bad.any()):
        b, i = (int(x) for x in bad.nonzero()[0])
        raise ValueError(f"sentence {b}, position {i}: tag index {int(tags[b, i])} is outside 0..{n_tags - 1}")
    return torch.where(mask, tags, torch.zeros_like(tags))


def _sample_categorical(probs: Tensor, generator: torch.Generator | None) -> Tensor:
    """One draw per row of ``probs [..., n]`` (rows need not be normalized)."""
    flat = probs.reshape(-1, probs.shape[-1]).clamp(min=0)
    flat = torch.where(flat.sum(-1, keepdim=True) > 0, flat, torch.ones_like(flat))
    return torch.multinomial(flat, 1, generator=generator).view(probs.shape[:-1])


# ---------------------------------------------------------------------------------------------- CRF
class LinearChainCRF(StructuredDistribution):
    r"""Linear-chain CRF over tag sequences.

    The score of tags ``y`` of a sentence of length ``n`` is
    ``sum_i emissions[i, y_i] + sum_{i>0} transitions[y_{i-1}, y_i] + start[y_0] + end[y_{n-1}]``.

    Args:
        emissions: ``[batch_size, seq_len, n_tags]`` score of tag ``t`` at position ``i``.
        transitions: ``[n_tags, n_tags]`` score of (from-tag, to-tag), shared over positions, or
            ``[batch_size, seq_len - 1, n_tags, n_tags]`` per position (entry ``i`` links positions
            ``i`` and ``i + 1``); ``None`` for zero transitions.
        lens: ``LongTensor [batch_size]`` sentence lengths, ``None`` for all ``seq_len``.
        start: ``[n_tags]`` score of the first tag, or ``None``.
        end: ``[n_tags]`` score of the last tag, or ``None``.
        allowed: ``BoolTensor [n_tags, n_tags]`` allowed (from-tag, to-tag) transitions (for example BIO
            validity, see :func:`structkd.schemes.allowed_transitions`), ``None`` for all.
        allowed_start: ``BoolTensor [n_tags]`` tags allowed first, ``None`` for all.
        allowed_end: ``BoolTensor [n_tags]`` tags allowed last, ``None`` for all.

    Potentials (the part layout of :meth:`part_marginals` and :meth:`parts`):
    ``unary [batch_size, seq_len, n_tags]`` (emissions with start and end scores folded into the first
    and last position) and ``edges [batch_size, seq_len - 1, n_tags, n_tags]``.
    ``marginals`` is ``[batch_size, seq_len, n_tags]``, ``P(y_i = t)``; :attr:`edge_marginals` is
    ``[batch_size, seq_len - 1, n_tags, n_tags]``, ``P(y_i = a, y_{i+1} = b)``.
    """

    def __init__(self, emissions: Tensor, transitions: Tensor | None = None, lens: Tensor | None = None,
                 start: Tensor | None = None, end: Tensor | None = None, allowed: Tensor | None = None,
                 allowed_start: Tensor | None = None, allowed_end: Tensor | None = None):
        if emissions.dim() != 3:
            raise ValueError(f"emissions must be [batch_size, seq_len, n_tags], got {list(emissions.shape)}")
        batch_size, seq_len, n_tags = emissions.shape
        self.n_tags = n_tags
        unary = to_compute(emissions)  # before adding start/end scores and filling LOG_ZERO
        checked_lens = _lens_for(emissions, lens, seq_len)
        mask = length_mask(checked_lens, seq_len)
        last = mask & ~torch.cat([mask[:, 1:], mask.new_zeros(batch_size, 1)], 1)
        first = mask & (torch.arange(seq_len, device=emissions.device) == 0)
        if start is not None:
            unary = unary + first.unsqueeze(-1) * to_compute(_check_vector(start, n_tags, "start"))
        if end is not None:
            unary = unary + last.unsqueeze(-1) * to_compute(_check_vector(end, n_tags, "end"))
        if allowed_start is not None:
            forbid = first.unsqueeze(-1) & ~_check_vector(allowed_start, n_tags, "allowed_start").bool()
            unary = unary.masked_fill(forbid, LOG_ZERO)
        if allowed_end is not None:
            forbid = last.unsqueeze(-1) & ~_check_vector(allowed_end, n_tags, "allowed_end").bool()
            unary = unary.masked_fill(forbid, LOG_ZERO)
        unary = unary.masked_fill(~mask.unsqueeze(-1), 0.0)
        edges = self._edges(transitions, allowed, emissions, checked_lens)
        super().__init__((unary, edges), checked_lens, seq_len, lens_checked=True)

    @staticmethod
    def _edges(transitions: Tensor | None, allowed: Tensor | None, emissions: Tensor, lens: Tensor) -> Tensor:
        batch_size, seq_len, n_tags = emissions.shape
        steps = max(seq_len - 1, 0)
        if transitions is None:
            transitions = emissions.new_zeros(n_tags, n_tags)
        transitions = to_compute(transitions)  # float16 cannot hold LOG_ZERO
        if allowed is not None:
            if allowed.shape != (n_tags, n_tags):
                raise ValueError(f"allowed must be [n_tags, n_tags] = [{n_tags}, {n_tags}], got "
                                 f"{list(allowed.shape)}")
            transitions = transitions.masked_fill(~allowed.bool().to(transitions.device), LOG_ZERO)
        if transitions.dim() == 2:
            if transitions.shape != (n_tags, n_tags):
                raise ValueError(f"transitions must be [n_tags, n_tags] = [{n_tags}, {n_tags}], got "
                                 f"{list(transitions.shape)}")
            return transitions.expand(batch_size, steps, n_tags, n_tags)
        if transitions.shape != (batch_size, steps, n_tags, n_tags):
            raise ValueError(f"per-position transitions must be [batch_size, seq_len - 1, n_tags, n_tags] = "
                             f"{[batch_size, steps, n_tags, n_tags]}, got {list(transitions.shape)}")
        inside = length_mask(lens - 1, steps).view(batch_size, steps, 1, 1)
        return transitions.masked_fill(~inside, 0.0)

    # --- the dynamic program
    def _inside(self, potentials):
        unary, edges = potentials
        return chain_log_partition(unary, edges, self.lens)

    def _inside_outside(self):
        return self._inside_outside_parts((True, True))

    def _inside_outside_parts(self, needed):
        """Forward-backward; edge marginals ``[B, L - 1, N, N]`` (the expensive part) only when needed."""
        unary, edges = self.potentials
        if unary.shape[1] == 0:
            return unary.new_zeros(self.batch_size), (torch.zeros_like(unary), torch.zeros_like(edges))
        # the charts and every sum of them are float64 (:data:`_EXP_DTYPE`): their entries grow with the
        # sentence (1e5 at scores of 1e4), and marginals are differences of such sums, which float32 would
        # leave off by 1e-2; the marginals are rounded to the scores' dtype at the end
        alpha = forward_scan(unary, edges, self.lens, dtype=_EXP_DTYPE)
        beta = backward_scan(unary, edges, self.lens, dtype=_EXP_DTYPE)
        log_z = torch.logsumexp(_gather_last(alpha, self.lens), -1)
        log_z = torch.where(self.lens > 0, log_z, torch.zeros_like(log_z)).to(unary.dtype)
        # sum_t exp(alpha[i, t] + beta[i, t]) = Z at every position i: normalizing per position by that sum
        # instead of the global log Z cancels the rounding error of log Z for large scores
        local = alpha + beta
        local_z = torch.logsumexp(local, -1, keepdim=True)  # [B, L, 1]
        self._cache["charts"] = (alpha, beta, local_z)
        unary_marg = exp_nonpositive(local - local_z).to(unary.dtype)
        edge_marg = None
        if needed[1]:
            edge_marg = self._edge_marginals_exp() if _shared_transitions(edges) is not None else None
            if edge_marg is None:
                tail = (unary[:, 1:] + beta[:, 1:]).unsqueeze(-2)  # float64
                edge_logits = (alpha[:, :-1] - local_z[:, :-1]).unsqueeze(-1) + edges + tail
                edge_marg = exp_nonpositive(edge_logits.clamp_(max=0.0))
            edge_marg = edge_marg.to(unary.dtype)
        return log_z, (unary_marg, edge_marg)

    def _rescaled_edge_factors(self) -> tuple[Tensor, Tensor, Tensor] | None:
        """``(p, q, E)`` with ``P(y_i = a, y_{i+1} = b) = p[:, i, a] * E[a, b] * q[:, i, b]`` for transitions
        shared over positions: ``p [B, L - 1, N]`` and ``q [B, L - 1, N]`` rescaled forward and backward vectors
        (0 beyond each sentence), ``E [N, N]`` the rescaled transitions, all in :data:`_EXP_DTYPE`, from the
        cached charts.  ``None`` when a rescaling factor exceeds ``e^300``: a term dropped to underflow (below
        ``e^-708``) could then exceed ``e^-408`` of the result, and the caller works in log space instead."""
        alpha, beta, local_z = self._cache["charts"]
        unary, edges = self.potentials
        trans = _shared_transitions(edges).to(_EXP_DTYPE)
        c = trans.max()
        forward = alpha[:, :-1].to(_EXP_DTYPE)
        backward = (unary[:, 1:] + beta[:, 1:]).to(_EXP_DTYPE)
        top_f = forward.amax(-1, keepdim=True)
        top_b = backward.amax(-1, keepdim=True)
        log_factor = top_f + top_b + c - local_z[:, :-1]  # [B, L - 1, 1]
        inside = (torch.arange(edges.shape[1], device=self.device) < (self.lens - 1).unsqueeze(-1)).unsqueeze(-1)
        if bool(((log_factor > 300) & inside).any()):
            return None
        p = exp_nonpositive(forward - top_f) * torch.where(inside, log_factor.exp(), 0.0)
        return p, exp_nonpositive(backward - top_b), exp_nonpositive(trans - c)

    def _edge_marginals_exp(self) -> Tensor | None:
        """Edge marginals ``[B, L - 1, N, N]`` (in :data:`_EXP_DTYPE`) for shared transitions as products of
        :meth:`_rescaled_edge_factors` (no exponential per entry); ``None`` where those are not trusted."""
        factors = self._rescaled_edge_factors()
        if factors is None:
            return None
        p, q, E = factors
        return (p.unsqueeze(-1) * q.unsqueeze(-2)).mul_(E)

    # --- gradients for transitions shared over positions, without [B, L - 1, N, N] intermediates
    def _forward_needs(self, needed):
        if needed[1] and _shared_transitions(self.potentials[1]) is not None:
            return (True, False)  # the edge part is summed over positions in the backward pass
        return needed

    def _log_partition_grads(self, grad, needed):
        unary, edges = self.potentials
        cached = self._cache.get("teacher_pass")
        if needed[1] and _shared_transitions(edges) is not None and (cached is None or cached[1][1] is None):
            summed = self._summed_edge_marginals(grad)
            if summed is not None:
                _, (unary_marg, _) = self._teacher_pass((True, False))
                unary_grad = unary_marg * grad.view(-1, 1, 1) if needed[0] else None
                # the edge potential is ``transitions`` expanded over [B, L - 1]: autograd sums this gradient
                # over the expanded axes, which gives exactly ``summed`` for the transitions
                count = edges.shape[0] * edges.shape[1]
                return unary_grad, (summed / count).expand_as(edges)
        return super()._log_partition_grads(grad, needed)

    def _summed_edge_marginals(self, grad: Tensor) -> Tensor | None:
        """``sum_b grad[b] sum_i P_b(y_i = a, y_{i+1} = c)`` ``[N, N]`` for shared transitions, as a product
        of :meth:`_rescaled_edge_factors` (in :data:`_EXP_DTYPE`); ``None`` where those are not trusted (the
        caller then uses the per-position edge marginals)."""
        self._teacher_pass((True, False))
        factors = self._rescaled_edge_factors()
        if factors is None:
            return None
        p, q, E = factors
        p = (p * grad.view(-1, 1, 1).to(_EXP_DTYPE)).flatten(0, 1)
        return ((p.t() @ q.flatten(0, 1)) * E).to(self.potentials[1].dtype)

    def _part_masks(self):
        mask = length_mask(self.lens, self.max_len)
        edge_mask = mask[:, 1:]
        return mask.unsqueeze(-1), edge_mask.view(*edge_mask.shape, 1, 1)

    def expected_score(self, marginals) -> Tensor:
        """As :meth:`StructuredDistribution.expected_score`; with transitions shared over positions the edge
        term is ``sum_ab T[a, b] * sum_i m[i, a, b]``, which never materializes ``m * T`` per position."""
        unary_m, edge_m = marginals
        shared = _shared_transitions(self.potentials[1])
        if shared is None or edge_m.shape != self.potentials[1].shape:
            return super().expected_score(marginals)
        unary, _ = self.potentials
        if unary_m.shape != unary.shape:
            raise ValueError(f"marginals of shape {list(unary_m.shape)} do not match potentials of shape "
                             f"{list(unary.shape)}")
        mask = length_mask(self.lens, self.max_len)
        total = torch.where(mask.unsqueeze(-1), unary_m.to(unary.dtype) * unary, 0.0).flatten(1).sum(-1)
        with autocast_off(self.device):  # autocast would run this product in half precision
            counts = torch.einsum("bi,biac->bac", mask[:, 1:].to(unary.dtype), edge_m.to(unary.dtype))
        return total + (counts * shared).flatten(1).sum(-1)

    @property
    def edge_marginals(self) -> Tensor:
        """``[batch_size, seq_len - 1, n_tags, n_tags]``: ``P(y_i = a, y_{i+1} = b)`` (detached)."""
        return self.part_marginals()[1]

    # --- structures
    def parts(self, structure: Tensor):
        tags = _check_tags(structure, self.lens, self.n_tags, self.max_len)
        mask = length_mask(self.lens, self.max_len)
        dtype = self.dtype
        unary = torch.nn.functional.one_hot(tags, self.n_tags).to(dtype) * mask.unsqueeze(-1)
        edges = unary[:, :-1].unsqueeze(-1) * unary[:, 1:].unsqueeze(-2)
        return unary, edges

    def score(self, structure: Tensor) -> Tensor:
        """Score of tags ``[batch_size, seq_len]`` per sentence (gathers, no one-hot expansion)."""
        tags = _check_tags(structure, self.lens, self.n_tags, self.max_len)
        unary, edges = self.potentials
        mask = length_mask(self.lens, self.max_len)
        total = (unary.gather(-1, tags.unsqueeze(-1)).squeeze(-1) * mask).sum(-1)
        if self.max_len > 1:
            shared = _shared_transitions(edges)
            if shared is not None:
                pair = shared[tags[:, :-1], tags[:, 1:]]
            else:
                flat = edges.flatten(-2).gather(-1, (tags[:, :-1] * self.n_tags + tags[:, 1:]).unsqueeze(-1))
                pair = flat.squeeze(-1)
            total = total + (pair * mask[:, 1:]).sum(-1)
        return total

    def _viterbi(self):
        scores, tags = chain_viterbi(*self.potentials, self.lens, 1)
        return scores[0], tags[0]

    def _topk(self, k):
        return chain_viterbi(*self.potentials, self.lens, k)

    def _sample(self, n, generator):
        """Forward filtering, backward sampling; ``[n, batch_size, seq_len]``."""
        unary, edges = self.potentials
        batch_size, seq_len, n_tags = unary.shape
        out = torch.full((n, batch_size, seq_len), -1, dtype=torch.long, device=self.device)
        if seq_len == 0:
            return out
        alpha = forward_scan(unary, edges, self.lens, dtype=_EXP_DTYPE)  # exact logits at large scores
        shared = _shared_transitions(edges)
        last = _gather_last(alpha, self.lens)  # [B, N]
        tag = _sample_categorical((last - last.max(-1, keepdim=True).values).exp().expand(n, -1, -1), generator)
        for i in range(seq_len - 1, -1, -1):
            at_last = (i == self.lens - 1).unsqueeze(0)
            inside = (i < self.lens - 1).unsqueeze(0)
            if i < seq_len - 1:
                trans = shared if shared is not None else edges[:, i]
                trans = trans.expand(batch_size, n_tags, n_tags)
                nxt = out[:, :, i + 1].clamp(min=0)  # [n, B]
                col = trans.unsqueeze(0).expand(n, -1, -1, -1).gather(
                    -1, nxt.view(n, batch_size, 1, 1).expand(-1, -1, n_tags, 1)).squeeze(-1)
                logits = alpha[:, i].unsqueeze(0) + col
                step = _sample_categorical((logits - logits.max(-1, keepdim=True).values).exp(), generator)
                tag = torch.where(inside, step, tag)
            out[:, :, i] = torch.where(at_last | inside, tag, torch.full_like(tag, -1))
        return out


def _lens_for(emissions: Tensor, lens: Tensor | None, seq_len: int) -> Tensor:
    return check_lens(lens, emissions.shape[0], seq_len, emissions.device)


def _check_vector(x: Tensor, n: int, name: str) -> Tensor:
    if x.shape != (n,):
        raise ValueError(f"{name} must have shape [n_tags] = [{n}], got {list(x.shape)}")
    return x


# ---------------------------------------------------------------------------------------------- MaxEnt
class MaxEnt(StructuredDistribution):
    """Independent categorical per token (the softmax "MaxEnt" tagger), with the chain API.

    Args:
        logits: ``[batch_size, seq_len, n_tags]`` score of tag ``t`` at position ``i``.
        lens: ``LongTensor [batch_size]`` sentence lengths, ``None`` for all ``seq_len``.

    The single potential is ``logits`` (masked at padding); ``marginals`` is the per-token softmax
    ``[batch_size, seq_len, n_tags]``, and structures are tag indices ``[batch_size, seq_len]``, -1 at
    padding, exactly as for :class:`LinearChainCRF`.
    """

    def __init__(self, logits: Tensor, lens: Tensor | None = None):
        if logits.dim() != 3:
            raise ValueError(f"logits must be [batch_size, seq_len, n_tags], got {list(logits.shape)}")
        seq_len = logits.shape[1]
        self.n_tags = logits.shape[2]
        checked_lens = _lens_for(logits, lens, seq_len)
        mask = length_mask(checked_lens, seq_len).unsqueeze(-1)
        super().__init__((logits.masked_fill(~mask, 0.0),), checked_lens, seq_len, lens_checked=True)

    def _inside(self, potentials):
        (logits,) = potentials
        mask = length_mask(self.lens, self.max_len)
        return (torch.logsumexp(logits, -1) * mask).sum(-1)

    def _inside_outside(self):
        (logits,) = self.potentials
        return self._inside(self.potentials), (logits.softmax(-1),)

    def _part_masks(self):
        return (length_mask(self.lens, self.max_len).unsqueeze(-1),)

    def parts(self, structure: Tensor):
        tags = _check_tags(structure, self.lens, self.n_tags, self.max_len)
        mask = length_mask(self.lens, self.max_len).unsqueeze(-1)
        return (torch.nn.functional.one_hot(tags, self.n_tags).to(self.dtype) * mask,)

    def _viterbi(self):
        (logits,) = self.potentials
        mask = length_mask(self.lens, self.max_len)
        best, tags = logits.max(-1)
        return (best * mask).sum(-1), torch.where(mask, tags, torch.full_like(tags, -1))

    def _topk(self, k):
        return chain_viterbi(self.potentials[0], None, self.lens, k)

    def _sample(self, n, generator):
        (logits,) = self.potentials
        probs = logits.softmax(-1).expand(n, -1, -1, -1)
        tags = _sample_categorical(probs, generator)
        mask = length_mask(self.lens, self.max_len)
        return torch.where(mask, tags, torch.full_like(tags, -1))
