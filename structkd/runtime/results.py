"""What :func:`structkd.load`'s and :func:`structkd.runtime.load`'s taggers and parsers return, and writers for
streams of them.  Torch-free: it lives here, where the runtime of exported models can import it without the
torch of :mod:`structkd.inference`'s predictors; :mod:`structkd.inference.results` re-exports every name.

Every result is a dataclass with ``to_dict()`` (JSON-ready).  Offsets are characters of the input string (for
pre-tokenized input, of its tokens joined by single spaces), end exclusive; token indices are end exclusive too.
The writers take an iterable of results and a text stream and write as they read, so a stream of any length
is written in bounded memory: ``conll`` (tagger: token and tag; parser: the ten CoNLL-X columns), ``conllu``,
``json`` (one array) and ``jsonl`` (one object per line).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TextIO

from structkd.text import Token


@dataclass
class Entity:
    """An entity: ``text == source[start:end]``, tokens ``token_start..token_end - 1``, and ``score``, the
    model's marginal probability of exactly this labelled span."""

    text: str
    label: str
    start: int
    end: int
    token_start: int
    token_end: int
    score: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Document:
    """A tagged input: its tokens, one tag per token, its entities, and its sentences as token ranges
    ``(first, last + 1)`` (one range unless the input was split into sentences)."""

    text: str
    tokens: list[Token]
    tags: list[str]
    entities: list[Entity]
    sentences: list[tuple[int, int]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"text": self.text, "tokens": [t.to_dict() for t in self.tokens], "tags": list(self.tags),
                "entities": [e.to_dict() for e in self.entities], "sentences": [list(s) for s in self.sentences]}


@dataclass
class Word:
    """A parsed word: ``id`` (1-based in its sentence), ``head`` (0 = root), ``deprel``, ``head_score`` (the
    marginal probability of that head) and ``deprel_score`` (the probability of the relation given the head)."""

    id: int
    text: str
    start: int
    end: int
    head: int
    deprel: str
    head_score: float
    deprel_score: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Parse:
    """A parsed input: its sentences, each a list of :class:`Word`."""

    text: str
    sentences: list[list[Word]]

    @property
    def words(self) -> list[Word]:
        return [w for s in self.sentences for w in s]

    def to_conllu(self) -> str:
        """CoNLL-U text: ``# text`` per sentence, ``SpaceAfter=No`` where the input had no space."""
        blocks = []
        for sentence in self.sentences:
            if not sentence:
                continue
            lines = [f"# text = {self.text[sentence[0].start:sentence[-1].end]}"]
            for n, w in enumerate(sentence):
                glued = n + 1 < len(sentence) and sentence[n + 1].start == w.end
                lines.append(f"{w.id}\t{w.text}\t_\t_\t_\t_\t{w.head}\t{w.deprel}\t_\t"
                             f"{'SpaceAfter=No' if glued else '_'}")
            blocks.append("\n".join(lines) + "\n\n")
        return "".join(blocks)

    def to_dict(self) -> dict:
        return {"text": self.text, "sentences": [[w.to_dict() for w in s] for s in self.sentences]}


Result = Document | Parse


def write_jsonl(results: Iterable[Result], stream: TextIO) -> int:
    """One JSON object per line; returns how many were written."""
    count = 0
    for result in results:
        stream.write(json.dumps(result.to_dict(), ensure_ascii=False) + "\n")
        count += 1
    return count


def write_json(results: Iterable[Result], stream: TextIO) -> int:
    """One JSON array, written item by item."""
    count = 0
    stream.write("[")
    for result in results:
        stream.write(("," if count else "") + "\n" + json.dumps(result.to_dict(), ensure_ascii=False))
        count += 1
    stream.write("\n]\n")
    return count


def write_conll(results: Iterable[Result], stream: TextIO) -> int:
    """Tagger: ``token<TAB>tag`` lines, a blank line after each sentence.  Parser: the ten CoNLL-X columns."""
    count = 0
    for result in results:
        if isinstance(result, Parse):
            for sentence in result.sentences:
                stream.writelines(f"{w.id}\t{w.text}\t_\t_\t_\t_\t{w.head}\t{w.deprel}\t_\t_\n" for w in sentence)
                stream.write("\n" if sentence else "")
        else:
            for first, last in result.sentences:
                stream.writelines(f"{result.tokens[k].text}\t{result.tags[k]}\n" for k in range(first, last))
                stream.write("\n" if last > first else "")
        count += 1
    return count


def write_conllu(results: Iterable[Result], stream: TextIO) -> int:
    """CoNLL-U: a parser's trees (:meth:`Parse.to_conllu`); a tagger's tags in MISC as ``NER=<tag>``."""
    count = 0
    for result in results:
        if isinstance(result, Parse):
            stream.write(result.to_conllu())
        else:
            for first, last in result.sentences:
                if last <= first:
                    continue
                tokens = result.tokens
                stream.write(f"# text = {result.text[tokens[first].start:tokens[last - 1].end]}\n")
                for k in range(first, last):
                    glued = k + 1 < last and tokens[k + 1].start == tokens[k].end
                    misc = f"NER={result.tags[k]}" + ("|SpaceAfter=No" if glued else "")
                    stream.write(f"{k - first + 1}\t{tokens[k].text}\t_\t_\t_\t_\t_\t_\t_\t{misc}\n")
                stream.write("\n")
        count += 1
    return count


WRITERS: dict[str, Callable[[Iterable[Result], TextIO], int]] = {
    "conll": write_conll, "conllu": write_conllu, "json": write_json, "jsonl": write_jsonl}


def write_results(results: Iterable[Result], stream: TextIO, format: str = "jsonl") -> int:
    """Write ``results`` in ``format`` (one of :data:`WRITERS`); returns how many were written."""
    if format not in WRITERS:
        raise ValueError(f"unknown output format {format!r}; expected one of {', '.join(WRITERS)}")
    return WRITERS[format](results, stream)


__all__ = ["WRITERS", "Document", "Entity", "Parse", "Result", "Word", "write_conll", "write_conllu", "write_json",
           "write_jsonl", "write_results"]
