"""BiLSTM sequence labelers with a CRF or a MaxEnt head: the small students of NER distillation.

A tagger maps a batch (``TaggerVocab.encode``) to a structured distribution
(:class:`~structkd.structs.chain.LinearChainCRF` or :class:`~structkd.structs.chain.MaxEnt`), so its gold
loss is ``-dist.log_prob(tags)``, its prediction ``dist.argmax`` and its KD loss
:func:`structkd.kd.structural_kd_loss` against any teacher distribution.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from structkd.numerics import LOG_ZERO
from structkd.schemes import allowed_transitions
from structkd.structs.base import StructuredDistribution, length_mask
from structkd.structs.chain import LinearChainCRF, MaxEnt

if TYPE_CHECKING:  # annotations only: transformer.py imports this module
    from structkd.models.transformer import EncoderOutput
    from structkd.train.batching import BatchCost

Tensor = torch.Tensor


class CharCNN(nn.Module):
    """Character embeddings, one convolution and max-pooling: ``[B, L, W]`` ids to ``[B, L, n_filters]``."""

    def __init__(self, n_chars: int, char_dim: int = 30, n_filters: int = 50, kernel: int = 3):
        super().__init__()
        self.embed = nn.Embedding(n_chars, char_dim, padding_idx=0)
        self.conv = nn.Conv1d(char_dim, n_filters, kernel, padding=kernel // 2)

    def forward(self, chars: Tensor) -> Tensor:
        batch_size, seq_len, width = chars.shape
        # each distinct word of the batch once: frequent words and padding repeat (about 2.4 rows per distinct
        # one in a batch of UD English sentences)
        distinct, index = torch.unique(chars.view(-1, width), dim=0, return_inverse=True)
        x = self.embed(distinct).transpose(1, 2)  # [n_distinct, char_dim, W]
        padding = (distinct == 0).unsqueeze(1)
        pooled = self.conv(x).masked_fill(padding, LOG_ZERO).max(-1).values  # max over real characters
        empty = padding.all(-1)  # padding words: no characters at all
        # index_select, not pooled[index]: the backward of advanced indexing sums the gradients of repeated words
        # in an order that varies with thread timing on CPU (runs with one seed then differ); index_select's
        # does not
        return pooled.masked_fill(empty, 0.0).index_select(0, index.flatten()).view(batch_size, seq_len, -1)


class BiLSTMEncoder(nn.Module):
    """Word embeddings plus a character CNN, then a bidirectional LSTM: ``[B, L, 2 * hidden]``.

    Args:
        n_words, n_chars: vocabulary sizes.
        word_dim: word embedding width (the teacher's input embeddings can be copied in with
            :meth:`load_word_embeddings`).
        hidden: LSTM width per direction.
    """

    def __init__(self, n_words: int, n_chars: int, word_dim: int = 100, char_dim: int = 30, char_filters: int = 50,
                 hidden: int = 200, layers: int = 1, dropout: float = 0.3):
        super().__init__()
        self.words = nn.Embedding(n_words, word_dim, padding_idx=0)
        self.chars = CharCNN(n_chars, char_dim, char_filters)
        self.lstm = nn.LSTM(word_dim + char_filters, hidden, layers, batch_first=True, bidirectional=True,
                            dropout=dropout if layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.output_dim = 2 * hidden

    def load_word_embeddings(self, vectors: Tensor) -> None:
        """Initialize word embeddings (``[n_words, word_dim]``, e.g. a teacher's input embeddings)."""
        if vectors.shape != self.words.weight.shape:
            raise ValueError(f"embeddings {list(vectors.shape)} do not match {list(self.words.weight.shape)}")
        with torch.no_grad():
            self.words.weight.copy_(vectors)

    def word_vectors(self, words: Tensor, oov: Tensor | None = None) -> Tensor:
        """``[B, L, word_dim]``: the embedding of ids ``words [B, L]``; with ``oov [K, word_dim]`` (an open
        vocabulary's batch, :mod:`structkd.runtime.lexicon`) an id ``n_words + k`` reads row ``k`` of it."""
        if oov is None:
            return self.words(words)
        n_words = self.words.num_embeddings
        known = words < n_words
        vectors = self.words(words.masked_fill(~known, 1))
        extra = oov.to(vectors.dtype)[(words - n_words).clamp(min=0)]
        return torch.where(known.unsqueeze(-1), vectors, extra)

    def embed(self, words: Tensor, chars: Tensor, oov: Tensor | None = None) -> Tensor:
        """Input embeddings ``[B, L, word_dim + char_filters]`` (word embedding and character CNN) of ids
        ``words [B, L]`` and ``chars [B, L, W]`` (``oov``: :meth:`word_vectors`): what MixKD mixes
        (:func:`structkd.kd.mix_embeddings`)."""
        return torch.cat([self.word_vectors(words, oov), self.chars(chars)], -1)

    def contextualize(self, x: Tensor, lens: Tensor) -> Tensor:
        """The BiLSTM over input embeddings ``x [B, L, input_dim]``: ``[B, L, 2 * hidden]`` (dropout on both
        sides)."""
        packed = nn.utils.rnn.pack_padded_sequence(self.dropout(x), lens.clamp(min=1).cpu(), batch_first=True,
                                                   enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return self.dropout(out)

    def forward(self, words: Tensor, chars: Tensor, lens: Tensor, oov: Tensor | None = None) -> Tensor:
        return self.contextualize(self.embed(words, chars, oov), lens)


class CRFHead(nn.Module):
    """Emission scores plus transition, start and end scores: a :class:`LinearChainCRF`.

    Args:
        in_dim: feature width.
        tags: tag names; with ``scheme`` the CRF forbids invalid transitions (BIO/BIOES validity).
    """

    batch_cost = None  # memory grows with the padded batch: batches are never split

    def __init__(self, in_dim: int, tags: list[str], scheme: str | None = None):
        super().__init__()
        n_tags = len(tags)
        self.emissions = nn.Linear(in_dim, n_tags)
        self.transitions = nn.Parameter(torch.zeros(n_tags, n_tags))
        self.start = nn.Parameter(torch.zeros(n_tags))
        self.end = nn.Parameter(torch.zeros(n_tags))
        masks = allowed_transitions(tags, scheme) if scheme else (None, None, None)
        for name, mask in zip(("allowed", "allowed_start", "allowed_end"), masks):
            self.register_buffer(name, mask, persistent=False)

    def forward(self, features: Tensor, lens: Tensor) -> LinearChainCRF:
        return LinearChainCRF(self.emissions(features), self.transitions, lens, self.start, self.end,
                              self.allowed, self.allowed_start, self.allowed_end)


class MaxEntHead(nn.Module):
    """Per-token softmax over tags: a :class:`MaxEnt` distribution."""

    batch_cost = None  # memory grows with the padded batch: batches are never split

    def __init__(self, in_dim: int, tags: list[str]):
        super().__init__()
        self.logits = nn.Linear(in_dim, len(tags))

    def forward(self, features: Tensor, lens: Tensor) -> MaxEnt:
        return MaxEnt(self.logits(features), lens)


class BiLSTMTagger(nn.Module):
    """A BiLSTM-CRF or BiLSTM-MaxEnt tagger returning a structured distribution per batch.

    Args:
        n_words, n_chars: vocabulary sizes.
        tags: tag names.
        head: ``"crf"`` or ``"maxent"``.
        scheme: tag scheme for CRF constraints (``None`` for an unconstrained CRF).
        encoder_options: passed to :class:`BiLSTMEncoder`.
    """

    def __init__(self, n_words: int, n_chars: int, tags: list[str], head: str = "crf", scheme: str | None = None,
                 **encoder_options):
        super().__init__()
        # constructor arguments (JSON), as saved by structkd.models.serialization.save_pretrained
        self.config = {"n_words": n_words, "n_chars": n_chars, "tags": list(tags), "head": head, "scheme": scheme,
                       **encoder_options}
        self.encoder = BiLSTMEncoder(n_words, n_chars, **encoder_options)
        if head == "crf":
            self.head = CRFHead(self.encoder.output_dim, tags, scheme)
        elif head == "maxent":
            self.head = MaxEntHead(self.encoder.output_dim, tags)
        else:
            raise ValueError(f"head must be 'crf' or 'maxent', got {head!r}")

        self.vocab = None  # the TaggerVocab that reads sentences (set by NerModel and load_pretrained)

    def forward(self, words: Tensor, chars: Tensor, lens: Tensor, oov: Tensor | None = None,
                **_) -> StructuredDistribution:
        return self.head(self.encoder(words, chars, lens, oov), lens)

    # the interface every tagger shares (TransformerTagger, HFTokenClassifier): read, tags, head_kind,
    # gold_loss, decode
    @property
    def tags(self) -> list[str]:
        return list(self.config["tags"])

    @property
    def head_kind(self) -> str:
        return self.config["head"]

    @property
    def batch_cost(self) -> BatchCost | None:
        """Its head's batch cost (``None``: a CRF's or softmax's memory grows with the padded batch)."""
        return self.head.batch_cost

    def read(self, sentences: Sequence) -> StructuredDistribution:
        """The distribution of sentences (objects with ``tokens``), through the tagger's vocabulary."""
        return self(**self._inputs(sentences))

    def _inputs(self, sentences: Sequence) -> dict[str, Tensor]:
        if self.vocab is None:
            raise ValueError("a BiLSTM tagger reads sentences through its vocabulary: set tagger.vocab")
        return self.vocab.encode(sentences, device=next(self.parameters()).device, gold=False)

    def encode_states(self, sentences: Sequence, attentions: bool = False
                      ) -> tuple[StructuredDistribution, EncoderOutput]:
        """``(distribution, EncoderOutput)``: the BiLSTM's output is its one hidden state (``hidden_states =
        (features,)``, ``[B, L, 2 * hidden]``) and it has no attentions (what hidden-state matching reads)."""
        from structkd.models.transformer import EncoderOutput  # transformer.py imports this module

        inputs = self._inputs(sentences)
        features = self.encoder(inputs["words"], inputs["chars"], inputs["lens"], inputs.get("oov"))
        mask = length_mask(inputs["lens"], features.shape[1]).long()
        return self.head(features, inputs["lens"]), EncoderOutput(features, inputs["lens"], (features,), None, mask)

    def forward_mixed(self, sentences: Sequence, perm: Tensor, lam: Tensor) -> StructuredDistribution:
        """The distribution on mixed input embeddings (:func:`structkd.kd.mix_embeddings` of the word and
        character embeddings): sentence ``b`` with ``perm[b]`` at weight ``lam[b]``, over
        ``max(len_b, len_perm[b])`` words."""
        from structkd.kd.mixup import mix_embeddings

        inputs = self._inputs(sentences)
        lens = inputs["lens"]
        embedded = self.encoder.embed(inputs["words"], inputs["chars"], inputs.get("oov"))
        x, mixed_lens = mix_embeddings(embedded, lens, lam.to(lens.device), perm.to(lens.device))
        return self.head(self.encoder.contextualize(x, mixed_lens), mixed_lens)

    @staticmethod
    def gold_loss(dist: StructuredDistribution, tags: Tensor) -> Tensor:
        """Per-sentence negative log-likelihood of the gold tags ``[B, L]`` (-1 at padding)."""
        return -dist.log_prob(torch.where(length_mask(dist.lens, dist.max_len), tags, torch.full_like(tags, -1)))

    def decode(self, dist: StructuredDistribution) -> list[list[str]]:
        """The most likely tag sequence of each sentence."""
        names = self.tags
        return [[names[t] for t in row[:n]] for row, n in zip(dist.argmax.tolist(), dist.lens.tolist())]
