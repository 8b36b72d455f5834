"""Reading and writing CoNLL-U treebanks for dependency parsing.

A sentence block is a run of comment lines (``# ...``) and token lines (ten tab-separated columns: ID, FORM,
LEMMA, UPOS, XPOS, FEATS, HEAD, DEPREL, DEPS, MISC) ended by a blank line.  The basic tree is read from the
*word* lines (integer IDs ``1..n``): multiword-token lines (``1-2``) and empty nodes (``8.1``) are skipped for
the tree but kept, with every comment, so that :func:`write_conllu` writes the file back with only the HEAD and
DEPREL columns of the words replaced.  Relation subtypes are kept (``nmod:poss``).

Every problem (a wrong column count, an ID or HEAD that is not an integer, a head out of range, a cycle,
several roots when ``multiroot=False``, bytes that are not UTF-8, an empty file) raises
:class:`~structkd.data.columns.CorpusError` whose message starts with ``path:line:``.

Heads follow the tree convention of :mod:`structkd.structs.heads`: ``heads[i]`` is the head of word ``i + 1``
and 0 is the root.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, NamedTuple

import conllu
import torch

from structkd.data.columns import CorpusError, Sentence, read_text, read_utf8_lines
from structkd.structs.heads import iter_cycles, projective

N_COLUMNS = 10
HEAD, DEPREL = 6, 7
_WORD_ID = re.compile(r"[1-9][0-9]*")
_RANGE_ID = re.compile(r"[1-9][0-9]*-[1-9][0-9]*")
_EMPTY_ID = re.compile(r"[0-9]+\.[1-9][0-9]*")
_INTEGER = re.compile(r"[0-9]+")


@dataclass
class ParsedSentence:
    """One CoNLL-U sentence: its basic tree and everything needed to write it back.

    Attributes:
        words: FORM of each word (multiword tokens and empty nodes excluded).
        upos: UPOS of each word.
        heads: head of each word, ``heads[i]`` for word ``i + 1`` (0 = root, -1 = unknown when read with
            ``validate=False`` from a file whose HEAD is ``_``).
        deprels: relation of each word (subtypes kept, e.g. ``nmod:poss``).
        source: ``"path:line"`` of the sentence's first word.
        token_list: the sentence as parsed by the ``conllu`` package (all token lines, metadata).
        comments: the raw comment lines, in order.
        lines: the raw lines of the block (comments and tokens), written back by :func:`write_conllu`.
        word_lines: the file line of each word.
    """

    words: list[str]
    upos: list[str]
    heads: list[int]
    deprels: list[str]
    source: str = ""
    token_list: conllu.TokenList | None = field(default=None, repr=False)
    comments: list[str] = field(default_factory=list, repr=False)
    lines: list[str] = field(default_factory=list, repr=False)
    word_lines: list[int] = field(default_factory=list, repr=False)

    def __len__(self) -> int:
        return len(self.words)

    @property
    def tokens(self) -> list[str]:
        """The words (the attribute name used by :class:`structkd.data.Sentence` and the encoders)."""
        return self.words


# ------------------------------------------------------------------------------------------ reading
def _blocks(lines: Iterable[tuple[int, str]]) -> Iterator[list[tuple[int, str]]]:
    """Sentence blocks of numbered lines ``(line number, raw line)`` as lists of them."""
    block: list[tuple[int, str]] = []
    for number, raw in lines:
        if raw.strip():
            block.append((number, raw))
        elif block:
            yield block
            block = []
    if block:
        yield block


def _check_tree(path: Path, heads: list[int], lines: list[int], multiroot: bool) -> None:
    n = len(heads)
    for i, h in enumerate(heads, start=1):
        if h > n or h == i:
            what = "the word itself" if h == i else f"beyond the sentence's {n} words"
            raise CorpusError(path, lines[i - 1], f"HEAD {h} of word {i} is out of range ({what})")
    roots = [i for i, h in enumerate(heads, start=1) if h == 0]
    cycle = next(iter_cycles([-1, *heads]), None)  # a sentence without a root word always has one
    if cycle is not None:
        first = min(cycle)
        order = cycle[cycle.index(first):] + cycle[:cycle.index(first)] + [first]
        raise CorpusError(path, lines[first - 1], f"the heads of words {' -> '.join(map(str, order))} form a cycle")
    if len(roots) > 1 and not multiroot:
        raise CorpusError(path, lines[roots[1] - 1], f"words {', '.join(map(str, roots))} are all attached to the "
                          f"root; a single root is required (data.multiroot: false, as in UD; set data.multiroot=true "
                          f"for a treebank whose trees have several roots)")


def _check_special_id(path: Path, number: int, token_id: str, words: int, covered: int) -> tuple[int, int]:
    """Check a multiword-token range (``3-4``: the next word first, a smaller start than end, after the ranges
    before it, which cover words up to ``covered``) or an empty node (``8.1``: after word 8) against the
    ``words`` read so far; returns ``(line, last word)`` of a range for the end check (``(line, 0)`` for an
    empty node)."""
    if "." in token_id:
        after = int(token_id.split(".")[0])
        if after != words:
            raise CorpusError(path, number, f"empty node {token_id} after word {words} (its ID must be "
                              f"{words}.N)")
        return number, 0
    start, end = (int(x) for x in token_id.split("-"))
    if start >= end:
        raise CorpusError(path, number, f"multiword-token range {token_id} does not span two words or more "
                          f"(start < end)")
    if start != words + 1 or start <= covered:
        raise CorpusError(path, number, f"multiword-token range {token_id} where one starting at word "
                          f"{words + 1} was expected")
    return number, end


class _Words(NamedTuple):
    """The comments and the word columns of a sentence block."""

    comments: list[str]
    words: list[str]
    upos: list[str]
    heads: list[int]
    deprels: list[str]
    lines: list[int]


def _block_words(path: Path, block: list[tuple[int, str]], validate: bool) -> _Words:
    """The words of a block, every line checked (column count, IDs, ranges, empty nodes, HEAD, DEPREL) but not
    the tree."""
    read = _Words([], [], [], [], [], [])
    comments, words, upos, heads, deprels, word_lines = read
    ranges: list[tuple[int, int]] = []
    for number, raw in block:
        if raw.startswith("#"):
            comments.append(raw)
            continue
        fields = raw.split("\t")
        if len(fields) != N_COLUMNS:
            raise CorpusError(path, number, f"expected {N_COLUMNS} tab-separated columns, found {len(fields)}: "
                              f"{raw!r}")
        token_id = fields[0]
        if _RANGE_ID.fullmatch(token_id) or _EMPTY_ID.fullmatch(token_id):
            covered = max((end for _, end in ranges), default=0)
            ranges.append(_check_special_id(path, number, token_id, len(words), covered))
            continue
        if not _WORD_ID.fullmatch(token_id):
            raise CorpusError(path, number, f"ID {token_id!r} is not a word index, a range (1-2) or an empty "
                              f"node (8.1)")
        if int(token_id) != len(words) + 1:
            raise CorpusError(path, number, f"word ID {token_id} where {len(words) + 1} was expected (word IDs "
                              f"are 1, 2, 3, ...)")
        head, deprel = fields[HEAD], fields[DEPREL]
        if head == "_" and not validate:
            heads.append(-1)
        elif _INTEGER.fullmatch(head):
            heads.append(int(head))
        else:
            raise CorpusError(path, number, f"HEAD {head!r} of word {token_id} is not an integer")
        if validate and deprel in ("", "_"):
            raise CorpusError(path, number, f"DEPREL of word {token_id} is missing")
        words.append(fields[1])
        upos.append(fields[3])
        deprels.append(deprel)
        word_lines.append(number)
    if not words:
        raise CorpusError(path, block[0][0], "a sentence block without words (only comments, multiword tokens or "
                          "empty nodes)")
    for number, end in ranges:
        if end > len(words):
            raise CorpusError(path, number, f"the range ends at word {end}, but the sentence has {len(words)} words")
    return read


def _parse_block(path: Path, block: list[tuple[int, str]], multiroot: bool, validate: bool) -> ParsedSentence:
    comments, words, upos, heads, deprels, word_lines = _block_words(path, block, validate)
    if validate:
        _check_tree(path, heads, word_lines, multiroot)
    raw_lines = [raw for _, raw in block]
    try:
        token_list = conllu.parse_token_and_metadata("\n".join(raw_lines))
    except conllu.exceptions.ParseException as err:
        raise CorpusError(path, block[0][0], f"conllu cannot parse the sentence: {err}") from None
    return ParsedSentence(words, upos, heads, deprels, f"{path}:{word_lines[0]}", token_list, comments, raw_lines,
                          word_lines)


def read_conllu(path: str | Path, multiroot: bool = False, validate: bool = True,
                max_sentences: int | None = None) -> list[ParsedSentence]:
    """Read a CoNLL-U file into sentences.

    Args:
        path: the file (UTF-8, an optional byte-order mark is dropped).
        multiroot: whether several words of a sentence may attach to the root (UD: no).
        validate: check every basic tree (heads in range, acyclic, roots as ``multiroot`` says; DEPREL present).
            ``False`` reads unannotated files (HEAD ``_`` gives -1) without the tree checks; the column
            count, IDs and integer heads are always checked.
        max_sentences: read only the first sentences (the rest of the file is neither parsed nor checked:
            parsing is most of the time, about 0.5 ms per sentence).

    Raises:
        CorpusError: ``path:line: problem`` for the first problem found.
    """
    path = Path(path)
    form = ConlluFormat(multiroot, validate)
    sentences = list(itertools.islice(form.sentences(path, enumerate(read_utf8_lines(path), start=1)),
                                      max_sentences))
    if not sentences:
        raise CorpusError(path, form.empty_line, "the file holds no sentences")
    return sentences


@dataclass(frozen=True)
class ConlluFormat:
    """How CoNLL-U files are read (:func:`read_conllu`'s ``multiroot`` and ``validate``)."""

    multiroot: bool = False
    validate: bool = True
    empty_line: ClassVar[int | None] = 1  # where "the file holds no sentences" points

    def sentences(self, path: Path, lines: Iterable[tuple[int, str]], resumed: bool = False
                  ) -> Iterator[ParsedSentence]:
        """The sentences of the numbered ``lines`` (``resumed``: they start at a sentence; the same here)."""
        for block in _blocks(lines):
            yield _parse_block(path, block, self.multiroot, self.validate)

    def scan(self, path: Path, lines: Iterable[tuple[int, str]]) -> Iterator[tuple[int, int]]:
        """``(first line, words)`` of each sentence block: every check of :func:`read_conllu` but the
        ``conllu`` package's own parse (about a third of the time), which reading the sentence makes."""
        for block in _blocks(lines):
            read = _block_words(path, block, self.validate)
            if self.validate:
                _check_tree(path, read.heads, read.lines, self.multiroot)
            yield block[0][0], len(read.words)


def as_parsed(sentence: Sentence) -> ParsedSentence:
    """A sentence of text (:class:`~structkd.data.Sentence`) as a sentence to parse, without a tree (heads -1,
    UPOS and DEPREL ``_``)."""
    n = len(sentence.tokens)
    return ParsedSentence(sentence.tokens, ["_"] * n, [-1] * n, ["_"] * n, source=sentence.source,
                          word_lines=sentence.lines * n)


def read_tokenized_text(path: str | Path, max_sentences: int | None = None) -> list[ParsedSentence]:
    """Sentences to parse from a text file, one whitespace-tokenized sentence per line (blank lines skipped),
    without trees (heads -1, UPOS and DEPREL ``_``).

    Read as :func:`structkd.data.read_text` reads it: UTF-8 with an optional byte-order mark; bytes that are not
    UTF-8 and a file without sentences raise :class:`~structkd.data.columns.CorpusError`.
    """
    return [as_parsed(sentence) for sentence in read_text(path)[:max_sentences]]


# ------------------------------------------------------------------------------------------ statistics
def heads_tensor(sentences: Sequence[ParsedSentence], heads: Sequence[Sequence[int]] | None = None) -> torch.Tensor:
    """``LongTensor [batch_size, max_words + 1]`` of heads (position 0 the root, -1 at position 0 and padding)."""
    rows = [s.heads for s in sentences] if heads is None else heads
    out = torch.full((len(rows), max((len(r) for r in rows), default=0) + 1), -1, dtype=torch.long)
    for b, row in enumerate(rows):
        out[b, 1:len(row) + 1] = torch.tensor(list(row), dtype=torch.long)
    return out


def treebank_stats(sentences: Sequence[ParsedSentence], chunk: int = 256) -> dict:
    """Size and projectivity of a treebank.

    Returns:
        ``{"sentences", "words", "nonprojective" (sentences whose tree has crossing arcs), "nonprojective_fraction",
        "multiroot" (sentences with several root words)}``; sentences with unknown heads are not counted as
        non-projective.
    """
    known = sorted((s for s in sentences if all(h >= 0 for h in s.heads)), key=len)
    nonprojective = 0
    for start in range(0, len(known), chunk):
        part = known[start:start + chunk]
        heads = heads_tensor(part)
        lens = torch.tensor([len(s) for s in part])
        nonprojective += int((~projective(heads, lens)).sum())
    return {"sentences": len(sentences), "words": sum(len(s) for s in sentences), "nonprojective": nonprojective,
            "nonprojective_fraction": nonprojective / max(1, len(sentences)),
            "multiroot": sum(sum(h == 0 for h in s.heads) > 1 for s in sentences)}


# ------------------------------------------------------------------------------------------ writing
def _row(heads, b: int, n: int, source: str) -> list[int]:
    if isinstance(heads, torch.Tensor):
        if heads.dim() != 2 or heads.shape[1] < n + 1:
            raise ValueError(f"{source}: heads must be [batch_size, seq_len + 1] (position 0 the root), got "
                             f"{list(heads.shape)}")
        return heads[b, 1:n + 1].tolist()
    return list(heads[b])


def write_conllu(path: str | Path, sentences: Sequence[ParsedSentence],
                 heads: Sequence[Sequence[int]] | torch.Tensor | None = None,
                 deprels: Sequence[Sequence[str]] | None = None) -> None:
    """Write sentences (e.g. with predicted trees) as CoNLL-U.

    Comments, multiword-token lines, empty nodes and every column except HEAD and DEPREL of the words are
    written exactly as read.

    Args:
        sentences: as read by :func:`read_conllu` (a sentence built by hand, without raw lines, is written
            with ``_`` in the columns it lacks).
        heads: new heads per sentence, lists (``heads[b][i]`` for word ``i + 1``) or a ``LongTensor
            [batch_size, seq_len + 1]`` with position 0 the root (as decoded by the parsers); default: keep.
        deprels: new relations per sentence; default: keep.
    """
    if heads is not None and len(heads) != len(sentences):
        raise ValueError(f"{len(heads)} head rows for {len(sentences)} sentences")
    if deprels is not None and len(deprels) != len(sentences):
        raise ValueError(f"{len(deprels)} relation rows for {len(sentences)} sentences")
    out: list[str] = []
    for b, sentence in enumerate(sentences):
        n = len(sentence)
        new_heads = sentence.heads if heads is None else _row(heads, b, n, sentence.source)
        new_rels = sentence.deprels if deprels is None else list(deprels[b])
        if len(new_heads) != n or len(new_rels) != n:
            raise ValueError(f"{sentence.source or f'sentence {b}'}: {len(new_heads)} heads and {len(new_rels)} "
                             f"relations for {n} words")
        lines = sentence.lines or [f"{i}\t{w}\t_\t{u}\t_\t_\t_\t_\t_\t_"
                                   for i, (w, u) in enumerate(zip(sentence.words, sentence.upos), start=1)]
        for raw in lines:
            fields = raw.split("\t")
            if not raw.startswith("#") and len(fields) == N_COLUMNS and _WORD_ID.fullmatch(fields[0]):
                i = int(fields[0]) - 1
                fields[HEAD] = "_" if new_heads[i] < 0 else str(int(new_heads[i]))
                fields[DEPREL] = new_rels[i]
                raw = "\t".join(fields)
            out.append(raw)
        out.append("")
    Path(path).write_text("\n".join(out) + "\n", encoding="utf-8")


__all__ = ["ConlluFormat", "ParsedSentence", "as_parsed", "heads_tensor", "read_conllu", "read_tokenized_text",
           "treebank_stats", "write_conllu"]
