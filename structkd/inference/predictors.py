"""Raw text in, entities or trees out: :func:`load`, :class:`Tagger`, :class:`Parser` and :func:`predict_stream`.

A predictor reads inputs (strings, or token lists that skip tokenization), tokenizes them with the tokenizer
saved with the model (:func:`set_tokenizer`, ``inference.json``; :func:`structkd.text.default_tokenizer` when
none was saved), optionally splits running text into sentences, sorts the sentences by length into batches of at
most ``batch_size`` sentences and ``max_batch_words`` padded words, and returns one result per input, in input
order.  Sentences longer than ``max_words``: a tagger reads them in consecutive pieces of ``max_words`` tokens (an
entity does not cross a piece boundary); a parser refuses them, naming the input, before any model work.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import torch

from structkd.inference.results import Document, Parse, Result
from structkd.inference.scores import entity_probabilities, label_head_probabilities, tree_head_probabilities
from structkd.runtime.documents import (
    BatchedPredictor,
    Prepared,
    document_of,
    parse_of,
    parser_pieces,
    tagger_pieces,
)
from structkd.runtime.files import read_json_in
from structkd.runtime.spans import scheme_of
from structkd.schemes import spans
from structkd.structs.semimarkov import chart_to_segments
from structkd.text import check_tokenizer, default_tokenizer, tokenize
from structkd.train.batching import map_in_pieces
from structkd.train.config import DEFAULT_MAX_BATCH_COST

INFERENCE_FILE = "inference.json"
TAGGER_CLASSES = ("BiLSTMTagger", "TransformerTagger", "HFTokenClassifier")
PARSER_CLASSES = ("BiaffineParser", "SeqLabelingParser")
Input = str | Sequence[str]


# ------------------------------------------------------------------------------------------- saved choices
def set_tokenizer(directory: str | Path, tokenizer: str) -> Path:
    """Save the tokenizer ``load`` uses for the model in ``directory`` (``inference.json`` next to
    ``config.json``; saving the model again replaces the directory whole, so set it after saving)."""
    directory = Path(directory)
    check_tokenizer(tokenizer)
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(f"{directory / 'config.json'}: missing; set_tokenizer writes next to a saved model")
    path = directory / INFERENCE_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"tokenizer": tokenizer}) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def saved_tokenizer(directory: str | Path) -> str | None:
    """The tokenizer saved by :func:`set_tokenizer`, ``None`` when there is none."""
    path = Path(directory) / INFERENCE_FILE
    if not path.is_file():
        return None
    document = read_json_in(directory, INFERENCE_FILE, "set_tokenizer")
    if not isinstance(document, dict) or not isinstance(document.get("tokenizer"), str):
        raise ValueError(f"{path}: expected an object with a 'tokenizer' string")
    try:
        return check_tokenizer(document["tokenizer"])
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error


def model_class(directory: str | Path) -> str:
    """The class name in a saved model's ``config.json`` (``HFTokenClassifier`` for a ``transformers`` token
    classifier as it is), with an error naming the file for anything else."""
    path = Path(directory) / "config.json"
    document = read_json_in(directory, "config.json", "structkd (train, distill) or transformers' save_pretrained")
    if isinstance(document, dict) and "model_type" in document and document.get("format") != "structkd":
        # a transformers token classifier as it is (structkd.models.hf_teacher): a MaxEnt tagger over id2label
        if not any(str(a).endswith("ForTokenClassification") for a in document.get("architectures") or ()):
            raise ValueError(f"{path}: a Hugging Face model that is not a token classifier (architectures "
                             f"{document.get('architectures')}); structkd.load reads structkd models and "
                             f"AutoModelForTokenClassification checkpoints")
        return "HFTokenClassifier"
    name = document.get("class") if isinstance(document, dict) and document.get("format") == "structkd" else None
    if name not in TAGGER_CLASSES + PARSER_CLASSES:
        raise ValueError(f"{path}: not a structkd tagger or parser config (class {name!r}; expected one of "
                         f"{', '.join(TAGGER_CLASSES + PARSER_CLASSES)})")
    return name


# ------------------------------------------------------------------------------------------- predictors
class Predictor(BatchedPredictor):
    """What :class:`Tagger` and :class:`Parser` share with the torch-free runtime's predictors
    (:class:`structkd.runtime.documents.BatchedPredictor`: inputs, pieces, batches, order), on a torch model
    run without gradients.

    Args:
        model: a :class:`~structkd.ner.modeling.NerModel` or :class:`~structkd.parse.modeling.ParseModel`.
        tokenizer: a :mod:`structkd.text` tokenizer name.
        sentences: split string inputs into sentences (:func:`structkd.text.split_sentences`).
        max_words: the longest sentence read whole (see the module docstring).
        batch_size, max_batch_words: batch limits in sentences and padded words.
    """

    default_max_words = 1000

    def __init__(self, model, tokenizer: str, sentences: bool = False, max_words: int | None = None,
                 batch_size: int = 32, max_batch_words: int = 4096):
        self.model = model.eval()
        super().__init__(check_tokenizer(tokenizer), sentences,
                         self.default_max_words if max_words is None else max_words, batch_size, max_batch_words)

    def predict(self, inputs: Sequence[Input], first: int = 1, source: str | None = None) -> list[Result]:
        """Results of ``inputs`` in their order; errors name ``source:N`` (or ``input N``), counting from
        ``first``."""
        with torch.no_grad():
            return super().predict(inputs, first, source)


class Tagger(Predictor):
    """NER on raw text: :class:`~structkd.inference.results.Document` per input, entities with exact scores."""

    default_max_words = 1000

    @property
    def tags(self) -> list[str]:
        return self.model.tags

    @property
    def scheme(self) -> str:
        """The model's tag scheme (for an unconstrained model: BIOES if it has ``E-``/``S-`` tags, else BIO)."""
        tagger = self.model.tagger
        return scheme_of(self.tags, getattr(tagger, "scheme", None) or getattr(tagger, "config", {}).get("scheme"))

    def _pieces(self, prepared: Prepared, where: str) -> list[tuple[int, int]]:
        return tagger_pieces(prepared, self.max_words)

    def _run(self, batch: list[list[str]]) -> list[tuple[list[str], list[tuple[int, int, str, float]]]]:
        """Tags and entities ``(start, end_inclusive, label, score)`` of word lists."""
        from structkd.data import Sentence

        dist = self.model([Sentence(list(words)) for words in batch])
        tags = self.model.decode(dist)
        if self.model.head_kind == "span":
            return self._span_entities(dist, tags)
        out = []
        for b, (words, row) in enumerate(zip(batch, tags)):
            n = len(words)
            found = spans(row, self.scheme)
            if self.model.head_kind == "crf":
                unary, edges = dist.potentials
                scores = entity_probabilities(found, self.tags, n, chain=(unary[b, :n], edges[b, :n - 1]))
            else:
                scores = entity_probabilities(found, self.tags, n, probs=dist.potentials[0][b, :n].double().softmax(-1))
            out.append((row, [(i, j, kind, s) for (i, j, kind), s in zip(found, scores)]))
        return out

    def _span_entities(self, dist, tags: list[list[str]]) -> list:
        labels = self.model.tagger.span_labels
        outside = self.model.tagger.head.outside_label
        marginals = dist.marginals
        out = []
        for b, segments in enumerate(chart_to_segments(dist.argmax)):
            found = [(i, j, labels[c], float(marginals[b, i, j, c])) for i, j, c in segments if labels[c] != outside]
            out.append((tags[b], found))
        return out

    def _result(self, prepared: Prepared, outputs: list) -> Document:
        return document_of(prepared, outputs)


class Parser(Predictor):
    """Dependency parsing of raw text: :class:`~structkd.inference.results.Parse` per input, with exact head
    marginals."""

    default_max_words = 500

    def _pieces(self, prepared: Prepared, where: str) -> list[tuple[int, int]]:
        return parser_pieces(prepared, self.max_words, where)

    def _run(self, batch: list[list[str]]) -> list[tuple[list[int], list[str], list[float], list[float]]]:
        # a second-order parser's batch of long sentences in pieces (its memory grows with the cube of the length)
        return map_in_pieces(batch, [len(words) for words in batch], self.model.batch_cost, DEFAULT_MAX_BATCH_COST,
                             self._parse)

    def _parse(self, batch: list[list[str]]) -> list[tuple[list[int], list[str], list[float], list[float]]]:
        out = self.model(batch)
        heads, rels = self.model.decode(out)
        if self.model.kind == "biaffine":
            head_p = tree_head_probabilities(out.dist.marginals, heads)
            index = heads.clamp(min=0).view(*heads.shape, 1, 1).expand(-1, -1, 1, out.rel_logits.shape[-1])
            rel_p = out.rel_logits.gather(2, index).squeeze(2).float().softmax(-1)
            rel_p = rel_p.gather(-1, rels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        else:
            probs = out.dist.potentials[0].double().softmax(-1)
            head_p = label_head_probabilities(probs, self.model.parser.label_offsets, heads)
            rel_p = self._label_rel_probabilities(probs, heads, rels, head_p)
        names = self.model.rels
        results = []
        for b, words in enumerate(batch):
            n = len(words)
            results.append((heads[b, 1:n + 1].tolist(), [names[r] for r in rels[b, 1:n + 1].tolist()],
                            head_p[b, 1:n + 1].tolist(), rel_p[b, 1:n + 1].tolist()))
        return results

    def _label_rel_probabilities(self, probs, heads, rels, head_p):
        """``P(label = (head - d, rel)) / P(offset = head - d)`` per word, 0 where no label expresses it."""
        index = {label: k for k, label in enumerate(self.model.parser.labels)}
        out = torch.zeros_like(head_p)
        for b, d in (heads[:, 1:] >= 0).nonzero().tolist():
            k = index.get((int(heads[b, d + 1]) - d - 1, int(rels[b, d + 1])))
            if k is not None and head_p[b, d + 1] > 0:
                out[b, d + 1] = probs[b, d, k] / head_p[b, d + 1]
        return out

    def _result(self, prepared: Prepared, outputs: list) -> Parse:
        return parse_of(prepared, outputs)


# ------------------------------------------------------------------------------------------- entry points
def load(path: str | Path, device: torch.device | str = "cpu", tokenizer: str | None = None, sentences: bool = False,
         max_words: int | None = None, batch_size: int = 32, max_batch_words: int = 4096) -> Tagger | Parser:
    """A :class:`Tagger` or :class:`Parser` for the structkd model saved in ``path`` (teacher or student; the
    kind is read from its ``config.json``).

    Args:
        device: where the model runs.
        tokenizer: overrides the saved choice (:func:`set_tokenizer`; default :func:`~structkd.text.default_tokenizer`).
        sentences, max_words, batch_size, max_batch_words: see :class:`Predictor`.
    """
    name = model_class(path)
    chosen = check_tokenizer(tokenizer) if tokenizer is not None else saved_tokenizer(path) or default_tokenizer()
    tokenize("", chosen)  # a missing library is named now, before the weights are read
    options = {"sentences": sentences, "max_words": max_words, "batch_size": batch_size,
               "max_batch_words": max_batch_words}
    if name in TAGGER_CLASSES:
        from structkd.ner.modeling import NerModel

        return Tagger(NerModel.load(path, device), chosen, **options)
    from structkd.parse.modeling import ParseModel

    return Parser(ParseModel.load(path, device), chosen, **options)


def predict_stream(model: Predictor, inputs: Iterable[Input], chunk_size: int = 256,
                   source: str | None = None) -> Iterator[Result]:
    """Results of ``inputs`` in order, reading ``chunk_size`` inputs at a time: memory is bounded by the chunk,
    whatever the length of the stream.  Errors name ``source:N`` (``N`` counts inputs from 1, the line number
    of a one-input-per-line file) or ``input N``."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    iterator = iter(inputs)
    first = 1
    while True:
        chunk = list(itertools.islice(iterator, chunk_size))
        if not chunk:
            return
        yield from model.predict(chunk, first, source)
        first += len(chunk)
