"""Transformer teachers and students for NER distillation: word-level subword encoders and taggers.

* :class:`SubwordEncoder` runs a ``transformers`` encoder over pre-tokenized sentences (lists of words) and
  pools its subword vectors into one vector per word, ``[batch_size, n_words, hidden]``.  Sentences longer
  than the encoder's limit are read in overlapping windows, never truncated.
* :class:`TransformerTagger` puts a CRF, MaxEnt or span (semi-Markov) head on it and returns a structured
  distribution, so ``-dist.log_prob(gold)`` is its gold loss and :func:`structkd.kd.structural_kd_loss` its
  KD loss, exactly as for :class:`~structkd.models.taggers.BiLSTMTagger`.
* :func:`shrink_encoder` and :func:`student_from_teacher` build a shallower transformer from a teacher by
  keeping every k-th layer (DistilBERT-style initialization).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from torch import nn

from structkd.models.span import SpanHead, chart_to_tags, span_labels_from_tags, tags_to_chart
from structkd.models.taggers import CRFHead, MaxEntHead
from structkd.runtime.inputs import window_layout  # shared with the torch-free runtime of exported models
from structkd.schemes import check_scheme
from structkd.structs.base import StructuredDistribution, length_mask
from structkd.train.batching import BatchCost

Tensor = torch.Tensor
Sentences = Sequence[Sequence[str]]
HEADS = ("crf", "maxent", "span")


# ------------------------------------------------------------------------------------------- windows
@dataclass
class SubwordBatch:
    """A tokenized batch: encoder windows plus the indices that pool their outputs into words.

    Flat indices point into the encoder output flattened to ``[n_windows * window_len, hidden]``.

    Attributes:
        input_ids, attention_mask: ``LongTensor [n_windows, window_len]`` encoder inputs (one window per
            sentence unless a sentence is longer than the encoder's limit).
        first: ``LongTensor [batch_size, n_words]`` flat index of each word's first subword (0 at padding).
        sources: ``LongTensor [n_subwords]`` flat index of every subword of every word.
        owners: ``LongTensor [n_subwords]`` the word of each subword, as ``b * n_words + i``.
        lens: ``LongTensor [batch_size]`` words per sentence.
        window_sentence: ``LongTensor [n_windows]`` the sentence of each window.
    """

    input_ids: Tensor
    attention_mask: Tensor
    first: Tensor
    sources: Tensor
    owners: Tensor
    lens: Tensor
    window_sentence: Tensor

    def to(self, device: torch.device | str) -> SubwordBatch:
        return SubwordBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


@dataclass
class EncoderOutput:
    """Word-level encoder output.

    Attributes:
        features: ``[batch_size, n_words, hidden]`` pooled word vectors (0 at padding).
        lens: ``LongTensor [batch_size]``.
        hidden_states: when asked, the word-pooled output of the embeddings and of each layer, a tuple of
            ``num_layers + 1`` tensors ``[batch_size, n_words, hidden]`` (for
            :class:`structkd.kd.HiddenStateKD` with mask ``word_mask``).
        attentions: when asked, the raw subword attentions of each layer, ``[n_windows, n_heads, window_len,
            window_len]`` (for :func:`structkd.kd.attention_kd_loss` with mask ``attention_mask`` between
            encoders that share a tokenizer and window length).
        attention_mask: ``LongTensor [n_windows, window_len]``.
    """

    features: Tensor
    lens: Tensor
    hidden_states: tuple[Tensor, ...] | None
    attentions: tuple[Tensor, ...] | None
    attention_mask: Tensor

    @property
    def word_mask(self) -> Tensor:
        """``BoolTensor [batch_size, n_words]``: real words."""
        return length_mask(self.lens, self.features.shape[1])


# ------------------------------------------------------------------------------------------- encoder
class SubwordEncoder(nn.Module):
    """A ``transformers`` encoder reading pre-tokenized sentences, one output vector per word.

    Args:
        model_name_or_path: a local directory or hub name for ``AutoModel``/``AutoTokenizer`` (set
            ``HF_HUB_OFFLINE=1`` to forbid downloads), or a ``transformers`` model instance (then pass
            ``tokenizer``).
        pooling: ``"first"`` (the word's first subword) or ``"mean"`` (the mean of its subwords).
        max_length: subwords per encoder window including special tokens (default: the model's limit, the
            smaller of the tokenizer's ``model_max_length`` and the position embeddings).
        stride: subwords between the starts of consecutive windows of a long sentence (default: half a
            window, so consecutive windows overlap by half).
        tokenizer: a fast tokenizer (default: loaded from ``model_name_or_path``).
        pretrained: load the weights (``False``: build the architecture from the saved config only, e.g. to
            load weights from elsewhere).
        output_hidden_states, output_attentions: default for :meth:`forward`; attentions need eager attention,
            which is switched on when asked.

    Words are tokenized with ``is_split_into_words=True``; a word the tokenizer maps to no subword (an
    empty string, a control or zero-width character) is read as the unknown token.
    """

    def __init__(self, model_name_or_path: str | Path | nn.Module, pooling: str = "first",
                 max_length: int | None = None, stride: int | None = None, tokenizer=None, pretrained: bool = True,
                 output_hidden_states: bool = False, output_attentions: bool = False):
        super().__init__()
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        if pooling not in ("first", "mean"):
            raise ValueError(f"pooling must be 'first' or 'mean', got {pooling!r}")
        if isinstance(model_name_or_path, nn.Module):
            if tokenizer is None:
                raise ValueError("pass the tokenizer together with a model instance")
            self.model = model_name_or_path
            self.name_or_path = str(getattr(self.model.config, "_name_or_path", "") or "")
        else:
            self.name_or_path = str(model_name_or_path)
            if pretrained:
                self.model = AutoModel.from_pretrained(self.name_or_path)
            else:
                self.model = AutoModel.from_config(AutoConfig.from_pretrained(self.name_or_path))
        self.tokenizer = tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(self.name_or_path)
        self.pooling = pooling
        self.output_hidden_states = output_hidden_states
        self.output_attentions = output_attentions
        if output_attentions:
            self._eager_attention()

        probe = self.tokenizer(["a"], is_split_into_words=True, add_special_tokens=True)
        words = probe.word_ids()
        inner = [n for n, w in enumerate(words) if w is not None]
        self._prefix = probe["input_ids"][:inner[0]]
        self._suffix = probe["input_ids"][inner[-1] + 1:]
        unk = self.tokenizer.unk_token_id
        self._unk = [unk] if unk is not None else self._pieces([["?"]])[0][0]
        self._pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

        self.max_length = self._model_limit() if max_length is None else int(max_length)
        self.window = self.max_length - len(self._prefix) - len(self._suffix)
        if self.window < 1:
            raise ValueError(f"max_length {self.max_length} leaves no room for words next to the "
                             f"{len(self._prefix) + len(self._suffix)} special tokens")
        self.stride = max(1, self.window // 2) if stride is None else int(stride)
        if not 1 <= self.stride <= self.window:
            raise ValueError(f"stride must be between 1 and the window of {self.window} subwords, got {self.stride}")

    def _model_limit(self) -> int:
        config = self.model.config
        limits = []
        positions = getattr(config, "max_position_embeddings", None)
        if positions:
            # RoBERTa-style embeddings reserve the first positions for padding
            offset = 2 if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert") else 0
            limits.append(positions - offset)
        tokenizer_limit = getattr(self.tokenizer, "model_max_length", None)
        if tokenizer_limit and tokenizer_limit < 1_000_000:
            limits.append(tokenizer_limit)
        if not limits:
            raise ValueError("cannot tell the encoder's length limit: pass max_length")
        return min(limits)

    def _eager_attention(self) -> None:
        if getattr(self.model.config, "_attn_implementation", "eager") != "eager":
            self.model.set_attn_implementation("eager")

    # -------------------------------------------------------------------- properties
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    @property
    def num_layers(self) -> int:
        return self.model.config.num_hidden_layers

    @property
    def input_embeddings(self) -> Tensor:
        """The subword input embedding matrix ``[vocab_size, hidden]`` (a parameter of the encoder)."""
        return self.model.get_input_embeddings().weight

    @property
    def config(self) -> dict:
        """Constructor options (JSON), as saved by :func:`structkd.models.serialization.save_pretrained`."""
        return {"model_name_or_path": self.name_or_path, "pooling": self.pooling, "max_length": self.max_length,
                "stride": self.stride, "output_hidden_states": self.output_hidden_states,
                "output_attentions": self.output_attentions}

    def save_files(self, directory: str | Path) -> None:
        """Write the encoder's ``transformers`` config and tokenizer files (not the weights) to ``directory``,
        enough to rebuild it offline with ``SubwordEncoder(directory, pretrained=False)``."""
        Path(directory).mkdir(parents=True, exist_ok=True)
        self.model.config.save_pretrained(str(directory))
        self.tokenizer.save_pretrained(str(directory))

    # -------------------------------------------------------------------- tokenization
    def _pieces(self, sentences: Sentences) -> list[list[list[int]]]:
        """Subword ids of each word of each sentence (the unknown token for words with none)."""
        out: list[list[list[int]]] = [[[] for _ in s] for s in sentences]
        nonempty = [n for n, s in enumerate(sentences) if len(s)]
        if nonempty:
            if getattr(self.tokenizer, "is_fast", False):
                encoded = self.tokenizer([list(sentences[n]) for n in nonempty], is_split_into_words=True,
                                         add_special_tokens=False, verbose=False)
                for k, n in enumerate(nonempty):
                    for piece, word in zip(encoded["input_ids"][k], encoded.word_ids(k)):
                        if word is not None:
                            out[n][word].append(piece)
            else:
                for n in nonempty:
                    out[n] = [self.tokenizer(w, add_special_tokens=False)["input_ids"] for w in sentences[n]]
        unk = getattr(self, "_unk", None)
        return [[p if p or unk is None else list(unk) for p in s] for s in out]

    def tokenize(self, sentences: Sentences) -> SubwordBatch:
        """Tokenize a batch of sentences (lists of words, or :class:`structkd.data.Sentence`) into encoder
        windows (CPU tensors)."""
        if isinstance(sentences, str) or any(isinstance(s, str) for s in sentences):
            raise TypeError("sentences must be a batch of word lists, e.g. [['John', 'lives', 'here']]")
        sentences = [list(getattr(s, "tokens", s)) for s in sentences]
        return self._layout(self._pieces(sentences))

    def _layout(self, pieces: list[list[list[int]]]) -> SubwordBatch:
        """The encoder windows of sentences given as the subword ids of each word (at least one per word)."""
        windows: list[list[int]] = []
        window_sentence: list[int] = []
        layouts = []  # per sentence: first window index, window starts, source window of each subword
        for b, words in enumerate(pieces):
            starts, source = window_layout([len(p) for p in words], self.window, self.stride)
            flat = [piece for word in words for piece in word]
            layouts.append((len(windows), starts, source))
            for start in starts:
                windows.append(self._prefix + flat[start:start + self.window] + self._suffix)
                window_sentence.append(b)
        batch_size = len(pieces)
        n_words = max((len(s) for s in pieces), default=0)
        width = max(len(w) for w in windows) if windows else 0
        input_ids = torch.full((len(windows), width), self._pad, dtype=torch.long)
        attention_mask = torch.zeros(len(windows), width, dtype=torch.long)
        for n, window in enumerate(windows):
            input_ids[n, :len(window)] = torch.tensor(window, dtype=torch.long)
            attention_mask[n, :len(window)] = 1
        first = torch.zeros(batch_size, n_words, dtype=torch.long)
        sources: list[int] = []
        owners: list[int] = []
        offset = len(self._prefix)
        for b, (base, starts, source) in enumerate(layouts):
            position = 0
            for i, word in enumerate(pieces[b]):
                for k in range(len(word)):
                    w = source[position + k]
                    sources.append((base + w) * width + offset + position + k - starts[w])
                    owners.append(b * n_words + i)
                first[b, i] = sources[-len(word)]
                position += len(word)
        return SubwordBatch(input_ids, attention_mask, first, torch.tensor(sources, dtype=torch.long),
                            torch.tensor(owners, dtype=torch.long), torch.tensor([len(s) for s in pieces]),
                            torch.tensor(window_sentence, dtype=torch.long))

    def embed_words(self, words: Sequence[str]) -> Tensor:
        """Mean subword input embedding of each word, ``[n_words, hidden]`` (detached), e.g. to initialize a
        BiLSTM student's word embeddings from the teacher's vocabulary
        (:meth:`structkd.models.taggers.BiLSTMEncoder.load_word_embeddings`)."""
        table = self.input_embeddings.detach()
        vectors = [table[torch.tensor(p, device=table.device)].mean(0) for p in self._pieces([list(words)])[0]]
        return torch.stack(vectors) if vectors else table.new_zeros(0, table.shape[1])

    def mixed(self, sentences: Sentences, perm: Tensor, lam: Tensor) -> EncoderOutput:
        """The encoder on mixed input embeddings (MixKD): sentence ``b`` mixed with sentence ``perm[b]``.

        Word ``i`` of the mixed sentence has ``max(|a_i|, |c_i|)`` subwords, where ``a_i`` and ``c_i`` are the
        subwords of word ``i`` of the two sentences; subword ``j`` is ``lam[b] * E[a_ij] + (1 - lam[b]) *
        E[c_ij]``, a missing subword (a shorter word, or past one sentence's end) contributing nothing.  Special
        tokens are shared, so they stay unmixed.  The mixed sentence has ``max(len_b, len_perm[b])`` words and
        is pooled into words as usual (no hidden states or attentions)."""
        words = [list(getattr(s, "tokens", getattr(s, "words", s))) for s in sentences]
        pieces = self._pieces(words)
        own, other = [], []
        for b, p in enumerate(perm.tolist()):
            a, c = pieces[b], pieces[p]
            n = max(len(a), len(c))
            a = a + [[]] * (n - len(a))
            c = c + [[]] * (n - len(c))
            sizes = [max(len(x), len(y)) for x, y in zip(a, c)]
            own.append([x + [-1] * (k - len(x)) for x, k in zip(a, sizes)])
            other.append([y + [-1] * (k - len(y)) for y, k in zip(c, sizes)])
        batch, partner = self._layout(own).to(self.device), self._layout(other).to(self.device)
        table = self.input_embeddings
        weight = lam.to(self.device, table.dtype)[batch.window_sentence].view(-1, 1, 1)
        x = weight * table[batch.input_ids.clamp(min=0)] * (batch.input_ids >= 0).unsqueeze(-1)
        x = x + (1 - weight) * table[partner.input_ids.clamp(min=0)] * (partner.input_ids >= 0).unsqueeze(-1)
        if batch.input_ids.shape[1] == 0:
            empty = torch.zeros(*batch.first.shape, self.hidden_size, device=self.device)
            return EncoderOutput(empty, batch.lens, None, None, batch.attention_mask)
        out = self.model(inputs_embeds=x, attention_mask=batch.attention_mask, return_dict=True)
        return EncoderOutput(self.pool(out.last_hidden_state, batch), batch.lens, None, None, batch.attention_mask)

    # -------------------------------------------------------------------- encoding
    def pool(self, hidden: Tensor, batch: SubwordBatch) -> Tensor:
        """Word vectors ``[batch_size, n_words, hidden]`` from subword vectors ``[n_windows, window_len, hidden]``."""
        flat = hidden.reshape(-1, hidden.shape[-1])
        batch_size, n_words = batch.first.shape
        # index_select rather than flat[index]: a deterministic backward on CPU (see CharCNN.forward)
        if self.pooling == "first":
            out = flat.index_select(0, batch.first.flatten()).view(batch_size, n_words, -1)
        else:
            pieces = flat.index_select(0, batch.sources)
            sums = flat.new_zeros(batch_size * n_words, flat.shape[-1]).index_add(0, batch.owners, pieces)
            counts = torch.bincount(batch.owners, minlength=batch_size * n_words).clamp(min=1).to(flat.dtype)
            out = (sums / counts.unsqueeze(-1)).view(batch_size, n_words, -1)
        return out * length_mask(batch.lens, n_words).unsqueeze(-1).to(out.dtype)

    def forward(self, batch: Sentences | SubwordBatch, output_hidden_states: bool | None = None,
                output_attentions: bool | None = None) -> EncoderOutput:
        """Encode sentences (lists of words) or a :class:`SubwordBatch`; tensors go to the encoder's device."""
        if not isinstance(batch, SubwordBatch):
            batch = self.tokenize(batch)
        batch = batch.to(self.device)
        want_hidden = self.output_hidden_states if output_hidden_states is None else output_hidden_states
        want_attentions = self.output_attentions if output_attentions is None else output_attentions
        if want_attentions:
            self._eager_attention()
        batch_size, n_words = batch.first.shape
        if batch.input_ids.shape[1] == 0:  # only empty sentences
            empty = torch.zeros(batch_size, n_words, self.hidden_size, device=self.device)
            return EncoderOutput(empty, batch.lens, (empty,) * (self.num_layers + 1) if want_hidden else None,
                                 None, batch.attention_mask)
        out = self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                         output_hidden_states=want_hidden, output_attentions=want_attentions, return_dict=True)
        hidden = tuple(self.pool(h, batch) for h in out.hidden_states) if want_hidden else None
        features = hidden[-1] if want_hidden else self.pool(out.last_hidden_state, batch)
        attentions = tuple(out.attentions) if want_attentions else None
        return EncoderOutput(features, batch.lens, hidden, attentions, batch.attention_mask)


# ------------------------------------------------------------------------------------------- tagger
class TransformerTagger(nn.Module):
    """A transformer tagger returning a structured distribution per batch.

    Args:
        encoder: a :class:`SubwordEncoder`, or a model name or path to build one with ``encoder_options``, or
            a dict of :class:`SubwordEncoder` arguments (as in ``config["encoder"]``, so that
            ``TransformerTagger(**model.config)`` rebuilds a model from the original pretrained encoder).
        tags: tag names (``O`` and ``B-/I-/E-/S-`` tags of ``scheme``).
        head: ``"crf"`` (:class:`~structkd.structs.chain.LinearChainCRF`), ``"maxent"``
            (:class:`~structkd.structs.chain.MaxEnt`) or ``"span"``
            (:class:`~structkd.structs.semimarkov.SemiMarkovCRF` over the span labels ``["O", <types>]``).
        scheme: tag scheme; CRF transition constraints for ``"crf"``, required for ``"span"`` (to turn gold tags
            into segment charts and predictions back into tags).
        dropout: dropout on the word features.
        max_width, span_hidden: the span head's longest entity and projection width.
    """

    def __init__(self, encoder: SubwordEncoder | str | Path | dict, tags: Sequence[str], head: str = "crf",
                 scheme: str | None = None, dropout: float = 0.1, max_width: int = 10, span_hidden: int = 150,
                 **encoder_options):
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"head must be one of {', '.join(HEADS)}, got {head!r}")
        if isinstance(encoder, dict):
            encoder = SubwordEncoder(**{**encoder, **encoder_options})
        elif not isinstance(encoder, SubwordEncoder):
            encoder = SubwordEncoder(encoder, **encoder_options)
        self.encoder = encoder
        self.tags = list(tags)
        self.head_kind = head
        self.scheme = check_scheme(scheme) if scheme else None
        self.dropout = nn.Dropout(dropout)
        self._options = {"dropout": dropout, "max_width": max_width, "span_hidden": span_hidden}
        dim = self.encoder.hidden_size
        self.span_labels: list[str] | None = None
        if head == "crf":
            self.head = CRFHead(dim, self.tags, self.scheme)
        elif head == "maxent":
            self.head = MaxEntHead(dim, self.tags)
        else:
            if self.scheme is None:
                raise ValueError("a span head needs the tag scheme (scheme='BIO' or 'BIOES')")
            self.span_labels = span_labels_from_tags(self.tags)
            self.head = SpanHead(dim, self.span_labels, max_width, hidden=span_hidden, dropout=dropout)

    @property
    def batch_cost(self) -> BatchCost | None:
        """Its head's batch cost (a span head's; ``None`` for a CRF or softmax head)."""
        return self.head.batch_cost

    @property
    def config(self) -> dict:
        """Constructor arguments (JSON), as saved by :func:`structkd.models.serialization.save_pretrained`."""
        return {"tags": self.tags, "head": self.head_kind, "scheme": self.scheme, **self._options,
                "encoder": self.encoder.config}

    def forward(self, batch: Sentences | SubwordBatch | EncoderOutput, **_) -> StructuredDistribution:
        """Distribution over the batch's structures from sentences (lists of words), a tokenized
        :class:`SubwordBatch` or an :class:`EncoderOutput` (e.g. computed with hidden states for KD)."""
        encoded = batch if isinstance(batch, EncoderOutput) else self.encoder(batch)
        return self.head(self.dropout(encoded.features), encoded.lens)

    def read(self, sentences: Sequence) -> StructuredDistribution:
        """The distribution of sentences (objects with ``tokens``): the interface every tagger shares."""
        return self([s.tokens for s in sentences])

    def encode_states(self, sentences: Sequence, attentions: bool = False
                      ) -> tuple[StructuredDistribution, EncoderOutput]:
        """``(distribution, EncoderOutput)`` with the word-pooled hidden states (embeddings and every layer) and,
        with ``attentions``, the subword attentions (what hidden-state and attention matching read)."""
        encoded = self.encoder([s.tokens for s in sentences], output_hidden_states=True, output_attentions=attentions)
        return self(encoded), encoded

    def forward_mixed(self, sentences: Sequence, perm: Tensor, lam: Tensor) -> StructuredDistribution:
        """The distribution on mixed input embeddings (:meth:`SubwordEncoder.mixed`): sentence ``b`` with
        ``perm[b]`` at weight ``lam[b]``."""
        return self(self.encoder.mixed([s.tokens for s in sentences], perm, lam))

    # -------------------------------------------------------------------- gold and predictions
    def tag_indices(self, tag_sequences: Sequence[Sequence[str]], device: torch.device | str | None = None) -> Tensor:
        """``LongTensor [batch_size, seq_len]`` of tag indices, -1 at padding."""
        index = {t: n for n, t in enumerate(self.tags)}
        seq_len = max((len(t) for t in tag_sequences), default=0)
        out = torch.full((len(tag_sequences), seq_len), -1, dtype=torch.long)
        for b, tags in enumerate(tag_sequences):
            unknown = [t for t in tags if t not in index]
            if unknown:
                raise ValueError(f"sentence {b}: tags {unknown} are not in the model's tag list {self.tags}")
            out[b, :len(tags)] = torch.tensor([index[t] for t in tags], dtype=torch.long)
        return out.to(device)

    def gold_structure(self, tags: Tensor, lens: Tensor) -> Tensor:
        """The head's structure for gold tag indices ``[batch_size, seq_len]``: tags (-1 beyond ``lens``) or,
        for a span head, a segment chart ``[batch_size, seq_len, seq_len]``."""
        mask = length_mask(lens, tags.shape[1])
        tags = torch.where(mask, tags, torch.full_like(tags, -1))
        if self.head_kind != "span":
            return tags
        names = [[self.tags[t] for t in row[:int(n)]] for row, n in zip(tags.tolist(), lens.tolist())]
        return tags_to_chart(names, self.scheme, self.span_labels, tags.shape[1], device=tags.device)

    def gold_loss(self, dist: StructuredDistribution, tags: Tensor) -> Tensor:
        """Per-sentence negative log-likelihood ``[batch_size]`` of gold tag indices ``[batch_size, seq_len]``."""
        return -dist.log_prob(self.gold_structure(tags.to(dist.device), dist.lens))

    def decode(self, dist: StructuredDistribution) -> list[list[str]]:
        """The most likely tag sequence of each sentence."""
        best = dist.argmax
        lens = dist.lens.tolist()
        if self.head_kind == "span":
            return chart_to_tags(best, lens, self.span_labels, self.scheme)
        return [[self.tags[t] for t in row[:n]] for row, n in zip(best.tolist(), lens)]


# ------------------------------------------------------------------------------------------- students
def kept_layers(n_layers: int, keep_every: int) -> list[int]:
    """0-based teacher layers kept by :func:`shrink_encoder`: ``k-1, 2k-1, ...`` (layers 1 and 3 of 4 for
    ``k = 2``), so student hidden state ``i`` matches teacher hidden state ``i * k`` (the top layer is kept)."""
    if keep_every < 1:
        raise ValueError(f"keep_every must be at least 1, got {keep_every}")
    kept = [i for i in range(n_layers) if (i + 1) % keep_every == 0]
    if not kept:
        raise ValueError(f"keep_every={keep_every} keeps none of {n_layers} layers")
    return kept


def _layer_path(model: nn.Module, n_layers: int) -> str:
    """Name of the module list holding the transformer layers (``encoder.layer`` for BERT)."""
    candidates = [name for name, module in model.named_modules()
                  if isinstance(module, nn.ModuleList) and len(module) == n_layers]
    preferred = [name for name in candidates if name.split(".")[-1] in ("layer", "layers")]
    if not (preferred or candidates):
        raise ValueError(f"cannot find the {n_layers} transformer layers of {type(model).__name__}")
    return (preferred or candidates)[0]


def shrink_encoder(model, keep_every: int = 2, layers: Sequence[int] | None = None):
    """A shallower copy of a transformer keeping every ``keep_every``-th layer (DistilBERT-style).

    Args:
        model: a ``transformers`` model or a :class:`SubwordEncoder` (then a :class:`SubwordEncoder` with the
            same tokenizer and options is returned).
        keep_every: keep 0-based layers ``k-1, 2k-1, ...`` (see :func:`kept_layers`).
        layers: explicit 0-based layers to keep instead (e.g. ``[0, 2, 4]``).

    The student has the teacher's class and config with ``num_hidden_layers`` updated; its embeddings, kept
    layers (renumbered ``0..n-1`` in order) and other weights (e.g. the pooler) are copies of the teacher's.
    """
    if isinstance(model, SubwordEncoder):
        small = shrink_encoder(model.model, keep_every, layers)
        options = {k: v for k, v in model.config.items() if k != "model_name_or_path"}
        return SubwordEncoder(small, tokenizer=model.tokenizer, **options)
    n_layers = model.config.num_hidden_layers
    kept = kept_layers(n_layers, keep_every) if layers is None else [int(i) for i in layers]
    if not kept or any(not 0 <= i < n_layers for i in kept) or len(set(kept)) != len(kept):
        raise ValueError(f"layers to keep must be distinct indices in 0..{n_layers - 1}, got {kept}")
    path = _layer_path(model, n_layers)
    config = copy.deepcopy(model.config)
    config.num_hidden_layers = len(kept)
    config._name_or_path = ""  # no longer the teacher's checkpoint: save it with save_pretrained
    student = type(model)(config)
    state = {}
    prefix = path + "."
    for key, value in model.state_dict().items():
        if key.startswith(prefix):
            index, rest = key[len(prefix):].split(".", 1)
            if int(index) in kept:
                state[f"{prefix}{kept.index(int(index))}.{rest}"] = value.detach().clone()
        else:
            state[key] = value.detach().clone()
    student.load_state_dict(state, strict=True)
    parameter = next(model.parameters())
    return student.to(device=parameter.device, dtype=parameter.dtype).train(model.training)


def student_from_teacher(teacher: TransformerTagger, keep_every: int = 2, layers: Sequence[int] | None = None,
                         head: str | None = None, copy_head: bool = True, **options) -> TransformerTagger:
    """A :class:`TransformerTagger` student on :func:`shrink_encoder` of the teacher's encoder.

    Args:
        head: the student's head (default: the teacher's); e.g. a CRF teacher and a MaxEnt student.
        copy_head: start from the teacher's head weights when the head kind is the same.
        options: override the teacher's ``dropout``, ``max_width`` or ``span_hidden``.
    """
    head = teacher.head_kind if head is None else head
    settings = {**teacher._options, **options}
    student = TransformerTagger(shrink_encoder(teacher.encoder, keep_every, layers), teacher.tags, head,
                                teacher.scheme, **settings)
    if copy_head and head == teacher.head_kind:
        source, target = teacher.head.state_dict(), student.head.state_dict()
        if all(source[k].shape == v.shape for k, v in target.items()):  # not e.g. another span_hidden
            student.head.load_state_dict(source)
    return student.to(teacher.encoder.device)
