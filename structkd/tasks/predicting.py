"""``structkd TASK predict``: read, predict and write in chunks, so that memory is bounded by the chunk and not
by the file.

Inputs:

* ``-`` (standard input) or a ``.txt``/``.text`` file: one input per line, raw text tokenized by the model's
  tokenizer (:mod:`structkd.text`; ``--pretokenized`` splits on whitespace instead), unless the file's lines are
  a labeled corpus's columns (:func:`structkd.data.columns.is_raw_text`: CoNLL-2003's and Few-NERD's ``.txt``
  files), read as below;
* any other file: the task's own labeled format (a column file, CoNLL-U), read block by block (blocks are
  separated by blank lines) and parsed by the task's reader ``chunk_size`` blocks at a time; gold labels are
  ignored.

Outputs (``-`` is standard output): ``--format conll | conllu | json | jsonl``
(:mod:`structkd.inference.results`).  A parser's CoNLL-U input written as ``conllu`` keeps every other
column and comment of the input (the task's own writer).  The output path is checked before any work.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

from structkd.data import CorpusError
from structkd.data.columns import TEXT_SUFFIXES, is_raw_text, iter_lines

__all__ = ["FORMATS", "check_output", "iter_blocks", "iter_lines", "predict_file"]

FORMATS = ("conll", "conllu", "json", "jsonl")


def check_output(path: str) -> None:
    """Refuse, before any work, an output path that cannot be written: a directory, or a file in a folder that
    does not exist or is not writable (``-``: standard output)."""
    if path == "-":
        return
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(f"{path}: is a directory, not an output file")
    folder = target.parent
    if not folder.is_dir():
        raise FileNotFoundError(f"{path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise PermissionError(f"{path}: cannot write there")


@contextlib.contextmanager
def _open_output(path: str) -> Iterator[TextIO]:
    """Standard output for ``-``; otherwise the file, written under a temporary name and renamed when
    complete (a failed run leaves no half-written output)."""
    if path == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    target = Path(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            yield stream
        os.chmod(temporary, 0o666 & ~_umask())  # a new file's usual mode (mkstemp's is 0600)
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _text_stream(path: str) -> contextlib.AbstractContextManager[TextIO]:
    if path == "-":
        return contextlib.nullcontext(sys.stdin)
    return open(path, encoding="utf-8-sig")  # a leading byte-order mark is not text


def iter_blocks(lines: Iterable[str]) -> Iterator[tuple[int, list[str]]]:
    """Blank-line separated blocks of a file: ``(number of the block's first line, its lines)``."""
    block: list[str] = []
    first = 0
    for number, line in enumerate(lines, start=1):
        if line.strip():
            if not block:
                first = number
            block.append(line)
        elif block:
            yield first, block
            block = []
    if block:
        yield first, block


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _read_chunk(task: Any, blocks: list[tuple[int, list[str]]], source: str, suffix: str, data_config: Any
                ) -> list:
    """The task's sentences of a chunk of blocks, parsed by its reader; errors name the input's own lines."""
    text = "".join("\n".join(lines) + "\n\n" for _, lines in blocks)
    with tempfile.TemporaryDirectory() as folder, _quiet("structkd.data"):
        path = Path(folder) / f"chunk{suffix}"
        path.write_text(text, encoding="utf-8")
        try:
            sentences = task.read_input(str(path), data_config)
        except CorpusError as err:
            raise CorpusError(source, _input_line(blocks, err.line), err.problem) from None
    for sentence in sentences:  # file:line of the input, not of the chunk
        _relocate(sentence, blocks, source)
    return sentences


def _relocate(sentence: Any, blocks: list[tuple[int, list[str]]], source: str) -> None:
    """Point a chunk's sentence (its ``source`` and per-word line numbers) at the input file's lines."""
    line = sentence.source.rsplit(":", 1)[-1]
    sentence.source = f"{source}:{_input_line(blocks, int(line))}" if line.isdigit() else source
    for name in ("lines", "word_lines"):
        numbers = getattr(sentence, name, None)
        if numbers and all(isinstance(n, int) for n in numbers):  # a CoNLL-U sentence's ``lines`` are its text
            setattr(sentence, name, [_input_line(blocks, n) for n in numbers])


@contextlib.contextmanager
def _quiet(name: str) -> Iterator[None]:
    """The ``name`` logger's INFO lines off (the column guess of each chunk, which names a temporary file)."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


def _input_line(blocks: list[tuple[int, list[str]]], chunk_line: int | None) -> int | None:
    """The input file's line of line ``chunk_line`` of a chunk written by :func:`_read_chunk`."""
    if chunk_line is None:
        return blocks[0][0]
    offset = 1
    for first, lines in blocks:
        if chunk_line < offset + len(lines) + 1:
            return first + min(chunk_line - offset, len(lines) - 1)
        offset += len(lines) + 1
    return blocks[-1][0]


def _progress(results: Iterable, enabled: bool) -> Iterator:
    """``results`` with a progress bar on standard error (sentences and sentences per second)."""
    from tqdm.auto import tqdm

    yield from tqdm(results, unit=" sentences", desc="predict", disable=not enabled, file=sys.stderr,
                    dynamic_ncols=True)


def predict_file(task: Any, model: Any, input_path: str, output_path: str, data_config: Any, *, fmt: str,
                 predictor: Any = None, pretokenized: bool = False, chunk_size: int = 256,
                 progress: bool = True, max_words: int | None = None) -> int:
    """Predict ``input_path`` into ``output_path`` (see the module docstring); returns the number of inputs.

    Args:
        task: the :class:`~structkd.tasks.base.Task` (its reader, and its writer for its own output format).
        model: the task's loaded model.
        predictor: a :mod:`structkd.inference` predictor of ``model`` (raw text, json/jsonl and any format
            other than the task's own); ``None`` for tasks without one: their own reader and writer only.
        fmt: one of :data:`FORMATS`.
        max_words: the longest sentence the task's own reader and writer take (longer ones are refused by
            line); the predictor applies its own policy (a tagger reads longer inputs in pieces, a parser
            refuses them).
    """
    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    source = "<stdin>" if input_path == "-" else input_path
    raw = input_path == "-" or is_raw_text(input_path)
    suffix = Path(input_path).suffix or ".conll"  # a chunk's file: a .txt one that holds columns is read as columns
    suffix = ".conll" if suffix in TEXT_SUFFIXES and not raw else suffix
    with _text_stream(input_path) as stream, _open_output(output_path) as out:
        lines = iter_lines(stream, source)
        if raw and predictor is not None:
            inputs = (line.split() if pretokenized else line for line in lines)
            return _write(predictor, inputs, out, fmt, chunk_size, source, progress)
        blocks = iter_blocks(lines) if not raw else ((n, [line]) for n, line in enumerate(lines, 1) if line.strip())
        chunks = (_read_chunk(task, chunk, source, suffix, data_config)
                  for chunk in _chunks(blocks, chunk_size))
        if fmt == task.native_format or predictor is None:
            return _write_native(task, model, chunks, out, progress, max_words, data_config)
        inputs = (task.words(s) for chunk in chunks for s in chunk)
        return _write(predictor, inputs, out, fmt, chunk_size, source, progress)


def _write(predictor: Any, inputs: Iterable, out: TextIO, fmt: str, chunk_size: int, source: str,
           progress: bool) -> int:
    from structkd.inference import predict_stream
    from structkd.inference.results import write_results

    results = predict_stream(predictor, inputs, chunk_size=chunk_size, source=source)
    return write_results(_progress(results, progress), out, fmt)


def _write_native(task: Any, model: Any, chunks: Iterable[list], out: TextIO, progress: bool,
                  max_words: int | None, data_config: Any = None) -> int:
    """The task's own writer, one chunk at a time (every column and comment of the input kept); a sentence
    longer than ``max_words`` is refused by its line."""
    from tqdm.auto import tqdm

    count = 0
    bar = tqdm(unit=" sentences", desc="predict", disable=not progress, file=sys.stderr, dynamic_ncols=True)
    with tempfile.TemporaryDirectory() as folder, bar:
        path = Path(folder) / "predicted"
        for sentences in chunks:
            _check_lengths(task, sentences, max_words)
            task.write_predictions(str(path), sentences, model, data_config)
            out.write(path.read_text(encoding="utf-8"))
            count += len(sentences)
            bar.update(len(sentences))
    return count


def _check_lengths(task: Any, sentences: list, max_words: int | None) -> None:
    for sentence in sentences:
        if max_words is not None and task.length(sentence) > max_words:
            raise ValueError(f"{sentence.source}: a sentence of {task.length(sentence)} words, longer than "
                             f"--max-words {max_words}: split it, or raise --max-words (memory grows with its "
                             f"square for a parser)")
