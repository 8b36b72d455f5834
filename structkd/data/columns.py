"""Readers and writers for column-formatted sequence-labeling corpora.

Supported layouts (``layout=``):

* ``"token-tag"``: ``token<TAB>tag`` (WNUT17);
* ``"index-token-tag"``: ``index<TAB>token<TAB>tag`` (WikiANN as distributed with WikiNEuRal);
* ``"conll2003"``: ``token POS chunk NER`` separated by spaces, ``-DOCSTART-`` lines skipped;
* ``"auto"``: one of the above, recognised from the first data line;
* ``"tokens"``: unlabeled, one token per line (a column file without tags).

Sentences are separated by blank lines; lines starting with ``#`` are comments.  ``tag_column`` overrides
the tag column.  Every problem (wrong column count, a tag that breaks the scheme, an empty file, bytes that
are not UTF-8) raises :class:`CorpusError` naming the file and the line.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from structkd.schemes import check_scheme, convert, first_invalid

LAYOUTS = ("auto", "token-tag", "index-token-tag", "conll2003", "tokens")


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
    """

    tokens: list[str]
    tags: list[str] | None = None
    source: str = ""
    lines: list[int] = field(default_factory=list, repr=False)

    def __len__(self) -> int:
        return len(self.tokens)


def read_utf8_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 file (a leading byte-order mark dropped); bytes that are not UTF-8 raise
    :class:`CorpusError` with the line."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise CorpusError(path, line, f"not valid UTF-8 (byte {err.start}: {err.reason})") from None
    return text.removeprefix("\ufeff").splitlines()


def _guess_layout(fields: list[str], path: Path, line: int) -> str:
    if len(fields) == 2:
        return "token-tag"
    if len(fields) == 3 and fields[0].isdigit():
        return "index-token-tag"
    if len(fields) == 4:
        return "conll2003"
    raise CorpusError(path, line, f"cannot recognise the column layout of {fields!r}; pass layout= explicitly")


def _is_comment(text: str, raw: str, fields: list[str], count: int | None) -> bool:
    """``# ...`` lines are comments; a token that starts with ``#`` (a hashtag) in a data row is not."""
    if not text.startswith("#"):
        return False
    if text == "#" or text.startswith("# "):
        return True
    return "\t" not in raw if count is None else len(fields) != count


def _columns(layout: str, tag_column: int | None) -> tuple[int, int | None, int | None]:
    """``(token column, tag column, expected field count)`` of a layout."""
    token, tag, count = {"token-tag": (0, 1, 2), "index-token-tag": (1, 2, 3), "conll2003": (0, 3, 4),
                         "tokens": (0, None, None)}[layout]
    if tag_column is not None:
        tag, count = tag_column, None
    return token, tag, count


def read_columns(path: str | Path, layout: str = "auto", tag_column: int | None = None, scheme: str = "BIO",
                 labeled: bool = True, convert_to: str | None = None) -> list[Sentence]:
    """Read a column file into sentences.

    Args:
        path: the file.
        layout: one of :data:`LAYOUTS`.
        tag_column: the tag's column index (overrides the layout's; negative counts from the end).
        scheme: the tag scheme of the file (``BIO``, ``IOB1``, ``BIOES``); every sentence is checked against it.
        labeled: ``False`` ignores any tag column (distillation on unlabeled data).
        convert_to: convert tags to this scheme after checking them.
    """
    path = Path(path)
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
    scheme = check_scheme(scheme)
    lines = read_utf8_lines(path)
    sentences: list[Sentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    numbers: list[int] = []
    token_col = tag_col = count = None

    def flush() -> None:
        if tokens:
            sentences.append(_finish(path, tokens[:], tags[:] if tag_col is not None and labeled else None,
                                     numbers[:], scheme, convert_to))
        tokens.clear()
        tags.clear()
        numbers.clear()

    for number, raw in enumerate(lines, start=1):
        text = raw.strip()
        if not text:
            flush()
            continue
        fields = raw.split("\t") if "\t" in raw else text.split()
        if _is_comment(text, raw, fields, count):
            continue
        if fields[0] == "-DOCSTART-":
            flush()
            continue
        if token_col is None:
            chosen = _guess_layout(fields, path, number) if layout == "auto" else layout
            token_col, tag_col, count = _columns(chosen, tag_column)
            if count is None:
                count = len(fields)
        if len(fields) != count:
            raise CorpusError(path, number, f"expected {count} columns, found {len(fields)}: {raw!r}")
        tokens.append(fields[token_col])
        if tag_col is not None and labeled:
            try:
                tags.append(fields[tag_col])
            except IndexError:
                raise CorpusError(path, number, f"no tag column {tag_col} in {raw!r}") from None
        numbers.append(number)
    flush()
    if not sentences:
        raise CorpusError(path, None, "the file holds no sentences")
    return sentences


def _finish(path: Path, tokens: list[str], tags: list[str] | None, numbers: list[int], scheme: str,
            convert_to: str | None) -> Sentence:
    if tags is not None:
        try:
            bad = first_invalid(tags, scheme)
        except ValueError as err:
            raise CorpusError(path, numbers[0], str(err)) from None
        if bad is not None:
            before = tags[bad - 1] if bad else "the sentence start"
            raise CorpusError(path, numbers[bad], f"tag {tags[bad]!r} cannot follow {before!r} in {scheme}")
        if convert_to is not None:
            tags = convert(tags, scheme, convert_to)
    return Sentence(tokens, tags, f"{path}:{numbers[0]}", numbers)


def read_text(path: str | Path) -> list[Sentence]:
    """Unlabeled text, one whitespace-tokenized sentence per line (blank lines skipped)."""
    path = Path(path)
    sentences = [Sentence(line.split(), None, f"{path}:{n}", [n])
                 for n, line in enumerate(read_utf8_lines(path), start=1) if line.strip()]
    if not sentences:
        raise CorpusError(path, None, "the file holds no sentences")
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
