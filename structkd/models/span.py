"""Span-based NER as dependency parsing (Yu et al., 2020): a biaffine span scorer over a semi-Markov CRF.

:class:`SpanHead` scores every span ``i..j`` of a sentence for every span label with a biaffine product of a
start and an end representation, and returns a :class:`~structkd.structs.semimarkov.SemiMarkovCRF` over
labeled segmentations: entity labels on spans up to ``max_width`` tokens, the outside label on single tokens
only.  Decoding flat entities is the CRF's argmax; its segment chart converts back to tags with
:func:`chart_to_tags`, and gold tags convert to a gold chart with :func:`tags_to_chart`.

Span labels are the outside label followed by the entity types (:func:`span_labels_from_tags`), the
inventory that :func:`structkd.kd.structural_kd_loss` expects for a span teacher and a tag student.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import nn

from structkd.numerics import LOG_ZERO, to_compute
from structkd.schemes import check_scheme, entity_types, spans, tags_from_spans
from structkd.structs.semimarkov import SemiMarkovCRF, chart_to_segments, segments_to_chart
from structkd.train.batching import BatchCost, span_cost

Tensor = torch.Tensor


def span_labels_from_tags(tags: Sequence[str], outside_label: str = "O") -> list[str]:
    """The span labels of a tag inventory: ``["O", "PER", "LOC", ...]`` from ``["O", "B-PER", "I-PER", ...]``."""
    return [outside_label] + entity_types([t for t in tags if t != "O"])


def tags_to_chart(tag_sequences: Sequence[Sequence[str]], scheme: str, span_labels: Sequence[str],
                  seq_len: int | None = None, outside_label: str = "O",
                  device: torch.device | str | None = None) -> Tensor:
    """Gold segment chart of tagged sentences: each entity is one segment, each other token a single-token
    segment with the outside label.

    Args:
        tag_sequences: one valid tag sequence per sentence (``scheme`` BIO, IOB1 or BIOES).
        span_labels: the span label inventory (the outside label and the entity types).
        seq_len: chart width (default: the longest sentence).

    Returns:
        ``LongTensor [batch_size, seq_len, seq_len]``: the label index of segment ``i..j``, -1 elsewhere.
    """
    index = {label: n for n, label in enumerate(span_labels)}
    if outside_label not in index:
        raise ValueError(f"the outside label {outside_label!r} is not a span label {list(span_labels)}")
    seq_len = max((len(t) for t in tag_sequences), default=0) if seq_len is None else seq_len
    segments = []
    for tags in tag_sequences:
        entities = spans(tags, scheme)
        inside = set()
        sentence = []
        for start, end, kind in entities:
            if kind not in index:
                raise ValueError(f"entity type {kind!r} is not a span label {list(span_labels)}")
            sentence.append((start, end, index[kind]))
            inside.update(range(start, end + 1))
        sentence += [(t, t, index[outside_label]) for t in range(len(tags)) if t not in inside]
        segments.append(sentence)
    return segments_to_chart(segments, seq_len, device=device)


def chart_to_tags(chart: Tensor, lens: Tensor | Sequence[int], span_labels: Sequence[str], scheme: str,
                  outside_label: str = "O") -> list[list[str]]:
    """Tag sequences (``scheme``) of segment charts ``[batch_size, seq_len, seq_len]`` (e.g. a
    :class:`SemiMarkovCRF` argmax): segments with an entity label become entities, the rest is ``O``."""
    scheme = check_scheme(scheme)
    lens = lens.tolist() if isinstance(lens, Tensor) else list(lens)
    out = []
    for n, segments in enumerate(chart_to_segments(chart)):
        entities = [(i, j, span_labels[label]) for i, j, label in segments if span_labels[label] != outside_label]
        out.append(tags_from_spans(entities, int(lens[n]), scheme))
    return out


class SpanHead(nn.Module):
    """Biaffine span scorer (Yu et al., 2020) producing a :class:`SemiMarkovCRF` over labeled segmentations.

    ``score(i, j, c) = [h_s(i); 1]^T U_c [h_e(j); 1]`` with feed-forward start and end projections ``h_s``,
    ``h_e`` of the token features (the appended 1 gives the linear and bias terms of the biaffine form).

    Args:
        in_dim: token feature width.
        span_labels: label names, including ``outside_label`` (see :func:`span_labels_from_tags`).
        max_width: the longest entity, in tokens.
        outside_label: the label of non-entity tokens, allowed on single-token segments only.
        hidden: width of the start and end projections.
        dropout: dropout after the projections.
    """

    def __init__(self, in_dim: int, span_labels: Sequence[str], max_width: int, outside_label: str = "O",
                 hidden: int = 150, dropout: float = 0.0):
        super().__init__()
        self.span_labels = list(span_labels)
        if outside_label not in self.span_labels:
            raise ValueError(f"the outside label {outside_label!r} is not among the span labels {self.span_labels}")
        if max_width < 1:
            raise ValueError(f"max_width must be at least 1, got {max_width}")
        self.outside_label = outside_label
        self.outside = self.span_labels.index(outside_label)
        self.max_width = max_width
        self.start = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.end = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.biaffine = nn.Parameter(torch.randn(len(self.span_labels), hidden + 1, hidden + 1) / (hidden + 1))

    @property
    def batch_cost(self) -> BatchCost:
        """Its scores hold ``L ** 2 * n_labels`` cells per sentence of ``L`` words (:func:`span_cost`): batches of
        long sentences are computed in pieces (``training.max_batch_cost``)."""
        return functools.partial(span_cost, n_labels=len(self.span_labels))

    def scores(self, features: Tensor) -> Tensor:
        """Span scores ``[batch_size, seq_len, seq_len, n_labels]`` of features ``[batch_size, seq_len, in_dim]``,
        with the outside label at :data:`~structkd.numerics.LOG_ZERO` on segments longer than one token.  Half
        precision scores (under autocast) are returned in float32, which can hold ``LOG_ZERO``."""
        ones = features.new_ones(*features.shape[:2], 1)
        starts = torch.cat([self.start(features), ones], -1)  # [B, L, h + 1]
        ends = torch.cat([self.end(features), ones], -1)
        scores = torch.einsum("bix,cxy,bjy->bijc", starts, self.biaffine, ends)  # [B, L, L, C]
        seq_len = features.shape[1]
        longer = ~torch.eye(seq_len, dtype=torch.bool, device=features.device)
        is_outside = torch.arange(len(self.span_labels), device=features.device) == self.outside
        return to_compute(scores).masked_fill(longer.unsqueeze(-1) & is_outside, LOG_ZERO)

    def forward(self, features: Tensor, lens: Tensor) -> SemiMarkovCRF:
        """``features [batch_size, seq_len, in_dim]``, ``lens LongTensor [batch_size]`` -> segmentation CRF."""
        return SemiMarkovCRF(self.scores(features), lens, self.max_width)
