"""Labeled segmentations: the semi-Markov CRF (the output structure of span-based "NER as parsing").

A structure covers every token of a sentence with exactly one labeled segment.  It is represented as a
*segment chart* ``LongTensor [batch_size, seq_len, seq_len]``: ``chart[b, i, j]`` is the label of the
segment covering tokens ``i..j`` (inclusive) if that segment is part of the segmentation, else -1.
:func:`chart_to_segments` and :func:`segments_to_chart` convert to and from lists of
``(start, end_inclusive, label)`` triples.
"""

from __future__ import annotations

import torch

from structkd.numerics import LOG_ZERO, exp_nonpositive, to_compute
from structkd.structs.base import StructuredDistribution, check_lens

Tensor = torch.Tensor
_CHART_DTYPE = torch.float64
"""The dtype of the charts behind detached marginals, whatever the scores' dtype (see ``_inside_outside``)."""


def segments_to_chart(segments: list[list[tuple[int, int, int]]], seq_len: int,
                      device: torch.device | None = None) -> Tensor:
    """Segment chart ``[batch_size, seq_len, seq_len]`` from one list of ``(start, end, label)`` per sentence."""
    chart = torch.full((len(segments), seq_len, seq_len), -1, dtype=torch.long, device=device)
    for b, sentence in enumerate(segments):
        for start, end, label in sentence:
            chart[b, start, end] = label
    return chart


def chart_to_segments(chart: Tensor) -> list[list[tuple[int, int, int]]]:
    """``(start, end_inclusive, label)`` triples, sorted by start, for each sentence of a segment chart."""
    out: list[list[tuple[int, int, int]]] = [[] for _ in range(chart.shape[0])]
    for b, i, j in (chart >= 0).nonzero().tolist():
        out[b].append((i, j, int(chart[b, i, j])))
    return [sorted(s) for s in out]


class SemiMarkovCRF(StructuredDistribution):
    """Distribution over labeled segmentations (zeroth-order semi-Markov CRF).

    Args:
        scores: ``[batch_size, seq_len, seq_len, n_labels]``; ``scores[b, i, j, l]`` scores the segment
            covering tokens ``i..j`` inclusive with label ``l`` (entries with ``j < i`` are ignored).
        lens: ``LongTensor [batch_size]`` sentence lengths, ``None`` for all ``seq_len``.
        max_width: the longest allowed segment (entries with ``j - i + 1 > max_width`` are impossible);
            ``None`` for no bound.

    The score of a segmentation is the sum of its segments' scores.  ``marginals`` has the scores' shape
    (``P(segment i..j with label l)``); structures are segment charts (see the module docstring).
    """

    def __init__(self, scores: Tensor, lens: Tensor | None = None, max_width: int | None = None):
        if scores.dim() != 4 or scores.shape[1] != scores.shape[2]:
            raise ValueError(f"scores must be [batch_size, seq_len, seq_len, n_labels], got {list(scores.shape)}")
        batch_size, seq_len, _, self.n_labels = scores.shape
        if max_width is not None and max_width < 1:
            raise ValueError(f"max_width must be at least 1, got {max_width}")
        self.max_width = seq_len if max_width is None else min(max_width, max(seq_len, 1))
        lens = check_lens(lens, batch_size, seq_len, scores.device)
        valid = self._valid_segments(lens, seq_len)
        scores = to_compute(scores).masked_fill(~valid.unsqueeze(-1), LOG_ZERO)  # float16 cannot hold LOG_ZERO
        super().__init__((scores,), lens, seq_len, lens_checked=True)

    def _valid_segments(self, lens: Tensor, seq_len: int) -> Tensor:
        """``BoolTensor [batch_size, seq_len, seq_len]``: segment ``i..j`` lies inside the sentence."""
        i = torch.arange(seq_len, device=lens.device).view(-1, 1)
        j = torch.arange(seq_len, device=lens.device).view(1, -1)
        shape_ok = (i <= j) & (j - i < self.max_width)
        return shape_ok.unsqueeze(0) & (j.unsqueeze(0) < lens.view(-1, 1, 1))

    def _part_masks(self):
        return (self._valid_segments(self.lens, self.max_len).unsqueeze(-1),)

    # --- the dynamic program
    def _window(self, end: int) -> int:
        """First start position of a segment ending just before boundary ``end``."""
        return max(0, end - self.max_width)

    def _alphas(self, scores: Tensor) -> Tensor:
        """``alpha [batch_size, seq_len + 1]``: log-sum of all segmentations of tokens ``0..e-1``."""
        alphas = [scores.new_zeros(self.batch_size)]
        for end in range(1, self.max_len + 1):
            lo = self._window(end)
            prev = torch.stack(alphas[lo:end], 1)  # [B, W]
            cand = prev.unsqueeze(-1) + scores[:, lo:end, end - 1]  # [B, W, C]
            alphas.append(torch.logsumexp(cand.flatten(1), -1))
        return torch.stack(alphas, 1)

    def _inside(self, potentials):
        (scores,) = potentials
        if self.max_len == 0:  # a sum over no segments: 0, still a function of the scores for autograd
            return scores.sum((1, 2, 3))
        return self._alphas(scores).gather(1, self.lens.unsqueeze(-1)).squeeze(-1)

    def _betas(self, scores: Tensor) -> Tensor:
        """``beta [batch_size, seq_len + 1]``: log-sum of all segmentations of tokens ``e..lens-1``
        (0 at ``e == lens``, :data:`LOG_ZERO` beyond)."""
        seq_len = self.max_len
        zero = scores.new_zeros(self.batch_size)
        impossible = scores.new_full((self.batch_size,), LOG_ZERO)
        betas = [torch.where(self.lens == seq_len, zero, impossible)]
        for start in range(seq_len - 1, -1, -1):
            hi = min(seq_len, start + self.max_width)
            nxt = torch.stack([betas[seq_len - e] for e in range(start + 1, hi + 1)], 1)  # [B, W]
            cand = scores[:, start, start:hi] + nxt.unsqueeze(-1)  # [B, W, C]
            value = torch.logsumexp(cand.flatten(1), -1)
            value = torch.where(self.lens == start, zero, torch.where(start < self.lens, value, impossible))
            betas.append(value)
        return torch.stack(betas[::-1], 1)

    def _inside_outside(self):
        (scores,) = self.potentials
        if self.max_len == 0:  # every sentence is empty: one (empty) segmentation, log Z = 0, no parts
            return scores.new_zeros(self.batch_size), (torch.zeros_like(scores),)
        # charts and marginal logits in float64: chart entries grow with the sentence (1e5 at scores of 1e4)
        # and a marginal is the difference of such sums, which float32 would leave off by 1e-2
        wide = scores.to(_CHART_DTYPE)
        alpha = self._alphas(wide)
        beta = self._betas(wide)
        log_z = alpha.gather(1, self.lens.unsqueeze(-1)).squeeze(-1)
        seq_len = self.max_len
        marg = exp_nonpositive((alpha[:, :seq_len].view(-1, seq_len, 1, 1) + wide + beta[:, 1:].view(-1, 1, seq_len, 1)
                                - log_z.view(-1, 1, 1, 1)).clamp_(max=0.0))
        return log_z.to(scores.dtype), (marg.to(scores.dtype),)

    def boundary_marginals(self) -> Tensor:
        """Joint marginals of adjacent segments (detached).

        Returns:
            ``[batch_size, seq_len - 1, 2, n_labels, 2, n_labels]``: entry ``[b, t, w, x, w2, y]`` is the
            probability that a segment labeled ``x`` ends at token ``t`` and a segment labeled ``y`` starts at
            token ``t + 1``, where ``w`` (``w2``) is 0 if that segment is a single token and 1 if it is longer.
        """
        with torch.no_grad():
            (scores,) = self.potentials
            dtype, scores = scores.dtype, scores.to(_CHART_DTYPE)  # as in _inside_outside
            seq_len = self.max_len
            if seq_len < 2:
                return scores.new_zeros(self.batch_size, max(seq_len - 1, 0), 2, self.n_labels, 2, self.n_labels,
                                        dtype=dtype)
            alpha, beta = self._alphas(scores), self._betas(scores)
            log_z = alpha.gather(1, self.lens.unsqueeze(-1))  # [B, 1]
            i = torch.arange(seq_len, device=self.device).view(-1, 1)
            j = torch.arange(seq_len, device=self.device).view(1, -1)
            longer = (i < j).view(1, seq_len, seq_len, 1)
            single = scores.diagonal(dim1=1, dim2=2).transpose(1, 2)  # [B, L, C]
            # segments ending at t: single token (alpha[t] + s[t, t]) or longer (start i < t)
            end_single = alpha[:, :seq_len].unsqueeze(-1) + single
            end_longer = torch.logsumexp((alpha[:, :seq_len].view(-1, seq_len, 1, 1) + scores)
                                         .masked_fill(~longer, LOG_ZERO), 1)  # [B, L(end), C]
            # segments starting at t: single token (s[t, t] + beta[t + 1]) or longer (end j > t)
            start_single = single + beta[:, 1:].unsqueeze(-1)
            start_longer = torch.logsumexp((scores + beta[:, 1:].view(-1, 1, seq_len, 1))
                                           .masked_fill(~longer, LOG_ZERO), 2)  # [B, L(start), C]
            ends = torch.stack([end_single, end_longer], 2)[:, :-1]  # [B, L - 1, 2, C]
            starts = torch.stack([start_single, start_longer], 2)[:, 1:]
            joint = ends.view(*ends.shape, 1, 1) + starts.view(*starts.shape[:2], 1, 1, *starts.shape[2:])
            joint = (joint - log_z.view(-1, 1, 1, 1, 1, 1)).exp()
            inside = torch.arange(seq_len - 1, device=self.device) < (self.lens - 1).unsqueeze(-1)
            return (joint * inside.view(*inside.shape, 1, 1, 1, 1)).to(dtype)

    # --- structures
    def parts(self, structure: Tensor):
        chart = structure
        seq_len = self.max_len
        if chart.shape != (self.batch_size, seq_len, seq_len):
            raise ValueError(f"a segment chart must have shape [batch_size, seq_len, seq_len] = "
                             f"{[self.batch_size, seq_len, seq_len]}, got {list(chart.shape)}")
        present = chart >= 0
        valid = self._valid_segments(self.lens, seq_len)
        bad = present & (~valid | (chart >= self.n_labels))
        if bool(bad.any()):
            b, i, j = (int(x) for x in bad.nonzero()[0])
            raise ValueError(f"sentence {b}: segment {i}..{j} with label {int(chart[b, i, j])} is invalid "
                             f"(length {int(self.lens[b])}, max_width {self.max_width}, {self.n_labels} labels)")
        # coverage[t] = number of segments covering token t, via start/end counts and a cumulative sum
        starts = present.sum(2)
        ends = present.sum(1)
        coverage = (starts - torch.cat([ends.new_zeros(self.batch_size, 1), ends[:, :-1]], 1)).cumsum(1)
        inside = torch.arange(seq_len, device=chart.device) < self.lens.unsqueeze(-1)
        wrong = inside & (coverage != 1)
        if bool(wrong.any()):
            b, t = (int(x) for x in wrong.nonzero()[0])
            raise ValueError(f"sentence {b}: token {t} is covered by {int(coverage[b, t])} segments, not exactly 1")
        one_hot = torch.nn.functional.one_hot(chart.clamp(min=0), self.n_labels).to(self.dtype)
        return (one_hot * present.unsqueeze(-1),)

    def _backtrack(self, pointers: list[Tensor], start_state: Tensor, ranks: int) -> Tensor:
        """Follow k-best back-pointers from boundary ``lens`` to 0 into segment charts ``[B, k, L, L]``.

        ``pointers[e - 1][b, r]`` is the flat index ``(i * n_labels + l) * ranks + r'`` of the r-th best
        analysis of tokens ``0..e-1``: last segment ``i..e-1`` labeled ``l``, preceded by rank ``r'``."""
        batch_size, k = start_state.shape
        seq_len, n_labels = self.max_len, self.n_labels
        chart = torch.full((batch_size, k, seq_len, seq_len), -1, dtype=torch.long, device=self.device)
        end = self.lens.unsqueeze(-1).expand(-1, k).clone()
        rank = start_state
        all_pointers = torch.stack(pointers, 1)  # [B, L, k]
        batch_index = torch.arange(batch_size, device=self.device).unsqueeze(-1).expand(-1, k)
        for _ in range(seq_len):
            active = end > 0
            if not bool(active.any()):
                break
            flat = all_pointers[batch_index, (end - 1).clamp(min=0), rank]  # [B, k]
            start = torch.div(flat, n_labels * ranks, rounding_mode="floor")
            label = torch.div(flat, ranks, rounding_mode="floor") % n_labels
            prev_rank = flat % ranks
            b_idx, k_idx = active.nonzero(as_tuple=True)
            chart[b_idx, k_idx, start[active], end[active] - 1] = label[active]
            end = torch.where(active, start, end)
            rank = torch.where(active, prev_rank, rank)
        return chart

    def _kbest(self, k: int) -> tuple[Tensor, Tensor]:
        (scores,) = self.potentials
        batch_size, seq_len, n_labels = self.batch_size, self.max_len, self.n_labels
        filler = 4 * LOG_ZERO
        first = scores.new_full((batch_size, k), filler)
        first[:, 0] = 0
        alphas, pointers = [first], []
        for end in range(1, seq_len + 1):
            lo = self._window(end)
            prev = torch.stack(alphas[lo:end], 1)  # [B, W, k]
            cand = prev.unsqueeze(2) + scores[:, lo:end, end - 1].unsqueeze(-1)  # [B, W, C, k]
            best, index = cand.flatten(1).topk(min(k, cand[0].numel() if batch_size else 0), -1)
            value = scores.new_full((batch_size, k), filler)
            value[:, :best.shape[1]] = best
            pointer = torch.zeros(batch_size, k, dtype=torch.long, device=self.device)
            pointer[:, :index.shape[1]] = index + lo * n_labels * k  # flat index over (i, l, r)
            alphas.append(value)
            pointers.append(pointer)
        final = torch.stack(alphas, 1).gather(1, self.lens.view(-1, 1, 1).expand(-1, 1, k)).squeeze(1)  # [B, k]
        if seq_len == 0:
            charts = torch.full((batch_size, k, 0, 0), -1, dtype=torch.long, device=self.device)
        else:
            charts = self._backtrack(pointers, torch.arange(k, device=self.device).expand(batch_size, k), k)
        missing = final <= LOG_ZERO / 2
        final = torch.where(missing, torch.full_like(final, LOG_ZERO), final)
        charts = torch.where(missing.view(batch_size, k, 1, 1), torch.full_like(charts, -1), charts)
        return final.t().contiguous(), charts.transpose(0, 1).contiguous()

    def _viterbi(self):
        scores, charts = self._kbest(1)
        return scores[0], charts[0]

    def _topk(self, k):
        return self._kbest(k)

    def _sample(self, n, generator):
        """Backward sampling of the last segment given the forward chart; ``[n, batch_size, L, L]``."""
        (scores,) = self.potentials
        batch_size, seq_len, n_labels = self.batch_size, self.max_len, self.n_labels
        chart = torch.full((n, batch_size, seq_len, seq_len), -1, dtype=torch.long, device=self.device)
        if seq_len == 0:
            return chart
        alpha = self._alphas(scores)[:, :seq_len]  # [B, L] indexed by segment start
        by_end = scores.transpose(1, 2)  # [B, j, i, C]
        end = self.lens.unsqueeze(0).expand(n, -1).clone()
        batch_index = torch.arange(batch_size, device=self.device).unsqueeze(0).expand(n, -1)
        for _ in range(seq_len):
            active = end > 0
            if not bool(active.any()):
                break
            logits = alpha.unsqueeze(0).unsqueeze(-1) + by_end[batch_index, (end - 1).clamp(min=0)]  # [n, B, L, C]
            logits = logits.flatten(2)
            probs = (logits - logits.max(-1, keepdim=True).values).exp()
            flat = torch.multinomial(probs.flatten(0, 1), 1, generator=generator).view(n, batch_size)
            start = torch.div(flat, n_labels, rounding_mode="floor")
            label = flat % n_labels
            s_idx, b_idx = active.nonzero(as_tuple=True)
            chart[s_idx, b_idx, start[active], end[active] - 1] = label[active]
            end = torch.where(active, start, end)
        return chart
