"""Export wrappers: the scoring part of every student as a module of plain tensors in and out.

The models return distributions and run a packed BiLSTM, neither of which an ONNX graph can hold.  These
wrappers reuse the model's own submodules and weights (nothing is copied or retrained) and compute exactly
its scores for a padded batch of any batch size and length:

* :class:`UnpackedBiLSTM` runs each direction of the model's ``nn.LSTM`` as a one-directional LSTM over the
  padded batch; the backward direction reads each sentence reversed within its own length (a gather with
  ``lens``), so neither direction sees padding before a sentence's last word.  The character CNN runs over
  every word slot (the model runs it over distinct words only: the same numbers per word).
* :class:`SubwordFeatures` runs the transformer over tokenizer windows and pools subwords into words by a
  weighted sum of gathered subwords (weight 1 for first-subword pooling, ``1 / n`` for mean pooling).
* :class:`TaggerScores`, :class:`BiaffineScores` and :class:`SeqLabelScores` put the model's head on top and
  return what decoding reads (emissions, arc scores and relation projections, label logits).

Everything the decoders need besides these scores (CRF transitions and constraints, the relation weight) is
written next to the graph by :mod:`structkd.export.onnx`.
"""

from __future__ import annotations

import torch
from torch import nn

from structkd.models.parsers import BiaffineParser, _with_one
from structkd.models.seqlabel_parser import SeqLabelingParser
from structkd.models.taggers import BiLSTMEncoder, BiLSTMTagger
from structkd.models.transformer import SubwordEncoder, TransformerTagger
from structkd.numerics import LOG_ZERO

Tensor = torch.Tensor


def _direction(lstm: nn.LSTM, layer: int, suffix: str) -> nn.LSTM:
    """A one-directional, one-layer LSTM sharing layer ``layer``'s ``suffix`` ('' or '_reverse') weights."""
    single = nn.LSTM(lstm.input_size if layer == 0 else 2 * lstm.hidden_size, lstm.hidden_size, 1,
                     batch_first=True, bias=lstm.bias)
    for name in ("weight_ih", "weight_hh") + (("bias_ih", "bias_hh") if lstm.bias else ()):
        setattr(single, f"{name}_l0", getattr(lstm, f"{name}_l{layer}{suffix}"))
    return single


def reversal_index(lens: Tensor, seq_len: int) -> Tensor:
    """``LongTensor [batch_size, seq_len]``: position ``t`` of sentence ``b`` reads ``lens[b] - 1 - t`` within the
    sentence and itself beyond it (an involution: applying it twice gives the identity)."""
    positions = torch.arange(seq_len, device=lens.device).unsqueeze(0)
    flipped = lens.clamp(min=1).unsqueeze(1) - 1 - positions
    return torch.where(flipped >= 0, flipped, positions)


class UnpackedBiLSTM(nn.Module):
    """:class:`BiLSTMEncoder` without packed sequences: ``(words [B, L], chars [B, L, W], lens [B])`` and, for
    an open vocabulary, ``oov [K, word_dim]`` to ``[B, L, 2 * hidden]`` (0 at padding), the same numbers as the
    packed encoder in eval mode."""

    def __init__(self, encoder: BiLSTMEncoder):
        super().__init__()
        self.encoder = encoder
        lstm = encoder.lstm
        self.forward_layers = nn.ModuleList(_direction(lstm, n, "") for n in range(lstm.num_layers))
        self.backward_layers = nn.ModuleList(_direction(lstm, n, "_reverse") for n in range(lstm.num_layers))

    def characters(self, chars: Tensor) -> Tensor:
        """``[B, L, W]`` character ids to ``[B, L, n_filters]``: the CNN of :class:`CharCNN` on every slot."""
        cnn = self.encoder.chars
        batch_size, seq_len, width = chars.shape
        flat = chars.reshape(-1, width)
        padding = (flat == 0).unsqueeze(1)
        pooled = cnn.conv(cnn.embed(flat).transpose(1, 2)).masked_fill(padding, LOG_ZERO).amax(-1)
        pooled = pooled.masked_fill(padding.all(-1), 0.0)
        return pooled.reshape(batch_size, seq_len, -1)

    def forward(self, words: Tensor, chars: Tensor, lens: Tensor, oov: Tensor | None = None) -> Tensor:
        x = torch.cat([self.encoder.word_vectors(words, oov), self.characters(chars)], -1)
        seq_len = words.shape[1]
        index = reversal_index(lens, seq_len).unsqueeze(-1)
        for forward_lstm, backward_lstm in zip(self.forward_layers, self.backward_layers):
            ahead, _ = forward_lstm(x)
            reversed_x = x.gather(1, index.expand(-1, -1, x.shape[-1]))
            behind, _ = backward_lstm(reversed_x)
            behind = behind.gather(1, index.expand(-1, -1, behind.shape[-1]))
            x = torch.cat([ahead, behind], -1)
        mask = torch.arange(seq_len, device=lens.device).unsqueeze(0) < lens.unsqueeze(1)
        return x * mask.unsqueeze(-1).to(x.dtype)


class SubwordFeatures(nn.Module):
    """A :class:`SubwordEncoder`'s word vectors from tokenizer windows.

    Inputs: ``input_ids, attention_mask [n_windows, window_len]``; ``sources [batch_size, n_words, n_pieces]``
    flat index (into the windows' outputs flattened to ``[n_windows * window_len, hidden]``) of each pooled
    subword of each word; ``weights [batch_size, n_words, n_pieces]`` their pooling weights (0 at padding).
    Output ``[batch_size, n_words, hidden]``, 0 at padding.  Pooling is a gather and a weighted sum (no scatter:
    ONNX scatters with repeated indices overwrite rather than add).
    """

    def __init__(self, encoder: SubwordEncoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: Tensor, attention_mask: Tensor, sources: Tensor, weights: Tensor) -> Tensor:
        hidden = self.encoder.model(input_ids=input_ids, attention_mask=attention_mask,
                                    return_dict=True).last_hidden_state
        flat = hidden.reshape(-1, hidden.shape[-1])
        batch_size, n_words, n_pieces = sources.shape
        pieces = flat.index_select(0, sources.reshape(-1)).view(batch_size, n_words, n_pieces, -1)
        return (pieces * weights.unsqueeze(-1).to(flat.dtype)).sum(2)


def _features(encoder: nn.Module) -> nn.Module:
    return UnpackedBiLSTM(encoder) if isinstance(encoder, BiLSTMEncoder) else SubwordFeatures(encoder)


def _lens(inputs: tuple[Tensor, ...], bilstm: bool) -> Tensor:
    """Words per sentence ``[batch_size]`` from the graph inputs (``lens``, or the words with pooling weights)."""
    return inputs[2] if bilstm else (inputs[-1].sum(-1) > 0).sum(-1)


class TaggerScores(nn.Module):
    """Emissions (CRF) or logits (MaxEnt) ``[batch_size, n_words, n_tags]`` of a BiLSTM or transformer tagger."""

    def __init__(self, tagger: BiLSTMTagger | TransformerTagger):
        super().__init__()
        if isinstance(tagger, TransformerTagger) and tagger.head_kind == "span":
            raise ValueError("span-head taggers are not exported (their semi-Markov decoder has no runtime "
                             "port); export a CRF or MaxEnt student")
        self.features = _features(tagger.encoder)
        layer = tagger.head.emissions if hasattr(tagger.head, "emissions") else tagger.head.logits
        self.scorer = layer

    def forward(self, *inputs: Tensor) -> Tensor:
        return self.scorer(self.features(*inputs))


class BiaffineScores(nn.Module):
    """A first-order biaffine parser's scores.

    Returns:
        ``arcs [batch_size, n_words + 1, n_words + 1]`` (``[b, d, h]``, unmasked), and the relation scorer's
        projections ``rel_dep, rel_head [batch_size, n_words + 1, rel_hidden + 1]`` (with their constant
        feature), so that ``logits[b, d, r] = rel_dep[b, d] @ W[r] @ rel_head[b, heads[b, d]]``.
    """

    def __init__(self, parser: BiaffineParser):
        super().__init__()
        if parser.tree == "2o":
            raise ValueError("second-order parsers are not exported (second-order Eisner has no runtime port); "
                             "export a first-order biaffine or sequence-labeling student")
        self.bilstm = not parser.encoder.is_transformer
        encoder = parser.encoder.bilstm if self.bilstm else parser.encoder.transformer
        self.features = _features(encoder)
        self.parser = parser

    def forward(self, *inputs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        words = self.features(*inputs)
        root = self.parser.root.to(words.dtype).expand(words.shape[0], 1, -1)
        x = torch.cat([root, words], 1)
        rel = self.parser.rel
        return self.parser.arc(x), _with_one(rel.dep(x)), _with_one(rel.head(x))


class SeqLabelScores(nn.Module):
    """A sequence-labeling parser's label logits ``[batch_size, n_words, n_labels]``, labels whose head falls
    outside the sentence at ``LOG_ZERO`` (:meth:`SeqLabelingParser.label_mask`)."""

    def __init__(self, parser: SeqLabelingParser):
        super().__init__()
        self.bilstm = not parser.encoder.is_transformer
        encoder = parser.encoder.bilstm if self.bilstm else parser.encoder.transformer
        self.features = _features(encoder)
        self.parser = parser

    def forward(self, *inputs: Tensor) -> Tensor:
        logits = self.parser.scorer(self.features(*inputs))
        lens = _lens(inputs, self.bilstm)
        return logits.masked_fill(~self.parser.label_mask(lens, logits.shape[1]), LOG_ZERO)


__all__ = ["BiaffineScores", "SeqLabelScores", "SubwordFeatures", "TaggerScores", "UnpackedBiLSTM",
           "reversal_index"]
