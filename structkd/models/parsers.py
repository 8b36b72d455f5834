"""Dependency parsers of parser distillation: biaffine tree-CRF parsers and parsing as sequence labeling.

* :class:`BiaffineParser` (Dozat and Manning 2017) scores arcs and relations with biaffine products of MLP
  projections of word features, plus sibling parts for the second-order parser (Zhang et al. 2020), and returns
  the tree distribution (:class:`~structkd.structs.tree.DependencyCRF`, :class:`~structkd.structs.tree.MatrixTree`
  or :class:`~structkd.structs.tree2o.Dependency2oCRF`) with the relation logits.
* :class:`SeqLabelingParser` (Strzyz et al. 2019) tags each word with a relative head offset joined with its
  relation and returns a :class:`~structkd.structs.chain.MaxEnt` over those labels, the student of
  "tree teacher to sequence labeling" structural KD (:func:`structkd.kd.head_offset_marginals`).

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
from structkd.numerics import LOG_ZERO
from structkd.runtime.decoding import repair_tree  # numpy, shared with the torch-free runtime
from structkd.structs.base import StructuredDistribution, length_mask
from structkd.structs.chain import MaxEnt
from structkd.structs.heads import is_tree, projective, word_mask
from structkd.structs.tree import DependencyCRF, MatrixTree, arc_mask
from structkd.structs.tree2o import Dependency2oCRF

Tensor = torch.Tensor
TREES = ("projective", "nonprojective", "2o")
DECODERS = ("mst", "eisner", "repair")


# ------------------------------------------------------------------------------------------- vocabularies
def _words(sentence) -> list[str]:
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
    words, chars, _ = count_words(sentences, _words)
    return TaggerVocab(Vocabulary.from_counts(words, min_word_count), Vocabulary.from_counts(chars),
                       Vocabulary(list(rels), special=False))


def build_labels(sentences, rels: Sequence[str]) -> list[tuple[int, int]]:
    """The label inventory of parsing as sequence labeling: the sorted ``(head - dependent, relation index)``
    pairs of the training trees (a word attached to the root has offset ``-dependent``), as
    :func:`structkd.kd.head_offset_marginals` reads them."""
    index = {r: n for n, r in enumerate(rels)}
    found = set()
    for s in sentences:
        for d, (h, r) in enumerate(zip(s.heads, s.deprels), start=1):
            if r not in index:
                raise ValueError(f"{getattr(s, 'source', '')}: relation {r!r} is not in the inventory")
            found.add((h - d, index[r]))
    return sorted(found)


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
        return vocab.encode([Sentence(_words(s)) for s in batch], device=device)

    def encode(self, sentences, vocab: TaggerVocab | None = None, attentions: bool = False) -> EncoderOutput:
        """The encoder's output with its hidden states (a transformer's word-pooled embeddings and layers; a
        BiLSTM's one output, ``hidden_states = (features,)``) and, for a transformer, its attentions; a
        parser reads it as a batch (``parser(encoded)``)."""
        if self.transformer is not None:
            return self.transformer([_words(s) for s in sentences], output_hidden_states=True,
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
            return self.transformer.mixed([_words(s) for s in sentences], perm, lam)
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
                batch = [_words(s) for s in batch]
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
        if vocab is not None:
            n_words = len(vocab.words) if n_words is None else n_words
            n_chars = len(vocab.chars) if n_chars is None else n_chars
        self.encoder = ParserEncoder(encoder, n_words, n_chars, encoder_options, dropout)
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
        return _as_lists(heads, rels, self.rels, [len(_words(s)) for s in sentences])


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


def _as_lists(heads: Tensor, rels: Tensor, names: Sequence[str], lens: Sequence[int]):
    out_heads = [row[1:n + 1] for row, n in zip(heads.tolist(), lens)]
    out_rels = [[names[r] for r in row[1:n + 1]] for row, n in zip(rels.tolist(), lens)]
    return out_heads, out_rels


# ------------------------------------------------------------------------------------------- tree repair
# ------------------------------------------------------------------------------------------- sequence labeling
class SeqLabelingParser(nn.Module):
    """Dependency parsing as sequence labeling: each word is tagged with ``(head - index, relation)``.

    Args:
        encoder: ``"bilstm"`` or a transformer, as for :class:`BiaffineParser`.
        rels: relation names.
        labels: the label inventory, ``(offset, relation index)`` pairs (:func:`build_labels`); an offset
            ``-index`` attaches the word to the root.
        n_words, n_chars, encoder_options, vocab: as for :class:`BiaffineParser`.
        dropout: dropout (transformer features).

    ``forward`` returns a :class:`MaxEnt` over the labels (``[batch_size, seq_len, n_labels]``, position ``i`` is
    word ``i + 1``); labels whose head falls outside the sentence get :data:`LOG_ZERO`.  Its structural KD
    from a tree teacher is ``structural_kd_loss(teacher, student, offsets=model.offsets, rel_probs=...)``.
    """

    def __init__(self, encoder: str | Path | dict | SubwordEncoder = "bilstm", rels: Sequence[str] = (),
                 labels: Sequence[Sequence[int]] = (), n_words: int | None = None, n_chars: int | None = None,
                 dropout: float = 0.33, encoder_options: dict | None = None, vocab: TaggerVocab | None = None):
        super().__init__()
        if not rels or not labels:
            raise ValueError("a sequence-labeling parser needs its relations and labels (build_labels)")
        if vocab is not None:
            n_words = len(vocab.words) if n_words is None else n_words
            n_chars = len(vocab.chars) if n_chars is None else n_chars
        self.encoder = ParserEncoder(encoder, n_words, n_chars, encoder_options, dropout)
        self.vocab = vocab
        self.rels = list(rels)
        self.labels = [(int(o), int(r)) for o, r in labels]
        if any(o == 0 or not 0 <= r < len(self.rels) for o, r in self.labels) or len(set(self.labels)) != len(labels):
            raise ValueError("labels must be distinct (offset != 0, relation index in range) pairs")
        self._options = {"dropout": dropout}
        self.scorer = nn.Linear(self.encoder.output_dim, len(self.labels))
        self.register_buffer("label_offsets", torch.tensor([o for o, _ in self.labels]), persistent=False)
        self.register_buffer("label_rels", torch.tensor([r for _, r in self.labels]), persistent=False)
        distinct = sorted({o for o, _ in self.labels})
        group = {o: i for i, o in enumerate(distinct)}
        self.register_buffer("distinct_offsets", torch.tensor(distinct), persistent=False)
        self.register_buffer("label_groups", torch.tensor([group[o] for o, _ in self.labels]), persistent=False)
        # the labels of each offset, by index (-1 pads): the best label at a given head is one small gather
        members = [[k for k, (o, _) in enumerate(self.labels) if o == offset] for offset in distinct]
        width = max((len(m) for m in members), default=1)
        self.register_buffer("group_labels", torch.tensor([m + [-1] * (width - len(m)) for m in members],
                                                          dtype=torch.long).view(len(members), width),
                             persistent=False)
        # offset o (|o| <= span) -> its group at o + span, -1 where no label has that offset
        span = max((abs(o) for o in distinct), default=0)
        offset_groups = torch.full((2 * span + 1,), -1, dtype=torch.long)
        offset_groups[torch.tensor(distinct, dtype=torch.long) + span] = torch.arange(len(distinct))
        self.register_buffer("offset_groups", offset_groups, persistent=False)

    @property
    def offsets(self) -> list[tuple[int, int]]:
        """The labels, as ``offsets=`` of :func:`structkd.kd.structural_kd_loss`."""
        return list(self.labels)

    @property
    def config(self) -> dict:
        """Constructor arguments (JSON), as saved by :func:`save_parser`."""
        return {**self.encoder.config, "rels": self.rels, "labels": [list(x) for x in self.labels], **self._options}

    def label_mask(self, lens: Tensor, seq_len: int) -> Tensor:
        """``BoolTensor [batch_size, seq_len, n_labels]``: labels whose head lies in the sentence (all labels of a
        word that has none, so that every word keeps a proper distribution)."""
        word = torch.arange(1, seq_len + 1, device=lens.device).view(1, -1, 1)
        head = word + self.label_offsets.to(lens.device).view(1, 1, -1)
        valid = (head >= 0) & (head <= lens.view(-1, 1, 1))
        return valid | ~valid.any(-1, keepdim=True)

    def forward(self, batch) -> MaxEnt:
        features, lens = self.encoder(batch, self.vocab)
        logits = self.scorer(features)
        logits = logits.masked_fill(~self.label_mask(lens, logits.shape[1]), LOG_ZERO)
        return MaxEnt(logits, lens)

    def gold(self, sentences, device: torch.device | str | None = None) -> Tensor:
        """Gold label indices ``LongTensor [batch_size, seq_len]`` (-1 at padding); a label missing from the
        inventory raises ``ValueError`` naming the sentence."""
        heads, rels = heads_and_rels(sentences, self.rels, None)
        index = {label: k for k, label in enumerate(self.labels)}
        out = torch.full((heads.shape[0], max(heads.shape[1] - 1, 0)), -1, dtype=torch.long)
        for b, s in enumerate(sentences):
            for d in range(1, len(s.heads) + 1):
                label = (int(heads[b, d]) - d, int(rels[b, d]))
                if label not in index:
                    raise ValueError(f"{getattr(s, 'source', f'sentence {b}')}: word {d} has label {label} "
                                     f"(offset, relation) outside the parser's inventory")
                out[b, d - 1] = index[label]
        return out.to(device)

    @staticmethod
    def loss(dist: MaxEnt, labels: Tensor) -> Tensor:
        """Per-sentence NLL ``[batch_size]`` of gold labels ``[batch_size, seq_len]``."""
        labels = labels.to(dist.device)
        return -dist.log_prob(torch.where(length_mask(dist.lens, labels.shape[1]), labels,
                                          torch.full_like(labels, -1)))

    def arc_scores(self, dist: MaxEnt) -> tuple[Tensor, Tensor]:
        """Label-derived arc scores and relations.

        Returns:
            ``scores [batch_size, seq_len + 1, seq_len + 1]``: ``scores[b, d, h]`` the best log-probability of
            a label of word ``d`` pointing at ``h`` (arcs no label expresses score below every expressible arc
            of the sentence); ``rels [batch_size, seq_len + 1, seq_len + 1]`` the relation of that label (the
            lowest label index among equally probable ones; the word's most probable relation, summed over
            offsets, where no label expresses the arc).
        """
        scores, logp = self._label_arcs(dist)
        batch_size, size = scores.shape[:2]
        every_head = torch.arange(size, device=scores.device).expand(batch_size, size, size)
        rels = self._relations_at(logp, every_head)
        fallback = self._fallback_relations(logp).unsqueeze(-1).expand_as(rels)
        return scores, torch.where(rels < 0, fallback, rels)

    def _label_arcs(self, dist: MaxEnt) -> tuple[Tensor, Tensor]:
        """The ``scores`` of :meth:`arc_scores` and the labels' log-probabilities ``[batch_size, seq_len,
        n_labels]``."""
        logp = dist.potentials[0].log_softmax(-1).detach()
        batch_size, seq_len, _ = logp.shape
        size = seq_len + 1
        # per word and offset, the log-probability of the best label with that offset
        groups = self.label_groups.to(logp.device).expand(batch_size, seq_len, -1)
        n_offsets = self.distinct_offsets.shape[0]
        values = logp.new_full((batch_size, seq_len, n_offsets), LOG_ZERO).scatter_reduce(-1, groups, logp, "amax")
        # word d (position d - 1) with offset o points at h = d + o
        words = torch.arange(1, size, device=logp.device).unsqueeze(1)
        heads = words + self.distinct_offsets.to(logp.device)                             # [L, n_offsets]
        keep = (heads >= 0) & (heads <= seq_len)
        d, h = words.expand_as(heads)[keep], heads[keep]
        scores = logp.new_full((batch_size, size, size), LOG_ZERO)
        scores[:, d, h] = values[:, keep]
        mask = arc_mask(dist.lens, size)
        expressible = mask & (scores > LOG_ZERO / 2)
        lowest = torch.where(expressible, scores, torch.full_like(scores, float("inf"))).amin((1, 2))
        floor = torch.where(torch.isfinite(lowest), lowest - 10.0, torch.zeros_like(lowest)).view(-1, 1, 1)
        return torch.where(mask & ~expressible, floor, scores), logp

    def _relations_at(self, logp: Tensor, heads: Tensor) -> Tensor:
        """The relation of the best label (lowest index among ties) of each word pointing at the given heads.

        Args:
            logp: ``[batch_size, seq_len, n_labels]`` the labels' log-probabilities (word ``d`` at ``d - 1``).
            heads: ``LongTensor [batch_size, seq_len + 1]`` or ``[batch_size, seq_len + 1, k]``: head(s) of word
                ``d`` at ``[:, d]`` (position 0 is the root; -1 for none).

        Returns:
            ``LongTensor`` shaped like ``heads``: relation indices, -1 where no label expresses the arc, at
            position 0 and where the head is -1.
        """
        single = heads.dim() == 2
        heads = heads.unsqueeze(-1) if single else heads
        batch_size, size, k = heads.shape
        table = self.offset_groups.to(heads.device)
        span = (table.numel() - 1) // 2
        words = torch.arange(size, device=heads.device).view(1, -1, 1)
        offsets = heads - words
        inside = (heads >= 0) & (words > 0) & (offsets.abs() <= span)
        group = torch.where(inside, table[(offsets + span).clamp(0, 2 * span)], -1)      # [B, S + 1, k]
        members = self.group_labels.to(heads.device)[group.clamp(min=0)]                 # [B, S + 1, k, width]
        rows = torch.cat([logp.new_zeros(batch_size, 1, logp.shape[-1]), logp], 1)       # row 0: the root
        values = rows.gather(-1, members.clamp(min=0).flatten(2)).view_as(members)
        best = values.masked_fill(members < 0, float("-inf")).argmax(-1, keepdim=True)   # first of equal maxima
        labels = members.gather(-1, best).squeeze(-1)
        rels = torch.where(group >= 0, self.label_rels.to(heads.device)[labels.clamp(min=0)], -1)
        return rels.squeeze(-1) if single else rels

    def _fallback_relations(self, logp: Tensor) -> Tensor:
        """Each word's most probable relation summed over offsets, ``[batch_size, seq_len + 1]`` (position 0 the
        root): the relation of an arc that no label expresses."""
        batch_size, seq_len, _ = logp.shape
        rel_mass = logp.new_zeros(batch_size, seq_len, len(self.rels))
        # labels far below the word's best (and the LOG_ZERO of impossible ones) weigh nothing next to it: clamped
        # before exp, which is very slow on arguments whose result is subnormal
        rel_mass.index_add_(2, self.label_rels.to(logp.device), logp.clamp(min=-80.0).exp())
        return torch.cat([rel_mass.new_zeros(batch_size, 1, len(self.rels)), rel_mass], 1).argmax(-1)

    # the interface both parsers share (see BiaffineParser.read)
    kind = "seqlabel"
    tree = None
    multiroot = False

    def read(self, sentences) -> ParserOutput:
        """The label distribution of sentences (no relation logits: relations are in the labels)."""
        return ParserOutput(self(list(sentences)), None)

    def sentence_loss(self, out: ParserOutput, sentences) -> Tensor:
        """Per-sentence NLL ``[batch_size]`` of the gold labels; a sentence without a tree is scored on its
        best labels, for the caller to zero."""
        labels = out.dist.argmax.clone()
        rows = [b for b, s in enumerate(sentences) if has_tree(s)]
        if rows:
            gold = self.gold([sentences[b] for b in rows], out.dist.device)
            labels[rows, :gold.shape[1]] = gold
        return self.loss(out.dist, labels)

    def predict_trees(self, out: ParserOutput, decoder: str = "mst") -> tuple[Tensor, Tensor]:
        """:meth:`decode` with ``decoder``."""
        return self.decode(out.dist, decoder)

    def parse_batch(self, sentences, decoder: str = "mst") -> tuple[Tensor, Tensor]:
        return self.predict_trees(self.read(sentences), decoder)

    def decode(self, dist: MaxEnt, method: str = "mst") -> tuple[Tensor, Tensor]:
        """A valid single-root tree per sentence and a relation per arc: ``(heads, rels)``, ``LongTensor
        [batch_size, seq_len + 1]`` (-1 at 0 and padding).

        ``method="mst"``: the maximum spanning tree (Chu-Liu-Edmonds, single root) over the label-derived arc
        scores of :meth:`arc_scores`; ``"eisner"``: the best *projective* single-root tree over those scores
        (Eisner's algorithm, batched: for projective treebanks, and faster than Chu-Liu-Edmonds' loop over
        sentences); ``"repair"``: the best label of each word, turned into a tree by :func:`repair_tree` with
        those scores.  All three return the labels' own tree when it is a valid single-root tree (``eisner``:
        and projective), which is then also the best tree of the label-derived scores."""
        if method not in DECODERS:
            raise ValueError(f"method must be one of {', '.join(DECODERS)}, got {method!r}")
        # the labels' own trees first (vectorized); only the other sentences need arc scores and a decoder
        best = dist.argmax                                                        # [B, L], -1 at padding
        positions = torch.arange(1, best.shape[1] + 1, device=best.device)
        offsets, label_rels = self.label_offsets.to(best.device), self.label_rels.to(best.device)
        none = torch.full_like(best[:, :1], -1)
        heads = torch.cat([none, torch.where(best >= 0, positions + offsets[best.clamp(min=0)], -1)], 1)
        rels = torch.cat([none, torch.where(best >= 0, label_rels[best.clamp(min=0)], -1)], 1)
        valid = is_tree(heads, dist.lens, multiroot=False)
        if method == "eisner":
            valid &= projective(heads, dist.lens)
        todo = (~valid).nonzero().squeeze(1)
        if todo.numel():
            rest = MaxEnt(dist.potentials[0].index_select(0, todo), dist.lens.index_select(0, todo))
            heads[todo], rels[todo] = self._decode_trees(rest, method)
        return heads, rels

    def _decode_trees(self, dist: MaxEnt, method: str) -> tuple[Tensor, Tensor]:
        """:meth:`decode` for sentences whose labels do not make a single-root tree."""
        scores, logp = self._label_arcs(dist)
        lens = dist.lens
        if method == "mst":
            heads = MatrixTree(scores, lens, multiroot=False).argmax
        elif method == "eisner":
            heads = DependencyCRF(scores, lens, multiroot=False).argmax
        else:
            best = dist.argmax.cpu()
            offsets = self.label_offsets.cpu()
            numpy_scores = scores.double().cpu().numpy()
            heads = torch.full((dist.batch_size, scores.shape[1]), -1, dtype=torch.long)
            for b, n in enumerate(lens.tolist()):
                proposed = (torch.arange(1, n + 1) + offsets[best[b, :n]]).tolist()
                heads[b, 1:n + 1] = torch.tensor(repair_tree(proposed, numpy_scores[b, :n + 1, :n + 1]),
                                                 dtype=torch.long)
            heads = heads.to(scores.device)
        rels = self._relations_at(logp, heads)
        unexpressed = (rels < 0) & (heads >= 0)
        if bool(unexpressed.any()):  # rare once trained: the fallback costs a pass over every label
            rels = torch.where(unexpressed, self._fallback_relations(logp), rels)
        return heads, torch.where(heads >= 0, rels, torch.full_like(rels, -1))

    @torch.no_grad()
    def predict(self, sentences, method: str = "mst") -> tuple[list[list[int]], list[list[str]]]:
        """Heads and relation names of each sentence (no gradient; call ``eval()`` first)."""
        heads, rels = self.decode(self(sentences), method)
        return _as_lists(heads, rels, self.rels, [len(_words(s)) for s in sentences])


# ------------------------------------------------------------------------------------------- saving
def save_parser(model: BiaffineParser | SeqLabelingParser, directory: str | Path) -> Path:
    """Save a parser: ``config.json``, ``model.safetensors`` and its ``vocab.json`` (BiLSTM) or ``encoder/``
    transformer config and tokenizer files; :func:`structkd.models.serialization.load_pretrained` rebuilds it
    (a BiLSTM parser's vocabulary comes back as ``model.vocab``)."""
    directory = Path(directory)
    if model.encoder.is_transformer:  # save_pretrained writes its encoder/ files
        return save_pretrained(model, directory)
    return save_pretrained(model, directory, vocab=model.vocab)


def _parser_builder(cls: type):
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


register_model(BiaffineParser, _parser_builder(BiaffineParser))
register_model(SeqLabelingParser, _parser_builder(SeqLabelingParser))

__all__ = [
    "BiaffineArcScorer", "BiaffineParser", "BiaffineRelScorer", "MLP", "ParserEncoder", "SeqLabelingParser",
    "SiblingScorer", "build_labels", "build_rels", "build_vocab", "heads_and_rels", "repair_tree", "save_parser",
]
