"""Sentences read from their file on demand: distillation text of 10^5 to 10^6 sentences without holding it.

:func:`index_file` reads a file once, making every check of the eager reader (the format's ``scan``: column
counts, IDs, UTF-8, ...; errors name ``file:line`` before any other work) and keeping, per sentence, only the
byte offset of its first line, its line number and its word count (NumPy arrays, about 24 bytes a sentence).
The :class:`LazySentences` it returns is a random-access sequence: ``sentences[i]`` seeks to the sentence and
parses it with the eager reader's own function (the same sentence object, ``path:line`` sources included);
``sentences[a:b]`` is a view of the index; iterating streams through the file in one pass.

:func:`concat` joins sequences (lists and lazy ones) without copying them, :func:`enumerated` pairs items with
their indices (what the :class:`~structkd.train.Trainer` reads), :func:`mapped` applies a function per item, and
:func:`sentence_lengths` gives word counts from the index.

A format (:class:`~structkd.data.columns.TextFormat`, :class:`~structkd.data.columns.ColumnFormat`,
:class:`~structkd.data.conllu_io.ConlluFormat`) groups numbered lines ``(line, text)`` into sentences:
``scan(path, lines)`` yields ``(first line, words)`` of each sentence of a whole file, checking it;
``sentences(path, lines, resumed)`` yields the parsed sentences (``resumed``: the lines start at a sentence).
Lines are numbered as :func:`~structkd.data.columns.read_utf8_lines` numbers them (broken at ``\\n``, ``\\r\\n``
and ``\\r``, :func:`~structkd.data.columns.split_lines`; a leading byte-order mark dropped).
"""

from __future__ import annotations

import bisect
import itertools
import logging
import os
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from structkd.data.columns import CorpusError, TextFormat, column_format, decode_utf8, split_lines
from structkd.data.conllu_io import ConlluFormat

__all__ = ["ConcatSequence", "LazySentences", "concat", "enumerated", "index_file", "lazy_columns", "lazy_conllu",
           "lazy_text", "mapped", "sentence_lengths"]

logger = logging.getLogger("structkd.data")


class _Lines:
    """The numbered lines of a binary file from a byte offset, remembering where each physical line starts.

    Args:
        path: the file, for messages.
        handle: the open file, at ``offset``.
        offset: the byte offset of a physical line (ending in ``\\n``).
        number: the number of that line's first (logical) line.
    """

    def __init__(self, path: Path, handle: BinaryIO, offset: int = 0, number: int = 1):
        self.path, self.handle, self.offset, self.number = path, handle, offset, number
        self.marks: list[tuple[int, int]] = []  # (first line number, byte offset) of the physical lines read

    def __iter__(self) -> Iterator[tuple[int, str]]:
        offset, number = self.offset, self.number
        for raw in self.handle:
            text = decode_utf8(self.path, raw, offset, number)
            if offset == 0:
                text = text.removeprefix("\ufeff")
            self.marks.append((number, offset))
            for line in split_lines(text):
                yield number, line
                number += 1
            offset += len(raw)

    def locate(self, line: int) -> tuple[int, int]:
        """``(offset, skip)``: the byte offset of the physical line holding ``line`` and how many lines come
        before it there (0 unless a line break other than ``\\n`` separates them); earlier marks are dropped."""
        k = bisect.bisect_right(self.marks, (line, float("inf"))) - 1
        first, offset = self.marks[k]
        del self.marks[:k]
        return offset, line - first


def _stamp(handle: BinaryIO) -> tuple[int, int]:
    status = os.fstat(handle.fileno())
    return status.st_size, status.st_mtime_ns


def index_file(path: str | Path, form: Any, max_sentences: int | None = None) -> LazySentences:
    """Check a file and index its sentences (the first ``max_sentences``) for :class:`LazySentences`.

    Args:
        path: the file.
        form: its format (``scan`` and ``sentences``, see the module docstring).

    Raises:
        CorpusError: ``path:line: problem`` for the first problem the format's checks find, or a file without
            sentences.
    """
    path = Path(path)
    offsets, lines, skips, words = array("q"), array("q"), array("i"), array("i")  # 8, 8, 4 and 4 bytes
    with open(path, "rb") as handle:
        stamp = _stamp(handle)
        numbered = _Lines(path, handle)
        for first, count in itertools.islice(form.scan(path, numbered), max_sentences):
            offset, skip = numbered.locate(first)
            offsets.append(offset)
            lines.append(first)
            skips.append(skip)
            words.append(count)
    if not offsets:
        raise CorpusError(path, form.empty_line, "the file holds no sentences")
    logger.info("%s: indexed %d sentences", path, len(offsets))
    columns = ((offsets, np.int64), (lines, np.int64), (skips, np.int32), (words, np.int32))
    return LazySentences(path, form, *(np.frombuffer(a, dtype=t) for a, t in columns), stamp=stamp)  # no copy


class LazySentences(Sequence):
    """The sentences of one file, read on demand through its index (:func:`index_file`).

    ``sentences[i]`` opens the file, seeks to the sentence and parses it (then applies ``converts`` in order);
    ``sentences[a:b]`` is another view of the same index (no sentence read); iterating a view of consecutive
    sentences streams through the file once.  A file changed since it was indexed is refused when read.
    Instances pickle (NumPy arrays, the path, the format and module-level ``converts``): data loader workers
    read the file themselves.

    Attributes:
        path, form: the file and its format.
        offsets: ``int64 [n]`` byte offset of the physical line holding each sentence's first line.
        lines: ``int64 [n]`` number of each sentence's first line.
        skips: ``int32 [n]`` lines before it in that physical line (0 unless a line break other than ``\\n``).
        words: ``int32 [n]`` each sentence's word count (what ``group_by_length`` batches by).
    """

    def __init__(self, path: Path, form: Any, offsets: np.ndarray, lines: np.ndarray, skips: np.ndarray,
                 words: np.ndarray, converts: tuple[Callable[[Any], Any], ...] = (),
                 stamp: tuple[int, int] | None = None, contiguous: bool = True):
        self.path, self.form, self.converts, self.stamp = Path(path), form, tuple(converts), stamp
        self.offsets, self.lines, self.skips, self.words = offsets, lines, skips, words
        self.contiguous = contiguous

    def __len__(self) -> int:
        return len(self.offsets)

    def __repr__(self) -> str:
        return f"LazySentences({str(self.path)!r}, {len(self)} sentences)"

    def __getitem__(self, key: int | slice) -> Any:
        if isinstance(key, slice):
            return self._view(key)
        i = _position(key, len(self))
        with self._open() as handle:
            return self._read(handle, i)

    def __iter__(self) -> Iterator[Any]:
        if not len(self):
            return
        with self._open() as handle:
            if not self.contiguous:
                for i in range(len(self)):
                    yield self._read(handle, i)
                return
            stream = self.form.sentences(self.path, self._lines_at(handle, 0), resumed=True)
            for sentence in itertools.islice(stream, len(self)):
                yield self._convert(sentence)

    def __add__(self, other: Sequence) -> Sequence:
        return concat(self, other)

    def __radd__(self, other: Sequence) -> Sequence:
        return concat(other, self)

    def map(self, convert: Callable[[Any], Any]) -> LazySentences:
        """The same sentences passed through ``convert`` once read (a module-level function that keeps the
        words: the index's word counts stay true)."""
        return LazySentences(self.path, self.form, self.offsets, self.lines, self.skips, self.words,
                             (*self.converts, convert), self.stamp, self.contiguous)

    def _view(self, key: slice) -> LazySentences:
        contiguous = self.contiguous and key.step in (None, 1)
        return LazySentences(self.path, self.form, self.offsets[key], self.lines[key], self.skips[key],
                             self.words[key], self.converts, self.stamp, contiguous)

    def _open(self) -> BinaryIO:
        handle = open(self.path, "rb")
        if self.stamp is not None and _stamp(handle) != self.stamp:
            handle.close()
            raise CorpusError(self.path, None, "the file changed after it was indexed (its sentences are read from "
                              "it during the run): read the data again")
        return handle

    def _lines_at(self, handle: BinaryIO, i: int) -> Iterator[tuple[int, str]]:
        """The numbered lines of the file from sentence ``i``'s first line."""
        offset, skip = int(self.offsets[i]), int(self.skips[i])
        handle.seek(offset)
        return itertools.islice(iter(_Lines(self.path, handle, offset, int(self.lines[i]) - skip)), skip, None)

    def _read(self, handle: BinaryIO, i: int) -> Any:
        return self._convert(next(iter(self.form.sentences(self.path, self._lines_at(handle, i), resumed=True))))

    def _convert(self, sentence: Any) -> Any:
        for convert in self.converts:
            sentence = convert(sentence)
        return sentence


def _position(key: Any, n: int) -> int:
    """An index into a sequence of ``n`` items (negative counts from the end)."""
    i = key.__index__()
    if i < 0:
        i += n
    if not 0 <= i < n:
        raise IndexError(f"index {key} is out of range for {n} items")
    return i


class ConcatSequence(Sequence):
    """Sequences one after the other (lists, :class:`LazySentences`, ...), none of them copied: what
    ``train + unlabeled`` gives when a part is lazy."""

    def __init__(self, parts: Iterable[Sequence]):
        flat: list[Sequence] = []
        for part in parts:
            flat.extend(part.parts if isinstance(part, ConcatSequence) else [part] if len(part) else [])
        self.parts = tuple(flat)
        self.ends = np.cumsum([len(p) for p in flat], dtype=np.int64)

    def __len__(self) -> int:
        return int(self.ends[-1]) if len(self.ends) else 0

    def __repr__(self) -> str:
        return f"ConcatSequence({len(self)} items in {len(self.parts)} parts)"

    def __getitem__(self, key: int | slice) -> Any:
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step != 1:
                return _Subset(self, range(start, stop, step))
            starts = np.concatenate([[0], self.ends[:-1]])
            return ConcatSequence(part[max(start - b, 0):max(min(stop, e) - b, 0)]
                                  for part, b, e in zip(self.parts, starts.tolist(), self.ends.tolist()))
        i = _position(key, len(self))
        k = int(np.searchsorted(self.ends, i, side="right"))
        return self.parts[k][i - (int(self.ends[k - 1]) if k else 0)]

    def __iter__(self) -> Iterator[Any]:
        return itertools.chain.from_iterable(self.parts)

    def __add__(self, other: Sequence) -> Sequence:
        return concat(self, other)

    def __radd__(self, other: Sequence) -> Sequence:
        return concat(other, self)


class _Subset(Sequence):
    """The items of ``base`` at the positions of a ``range`` (a slice with a step)."""

    def __init__(self, base: Sequence, positions: range):
        self.base, self.positions = base, positions

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, key: int | slice) -> Any:
        if isinstance(key, slice):
            return _Subset(self.base, self.positions[key])
        return self.base[self.positions[_position(key, len(self))]]

    def __iter__(self) -> Iterator[Any]:
        return (self.base[i] for i in self.positions)


class _Mapped(Sequence):
    """``function(item)`` of each item of ``base``, computed when asked for."""

    def __init__(self, base: Sequence, function: Callable[[Any], Any]):
        self.base, self.function = base, function

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: int | slice) -> Any:
        if isinstance(key, slice):
            return _Mapped(self.base[key], self.function)
        return self.function(self.base[key])

    def __iter__(self) -> Iterator[Any]:
        return map(self.function, self.base)


class _Enumerated(Sequence):
    """``(index, item)`` pairs of ``base`` (a :class:`~structkd.train.Trainer`'s dataset); a slice is a list."""

    def __init__(self, base: Sequence):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: int | slice) -> Any:
        if isinstance(key, slice):
            return [(i, self.base[i]) for i in range(len(self))[key]]
        i = _position(key, len(self))
        return i, self.base[i]

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        return enumerate(self.base)


def concat(*parts: Sequence) -> Sequence:
    """The parts one after the other: a list when every part is a list (as ``+`` gives), else a
    :class:`ConcatSequence` that copies none of them (a single part: itself)."""
    if all(isinstance(p, list) for p in parts):
        return [item for part in parts for item in part]
    if len(parts) == 1:
        return parts[0]
    return ConcatSequence(parts)


def enumerated(items: Sequence) -> Sequence:
    """``(index, item)`` pairs of ``items``, as ``list(enumerate(items))`` without the list."""
    return _Enumerated(items)


def mapped(items: Sequence, function: Callable[[Any], Any]) -> Sequence:
    """``function`` of each item, as ``[function(x) for x in items]`` computed item by item when asked for."""
    return _Mapped(items, function)


def sentence_lengths(items: Sequence, length: Callable[[Any], int]) -> list[int]:
    """The word count of each item: from the index for lazily read sentences (none read), else ``length``."""
    if isinstance(items, LazySentences):
        return items.words.tolist()
    if isinstance(items, ConcatSequence):
        return [n for part in items.parts for n in sentence_lengths(part, length)]
    return [length(item) for item in items]


# ------------------------------------------------------------------------------------------ readers
def lazy_text(path: str | Path, max_sentences: int | None = None) -> LazySentences:
    """:func:`~structkd.data.read_text` read lazily: one whitespace-tokenized sentence per line."""
    return index_file(path, TextFormat(), max_sentences)


def lazy_columns(path: str | Path, layout: str = "auto", tag_column: int | None = None, scheme: str = "BIO",
                 labeled: bool = True, convert_to: str | None = None, token_column: int | None = None,
                 repair: str = "none") -> LazySentences:
    """:func:`~structkd.data.read_columns` read lazily (the columns chosen from the file's first rows, every
    sentence checked by :func:`index_file`); the arguments are :func:`~structkd.data.read_columns`'s."""
    path = Path(path)
    with open(path, "rb") as handle:
        form = column_format(path, _Lines(path, handle), layout, tag_column, scheme, labeled, convert_to,
                             token_column, repair)
    return index_file(path, form)


def lazy_conllu(path: str | Path, multiroot: bool = False, validate: bool = True,
                max_sentences: int | None = None) -> LazySentences:
    """:func:`~structkd.data.read_conllu` read lazily; ``.map(...)`` converts its sentences (say, without
    their trees)."""
    return index_file(path, ConlluFormat(multiroot, validate), max_sentences)
