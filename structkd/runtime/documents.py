"""Raw text in, :class:`~structkd.inference.results.Document` / :class:`~structkd.inference.results.Parse` out,
without torch: the input side and the result side of :func:`structkd.runtime.load`'s predictors.

They follow :mod:`structkd.inference.predictors` (``structkd.load``) rule for rule, so that both give the same
tokens, offsets and sentences: a string is tokenized by :func:`structkd.text.tokenize` (optionally split into
sentences first), a token list is kept as given with offsets into its tokens joined by single spaces; a tagger
reads sentences longer than ``max_words`` in consecutive pieces, a parser refuses them before any model work;
sentences are sorted by length into batches of at most ``batch_size`` sentences and ``max_batch_words`` padded
words; one result per input, in input order.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from structkd.runtime.results import Document, Entity, Parse, Word
from structkd.text import Token, language_of, split_sentences, tokenize

Input = str | Sequence[str]
TaggerOutput = tuple[list[str], list[tuple[int, int, str, float]]]
"""One piece's tags and entities ``(start, end_inclusive, label, score)`` (token indices within the piece)."""
ParserOutput = tuple[list[int], list[str], list[float], list[float]]
"""One sentence's heads, relations, head scores and relation scores."""


@dataclass
class Prepared:
    """An input after tokenization: its text, tokens and sentences (token ranges ``(first, last + 1)``)."""

    text: str
    tokens: list[Token]
    sentences: list[tuple[int, int]]


def pretokenized(item: Sequence[str], where: str) -> Prepared:
    """A token list as given: offsets into ``" ".join(item)``; empty tokens and tokens with tabs or line breaks
    are refused, naming ``where`` and the token."""
    tokens, position = [], 0
    for k, word in enumerate(item):
        if not isinstance(word, str):
            raise TypeError(f"{where}: token {k + 1} is a {type(word).__name__}, not a string")
        if not word or any(c in word for c in "\t\n\r"):
            raise ValueError(f"{where}: token {k + 1} ({word!r}) is empty or holds a tab or line break")
        tokens.append(Token(word, position, position + len(word)))
        position += len(word) + 1
    return Prepared(" ".join(item), tokens, [(0, len(tokens))] if tokens else [])


def prepare(item: Input, where: str, tokenizer: str, split: bool) -> Prepared:
    """Tokenize one input (``where`` names it in errors): a string, or a token list (kept as it is)."""
    if isinstance(item, str):
        if not split:
            tokens = tokenize(item, tokenizer)
            return Prepared(item, tokens, [(0, len(tokens))] if tokens else [])
        tokens, sentences = [], []
        for start, end in split_sentences(item, language_of(tokenizer)):
            found = [Token(t.text, t.start + start, t.end + start) for t in tokenize(item[start:end], tokenizer)]
            if found:
                sentences.append((len(tokens), len(tokens) + len(found)))
                tokens += found
        return Prepared(item, tokens, sentences)
    if isinstance(item, (list, tuple)):
        return pretokenized(item, where)
    raise TypeError(f"{where}: expected a string or a list of token strings, got {type(item).__name__}")


def length_batches(lengths: Sequence[int], batch_size: int, max_batch_words: int) -> list[list[int]]:
    """Indices of ``lengths`` sorted by length and cut into batches of at most ``batch_size`` items and
    ``max_batch_words`` padded words (a longer item alone)."""
    order = sorted(range(len(lengths)), key=lambda k: lengths[k])
    batches: list[list[int]] = []
    for k in order:
        if batches and len(batches[-1]) < batch_size and (len(batches[-1]) + 1) * lengths[k] <= max_batch_words:
            batches[-1].append(k)
        else:
            batches.append([k])
    return batches


def where_of(source: str | None, n: int) -> str:
    """How errors name input ``n``: ``source:n`` or ``input n``."""
    return f"{source}:{n}" if source else f"input {n}"


def tagger_pieces(prepared: Prepared, max_words: int) -> list[tuple[int, int]]:
    """The token ranges a tagger reads: each sentence in consecutive pieces of at most ``max_words`` tokens."""
    return [(a, min(a + max_words, b)) for first, b in prepared.sentences for a in range(first, b, max_words)]


def parser_pieces(prepared: Prepared, max_words: int, where: str) -> list[tuple[int, int]]:
    """The sentences a parser reads; a sentence longer than ``max_words`` is refused, naming ``where``."""
    for a, b in prepared.sentences:
        if b - a > max_words:
            raise ValueError(f"{where}: a sentence of {b - a} words (characters {prepared.tokens[a].start}.."
                             f"{prepared.tokens[b - 1].end}) is longer than max_words={max_words}; a parser reads "
                             f"whole sentences (memory grows with the square of their length): split running text "
                             f"into sentences (sentences=True) or raise max_words")
    return list(prepared.sentences)


def document_of(prepared: Prepared, outputs: Sequence[tuple[int, int, TaggerOutput]]) -> Document:
    """A tagged input from the outputs ``(first, last, (tags, entities))`` of its pieces."""
    tokens, tags, entities = prepared.tokens, [], []
    for a, _, (row, found) in outputs:
        tags += row
        for i, j, label, score in found:
            first, last = tokens[a + i], tokens[a + j]
            entities.append(Entity(prepared.text[first.start:last.end], label, first.start, last.end, a + i,
                                   a + j + 1, float(score)))
    return Document(prepared.text, tokens, tags, entities, list(prepared.sentences))


def parse_of(prepared: Prepared, outputs: Sequence[tuple[int, int, ParserOutput]]) -> Parse:
    """A parsed input from the outputs ``(first, last, (heads, rels, head_scores, rel_scores))`` of its
    sentences."""
    sentences = []
    for a, _, (heads, rels, head_p, rel_p) in outputs:
        tokens = prepared.tokens[a:a + len(heads)]
        sentences.append([Word(d + 1, t.text, t.start, t.end, int(h), r, float(hp), float(rp))
                          for d, (t, h, r, hp, rp) in enumerate(zip(tokens, heads, rels, head_p, rel_p))])
    return Parse(prepared.text, sentences)


class BatchedPredictor(ABC):
    """Inputs, pieces, batches and order of a predictor (no model, no torch): :meth:`predict` tokenizes, cuts
    pieces (:meth:`_pieces`), runs batches of word lists (:meth:`_run`) and builds one result per input
    (:meth:`_result`).

    Args:
        tokenizer: a :mod:`structkd.text` tokenizer name.
        sentences: split string inputs into sentences (:func:`structkd.text.split_sentences`).
        max_words: see the module docstring; batch_size, max_batch_words: batch limits in sentences and padded
            words.
    """

    def __init__(self, tokenizer: str, sentences: bool, max_words: int, batch_size: int, max_batch_words: int):
        self.tokenizer, self.sentences = tokenizer, bool(sentences)
        self.max_words, self.batch_size, self.max_batch_words = int(max_words), int(batch_size), int(max_batch_words)
        if self.max_words < 1 or self.batch_size < 1 or self.max_batch_words < 1:
            raise ValueError("max_words, batch_size and max_batch_words must be at least 1")

    def __call__(self, inputs: Input | Sequence[Input]):
        """One result for a string, a list of results for a list of strings or of token lists."""
        if isinstance(inputs, str):
            return self.predict([inputs])[0]
        return self.predict(list(inputs))

    def predict(self, inputs: Sequence[Input], first: int = 1, source: str | None = None) -> list:
        """Results of ``inputs`` in their order; errors name ``source:N`` (or ``input N``), counting from
        ``first``."""
        prepared = [prepare(item, where_of(source, first + k), self.tokenizer, self.sentences)
                    for k, item in enumerate(inputs)]
        pieces = [(k, a, b) for k, p in enumerate(prepared) for a, b in self._pieces(p, where_of(source, first + k))]
        outputs: list = [None] * len(pieces)
        for batch in length_batches([b - a for _, a, b in pieces], self.batch_size, self.max_batch_words):
            words = [[t.text for t in prepared[pieces[n][0]].tokens[pieces[n][1]:pieces[n][2]]] for n in batch]
            for n, out in zip(batch, self._run(words)):
                outputs[n] = out
        grouped: list[list] = [[] for _ in prepared]
        for (k, a, b), out in zip(pieces, outputs):
            grouped[k].append((a, b, out))
        return [self._result(p, g) for p, g in zip(prepared, grouped)]

    @abstractmethod
    def _pieces(self, prepared: Prepared, where: str) -> list[tuple[int, int]]:
        """The token ranges the model reads of one input."""

    @abstractmethod
    def _run(self, batch: list[list[str]]) -> list:
        """The model's output for each word list of a batch."""

    @abstractmethod
    def _result(self, prepared: Prepared, outputs: list):
        """One input's result from the outputs ``(first, last, output)`` of its pieces."""


__all__ = ["BatchedPredictor", "Prepared", "document_of", "length_batches", "parse_of", "parser_pieces", "prepare",
           "pretokenized", "tagger_pieces", "where_of"]
