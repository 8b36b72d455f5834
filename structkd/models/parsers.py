"""Dependency parsers of parser distillation: biaffine tree-CRF parsers, and what every parser shares.

* :class:`BiaffineParser` (Dozat and Manning 2017) scores arcs and relations with biaffine products of MLP
  projections of word features, plus sibling parts for the second-order parser (Zhang et al. 2020), and returns
  the tree distribution (:class:`~structkd.structs.tree.DependencyCRF`, :class:`~structkd.structs.tree.MatrixTree`
  or :class:`~structkd.structs.tree2o.Dependency2oCRF`) with the relation logits.
* :class:`~structkd.models.seqlabel_parser.SeqLabelingParser` (Strzyz et al. 2019), in its own module, tags each
  word with a relative head offset joined with its relation and returns a :class:`~structkd.structs.chain.MaxEnt`
  over those labels, the student of "tree teacher to sequence labeling" structural KD
  (:func:`structkd.kd.head_offset_marginals`); it shares this module's encoder, vocabularies and saving.

Tree tensors follow :mod:`structkd.structs.heads`: position 0 is the root, words are ``1..lens[b]``, heads and
relations are ``LongTensor [batch_size, seq_len + 1]`` with -1 at position 0 and padding, and ``lens`` counts
words.  Both parsers read a batch of sentences (lists of words or :class:`~structkd.data.ParsedSentence`), or
pre-encoded inputs: index tensors ``{"words", "chars", "lens"}`` (BiLSTM) or a
:class:`~structkd.models.transformer.SubwordBatch` / :class:`~structkd.models.transformer.EncoderOutput`
(transformer).  A BiLSTM parser encodes sentences with its vocabulary ``model.vocab`` (:func:`build_vocab`).

Save with :func:`save_parser` (weights, config, vocabulary or transformer files); load with
:func:`structkd.models.serialization.load_pretrained`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from structkd.data.columns import Sentence
from structkd.models.serialization import ENCODER_DIR, register_model, save_pretrained
from structkd.models.taggers import BiLSTMEncoder
from structkd.models.transformer import EncoderOutput, SubwordBatch, SubwordEncoder
from structkd.models.vocab import TaggerVocab, Vocabulary, count_words
from structkd.runtime.decoding import repair_tree  # numpy, shared with the torch-free runtime
from structkd.structs.base import StructuredDistribution, length_mask
from structkd.structs.heads import word_mask
from structkd.structs.tree import DependencyCRF, MatrixTree
from structkd.structs.tree2o import Dependency2oCRF

Tensor = torch.Tensor
TREES = ("projective", "nonprojective", "2o")


# ------------------------------------------------------------------------------------------- vocabularies
def sentence_words(sentence) -> list[str]:
    """The words of a sentence given as a list of words, a :class:`ParsedSentence` or a :class:`Sentence`."""
    if isinstance(sentence, str):
        raise TypeError("sentences must be a batch of word lists, e.g. [['John', 'lives', 'here']]")
    return list(getattr(sentence, "words", getattr(sentence, "tokens", sentence)))


def build_rels(sentences) -> list[str]:
    """Sorted relation inventory of parsed sentences (subtypes kept)."""
    return sorted({r for s in sentences for r in s.deprels})


def build_vocab(sentences, rels: Sequence[str], min_word_count: int = 1) -> TaggerVocab:
    """Words (lowercased), characters and relations (as the vocabulary's tags) of a BiLSTM parser, the sentences
    read in one pass."""
    words, chars, _ = count_words(sentences, sentence_words)
    return TaggerVocab(Vocabulary.from_counts(words, min_word_count), Vocabulary.from_counts(chars),
                       Vocabulary(list(rels), special=False))


# ------------------------------------------------------------------------------------------- encoders
class ParserEncoder(nn.Module):
    """Word features ``[batch_size, seq_len, dim]`` (no root) from a BiLSTM or a transformer.

    Args:
        encoder: ``"bilstm"`` (:class:`BiLSTMEncoder`: word embeddings plus a character CNN), or a
            :class:`SubwordEncoder`, a model name or path, or a dict of :class:`SubwordEncoder` arguments.
        n_words, n_chars: BiLSTM vocabulary sizes.
        options: :class:`BiLSTMEncoder` or :class:`SubwordEncoder` options.
        dropout: dropout on the transformer's word features (the BiLSTM applies its own).
    """

    def __init__(self, encoder: str | Path | dict | SubwordEncoder = "bilstm", n_words: int | None = None,
                 n_chars: int | None = None, options: dict | None = None, dropout: float = 0.1):
        super().__init__()
        options = dict(options or {})
        self.bilstm: BiLSTMEncoder | None = None
        self.transformer: SubwordEncoder | None = None
        self.n_words, self.n_chars, self.options = n_words, n_chars, options
        if isinstance(encoder, str) and encoder == "bilstm":
            if n_words is None or n_chars is None:
                raise ValueError("a BiLSTM encoder needs n_words and n_chars (or a vocab)")
            self.bilstm = BiLSTMEncoder(n_words, n_chars, **options)
            self.output_dim = self.bilstm.output_dim
        else:
            if isinstance(encoder, dict):
                encoder = SubwordEncoder(**{**encoder, **options})
            elif not isinstance(encoder, SubwordEncoder):
                encoder = SubwordEncoder(encoder, **options)
            self.transformer = encoder
            self.output_dim = encoder.hidden_size
        self.dropout = nn.Dropout(dropout)

    @classmethod
    def for_parser(cls, encoder, n_words: int | None, n_chars: int | None, options: dict | None, dropout: float,
                   vocab: TaggerVocab | None) -> ParserEncoder:
        """A parser's encoder: the BiLSTM's vocabulary sizes default to those of ``vocab`` when it is given."""
        if vocab is not None:
            n_words = len(vocab.words) if n_words is None else n_words
            n_chars = len(vocab.chars) if n_chars is None else n_chars
        return cls(encoder, n_words, n_chars, options, dropout)

    @property
    def is_transformer(self) -> bool:
        return self.transformer is not None

    @property
    def config(self) -> dict:
        """The encoder part of a parser's constructor arguments (JSON)."""
        if self.transformer is not None:
            return {"encoder": self.transformer.config, "n_words": None, "n_chars": None, "encoder_options": {}}
        return {"encoder": "bilstm", "n_words": self.n_words, "n_chars": self.n_chars,
                "encoder_options": self.options}

    def _indices(self, batch, vocab: TaggerVocab | None) -> dict:
        if isinstance(batch, dict):
            return batch
        if vocab is None:
            raise ValueError("a BiLSTM parser encodes sentences with its vocabulary: set model.vocab "
                             "(structkd.models.parsers.build_vocab) or pass index tensors")
        device = next(self.parameters()).device
        return vocab.encode([Sentence(sentence_words(s)) for s in batch], device=device)

    def encode(self, sentences, vocab: TaggerVocab | None = None, attentions: bool = False) -> EncoderOutput:
        """The encoder's output with its hidden states (a transformer's word-pooled embeddings and layers; a
        BiLSTM's one output, ``hidden_states = (features,)``) and, for a transformer, its attentions; a
        parser reads it as a batch (``parser(encoded)``)."""
        if self.transformer is not None:
            return self.transformer([sentence_words(s) for s in sentences], output_hidden_states=True,
                                    output_attentions=attentions)
        inputs = self._indices(sentences, vocab)
        features = self.bilstm(inputs["words"], inputs["chars"], inputs["lens"], inputs.get("oov"))
        mask = length_mask(inputs["lens"], features.shape[1]).long()
        return EncoderOutput(features, inputs["lens"], (features,), None, mask)

    def mixed(self, sentences, perm: Tensor, lam: Tensor, vocab: TaggerVocab | None = None) -> EncoderOutput:
        """The encoder on mixed input embeddings, sentence ``b`` with ``perm[b]`` at weight ``lam[b]`` (MixKD):
        :meth:`SubwordEncoder.mixed`, or the BiLSTM over :func:`structkd.kd.mix_embeddings` of its word and
        character embeddings; the mixed sentence is as long as the longer one."""
        from structkd.kd.mixup import mix_embeddings

        if self.transformer is not None:
            return self.transformer.mixed([sentence_words(s) for s in sentences], perm, lam)
        inputs = self._indices(sentences, vocab)
        lens = inputs["lens"]
        embedded = self.bilstm.embed(inputs["words"], inputs["chars"], inputs.get("oov"))
        x, mixed_lens = mix_embeddings(embedded, lens,
                                       lam.to(lens.device), perm.to(lens.device))
        features = self.bilstm.contextualize(x, mixed_lens)
        return EncoderOutput(features, mixed_lens, None, None, length_mask(mixed_lens, x.shape[1]).long())

    def forward(self, batch, vocab: TaggerVocab | None = None) -> tuple[Tensor, Tensor]:
        """``(features [batch_size, seq_len, dim], lens [batch_size])``; ``vocab`` encodes BiLSTM sentences."""
        if isinstance(batch, EncoderOutput):  # computed by encode or mixed
            features = self.dropout(batch.features) if self.transformer is not None else batch.features
            return features, batch.lens
        if self.transformer is not None:
            if isinstance(batch, dict):
                raise TypeError("a transformer parser reads sentences, a SubwordBatch or an EncoderOutput")
            if not isinstance(batch, (SubwordBatch, EncoderOutput)):
                batch = [sentence_words(s) for s in batch]
            encoded = batch if isinstance(batch, EncoderOutput) else self.transformer(batch)
            return self.dropout(encoded.features), encoded.lens
        batch = self._indices(batch, vocab)
        return self.bilstm(batch["words"], batch["chars"], batch["lens"], batch.get("oov")), batch["lens"]


# ------------------------------------------------------------------------------------------- scorers
class MLP(nn.Module):
    """``Linear -> LeakyReLU(0.1) -> Dropout``: ``[..., in_dim]`` to ``[..., out_dim]``."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.33):
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)
        self.activation = nn.LeakyReLU(0.1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.activation(self.linear(x)))


def _with_one(x: Tensor) -> Tensor:
    """Append a constant 1 feature: ``[..., dim]`` to ``[..., dim + 1]`` (biases of biaffine products)."""
    return torch.cat([x, x.new_ones(*x.shape[:-1], 1)], -1)


class BiaffineArcScorer(nn.Module):
    """Biaffine arc scores (Dozat and Manning 2017): ``scores[b, d, h] = [dep_d; 1]^T W head_h``.

    The constant feature on the dependent side gives each head a prior score.  ``W`` starts at zero (uniform
    trees), as in the paper.

    Args:
        in_dim: width of the word features (root included).
        hidden: width of the head and dependent MLPs.
    """

    def __init__(self, in_dim: int, hidden: int = 500, dropout: float = 0.33):
        super().__init__()
        self.dep = MLP(in_dim, hidden, dropout)
        self.head = MLP(in_dim, hidden, dropout)
        self.weight = nn.Parameter(torch.zeros(hidden + 1, hidden))

    def forward(self, features: Tensor) -> Tensor:
        """``features [batch_size, seq_len + 1, in_dim]`` (position 0 the root) to arc scores
        ``[batch_size, seq_len + 1, seq_len + 1]``, ``[b, d, h]``."""
        dep, head = _with_one(self.dep(features)), self.head(features)
        return torch.einsum("bdi,ij,bhj->bdh", dep, self.weight, head)


class BiaffineRelScorer(nn.Module):
    """Biaffine relation scores: ``logits[b, d, h, r] = [dep_d; 1]^T W_r [head_h; 1]``.

    Args:
        in_dim: width of the word features (root included).
        n_rels: number of relations.
        hidden: width of the head and dependent MLPs.
    """

    _BLOCK = 128  # words per block in :meth:`at`

    def __init__(self, in_dim: int, n_rels: int, hidden: int = 100, dropout: float = 0.33):
        super().__init__()
        self.dep = MLP(in_dim, hidden, dropout)
        self.head = MLP(in_dim, hidden, dropout)
        self.weight = nn.Parameter(torch.zeros(n_rels, hidden + 1, hidden + 1))

    def forward(self, features: Tensor) -> Tensor:
        """``[batch_size, seq_len + 1, in_dim]`` to ``[batch_size, seq_len + 1, seq_len + 1, n_rels]``."""
        return self.logits_of(*self.factors(features), self.weight)

    def factors(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """``(dep, head)``, ``[batch_size, seq_len + 1, hidden]`` each: the MLP outputs whose biaffine product
        with :attr:`weight` are the logits (:meth:`logits_of`), ``2 * hidden`` numbers a word instead of
        ``(seq_len + 1) * n_rels`` (what a teacher cache keeps, :mod:`structkd.parse.distillation`)."""
        return self.dep(features), self.head(features)

    @staticmethod
    def logits_of(dep: Tensor, head: Tensor, weight: Tensor) -> Tensor:
        """``logits[b, d, h, r] = [dep_d; 1]^T W_r [head_h; 1]`` from :meth:`factors` and ``weight [n_rels,
        hidden + 1, hidden + 1]``: ``[batch_size, seq_len + 1, seq_len + 1, n_rels]``."""
        return torch.einsum("bdi,rij,bhj->bdhr", _with_one(dep), weight, _with_one(head))

    def at(self, features: Tensor, heads: Tensor) -> Tensor:
        """Relation logits of one arc per word, ``[batch_size, seq_len + 1, n_rels]``: ``[b, d]`` scores the arc
        ``heads[b, d] -> d`` (``heads [batch_size, seq_len + 1]``; negative heads are read as 0).  The same
        numbers as ``forward(features)`` gathered at ``heads``, in ``1 / seq_len`` of its work: what decoding
        needs."""
        dep, head = _with_one(self.dep(features)), _with_one(self.head(features))
        index = heads.clamp(min=0).unsqueeze(-1).expand(-1, -1, head.shape[-1])
        chosen = head.gather(1, index).flatten(0, 1)                               # [B * S, hidden + 1]
        n_rels, width = self.weight.shape[:2]
        weight = self.weight.transpose(0, 1).reshape(width, n_rels * width)          # [i, (r, j)]
        dep = dep.flatten(0, 1)
        # in blocks of words, so that the [words, n_rels, hidden + 1] intermediate stays in cache (2-3x faster
        # on CPU than one einsum over the batch)
        blocks = [torch.bmm((dep[i:i + self._BLOCK] @ weight).view(-1, n_rels, width),
                            chosen[i:i + self._BLOCK].unsqueeze(-1)).squeeze(-1)
                  for i in range(0, dep.shape[0], self._BLOCK)]
        return torch.cat(blocks).view(*heads.shape, n_rels)


class SiblingScorer(nn.Module):
    """Sibling scores ``[b, m, h, s]`` (head ``h`` with adjacent modifiers ``s`` and ``m``, ``s`` closer), the
    layout of :class:`~structkd.structs.tree2o.Dependency2oCRF`.

    ``rank=None``: a triaffine product ``[sib_s; 1]^T (W x_2 head_h) [mod_m; 1]`` (Zhang et al. 2020), ``O(L^3 d)``
    time with a ``[hidden + 1, hidden, hidden + 1]`` tensor.  ``rank=R``: a cheaper CP decomposition
    ``sum_k U_m[m, k] U_h[h, k] U_s[s, k]`` of rank ``R`` (``O(L^3 R)`` time, no cubic weight tensor).

    Args:
        in_dim: width of the word features (root included).
        hidden: width of the modifier, head and sibling MLPs.
        rank: ``None`` for the triaffine scorer, else the rank of the decomposition.
    """

    def __init__(self, in_dim: int, hidden: int = 100, rank: int | None = None, dropout: float = 0.33):
        super().__init__()
        self.rank = rank
        width = hidden if rank is None else rank
        self.mod = MLP(in_dim, width, dropout)
        self.head = MLP(in_dim, width, dropout)
        self.sib = MLP(in_dim, width, dropout)
        if rank is None:
            self.weight = nn.Parameter(torch.zeros(hidden + 1, hidden, hidden + 1))

    def forward(self, features: Tensor) -> Tensor:
        """``[batch_size, seq_len + 1, in_dim]`` to ``[batch_size, seq_len + 1, seq_len + 1, seq_len + 1]``."""
        mod, head, sib = self.mod(features), self.head(features), self.sib(features)
        if self.rank is not None:
            return torch.einsum("bmk,bhk,bsk->bmhs", mod, head, sib)
        left = torch.einsum("bsi,ijk->bsjk", _with_one(sib), self.weight)      # [B, S, hidden, hidden + 1]
        middle = torch.einsum("bsjk,bhj->bhsk", left, head)                      # [B, S, S, hidden + 1]
        return torch.einsum("bhsk,bmk->bmhs", middle, _with_one(mod))


# ------------------------------------------------------------------------------------------- biaffine parser
def heads_and_rels(sentences, rels: Sequence[str], device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """Gold ``(heads, relation indices)`` of sentences, ``LongTensor [batch_size, seq_len + 1]`` each (-1 at
    position 0 and padding); a relation outside ``rels`` raises ``ValueError`` naming the sentence."""
    index = {r: n for n, r in enumerate(rels)}
    seq_len = max((len(s.heads) for s in sentences), default=0) + 1
    heads = torch.full((len(sentences), seq_len), -1, dtype=torch.long)
    labels = torch.full((len(sentences), seq_len), -1, dtype=torch.long)
    for b, s in enumerate(sentences):
        unknown = sorted(set(s.deprels) - set(index))
        if unknown:
            raise ValueError(f"{getattr(s, 'source', f'sentence {b}')}: relations {unknown} are not in the "
                             f"parser's inventory")
        heads[b, 1:len(s.heads) + 1] = torch.tensor(s.heads, dtype=torch.long)
        labels[b, 1:len(s.heads) + 1] = torch.tensor([index[r] for r in s.deprels], dtype=torch.long)
    return heads.to(device), labels.to(device)


@dataclass
class ParserOutput:
    """What a parser reads from a batch (:meth:`BiaffineParser.read`, :meth:`SeqLabelingParser.read`).

    Attributes:
        dist: the tree distribution (``DependencyCRF``, ``MatrixTree``, ``Dependency2oCRF``; arc potentials
            ``[batch_size, seq_len + 1, seq_len + 1]``) or, for a sequence-labeling parser, a ``MaxEnt`` over its
            labels (``[batch_size, seq_len, n_labels]``).
        rel_logits: ``[batch_size, seq_len + 1, seq_len + 1, n_rels]`` (``[b, d, h, r]``) of a biaffine parser,
            ``None`` for a sequence-labeling parser.
    """

    dist: StructuredDistribution
    rel_logits: Tensor | None


def has_tree(sentence) -> bool:
    """Whether a sentence carries a gold tree (every HEAD known); unlabeled sentences have ``-1`` heads."""
    return bool(sentence.heads) and min(sentence.heads) >= 0


def stand_in_trees(sentences, rels: Sequence[str], device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """``(heads, rels)`` as :meth:`BiaffineParser.gold`, with the chain ``d -> d - 1`` (projective, one root
    word) and relation 0 for every sentence without a tree: a placeholder wherever a valid tree is required
    but its score is weighted 0."""
    chained = [s if has_tree(s) else dataclasses.replace(s, heads=list(range(len(s.words))),
                                                         deprels=[rels[0]] * len(s.words)) for s in sentences]
    return heads_and_rels(chained, rels, device)


class BiaffineParser(nn.Module):
    """A graph-based parser: biaffine arc and relation scores over a tree CRF.

    Args:
        encoder: ``"bilstm"`` or a transformer (a :class:`SubwordEncoder`, a name or path, or its config dict).
        rels: relation names.
        tree: ``"projective"`` (:class:`DependencyCRF`, Eisner), ``"nonprojective"`` (:class:`MatrixTree`,
            Chu-Liu-Edmonds) or ``"2o"`` (:class:`Dependency2oCRF`, projective with sibling parts).
        multiroot: whether the distribution allows several root words (decoding is single-root regardless).
        n_words, n_chars: BiLSTM vocabulary sizes (default: from ``vocab``).
        arc_hidden, rel_hidden, sib_hidden: MLP widths; sib_rank: see :class:`SiblingScorer`.
        dropout: MLP dropout (and on transformer features).
        encoder_options: :class:`BiLSTMEncoder` options (``word_dim``, ``hidden``, ...) or :class:`SubwordEncoder`
            options.
        vocab: the BiLSTM vocabulary (:func:`build_vocab`), kept as ``model.vocab`` (not part of ``config``).

    The root is a learned vector prepended to the word features, so features are ``[B, L + 1, dim]``.
    """

    def __init__(self, encoder: str | Path | dict | SubwordEncoder = "bilstm", rels: Sequence[str] = (),
                 tree: str = "projective", multiroot: bool = False, n_words: int | None = None,
                 n_chars: int | None = None, arc_hidden: int = 500, rel_hidden: int = 100, sib_hidden: int = 100,
                 sib_rank: int | None = None, dropout: float = 0.33, encoder_options: dict | None = None,
                 vocab: TaggerVocab | None = None):
        super().__init__()
        if tree not in TREES:
            raise ValueError(f"tree must be one of {', '.join(TREES)}, got {tree!r}")
        if not rels:
            raise ValueError("a parser needs its relation inventory (rels)")
        self.encoder = ParserEncoder.for_parser(encoder, n_words, n_chars, encoder_options, dropout, vocab)
        self.vocab = vocab
        self.rels, self.tree, self.multiroot = list(rels), tree, bool(multiroot)
        self._options = {"arc_hidden": arc_hidden, "rel_hidden": rel_hidden, "sib_hidden": sib_hidden,
                         "sib_rank": sib_rank, "dropout": dropout}
        dim = self.encoder.output_dim
        self.root = nn.Parameter(torch.randn(dim) / dim ** 0.5)
        self.arc = BiaffineArcScorer(dim, arc_hidden, dropout)
        self.rel = BiaffineRelScorer(dim, len(self.rels), rel_hidden, dropout)
        self.sib = SiblingScorer(dim, sib_hidden, sib_rank, dropout) if tree == "2o" else None

    @property
    def config(self) -> dict:
        """Constructor arguments (JSON), as saved by :func:`save_parser`."""
        return {**self.encoder.config, "rels": self.rels, "tree": self.tree, "multiroot": self.multiroot,
                **self._options}

    def features(self, batch) -> tuple[Tensor, Tensor]:
        """``(features [batch_size, seq_len + 1, dim] with the root at position 0, lens [batch_size])``."""
        words, lens = self.encoder(batch, self.vocab)
        root = self.root.to(words.dtype).expand(words.shape[0], 1, -1)
        return torch.cat([root, words], 1), lens

    def _distribution(self, x: Tensor, lens: Tensor, multiroot: bool) -> StructuredDistribution:
        arcs = self.arc(x)
        if self.tree == "projective":
            return DependencyCRF(arcs, lens, multiroot)
        if self.tree == "nonprojective":
            return MatrixTree(arcs, lens, multiroot)
        return Dependency2oCRF(arcs, self.sib(x), lens, multiroot)

    def forward(self, batch) -> tuple[StructuredDistribution, Tensor]:
        """``(tree distribution, rel_logits [batch_size, seq_len + 1, seq_len + 1, n_rels])`` of a batch."""
        x, lens = self.features(batch)
        return self._distribution(x, lens, self.multiroot), self.rel(x)

    def read_factored(self, sentences) -> tuple[ParserOutput, Tensor, Tensor]:
        """:meth:`read` and the relation scorer's factors ``(dep, head)`` (:meth:`BiaffineRelScorer.factors`,
        ``[batch_size, seq_len + 1, rel_hidden]`` each) of sentences, from one encoding."""
        x, lens = self.features(list(sentences))
        dep, head = self.rel.factors(x)
        out = ParserOutput(self._distribution(x, lens, self.multiroot), self.rel.logits_of(dep, head, self.rel.weight))
        return out, dep, head

    @staticmethod
    def rel_probs(rel_logits: Tensor) -> Tensor:
        """Relation distribution of every arc, ``[batch_size, seq_len + 1, seq_len + 1, n_rels]`` (``[b, d, h, r]``),
        the ``rel_probs`` of :func:`structkd.kd.structural_kd_loss` to a sequence-labeling student."""
        return rel_logits.softmax(-1)

    def gold(self, sentences, device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
        """Gold ``(heads, rels)`` of parsed sentences, ``LongTensor [batch_size, seq_len + 1]`` each (-1 at 0 and
        padding)."""
        return heads_and_rels(sentences, self.rels, device)

    def loss(self, dist: StructuredDistribution, rel_logits: Tensor, heads: Tensor, rels: Tensor) -> Tensor:
        """Per-sentence gold loss ``[batch_size]``: the tree CRF's NLL of the gold heads plus the relation
        cross-entropy on the gold arcs.  A projective parser raises ``ValueError`` on non-projective gold trees
        (projectivize the training data or use ``tree="nonprojective"``)."""
        heads, rels = heads.to(dist.device), rels.to(dist.device)
        mask = word_mask(dist.lens, heads.shape[1])
        heads = torch.where(mask, heads, torch.full_like(heads, -1))
        nll = -dist.log_prob(heads)
        index = heads.clamp(min=0).view(*heads.shape, 1, 1).expand(-1, -1, 1, rel_logits.shape[-1])
        gold_logits = rel_logits.gather(2, index).squeeze(2)                              # [B, S, n_rels]
        ce = nn.functional.cross_entropy(gold_logits.flatten(0, 1).float(), rels.clamp(min=0).flatten(),
                                         reduction="none").view_as(rels)
        return nll + (ce * mask).sum(-1)

    def decode(self, dist: StructuredDistribution, rel_logits: Tensor) -> tuple[Tensor, Tensor]:
        """Best single-root tree (Eisner, second-order Eisner or Chu-Liu-Edmonds) and the best relation of each
        predicted arc: ``(heads, rels)``, ``LongTensor [batch_size, seq_len + 1]`` (-1 at 0 and padding)."""
        if dist.multiroot:
            if isinstance(dist, Dependency2oCRF):
                dist = Dependency2oCRF(*dist.potentials, dist.lens, multiroot=False)
            else:
                dist = type(dist)(dist.potentials[0], dist.lens, multiroot=False)
        heads = dist.argmax
        best = rel_logits.argmax(-1).gather(2, heads.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        return heads, torch.where(heads >= 0, best, torch.full_like(best, -1))

    @torch.no_grad()
    def parse(self, batch) -> tuple[Tensor, Tensor]:
        """What :meth:`decode` gives for ``self(batch)``, without the relation logits of every possible arc:
        the best single-root tree first, then relation logits at its arcs only (:meth:`BiaffineRelScorer.at`).
        ``(heads, rels)``, ``LongTensor [batch_size, seq_len + 1]`` (-1 at 0 and padding).  No gradient."""
        x, lens = self.features(batch)
        heads = self._distribution(x, lens, multiroot=False).argmax
        best = self.rel.at(x, heads).argmax(-1)
        return heads, torch.where(heads >= 0, best, torch.full_like(best, -1))

    @torch.no_grad()
    def predict(self, sentences) -> tuple[list[list[int]], list[list[str]]]:
        """Heads and relation names of each sentence (no gradient; call ``eval()`` first), for
        :func:`structkd.data.write_conllu`."""
        heads, rels = self.parse(sentences)
        return tree_lists(heads, rels, self.rels, [len(sentence_words(s)) for s in sentences])


    # the interface both parsers share (ParseModel calls only these): kind, tree, read, sentence_loss,
    # predict_trees, parse_batch
    kind = "biaffine"

    def read(self, sentences) -> ParserOutput:
        """The tree distribution and relation logits of sentences."""
        return ParserOutput(*self(list(sentences)))

    def sentence_loss(self, out: ParserOutput, sentences) -> Tensor:
        """Per-sentence gold loss ``[batch_size]`` (:meth:`loss`); a sentence without a tree is scored on a
        stand-in tree (:func:`stand_in_trees`), for the caller to zero."""
        heads, rels = stand_in_trees(sentences, self.rels, out.dist.device)
        return self.loss(out.dist, out.rel_logits, heads, rels)

    def predict_trees(self, out: ParserOutput, decoder: str = "mst") -> tuple[Tensor, Tensor]:
        """:meth:`decode` (the tree type decides the decoder; ``decoder`` is the sequence-labeling parser's)."""
        return self.decode(out.dist, out.rel_logits)

    def parse_batch(self, sentences, decoder: str = "mst") -> tuple[Tensor, Tensor]:
        """:meth:`parse`: relations scored at the predicted arcs only."""
        return self.parse(list(sentences))


def tree_lists(heads: Tensor, rels: Tensor, names: Sequence[str], lens: Sequence[int]):
    """Heads and relation names of each sentence as lists (``heads [B, S]``, ``rels [B, S]``, words ``1..len``)."""
    out_heads = [row[1:n + 1] for row, n in zip(heads.tolist(), lens)]
    out_rels = [[names[r] for r in row[1:n + 1]] for row, n in zip(rels.tolist(), lens)]
    return out_heads, out_rels


# ------------------------------------------------------------------------------------------- saving
def save_parser(model: nn.Module, directory: str | Path) -> Path:
    """Save a parser: ``config.json``, ``model.safetensors`` and its ``vocab.json`` (BiLSTM) or ``encoder/``
    transformer config and tokenizer files; :func:`structkd.models.serialization.load_pretrained` rebuilds it
    (a BiLSTM parser's vocabulary comes back as ``model.vocab``)."""
    directory = Path(directory)
    if model.encoder.is_transformer:  # save_pretrained writes its encoder/ files
        return save_pretrained(model, directory)
    return save_pretrained(model, directory, vocab=model.vocab)


def parser_builder(cls: type):
    """The :func:`~structkd.models.serialization.register_model` builder of a parser class (its transformer
    encoder rebuilt from ``encoder/``)."""
    def build(args: dict, directory: Path) -> nn.Module:
        args = dict(args)
        if isinstance(args.get("encoder"), dict):
            encoder_dir = directory / ENCODER_DIR
            if not (encoder_dir / "config.json").is_file():
                raise FileNotFoundError(f"{encoder_dir / 'config.json'}: missing; save transformer parsers with "
                                        f"structkd.models.parsers.save_parser")
            options = {k: v for k, v in args["encoder"].items() if k != "model_name_or_path"}
            args["encoder"] = SubwordEncoder(str(encoder_dir), pretrained=False, **options)
        return cls(**args)
    return build


register_model(BiaffineParser, parser_builder(BiaffineParser))

__all__ = [
    "BiaffineArcScorer", "BiaffineParser", "BiaffineRelScorer", "MLP", "ParserEncoder", "SiblingScorer",
    "build_rels", "build_vocab", "heads_and_rels", "repair_tree", "save_parser",
]
