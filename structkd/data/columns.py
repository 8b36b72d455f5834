"""Readers and writers for column-formatted sequence-labeling corpora.

Supported layouts (``layout=``):

* ``"auto"`` (the default): the columns are recognised from the first rows of the file (below);
* ``"token-tag"``: ``token<TAB>tag`` (WNUT17);
* ``"index-token-tag"``: ``index<TAB>token<TAB>tag`` (WikiANN as distributed with WikiNEuRal);
* ``"conll2003"``: ``token POS chunk NER`` separated by spaces;
* ``"tokens"``: unlabeled, one token per line (a column file without tags).

``auto`` takes as token column the first column unless that is an integer index (then the second), and as tag
column the last column after it whose values all look like tags (``O``, ``B-X``, ``I-X``, ``E-X``, ``S-X``,
``U-X``, ``L-X``), preferring one with entities: ``token tag``, ``index token tag``, CoNLL-2003
``token POS chunk NER``, ``token POS tag``, ``id token tag extra...`` and files whose last column is the tag.
The choice is logged (logger ``structkd.data``); when no column looks like tags it refuses, naming
``token_column``/``tag_column``, which set the columns explicitly (0-based, negative counts from the end).

Sentences are separated by blank lines; lines starting with ``#`` are comments; ``-DOCSTART-`` lines (in any
layout) end a sentence and are skipped.  Fields are split on tabs when the line has one (else on spaces) and
stripped of surrounding spaces.  Every problem (a column count different from the file's first row, an empty
token, a malformed tag, a tag that breaks the scheme, an empty file, bytes that are not UTF-8) raises
:class:`CorpusError` naming the file and the offending line.  ``repair="conlleval"`` reads tags that break the
scheme as conlleval does (:func:`structkd.schemes.repair_tags`) instead of refusing them.
"""

from __future__ import annotations

import functools
import itertools
import logging
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, NamedTuple, TextIO

from structkd.schemes import (
    AUTO,
    IO,
    check_data_scheme,
    check_tag,
    convert,
    detect_scheme,
    first_invalid,
    from_bilou,
    from_io,
    model_scheme,
    repair_tags,
)

LAYOUTS = ("auto", "token-tag", "index-token-tag", "conll2003", "tokens")
REPAIRS = ("none", "conlleval")
SAMPLE_ROWS = 5000  # rows that ``layout="auto"`` looks at
TAG_LIKE_SHARE = 0.9  # the share of a column's values that must look like tags for ``auto`` to take it
_TAG_LIKE = re.compile(r"O|[BIESUL]-\S+")
_INDEX = re.compile(r"[0-9]+")
_ASCII_BLANKS = " \t\r\n\f\v"  # fields are split on these only: a no-break space (10\xa0000) stays in its token
_ASCII_SPACE = re.compile(f"[{_ASCII_BLANKS}]+")
_FIXED = {"token-tag": (0, 1, 2), "index-token-tag": (1, 2, 3), "conll2003": (0, 3, 4), "tokens": (0, None, None)}

logger = logging.getLogger("structkd.data")


class CorpusError(ValueError):
    """A malformed corpus file; the message starts with ``path:line:``."""

    def __init__(self, path: str | Path, line: int | None, problem: str):
        where = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {problem}")
        self.path, self.line, self.problem = str(path), line, problem


@dataclass
class Sentence:
    """One sentence: its tokens, its tags (``None`` when unlabeled) and where it came from.

    Attributes:
        tokens: the words.
        tags: one tag per word, or ``None``.
        source: ``"path:line"`` of the sentence's first word.
        lines: the file line of each word.
        repaired: how many of its tags were read the conlleval way (``repair="conlleval"``).
    """

    tokens: list[str]
    tags: list[str] | None = None
    source: str = ""
    lines: list[int] = field(default_factory=list, repr=False)
    repaired: int = 0

    def __len__(self) -> int:
        return len(self.tokens)


class _Row(NamedTuple):
    """A data line: its number, text and fields."""

    number: int
    raw: str
    fields: list[str]


_LINE_BREAK = re.compile("\r\n|\r|\n")  # the line breaks of split_lines
RECODE_HINT = ("files are read as UTF-8: convert it first, e.g. iconv -f latin1 -t utf-8 FILE > FILE.utf8 "
               "(CoNLL-2002's Spanish and Dutch files are Latin-1)")


def decode_utf8(path: str | Path, data: bytes, offset: int = 0, line: int = 1) -> str:
    """``data``, the bytes of ``path`` from byte ``offset`` (at line ``line``), as text; bytes that are not UTF-8
    raise :class:`CorpusError` with their line and byte in the file."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        number = line + len(_LINE_BREAK.findall(data[: err.start].decode("utf-8")))  # the lines of split_lines
        raise CorpusError(path, number, f"not valid UTF-8 (byte {offset + err.start}: {err.reason}); {RECODE_HINT}"
                          ) from None


def read_utf8_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 file (a leading byte-order mark dropped; broken by :func:`split_lines`); bytes that are
    not UTF-8 raise :class:`CorpusError` with the line."""
    return split_lines(decode_utf8(path, path.read_bytes()).removeprefix("\ufeff"))


def iter_lines(stream: TextIO, source: str) -> Iterator[str]:
    """The lines of a text stream (opened with universal newlines, so broken as :func:`split_lines` breaks them),
    without their line ends, read one at a time; bytes that are not UTF-8 are named by line."""
    number = 0
    try:
        for number, line in enumerate(stream, start=1):  # noqa: B007
            yield line.rstrip("\r\n")
    except UnicodeDecodeError as err:
        raise CorpusError(source, number + 1, f"not valid UTF-8 ({err.reason}); {RECODE_HINT}") from None


def split_lines(text: str) -> list[str]:
    """The lines of ``text``, broken at ``\\n``, ``\\r\\n`` and ``\\r`` only, as files are read elsewhere (universal
    newlines) and as editors number them: not at the other breaks of :meth:`str.splitlines` (``\\x85``,
    ``\\u2028``, ``\\v``, ...), which web text has inside tokens."""
    lines = _LINE_BREAK.split(text)
    if lines[-1] == "":
        lines.pop()
    return lines


def _split(raw: str) -> list[str]:
    """A line's fields: tab-separated when it has a tab, else separated by ASCII spaces (a no-break space belongs
    to its token); surrounding spaces stripped, and empty fields after the last one dropped (a trailing tab that
    some rows of a file have and others lack)."""
    if "\t" not in raw:
        if raw.isascii():  # the common case, and str.split's speed
            return raw.split()
        stripped = raw.strip(_ASCII_BLANKS)
        return _ASCII_SPACE.split(stripped) if stripped else []
    fields = raw.split("\t")
    if " " in raw or "\r" in raw or "\f" in raw or "\v" in raw:
        fields = [f.strip(" \r\v\f") for f in fields]
    while len(fields) > 1 and not fields[-1]:
        fields.pop()
    return fields


def _is_comment(text: str, raw: str, fields: list[str], count: int | None) -> bool:
    """``# ...`` lines are comments; a token that starts with ``#`` (a hashtag) in a data row is not, nor is a
    row whose token is ``#`` itself (``# NN O``: the file's column count, its last field a tag)."""
    if not text.startswith("#"):
        return False
    if text == "#" or text.startswith("# "):
        return not (fields[0] == "#" and count is not None and count >= 2 and len(fields) == count
                    and bool(_TAG_LIKE.fullmatch(fields[-1])))
    return "\t" not in raw if count is None else len(fields) != count


def _is_docstart(fields: list[str]) -> bool:
    """``-DOCSTART-`` as the token of ``token ...`` or of ``index token ...`` rows."""
    return fields[0] == "-DOCSTART-" or (len(fields) > 1 and fields[1] == "-DOCSTART-"
                                         and bool(_INDEX.fullmatch(fields[0])))


def _sentence_rows(path: Path, lines: Iterable[tuple[int, str]], count: int | None = None
                   ) -> Iterator[list[_Row]]:
    """The data rows of a column file grouped by sentence (lazily: only a sentence's rows are held at a time);
    every row has the first row's column count.

    Args:
        lines: ``(line number, text)`` of the file's lines, from its start or from a sentence's first row.
        count: the file's column count when ``lines`` start at a sentence after the file's first (``None``: the
            first data row sets it).
    """
    group: list[_Row] = []
    for number, raw in lines:
        text = raw.strip()
        fields = _split(raw) if text else []
        if not text or _is_docstart(fields):
            if group:
                yield group
            group = []
            continue
        if _is_comment(text, raw, fields, count):
            continue
        if count is None:
            count = len(fields)
        if len(fields) != count:
            raise CorpusError(path, number, f"expected {count} columns (as in the first row), found "
                              f"{len(fields)}: {raw!r}")
        group.append(_Row(number, raw, fields))
    if group:
        yield group


def _sample(path: Path, lines: Iterable[tuple[int, str]]) -> list[_Row]:
    """The first :data:`SAMPLE_ROWS` data rows of the numbered lines; an empty file is refused."""
    out: list[_Row] = []
    for group in _sentence_rows(path, lines):
        out.extend(group)
        if len(out) >= SAMPLE_ROWS:
            break
    if not out:
        raise CorpusError(path, None, "the file holds no sentences")
    return out[:SAMPLE_ROWS]


def _guess_token_column(sample: list[_Row]) -> int:
    """The first column that is neither an integer index nor the same in every row (a document id), among all
    but the last two of three or more columns (else the one before the last)."""
    count = len(sample[0].fields)
    for column in range(count - 2):
        values = {row.fields[column] for row in sample}
        index = all(_INDEX.fullmatch(value) for value in values)
        if not index and (len(values) > 1 or len(sample) == 1):
            return column
    return max(0, count - 2)


def _tag_candidates(sample: list[_Row], token: int) -> list[int]:
    """Columns after the token column whose values (at least :data:`TAG_LIKE_SHARE` of them, so that a
    malformed tag is reported at its line rather than steering the guess) look like tags."""
    def share(column: int) -> float:
        return sum(bool(_TAG_LIKE.fullmatch(row.fields[column])) for row in sample) / len(sample)
    return [c for c in range(token + 1, len(sample[0].fields)) if share(c) >= TAG_LIKE_SHARE]


def _guess_tag_column(path: Path, sample: list[_Row], token: int) -> tuple[int, list[int]]:
    """The tag column and the other tag-like columns; refuses when none looks like tags.

    The tag column is the only column after the token's; else, among the tag-like ones, preferring columns with
    entities and among those columns that leave most words ``O`` (entity tags, not chunk tags), the last one,
    unless an earlier one tags more than twice as many words (the outer layer of a nested corpus whose inner layer
    comes last, as GermEval 2014's ``index token outer inner``)."""
    first, count = sample[0], len(sample[0].fields)
    if count == token + 2:
        return token + 1, []
    candidates = _tag_candidates(sample, token)
    if not candidates:
        raise CorpusError(path, first.number, f"cannot tell which of the {count} columns of {first.raw!r} holds "
                          f"the tags: none after the token column {token} holds tags like O, B-X, I-X; set "
                          f"data.tag_column (and data.token_column), 0-based")
    tagged = {c: sum(row.fields[c] != "O" for row in sample) for c in candidates}
    with_entities = [c for c in candidates if tagged[c]]
    # entity tags leave most words O; chunk tags (CoNLL-2003's B-NP column) put nearly every word in some chunk
    mostly_o = [c for c in with_entities if tagged[c] <= len(sample) / 2]
    pool = mostly_o or with_entities or candidates
    chosen, outer = pool[-1], max(pool, key=tagged.__getitem__)
    if 2 * tagged[chosen] < tagged[outer]:  # a nested layer after the outer one (GermEval's) is far sparser
        chosen = outer
    return chosen, [c for c in candidates if c != chosen]


def _guess_columns(path: Path, sample: list[_Row], token: int | None, tag: int | None, labeled: bool,
                   quiet: bool = False) -> tuple[int, int | None]:
    """``layout="auto"``: the token and tag columns (those given kept), the guess logged (unless ``quiet``)."""
    guessed_token = token is None
    token = _guess_token_column(sample) if token is None else token
    if tag is not None or not labeled:
        if guessed_token and not quiet:
            logger.info("%s: reading column %d as the token (set data.token_column to choose another)", path,
                        token)
        return token, tag
    tag, others = _guess_tag_column(path, sample, token)
    if quiet:
        return token, tag
    logger.info("%s: %d columns; reading column %d as the token and column %d as the tag%s (set "
                "data.token_column / data.tag_column to choose others)", path, len(sample[0].fields), token, tag,
                f"; columns {others} also look like tags" if others else "")
    return token, tag


def _column(path: Path, row: _Row, column: int, name: str) -> int:
    """A column index checked against the row's columns (negative counts from the end)."""
    count = len(row.fields)
    if not -count <= column < count:
        raise CorpusError(path, row.number, f"no {name} column {column}: the rows have {count} columns")
    return column % count


def _choose_columns(path: Path, sample: list[_Row], layout: str, token_column: int | None,
                    tag_column: int | None, labeled: bool, quiet: bool = False) -> tuple[int, int | None]:
    """The token and tag columns (``None`` when the tags are not read) of the file (a guess logged unless
    ``quiet``)."""
    first = sample[0]
    if layout == "auto":
        if token_column is not None:
            token_column = _column(path, first, token_column, "token")
        if labeled and len(first.fields) == 1 and tag_column is None:
            raise CorpusError(path, first.number, f"a single column holds no tags: {first.raw!r}; set "
                              f"data.tag_column, or layout='tokens' for unlabeled text")
        token, tag = _guess_columns(path, sample, token_column, tag_column, labeled, quiet)
    else:
        token, tag, count = _FIXED[layout]
        if token_column is None and tag_column is None and count is not None and len(first.fields) != count:
            raise CorpusError(path, first.number, f"expected {count} columns for layout {layout!r}, found "
                              f"{len(first.fields)}: {first.raw!r}; set data.token_column / data.tag_column")
        token = token if token_column is None else token_column
        tag = tag if tag_column is None else tag_column
    token = _column(path, first, token, "token")
    return token, (_column(path, first, tag, "tag") if labeled and tag is not None else None)


@dataclass(frozen=True)
class ColumnFormat:
    """How the sentences of one column file are read, once its columns are chosen (:func:`column_format`):
    the token and tag columns (``tag=None``: unlabeled), the file's column count, the scheme checks."""

    token: int
    tag: int | None
    count: int
    scheme: str = "BIO"
    repair: str = "none"
    convert_to: str | None = None
    empty_line: ClassVar[int | None] = None  # where "the file holds no sentences" points

    def sentences(self, path: Path, lines: Iterable[tuple[int, str]], resumed: bool = False) -> Iterator[Sentence]:
        """The checked sentences of the numbered ``lines``: from the file's start, or (``resumed``) from a
        sentence's first row."""
        for group in _sentence_rows(path, lines, self.count if resumed else None):
            yield _sentence(path, group, self.token, self.tag, self.scheme, self.repair, self.convert_to)

    def scan(self, path: Path, lines: Iterable[tuple[int, str]]) -> Iterator[tuple[int, int]]:
        """``(first line, words)`` of each sentence of the file's numbered lines, every check made."""
        for sentence in self.sentences(path, lines):
            yield sentence.lines[0], len(sentence)


def _check_options(layout: str, repair: str, scheme: str) -> str:
    """The scheme's canonical name (or ``auto``), once the layout, repair and scheme are known names."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
    if repair not in REPAIRS:
        raise ValueError(f"unknown repair {repair!r}; expected one of {REPAIRS}")
    return AUTO if scheme == AUTO else check_data_scheme(scheme)


def _file_scheme(path: Path, tag: int) -> str:
    """The scheme of the tags in column ``tag`` of the file (:func:`structkd.schemes.detect_scheme`), read one line
    at a time; logged with the reason."""
    with open(path, encoding="utf-8-sig") as stream:
        lines = enumerate(iter_lines(stream, str(path)), start=1)
        scheme, reason = detect_scheme([row.fields[tag] for row in group] for group in _sentence_rows(path, lines))
    logger.info("%s: tags read as %s (data.scheme: auto): %s; set data.scheme to choose another", path, scheme,
                reason)
    return scheme


def column_scheme(path: str | Path, layout: str = "auto", tag_column: int | None = None,
                  token_column: int | None = None) -> str:
    """The tag scheme a column file is written in, read off its tags (:func:`structkd.schemes.detect_scheme`,
    logged), its columns chosen as :func:`read_columns` chooses them; the file is read one line at a time (a
    large input to ``predict`` is not held whole)."""
    path = Path(path)
    _check_options(layout, "none", AUTO)
    with open(path, encoding="utf-8-sig") as stream:
        sample = _sample(path, enumerate(iter_lines(stream, str(path)), start=1))
    _, tag = _choose_columns(path, sample, layout, token_column, tag_column, True, quiet=True)  # logged when read
    return "BIO" if tag is None else _file_scheme(path, tag)  # tokens: no tag to read


def column_format(path: str | Path, lines: Iterable[tuple[int, str]], layout: str = "auto",
                  tag_column: int | None = None, scheme: str = "BIO", labeled: bool = True,
                  convert_to: str | None = None, token_column: int | None = None, repair: str = "none"
                  ) -> ColumnFormat:
    """The :class:`ColumnFormat` of a column file from its first :data:`SAMPLE_ROWS` data rows (``lines``: the
    file's numbered lines, read no further); the arguments are those of :func:`read_columns`."""
    path = Path(path)
    scheme = _check_options(layout, repair, scheme)
    sample = _sample(path, lines)
    token, tag = _choose_columns(path, sample, layout, token_column, tag_column, labeled)
    if scheme == AUTO:  # decided by the whole file's tags (the caller reads it again); unlabeled: none is read
        scheme = "BIO" if tag is None else _file_scheme(path, tag)
    return ColumnFormat(token, tag, len(sample[0].fields), scheme, repair, convert_to)


def read_columns(path: str | Path, layout: str = "auto", tag_column: int | None = None, scheme: str = "BIO",
                 labeled: bool = True, convert_to: str | None = None, token_column: int | None = None,
                 repair: str = "none") -> list[Sentence]:
    """Read a column file into sentences.

    Args:
        path: the file.
        layout: one of :data:`LAYOUTS`.
        tag_column: the tag's column index (overrides the layout's; negative counts from the end).
        scheme: the tag scheme of the file (``BIO``, ``IOB1``, ``BIOES``, ``IO``, whose bare types are read as
            IOB1's ``I-X``, or ``BILOU``, read as BIOES), or ``auto``: the one its tags are
            written in (:func:`column_scheme`); every sentence is checked against it.
        labeled: ``False`` ignores any tag column (distillation on unlabeled data).
        convert_to: convert tags to this scheme after checking them.
        token_column: the token's column index (overrides the layout's).
        repair: ``"none"`` refuses a tag that breaks the scheme; ``"conlleval"`` reads it as conlleval does
            (``I-X`` after ``O`` as ``B-X``, :func:`structkd.schemes.repair_tags`), logs how many tags were read
            so and counts them in :attr:`Sentence.repaired`.
    """
    path = Path(path)
    _check_options(layout, repair, scheme)  # before the file is read
    lines = read_utf8_lines(path)
    form = column_format(path, enumerate(lines, start=1), layout, tag_column, scheme, labeled, convert_to,
                         token_column, repair)
    sentences = list(form.sentences(path, enumerate(lines, start=1)))
    repaired = sum(s.repaired for s in sentences)
    if repaired:
        first = next(s for s in sentences if s.repaired)
        logger.warning("%s: read %s that %s the %s scheme, in %s (the first at %s), as conlleval and seqeval "
                       "read them (data.repair: conlleval; none refuses them)", path, _count(repaired, "tag"),
                       "breaks" if repaired == 1 else "break", form.scheme,
                       _count(sum(s.repaired > 0 for s in sentences), "sentence"), first.source)
    return sentences


def _sentence(path: Path, rows: list[_Row], token: int, tag: int | None, scheme: str, repair: str,
              convert_to: str | None) -> Sentence:
    """One sentence from its rows: tokens checked non-empty, tags checked (or repaired) and converted."""
    for row in rows:
        if not row.fields[token]:
            raise CorpusError(path, row.number, f"empty token in column {token}: {row.raw!r}")
    numbers = [row.number for row in rows]
    sentence = Sentence([row.fields[token] for row in rows], None, f"{path}:{numbers[0]}", numbers)
    if tag is not None:
        sentence.tags = _checked_tags(path, [row.fields[tag] for row in rows], numbers, scheme, repair, sentence)
        if convert_to is not None:
            sentence.tags = convert(sentence.tags, model_scheme(scheme), convert_to)
    return sentence


def _checked_tags(path: Path, tags: list[str], numbers: list[int], scheme: str, repair: str,
                  sentence: Sentence) -> list[str]:
    """The sentence's tags, each well formed (BILOU's ``U-``/``L-`` read as BIOES's ``S-``/``E-``,
    :func:`structkd.schemes.from_bilou`; IO's bare types as IOB1's ``I-X``, :func:`structkd.schemes.from_io`); a
    sequence that breaks the scheme is refused at the offending tag's line, or with ``repair="conlleval"``
    repaired (the count kept in ``sentence.repaired``)."""
    if scheme == IO:
        tags = _io_tags(path, tags, numbers)
    scheme = model_scheme(scheme)  # IO read as IOB1, BILOU as BIOES
    written, tags = tags, [from_bilou(tag) for tag in tags]
    for tag, raw, number in zip(tags, written, numbers):
        try:
            check_tag(tag, scheme)
        except ValueError as err:
            problem = str(err) if tag == raw else f"BILOU tag {raw!r} read as {tag!r}: {err}"
            raise CorpusError(path, number, problem) from None
    bad = first_invalid(tags, scheme)
    if bad is None:
        return tags
    if repair == "conlleval":
        fixed = repair_tags(tags, scheme)
        sentence.repaired = sum(a != b for a, b in zip(tags, fixed))
        return fixed
    before = tags[bad - 1] if bad else "the sentence start"
    problem = f"tag {tags[bad]!r} cannot follow {before!r} in {scheme}"
    if first_invalid([*tags, "O"], scheme) == len(tags):
        problem = f"the sentence ends inside an entity at tag {tags[bad]!r} ({scheme} ends entities with E- or S-)"
    raise CorpusError(path, numbers[bad], f"{problem}; data.repair: conlleval (repair='conlleval') reads such "
                      f"tags as conlleval does")


def _io_tags(path: Path, tags: list[str], numbers: list[int]) -> list[str]:
    """An IO sentence's tags read as IOB1 (:func:`structkd.schemes.from_io`); a prefixed tag refused at its line."""
    out = []
    for tag, number in zip(tags, numbers):
        try:
            out.append(from_io(tag))
        except ValueError as err:
            raise CorpusError(path, number, f"{err} (data.scheme: IO)") from None
    return out


@dataclass(frozen=True)
class TextFormat:
    """How text files are read: one whitespace-tokenized sentence per line, blank lines skipped."""

    empty_line: ClassVar[int | None] = None  # where "the file holds no sentences" points

    def sentences(self, path: Path, lines: Iterable[tuple[int, str]], resumed: bool = False) -> Iterator[Sentence]:
        """The sentences of the numbered ``lines`` (``resumed``: they start at a sentence; the same here)."""
        for number, line in lines:
            if line.strip():
                yield Sentence(line.split(), None, f"{path}:{number}", [number])

    def scan(self, path: Path, lines: Iterable[tuple[int, str]]) -> Iterator[tuple[int, int]]:
        """``(line, words)`` of each sentence of the file's numbered lines."""
        for number, line in lines:
            words = line.split()
            if words:
                yield number, len(words)


TEXT_SUFFIXES = (".txt", ".text")  # unlabeled inputs read as raw text, one sentence per line
SNIFF_LINES = 1000  # the lines :func:`column_text_reason` looks at


def column_text_reason(path: str | Path) -> str | None:
    """Why a file holds a labeled corpus's columns rather than raw text, or ``None`` when it reads as text.

    From its first :data:`SNIFF_LINES` lines (comments and blank lines aside): ``-DOCSTART-`` lines; or, on
    three lines or more, 90% of them with one number (2 or more) of fields that hold no space, all
    tab-separated (Few-NERD's ``token<TAB>type``, CoNLL-U) or with a tag-like last field (CoNLL-2003's
    ``EU NNP B-NP B-ORG``).  A line of raw text has as many fields as words, which vary.
    """
    rows = []
    with open(path, encoding="utf-8-sig", errors="replace") as stream:
        for line in itertools.islice(stream, SNIFF_LINES):
            line = line.rstrip("\r\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            fields = _split(line)
            if fields and _is_docstart(fields):
                return "it has -DOCSTART- lines"
            rows.append((fields, "\t" in line))
    if len(rows) < 3:
        return None
    count, share = Counter(len(fields) for fields, _ in rows).most_common(1)[0]
    columnar = [(fields, tab) for fields, tab in rows if len(fields) == count and not any(" " in f for f in fields)]
    if count < 2 or share < 0.9 * len(rows) or len(columnar) < 0.9 * len(rows):
        return None
    if all(tab for _, tab in columnar):
        return f"its lines hold {count} tab-separated fields"
    if sum(bool(_TAG_LIKE.fullmatch(fields[-1])) for fields, _ in columnar) >= 0.9 * len(rows):
        return f"its lines hold {count} fields, the last one a tag"
    return None


def is_raw_text(path: str | Path) -> bool:
    """Whether an unlabeled input is raw text, one sentence per line: a ``.txt``/``.text`` file, unless its lines
    are a labeled corpus's columns (:func:`column_text_reason`; then it is read in the task's own format, and a
    warning says why, once per file while it is unchanged)."""
    path = Path(path)
    if path.suffix not in TEXT_SUFFIXES or not path.is_file():  # (a missing file: its reader names it)
        return path.suffix in TEXT_SUFFIXES
    stat = path.stat()
    return _column_text_warned(str(path), stat.st_mtime_ns, stat.st_size) is None


@functools.lru_cache(maxsize=64)
def _column_text_warned(path: str, mtime_ns: int, size: int) -> str | None:
    reason = column_text_reason(path)
    if reason is not None:
        logger.warning("%s: read as a labeled corpus's columns, not as raw text (one sentence per line): %s; its "
                       "labels are not used", path, reason)
    return reason


def read_text(path: str | Path) -> list[Sentence]:
    """Unlabeled text, one whitespace-tokenized sentence per line (blank lines skipped)."""
    path = Path(path)
    sentences = list(TextFormat().sentences(path, enumerate(read_utf8_lines(path), start=1)))
    if not sentences:
        raise CorpusError(path, TextFormat.empty_line, "the file holds no sentences")
    return sentences


def write_columns(path: str | Path, sentences: Iterable[Sentence], predictions: Sequence[Sequence[str]] | None = None
                  ) -> None:
    """Write ``token<TAB>tag`` (or ``token<TAB>gold<TAB>predicted`` when ``predictions`` are given) files."""
    out = []
    for n, sentence in enumerate(sentences):
        for i, token in enumerate(sentence.tokens):
            row = [token]
            if sentence.tags is not None:
                row.append(sentence.tags[i])
            if predictions is not None:
                row.append(predictions[n][i])
            out.append("\t".join(row))
        out.append("")
    Path(path).write_text("\n".join(out) + "\n", encoding="utf-8")


def label_vocabulary(sentences: Iterable[Sentence]) -> list[str]:
    """Sorted tag inventory of labeled sentences, ``O`` first."""
    found = {tag for s in sentences if s.tags for tag in s.tags}
    return ["O"] + sorted(found - {"O"})


def _count(n: int, noun: str) -> str:
    """``1 tag``, ``2 tags``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
