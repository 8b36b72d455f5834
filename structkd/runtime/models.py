"""Exported models at run time: ONNX Runtime computes the scores, numpy decodes them.

:func:`load` reads a directory written by :func:`structkd.export.export_model` and returns a :class:`Tagger` or
a :class:`Parser`.  Both are called on a string, a list of strings (each a text) or a list of token lists, and
return one result per sentence (one result for a single string).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from structkd.runtime import decoding
from structkd.runtime.inputs import SubwordInputs, WordVocab

RUNTIME_NAME = "runtime.json"
GRAPH_NAME = "model.onnx"
ARRAYS_NAME = "arrays.npz"
VOCAB_NAME = "vocab.json"
TOKENIZER_NAME = "tokenizer.json"
FORMAT_VERSION = 1


@dataclass
class TaggedSentence:
    tokens: list[str]
    tags: list[str]


@dataclass
class ParsedSentence:
    tokens: list[str]
    heads: list[int]
    rels: list[str]


def tokens_of(text: str, tokenizer: str | None = None) -> list[str]:
    """Tokens of a raw string: ``structkd.text.tokenize`` (with the model's tokenizer name, else its default)
    where that module exists, else split at whitespace."""
    try:
        from structkd.text import tokenize
    except ImportError:
        return text.split()
    tokens = tokenize(text, tokenizer=tokenizer) if tokenizer else tokenize(text)
    return [getattr(t, "text", t) for t in tokens]


def _read_document(directory: Path) -> dict:
    path = directory / RUNTIME_NAME
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such exported model directory")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; not a directory written by structkd export")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(document, dict) or document.get("format") != "structkd-runtime":
        raise ValueError(f"{path}: not a structkd exported model (expected 'format': 'structkd-runtime')")
    if document.get("version") != FORMAT_VERSION:
        raise ValueError(f"{path}: format version {document.get('version')!r} is not supported")
    for name in (GRAPH_NAME, ARRAYS_NAME):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory / name}: missing")
    return document


class ExportedModel:
    """The part shared by :class:`Tagger` and :class:`Parser`: inputs, the ONNX session, batching.

    Args:
        directory: an exported model directory.
        threads: ONNX Runtime intra-op threads (``None``: its default).
        batch_size: sentences per graph run.
    """

    def __init__(self, directory: str | Path, threads: int | None = None, batch_size: int = 64):
        import onnxruntime

        self.directory = Path(directory)
        self.meta = _read_document(self.directory)
        options = onnxruntime.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(str(self.directory / GRAPH_NAME), options,
                                                    providers=["CPUExecutionProvider"])
        with np.load(self.directory / ARRAYS_NAME) as arrays:
            self.arrays = {k: arrays[k] for k in arrays.files}
        if "rel_weight" in self.arrays:  # [i, r, j] for one matrix product per word
            self.rel_weight = self.arrays["rel_weight"].transpose(1, 0, 2).reshape(
                self.arrays["rel_weight"].shape[1], -1)
        self.batch_size = batch_size
        self.tokenizer = self.meta.get("tokenizer")
        if self.meta["encoder"] == "bilstm":
            self.inputs = WordVocab.load(self.directory / VOCAB_NAME, self.meta.get("max_word_len", 20))
        else:
            self.inputs = SubwordInputs(self.directory / TOKENIZER_NAME, self.meta["subwords"])

    def _sentences(self, batch) -> tuple[list[list[str]], bool]:
        """Token lists of a call's argument and whether it was a single string."""
        if isinstance(batch, str):
            return [tokens_of(batch, self.tokenizer)], True
        batch = list(batch)
        if all(isinstance(s, str) for s in batch):
            return [tokens_of(s, self.tokenizer) for s in batch], False
        if any(isinstance(s, str) for s in batch):
            raise TypeError("pass a string, a list of strings or a list of token lists, not a mixture")
        sentences = [list(getattr(s, "tokens", getattr(s, "words", s))) for s in batch]
        for n, sentence in enumerate(sentences):
            if not all(isinstance(t, str) for t in sentence):
                raise TypeError(f"sentence {n}: tokens must be strings")
        return sentences, False

    def _check_lengths(self, sentences: list[list[str]]) -> None:
        limit = self.meta.get("max_words")
        for n, sentence in enumerate(sentences):
            if limit is not None and len(sentence) > limit:
                raise ValueError(f"sentence {n} has {len(sentence)} tokens, more than the {limit} this model was "
                                 f"exported for")

    def scores(self, sentences: Sequence[Sequence[str]]) -> tuple[list[np.ndarray], np.ndarray]:
        """The graph's outputs for one batch of token lists, and ``lens [batch_size]``."""
        feed = self.inputs.encode(sentences)
        names = [i.name for i in self.session.get_inputs()]
        outputs = self.session.run(None, {k: feed[k] for k in names})
        return outputs, np.array([len(s) for s in sentences], dtype=np.int64)

    def _run(self, batch, decode):
        """Decode every sentence in batches of similar length, results in the input order."""
        sentences, single = self._sentences(batch)
        self._check_lengths(sentences)
        order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
        results: list = [None] * len(sentences)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            for i, result in zip(chunk, decode([sentences[i] for i in chunk])):
                results[i] = result
        return results[0] if single else results


class Tagger(ExportedModel):
    """An exported tagger (CRF or MaxEnt head): ``tagger("John lives in Paris")`` -> :class:`TaggedSentence`."""

    def __call__(self, batch) -> TaggedSentence | list[TaggedSentence]:
        return self._run(batch, self._decode)

    def _decode(self, sentences: list[list[str]]) -> list[TaggedSentence]:
        names = self.meta["tags"]
        return [TaggedSentence(s, [names[t] for t in row]) for s, row in zip(sentences, self.tag_indices(sentences))]

    def tag_indices(self, sentences: Sequence[Sequence[str]]) -> list[list[int]]:
        """Best tag indices of one batch of token lists."""
        if not sentences or max(len(s) for s in sentences) == 0:
            return [[] for _ in sentences]
        (emissions,), lens = self.scores(sentences)
        if self.meta["head"] == "crf":
            a = self.arrays
            tags = decoding.viterbi(emissions, lens, a["transitions"], a["start"], a["end"], a.get("allowed"),
                                    a.get("allowed_start"), a.get("allowed_end"))
        else:
            tags = decoding.maxent(emissions, lens)
        return [row[:n].tolist() for row, n in zip(tags, lens.tolist())]


class Parser(ExportedModel):
    """An exported parser (biaffine or sequence labeling): ``parser(["John", "sleeps"])``... returns
    :class:`ParsedSentence` (heads 0 for the root, relation names)."""

    def __call__(self, batch) -> ParsedSentence | list[ParsedSentence]:
        return self._run(batch, self._decode)

    def _decode(self, sentences: list[list[str]]) -> list[ParsedSentence]:
        heads, rels = self.parse(sentences)
        names = self.meta["rels"]
        return [ParsedSentence(s, h, [names[r] for r in r_row]) for s, h, r_row in zip(sentences, heads, rels)]

    def parse(self, sentences: Sequence[Sequence[str]]) -> tuple[list[list[int]], list[list[int]]]:
        """Heads and relation indices of one batch of token lists."""
        if not sentences or max(len(s) for s in sentences) == 0:
            return [[] for _ in sentences], [[] for _ in sentences]
        outputs, lens = self.scores(sentences)
        if self.meta["kind"] == "biaffine":
            heads, rels = self._biaffine(outputs, lens)
        else:
            from structkd.runtime.seqlabel import decode_labels

            heads, rels = decode_labels(outputs[0], lens, self.arrays["label_offsets"], self.arrays["label_rels"],
                                        len(self.meta["rels"]), self.meta["decoder"])
        return ([row[1:n + 1].tolist() for row, n in zip(heads, lens.tolist())],
                [row[1:n + 1].tolist() for row, n in zip(rels, lens.tolist())])

    def _biaffine(self, outputs: list[np.ndarray], lens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        arcs, dep, head = outputs
        decoder = decoding.eisner if self.meta["tree"] == "projective" else decoding.mst
        heads = decoder(arcs, lens, False)  # decoding is single-root, as BiaffineParser.parse
        chosen = np.take_along_axis(head, np.maximum(heads, 0)[..., None], 1).astype(np.float64)
        n_rels = len(self.meta["rels"])
        projected = (dep.astype(np.float64) @ self.rel_weight).reshape(*dep.shape[:2], n_rels, -1)  # [B, S, R, h+1]
        logits = np.einsum("bdrj,bdj->bdr", projected, chosen)
        return heads, np.where(heads >= 0, logits.argmax(-1), -1)


def load(path: str | Path, threads: int | None = None, batch_size: int = 64) -> Tagger | Parser:
    """A :class:`Tagger` or :class:`Parser` from a directory written by :func:`structkd.export.export_model`."""
    meta = _read_document(Path(path))
    cls = Tagger if meta["task"] == "ner" else Parser
    return cls(path, threads=threads, batch_size=batch_size)


__all__ = ["ExportedModel", "ParsedSentence", "Parser", "TaggedSentence", "Tagger", "load", "tokens_of"]
