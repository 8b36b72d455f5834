"""One interface over the NER models: build, run on a batch of sentences, gold loss, decoding, F1.

BiLSTM taggers read index tensors built from their vocabulary; transformer taggers read words.  A
:class:`NerModel` hides the difference so the training and distillation code is the same for both.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

from structkd.data import Sentence
from structkd.models.embeddings import (
    load_teacher_embeddings,
    resolve_init_from_teacher,
    teacher_lexicon,
    teacher_word_encoder,
)
from structkd.models.encoders import resolve_encoder
from structkd.models.hf_teacher import HFTokenClassifier, hf_labels, is_hf_checkpoint
from structkd.models.serialization import load_pretrained, save_pretrained
from structkd.models.taggers import BiLSTMTagger
from structkd.models.transformer import TransformerTagger, student_from_teacher
from structkd.models.vocab import TaggerVocab, Vocabulary
from structkd.ner.config import ModelConfig
from structkd.schemes import label_scheme, spans
from structkd.structs.base import StructuredDistribution
from structkd.train.batching import BatchCost, map_in_pieces
from structkd.train.config import DEFAULT_MAX_BATCH_COST

Tensor = torch.Tensor
logger = logging.getLogger("structkd.ner")


@dataclass
class Batch:
    """Sentences of a batch with their dataset indices and gold tags (``-1`` at padding and for unlabeled)."""

    indices: list[int]
    sentences: list[Sentence]
    tags: Tensor
    labeled: Tensor


class NerModel(nn.Module):
    r"""A BiLSTM or transformer tagger, or a Hugging Face token classifier, behind one interface: each tagger
    ``read``\ s sentences into a distribution and has ``tags``, ``head_kind``, ``gold_loss`` and ``decode``.

    Args:
        tagger: a :class:`BiLSTMTagger`, :class:`TransformerTagger` or
            :class:`~structkd.models.hf_teacher.HFTokenClassifier` (a MaxEnt teacher).
        vocab: the BiLSTM tagger's vocabulary (``None`` for the others, which read words).
    """

    def __init__(self, tagger: nn.Module, vocab: TaggerVocab | None = None):
        super().__init__()
        if isinstance(tagger, BiLSTMTagger):
            if vocab is None:
                raise ValueError("a BiLSTM tagger needs its vocabulary")
            tagger.vocab = vocab
        self.tagger = tagger
        self.vocab = vocab

    @property
    def tags(self) -> list[str]:
        return list(self.tagger.tags)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(self, sentences: Sequence[Sentence]) -> StructuredDistribution:
        return self.tagger.read(sentences)

    def tag_tensor(self, sentences: Sequence[Sentence]) -> tuple[Tensor, Tensor]:
        """Gold tag indices ``[B, L]`` (-1 at padding and for unlabeled sentences) and the labeled mask ``[B]``."""
        index = {t: i for i, t in enumerate(self.tags)}
        seq_len = max(len(s) for s in sentences)
        tags = torch.full((len(sentences), seq_len), -1, dtype=torch.long)
        for b, s in enumerate(sentences):
            if s.tags is None:
                continue
            unknown = sorted(set(s.tags) - set(index))
            if unknown:
                raise ValueError(f"{s.source}: tags {unknown} are not in the model's label set {self.tags}")
            tags[b, :len(s)] = torch.tensor([index[t] for t in s.tags])
        labeled = torch.tensor([s.tags is not None for s in sentences])
        return tags, labeled

    def gold_loss(self, dist: StructuredDistribution, tags: Tensor) -> Tensor:
        """Per-sentence NLL of gold tags; rows of unlabeled sentences must be masked out by the caller."""
        tags = tags.to(dist.device)
        return self.tagger.gold_loss(dist, torch.where(tags >= 0, tags, torch.zeros_like(tags)))

    def decode(self, dist: StructuredDistribution) -> list[list[str]]:
        return self.tagger.decode(dist)

    @property
    def head_kind(self) -> str:
        return self.tagger.head_kind

    @property
    def batch_cost(self) -> BatchCost | None:
        """Its tagger's :data:`~structkd.train.batching.BatchCost` (a span head's), or ``None``."""
        return self.tagger.batch_cost

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def save(self, directory: str | Path) -> Path:
        """A structkd model directory; a Hugging Face token classifier is written back in its own format."""
        if isinstance(self.tagger, HFTokenClassifier):
            return self.tagger.save(directory)
        return save_pretrained(self.tagger, directory, vocab=self.vocab)

    @classmethod
    def load(cls, directory: str | Path, device: torch.device | str = "cpu", scheme: str | None = None,
             pooling: str = "first") -> NerModel:
        """A saved structkd tagger, or a Hugging Face ``AutoModelForTokenClassification`` checkpoint (a directory
        written by ``save_pretrained`` or a hub name, :func:`~structkd.models.hf_teacher.is_hf_checkpoint`) used
        as a MaxEnt tagger with ``scheme`` (default: detected from its labels) and sub-word ``pooling``."""
        if is_hf_checkpoint(directory):
            return cls(HFTokenClassifier.from_pretrained(directory, scheme=scheme, pooling=pooling).to(device))
        tagger = load_pretrained(directory, device=device)
        return cls(tagger, getattr(tagger, "vocab", None))


def saved_scheme(directory: str | Path, exact: bool = False) -> str | None:
    """The tag scheme of a saved tagger, read from its ``config.json`` without its weights: a structkd tagger's
    constraint scheme, else the scheme of its labels (:func:`~structkd.schemes.label_scheme`, as for a Hugging
    Face token classifier's ``id2label``, whose ``B-``/``I-`` labels are BIO, the convention of Hugging Face's
    datasets); ``None`` when the config names no tags or cannot be read (loading the model then names the problem).

    Args:
        exact: only a scheme the tagger is known to keep: ``None`` also for a span tagger (its spans serve any
            scheme) and for an unconstrained structkd tagger of ``B-``/``I-`` labels (BIO or IOB1: they cannot tell).
    """
    try:
        document = json.loads((Path(directory) / "config.json").read_text(encoding="utf-8-sig"))
        if document.get("format") != "structkd":
            return hf_labels(SimpleNamespace(id2label=document["id2label"]))[1]
        args = document["args"]
        if exact and args.get("head") == "span":
            return None
        if args.get("scheme") or not args.get("tags"):
            return args.get("scheme")
        scheme = label_scheme(args["tags"])
        return None if exact and scheme != "BIOES" else scheme
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):
        return None


def longest_entity(sentences: Sequence[Sentence], scheme: str) -> int:
    """Length in tokens of the longest entity of the labeled sentences (0 if none)."""
    return max((end - start + 1 for s in sentences if s.tags for start, end, _ in spans(s.tags, scheme)), default=0)


def build_model(config: ModelConfig, tags: Sequence[str], scheme: str, sentences: Sequence[Sentence],
                teacher: NerModel | None = None) -> NerModel:
    """A fresh model from its config; ``sentences`` build a BiLSTM vocabulary (and raise a span head's
    ``max_width`` to the longest training entity), ``teacher`` serves ``keep_every`` (transformer student from
    the teacher's layers) and ``init_from_teacher``."""
    constraint_scheme = scheme if (config.constrained or config.head == "span") else None
    if config.kind == "transformer":
        if config.keep_every:
            if teacher is None or not isinstance(teacher.tagger, TransformerTagger):
                raise ValueError("model.keep_every builds a student from a transformer teacher: pass kd.teacher")
            return NerModel(student_from_teacher(teacher.tagger, config.keep_every, head=config.head))
        max_width = config.max_width
        if config.head == "span":
            longest = longest_entity(sentences, scheme)
            if longest > max_width:
                logger.info("model.max_width %d raised to %d, the longest training entity", max_width, longest)
                max_width = longest
        tagger = TransformerTagger(resolve_encoder(config.encoder), list(tags), config.head, constraint_scheme,
                                   dropout=config.dropout, max_width=max_width, pooling=config.pooling)
        return NerModel(tagger)
    if config.kind != "bilstm":
        raise ValueError(f"model.kind must be 'transformer' or 'bilstm', got {config.kind!r}")
    if config.head == "span":
        raise ValueError("the BiLSTM tagger has a CRF or MaxEnt head, not a span head")
    built = TaggerVocab.build(sentences)
    vocab = TaggerVocab(built.words, built.chars, Vocabulary(list(tags), special=False))
    source = _embedding_source(teacher) if starts_from_teacher(config, teacher) else None
    tagger = BiLSTMTagger(len(vocab.words), len(vocab.chars), list(tags), config.head, constraint_scheme,
                          word_dim=config.word_dim if source is None else source.hidden_size, hidden=config.hidden,
                          char_filters=config.char_filters, dropout=config.dropout)
    if source is not None:
        load_teacher_embeddings(tagger.encoder, source, vocab.words.items, freeze=config.freeze_embeddings)
        vocab.lexicon = teacher_lexicon(source, config.open_vocabulary)
    return NerModel(tagger, vocab)


def starts_from_teacher(config: ModelConfig, teacher: NerModel | None) -> bool:
    """Whether a student of ``config`` starts from ``teacher``'s word embeddings (``model.init_from_teacher``,
    ``auto`` resolved: a BiLSTM student of a transformer teacher, :func:`resolve_init_from_teacher`)."""
    encoder = getattr(teacher.tagger, "encoder", None) if teacher is not None else None
    return resolve_init_from_teacher(config.init_from_teacher, config.freeze_embeddings, config.kind == "bilstm",
                                     encoder)


def _embedding_source(teacher: NerModel | None):
    """The teacher's subword encoder that ``model.init_from_teacher`` copies word embeddings from (a
    transformer tagger's or a Hugging Face token classifier's; any other teacher is refused)."""
    if teacher is None:
        return teacher_word_encoder(None, None)
    tagger = teacher.tagger
    return teacher_word_encoder(getattr(tagger, "encoder", None), f"a {type(tagger).__name__}")


def batches(sentences: Sequence[Sentence], batch_size: int):
    for start in range(0, len(sentences), batch_size):
        yield sentences[start:start + batch_size]


def predict(model: NerModel, sentences: Sequence[Sentence], batch_size: int = 64,
            max_cost: float | None = DEFAULT_MAX_BATCH_COST) -> list[list[str]]:
    """Best tag sequence of every sentence (eval mode, no gradient); a span head's batches of long sentences in
    pieces within ``max_cost`` (as ``training.max_batch_cost`` holds its training batches)."""
    model.eval()
    out: list[list[str]] = []
    with torch.no_grad():
        for chunk in batches(list(sentences), batch_size):
            out.extend(map_in_pieces(chunk, [len(s) for s in chunk], model.batch_cost, max_cost,
                                     lambda part: model.decode(model(part))))
    return out


def evaluate(model: NerModel, sentences: Sequence[Sentence], batch_size: int = 64, report: bool = False) -> dict:
    """Entity-level micro precision, recall and F1 (seqeval), sentences per second, optional per-type table."""
    labeled = [s for s in sentences if s.tags is not None]
    if not labeled:
        raise ValueError("evaluation needs labeled sentences")
    start = time.perf_counter()
    predicted = predict(model, labeled, batch_size)
    elapsed = time.perf_counter() - start
    gold = [s.tags for s in labeled]
    # imported here: seqeval pulls in scikit-learn and SciPy (about a second), which the parsers never need
    from seqeval.metrics import classification_report, f1_score, precision_score, recall_score

    scores = {name: float(fn(gold, predicted, zero_division=0))  # no predicted entity: 0, without a warning
              for name, fn in (("f1", f1_score), ("precision", precision_score), ("recall", recall_score))}
    result = {**scores, "sentences_per_second": len(labeled) / elapsed}
    if report:
        result["per_type"] = classification_report(gold, predicted, output_dict=True, zero_division=0)
    return result
