"""One interface over the parsers: build, run on a batch of sentences, gold loss, decoding, attachment scores.

A :class:`ParseModel` wraps a :class:`~structkd.models.parsers.BiaffineParser` (a tree distribution plus
relation logits) or a :class:`~structkd.models.seqlabel_parser.SeqLabelingParser` (a MaxEnt over ``(head offset,
relation)`` labels), so that training, distillation and evaluation code is the same for both.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from structkd.data import ParsedSentence
from structkd.models.embeddings import (
    load_teacher_embeddings,
    resolve_init_from_teacher,
    teacher_lexicon,
    teacher_word_encoder,
)
from structkd.models.encoders import resolve_encoder
from structkd.models.parsers import (
    BiaffineParser,
    ParserOutput,
    build_vocab,
    has_tree,
    save_parser,
    stand_in_trees,  # noqa: F401 (the parser task's, re-exported)
)
from structkd.models.seqlabel_parser import SeqLabelingParser, build_labels
from structkd.models.serialization import load_pretrained
from structkd.models.transformer import shrink_encoder
from structkd.parse.config import ModelConfig
from structkd.parse.metrics import attachment_scores
from structkd.structs.heads import projective
from structkd.structs.tree import nearest_projective
from structkd.train.batching import BatchCost, cubic_cost, map_in_pieces
from structkd.train.config import DEFAULT_MAX_BATCH_COST

Tensor = torch.Tensor


@dataclass
class Batch:
    """Sentences of a batch with their dataset indices."""

    indices: list[int]
    sentences: list[ParsedSentence]


def without_tree(sentence: ParsedSentence) -> ParsedSentence:
    """The sentence with HEAD and DEPREL dropped (``-1`` and ``_``): distillation data for the teacher alone."""
    n = len(sentence.words)
    return dataclasses.replace(sentence, heads=[-1] * n, deprels=["_"] * n)


class ParseModel(nn.Module):
    """A biaffine or sequence-labeling parser behind one interface.

    Args:
        parser: a :class:`BiaffineParser` or :class:`SeqLabelingParser` (a BiLSTM parser carries its vocabulary
            as ``parser.vocab``).
        decoder: ``mst``, ``eisner`` or ``repair``, how a sequence-labeling parser turns labels into trees.
    """

    def __init__(self, parser: BiaffineParser | SeqLabelingParser, decoder: str = "mst"):
        super().__init__()
        if not isinstance(parser, (BiaffineParser, SeqLabelingParser)):
            raise TypeError(f"expected a BiaffineParser or SeqLabelingParser, got {type(parser).__name__}")
        self.parser = parser
        self.decoder = decoder

    @property
    def kind(self) -> str:
        return self.parser.kind

    @property
    def tree(self) -> str | None:
        """``projective``, ``nonprojective`` or ``2o`` for a biaffine parser, ``None`` otherwise."""
        return self.parser.tree

    @property
    def rels(self) -> list[str]:
        return list(self.parser.rels)

    @property
    def needs_projective(self) -> bool:
        return self.tree in ("projective", "2o")

    @property
    def multiroot(self) -> bool:
        return bool(self.parser.multiroot)

    @property
    def batch_cost(self) -> BatchCost | None:
        """A second-order parser's batch cost (:func:`cubic_cost`: its sibling scores and charts grow with the
        cube of the padded length); ``None`` for the others, whose memory grows at most with its square."""
        return cubic_cost if self.tree == "2o" else None

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(self, sentences: Sequence[ParsedSentence]) -> ParserOutput:
        return self.parser.read(sentences)

    def gold_loss(self, out: ParserOutput, sentences: Sequence[ParsedSentence]) -> Tensor:
        """Per-sentence gold loss ``[batch_size]``: tree NLL plus relation cross-entropy (biaffine), or the
        labels' NLL (sequence labeling); exactly 0 for a sentence without a tree (:func:`has_tree`: unlabeled
        distillation data), which contributes no gradient."""
        loss = self.parser.sentence_loss(out, sentences)
        labeled = torch.tensor([has_tree(s) for s in sentences], device=loss.device)
        return torch.where(labeled, loss, torch.zeros_like(loss))

    def decode(self, out: ParserOutput) -> tuple[Tensor, Tensor]:
        """``(heads, rels)``, ``LongTensor [batch_size, seq_len + 1]`` (-1 at position 0 and padding)."""
        return self.parser.predict_trees(out, self.decoder)

    @torch.no_grad()
    def parse(self, sentences: Sequence[ParsedSentence]) -> tuple[Tensor, Tensor]:
        """``decode(self(sentences))`` without building what decoding does not read (a biaffine parser scores
        relations at the predicted arcs only, see :meth:`BiaffineParser.parse`).  No gradient."""
        return self.parser.parse_batch(sentences, self.decoder)

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def save(self, directory: str | Path) -> Path:
        """``save_parser`` plus the decoder choice (``decoder.txt``)."""
        directory = save_parser(self.parser, directory)
        (Path(directory) / "decoder.txt").write_text(self.decoder + "\n", encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory: str | Path, device: torch.device | str = "cpu") -> ParseModel:
        parser = load_pretrained(directory, device=device)
        decoder_file = Path(directory) / "decoder.txt"
        decoder = decoder_file.read_text(encoding="utf-8").strip() if decoder_file.is_file() else "mst"
        return cls(parser, decoder).to(device)


def _encoder_options(config: ModelConfig) -> dict:
    return {"word_dim": config.word_dim, "hidden": config.hidden, "char_filters": config.char_filters,
            "layers": config.layers, "dropout": config.dropout}


def build_model(config: ModelConfig, rels: Sequence[str], sentences: Sequence[ParsedSentence],
                multiroot: bool = False, teacher: ParseModel | None = None,
                vocab_sentences: Sequence[ParsedSentence] | None = None) -> ParseModel:
    """A fresh parser from its config.

    Args:
        rels: the relation inventory.
        sentences: training trees (BiLSTM vocabulary; label inventory of a sequence-labeling parser).
        multiroot: whether the tree distribution allows several root words.
        vocab_sentences: the sentences a BiLSTM parser's vocabulary covers instead (say, the training trees
            plus unlabeled distillation sentences); the labels still come from ``sentences``.
        teacher: serves ``keep_every`` (a transformer student from the teacher's layers; a biaffine student of a
            biaffine teacher with the same MLP widths also starts from the teacher's scorers) and
            ``init_from_teacher`` (a BiLSTM student's word embeddings from a transformer teacher's input
            embeddings, :mod:`structkd.models.embeddings`).
    """
    encoder, options, vocab, source = config.encoder, {}, None, None
    if config.keep_every:
        if teacher is None or not teacher.parser.encoder.is_transformer:
            raise ValueError("model.keep_every builds a student from a transformer teacher: pass kd.teacher")
        encoder = shrink_encoder(teacher.parser.encoder.transformer, config.keep_every)
    elif config.encoder == "bilstm":
        vocab = build_vocab(sentences if vocab_sentences is None else vocab_sentences, rels)
        options = _encoder_options(config)
        if starts_from_teacher(config, teacher):
            source = _embedding_source(teacher)
            options["word_dim"] = source.hidden_size
    else:
        encoder = resolve_encoder(config.encoder)
        options = {"pooling": config.pooling}
    if config.kind == "biaffine":
        parser = BiaffineParser(encoder, rels, config.tree, multiroot, arc_hidden=config.arc_hidden,
                                rel_hidden=config.rel_hidden, sib_hidden=config.sib_hidden, sib_rank=config.sib_rank,
                                dropout=config.dropout, encoder_options=options, vocab=vocab)
        if config.keep_every and teacher.kind == "biaffine":
            _copy_scorers(teacher.parser, parser)
    else:
        parser = SeqLabelingParser(encoder, rels, build_labels(sentences, rels), dropout=config.dropout,
                                   encoder_options=options, vocab=vocab)
    if source is not None:
        load_teacher_embeddings(parser.encoder.bilstm, source, vocab.words.items, freeze=config.freeze_embeddings)
        vocab.lexicon = teacher_lexicon(source, config.open_vocabulary)
    return ParseModel(parser, config.decoder)


def starts_from_teacher(config: ModelConfig, teacher: ParseModel | None) -> bool:
    """Whether a student of ``config`` starts from ``teacher``'s word embeddings (``model.init_from_teacher``,
    ``auto`` resolved: a BiLSTM student of a transformer teacher, :func:`resolve_init_from_teacher`)."""
    encoder = teacher.parser.encoder.transformer if teacher is not None else None
    return resolve_init_from_teacher(config.init_from_teacher, config.freeze_embeddings,
                                     config.has_word_embeddings, encoder)


def _embedding_source(teacher: ParseModel | None):
    """The teacher's subword encoder that ``model.init_from_teacher`` copies word embeddings from (a
    transformer parser's; a BiLSTM parser is refused)."""
    if teacher is None:
        return teacher_word_encoder(None, None)
    return teacher_word_encoder(teacher.parser.encoder.transformer, "a BiLSTM parser")


def _copy_scorers(source: BiaffineParser, target: BiaffineParser) -> None:
    """Start a student from its teacher's root vector and scorers where the shapes agree."""
    mine = target.state_dict()
    copied = {k: v for k, v in source.state_dict().items()
              if not k.startswith("encoder.") and k in mine and mine[k].shape == v.shape}
    target.load_state_dict(copied, strict=False)


def _head_chunks(sentences: Sequence[ParsedSentence], chunk: int):
    """``(sentences, heads [B, S], lens [B])`` of consecutive pieces of ``chunk`` sentences."""
    for start in range(0, len(sentences), chunk):
        part = sentences[start:start + chunk]
        heads = torch.full((len(part), max(len(s) for s in part) + 1), -1, dtype=torch.long)
        for b, s in enumerate(part):
            heads[b, 1:len(s) + 1] = torch.tensor(s.heads, dtype=torch.long)
        yield part, heads, torch.tensor([len(s) for s in part])


def split_projective(sentences: Sequence[ParsedSentence], chunk: int = 256
                     ) -> tuple[list[ParsedSentence], list[ParsedSentence]]:
    """``(projective, nonprojective)`` sentences, in their order."""
    flags: list[bool] = []
    for _, heads, lens in _head_chunks(sentences, chunk):
        flags += projective(heads, lens).tolist()
    keep = [s for s, ok in zip(sentences, flags) if ok]
    drop = [s for s, ok in zip(sentences, flags) if not ok]
    return keep, drop


def projectivize(sentences: Sequence[ParsedSentence], multiroot: bool, chunk: int = 64) -> list[ParsedSentence]:
    """The sentences with their trees replaced by the nearest projective trees
    (:func:`structkd.structs.tree.nearest_projective`: the most arcs kept, each changed word lifted to the
    nearest ancestor of its head that projectivity allows, its relation kept)."""
    order = sorted(range(len(sentences)), key=lambda k: len(sentences[k]))  # chunks of similar lengths
    out: list[ParsedSentence] = [None] * len(sentences)  # type: ignore[list-item]
    for start, (part, heads, lens) in zip(range(0, len(order), chunk),
                                          _head_chunks([sentences[k] for k in order], chunk)):
        fixed = nearest_projective(heads, lens, multiroot).tolist()
        for k, s, row in zip(order[start:start + chunk], part, fixed):
            out[k] = dataclasses.replace(s, heads=row[1:len(s) + 1])
    return out


def batches(sentences: Sequence, batch_size: int):
    for start in range(0, len(sentences), batch_size):
        yield sentences[start:start + batch_size]


def predict(model: ParseModel, sentences: Sequence, batch_size: int = 64,
            max_cost: float | None = DEFAULT_MAX_BATCH_COST) -> tuple[list[list[int]], list[list[str]]]:
    """Heads (``0`` = root) and relation names of every sentence (eval mode, no gradient).  Sentences are
    parsed in batches of similar lengths (a second-order parser's within ``max_cost``, as
    ``training.max_batch_cost`` holds its training batches) and returned in their order."""
    model.eval()
    order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
    names = model.rels

    def parse(chunk: list[int]) -> list[tuple[list[int], list[str]]]:
        batch_heads, batch_rels = model.parse([sentences[i] for i in chunk])
        return [(batch_heads[row, 1:len(sentences[i]) + 1].tolist(),
                 [names[r] for r in batch_rels[row, 1:len(sentences[i]) + 1].tolist()])
                for row, i in enumerate(chunk)]

    trees: list[tuple[list[int], list[str]] | None] = [None] * len(sentences)
    with torch.no_grad():
        for chunk in batches(order, batch_size):
            lengths = [len(sentences[i]) for i in chunk]
            for i, tree in zip(chunk, map_in_pieces(chunk, lengths, model.batch_cost, max_cost, parse)):
                trees[i] = tree
    return [t[0] for t in trees], [t[1] for t in trees]


def evaluate(model: ParseModel, sentences: Sequence[ParsedSentence], batch_size: int = 64,
             report: bool = False) -> dict:
    """Attachment scores (:func:`structkd.parse.metrics.attachment_scores`) and sentences per second; the
    per-relation table only with ``report``."""
    if not sentences:
        raise ValueError("evaluation needs sentences")
    if any(h < 0 for s in sentences for h in s.heads):
        raise ValueError("evaluation needs gold trees (some HEAD values are '_')")
    start = time.perf_counter()
    heads, rels = predict(model, sentences, batch_size)
    elapsed = time.perf_counter() - start
    result = attachment_scores(sentences, heads, rels)
    result["sentences_per_second"] = len(sentences) / max(elapsed, 1e-9)
    if not report:
        result.pop("per_relation")
    return result
