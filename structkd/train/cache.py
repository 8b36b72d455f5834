"""On-disk cache of a teacher's per-sentence outputs (e.g. projected KD marginals), computed once in one
streaming pass that resumes where it stopped and that several processes share.

Layout of a cache directory (format ``structkd-teacher-cache-2``)::

    index.json              written last, once every segment is in: format, fingerprint, sentence and segment
                            counts, per field its rank and its number of values in each segment
    build.json              the build's fingerprint and segmentation (a resumed build must have the same)
    <field>.shapes.npy      int32 [n_sentences, ndim]: the shape of each sentence's tensor
    <field>.offsets.npy     int64 [n_sentences]: where its values start in its segment's file
    shared/<name>.npy       float32: a field that is the same for every sentence (a CRF teacher's
                            transition matrix), stored once
    segments/<k>/           sentences ``[k * S, (k + 1) * S)``, written under a temporary name and renamed
                            when whole: ``<field>.f16`` (float16 values, flattened and concatenated),
                            ``<field>.shapes.npy``, ``shared/<name>.npy``, ``segment.json``

The segments' ``.f16`` files are memory-mapped, so a cache larger than memory costs only the pages read; the
index is a few arrays whatever the number of sentences.  The segment size ``S`` is a multiple of the batch
size, so the teacher sees the same batches however many processes build and however often the build stops:
the cache does not depend on either.  Under ``accelerate launch`` process ``r`` of ``w`` computes segments
``r, r + w, ...``; after a barrier the main process checks the segments and writes the index, and every
process reads the segments in place (no merged copy: a copy would double the disk and the time of a
10^6-sentence cache, and the index already makes the segments one array).  A build cut short keeps its
finished segments, and the next build with the same fingerprint computes only the others; a directory
without ``index.json`` is never read as a cache.

The fingerprint is the sha256 of the dataset's tokens, a teacher identifier (e.g. a checkpoint hash) and
the projection options; loading with other values raises :class:`CacheMismatchError` saying what differs.
A cache whose files are missing, truncated or damaged, or that an earlier structkd wrote (format
``structkd-teacher-cache-1``), raises :class:`CacheCorruptError` naming the file;
:meth:`TeacherCache.build` with ``rebuild=True`` (``--rebuild-cache``) recomputes it in either case.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import itertools
import json
import logging
import os
import re
import shutil
import stat
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from filelock import FileLock
from tqdm.auto import tqdm

from .atomic import fsync_dir, resolve_dir
from .distributed import process_role, wait_for_everyone

__all__ = ["TeacherCache", "CacheCorruptError", "CacheMismatchError", "cache_fingerprint", "teacher_fingerprint",
           "SEGMENT_SENTENCES"]

FORMAT = "structkd-teacher-cache-2"
_EARLIER_FORMATS = ("structkd-teacher-cache-1",)
SEGMENT_SENTENCES = 4096
"""Sentences per segment by default (rounded down to a multiple of the batch size): what a resumed build
recomputes at most, per process."""
_FIELD_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_F16_MAX = float(np.finfo(np.float16).max)
_REBUILD = "pass --rebuild-cache (rebuild=True) to recompute it"
# the largest teacher files hashed: far beyond any real config.json or model.safetensors
MAX_TEACHER_FILE_BYTES = {"config.json": 64 << 20, "model.safetensors": 1 << 40, "pytorch_model.bin": 1 << 40,
                          "model.safetensors.index.json": 64 << 20, "pytorch_model.bin.index.json": 64 << 20}
_WEIGHTS = ("model.safetensors", "pytorch_model.bin")  # a structkd model's, then a transformers checkpoint's
_CHUNK = 1 << 20
logger = logging.getLogger("structkd.train")


class CacheMismatchError(ValueError):
    """The cache on disk was built for another dataset, teacher or projection options."""


class CacheCorruptError(ValueError):
    """A file of the cache on disk is missing, truncated or damaged (the message names it)."""


def _tokens_sha256(tokens: Iterable[Sequence[Any]]) -> tuple[str, int]:
    h = hashlib.sha256()
    n = 0
    for sent in tokens:
        h.update(json.dumps(list(sent), ensure_ascii=False).encode("utf-8"))
        h.update(b"\n")
        n += 1
    return h.hexdigest(), n


def cache_fingerprint(tokens: Iterable[Sequence[Any]], teacher_id: str, options: dict[str, Any] | None = None) -> dict:
    """``{"tokens_sha256", "n_sentences", "teacher", "options"}``: what a cache's content depends on.

    ``tokens`` is one sequence of tokens (strings or ints) per sentence; ``options`` must be JSON-able.
    """
    digest, n = _tokens_sha256(tokens)
    opts = json.loads(json.dumps(options or {}, sort_keys=True))
    return {"tokens_sha256": digest, "n_sentences": n, "teacher": str(teacher_id), "options": opts}


def teacher_fingerprint(directory: str | os.PathLike) -> str:
    """The identity of a saved teacher: the SHA-256 of its ``config.json`` and weights, the same wherever the
    directory is.

    The weights are ``model.safetensors`` (a structkd model, or a ``transformers`` checkpoint) or
    ``pytorch_model.bin``, or the index of a sharded checkpoint and its shards.  A Hugging Face hub name is read
    from its snapshot in the local cache.  Each file is read in chunks and must be a regular file (a symbolic
    link to one is fine, as in the hub cache) of at most ``MAX_TEACHER_FILE_BYTES`` bytes that still has the size
    it had when the read began; anything else (``/dev/zero``, a FIFO, a file being rewritten) raises
    ``ValueError`` naming it."""
    path = _teacher_directory(directory)
    digest = hashlib.sha256()
    _hash_file(digest, path / "config.json", MAX_TEACHER_FILE_BYTES["config.json"])
    for name in _weight_files(path):
        _hash_file(digest, path / name, MAX_TEACHER_FILE_BYTES.get(name, MAX_TEACHER_FILE_BYTES[_WEIGHTS[0]]))
    return digest.hexdigest()


def _teacher_directory(directory: str | os.PathLike) -> Path:
    """The local directory of a teacher: itself, or the hub-cache snapshot of a hub name (when cached)."""
    from structkd.models.encoders import cached_hub_file, is_hub_name

    path = Path(directory)
    cached = cached_hub_file(str(directory)) if is_hub_name(directory) else None
    return Path(cached).parent if cached else path


def _weight_files(path: Path) -> list[str]:
    """The weight files to hash: the first of :data:`_WEIGHTS` present, else a sharded checkpoint's index and
    its shards (sorted); ``[model.safetensors]`` (reported missing) when there is none."""
    for name in _WEIGHTS:
        if (path / name).exists():
            return [name]
    for name in _WEIGHTS:
        index = path / f"{name}.index.json"
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
            except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as error:
                raise ValueError(f"{index}: not a valid index of checkpoint shards ({error!r})") from error
            if any(not isinstance(n, str) or Path(n).name != n for n in shards):
                raise ValueError(f"{index}: shard names must be file names in {path}, got {shards[:5]}")
            return [index.name, *shards]
    return [_WEIGHTS[0]]


def _hash_file(digest: Any, path: Path, limit: int) -> None:
    """Add the bytes of the regular file ``path`` to ``digest``, reading at most its stat'ed size (+1 to see
    that it ends there)."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing; kd.teacher must be a directory written by a train command or "
                                f"a transformers token classifier's save_pretrained")
    with open(path, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"{path}: not a regular file, so it cannot be a saved teacher's file")
        if info.st_size > limit:
            raise ValueError(f"{path}: {info.st_size} bytes, more than the {limit} a saved teacher's file can "
                             f"plausibly have")
        left = info.st_size
        while left > 0:
            chunk = fh.read(min(_CHUNK, left))
            if not chunk:
                break
            digest.update(chunk)
            left -= len(chunk)
        if left != 0 or fh.read(1):
            raise ValueError(f"{path}: its size changed while it was read (was it being written?)")


def _describe_mismatch(stored: dict, expected: dict) -> list[str]:
    diffs = []
    if stored.get("tokens_sha256") != expected.get("tokens_sha256"):
        diffs.append(f"dataset tokens differ ({stored.get('n_sentences')} sentences cached, sha256 "
                     f"{str(stored.get('tokens_sha256'))[:12]}..., vs {expected.get('n_sentences')} sentences, "
                     f"sha256 {str(expected.get('tokens_sha256'))[:12]}...)")
    if stored.get("teacher") != expected.get("teacher"):
        diffs.append(f"teacher differs (cached {stored.get('teacher')!r}, expected {expected.get('teacher')!r})")
    so, eo = stored.get("options", {}), expected.get("options", {})
    if so != eo:
        keys = sorted(k for k in set(so) | set(eo) if so.get(k, "<absent>") != eo.get(k, "<absent>"))
        parts = [f"{k}: cached {so.get(k, '<absent>')!r}, expected {eo.get(k, '<absent>')!r}" for k in keys]
        diffs.append("projection options differ (" + "; ".join(parts) + ")")
    return diffs


# -- files ----------------------------------------------------------------------------------------------------
def _write_json(path: Path, value: Any) -> None:
    """``path`` written whole or not at all (a temporary file renamed over it, flushed first)."""
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:12]}")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(value) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _read_json(path: Path) -> Any:
    """The JSON value of ``path`` (:class:`CacheCorruptError` naming it when it is not valid JSON)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CacheCorruptError(f"{path}: not valid JSON, the file is truncated or damaged; {_REBUILD}") from error


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as fh:
        np.save(fh, array)
        fh.flush()
        os.fsync(fh.fileno())


def _discard(directory: Path) -> None:
    """Remove ``directory``: renamed to ``.<name>.trash-*`` first (one step, so a crash never leaves a
    half-deleted directory under its name; :func:`~structkd.train.atomic.resolve_dir` removes such leftovers)."""
    trash = directory.parent / f".{directory.name}.trash-{uuid.uuid4().hex[:12]}"
    os.replace(directory, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _has_index(directory: Path) -> bool:
    return (directory / "index.json").is_file()


# -- the build ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Plan:
    """What a build computes: ``n`` sentences in segments of ``segment_size`` (a multiple of ``batch_size``)."""

    directory: Path
    fingerprint: dict[str, Any]
    batch_size: int
    segment_size: int
    shared: tuple[str, ...]

    @property
    def n(self) -> int:
        return int(self.fingerprint["n_sentences"])

    @property
    def n_segments(self) -> int:
        return -(-self.n // self.segment_size)

    def bounds(self, k: int) -> tuple[int, int]:
        """``[start, end)`` of segment ``k``."""
        return k * self.segment_size, min(self.n, (k + 1) * self.segment_size)

    def segment(self, k: int) -> Path:
        return self.directory / "segments" / f"{k:06d}"

    def done(self, k: int) -> bool:
        return (self.segment(k) / "segment.json").is_file()

    def record(self) -> dict[str, Any]:
        """``build.json``: what a resumed build must share with this one."""
        return {"format": FORMAT, "fingerprint": self.fingerprint, "batch_size": self.batch_size,
                "segment_size": self.segment_size, "shared": list(self.shared)}


def _segment_size(batch_size: int, segment_size: int | None) -> int:
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if segment_size is None:
        return batch_size * max(1, SEGMENT_SENTENCES // batch_size)
    if segment_size < 1 or segment_size % batch_size:
        raise ValueError(f"segment_size must be a positive multiple of batch_size ({batch_size}), got {segment_size}")
    return segment_size


def _prepare(plan: _Plan) -> None:
    """Make ``plan.directory`` ready (main process, before any segment): an invalid complete cache (being
    rebuilt) or an unfinished build of other settings is removed; ``build.json`` names this build; temporary
    segments of an interrupted build are removed, finished ones kept."""
    directory = plan.directory
    if _has_index(directory):
        _discard(directory)
    elif (directory / "build.json").is_file():
        try:
            same = _read_json(directory / "build.json") == plan.record()
        except CacheCorruptError:
            same = False
        if not same:
            logger.info("%s: an unfinished teacher cache of other sentences, teacher or options: started over",
                        directory)
            _discard(directory)
    (directory / "segments").mkdir(parents=True, exist_ok=True)
    for stale in (directory / "segments").glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    if not (directory / "build.json").is_file():
        _write_json(directory / "build.json", plan.record())


@contextlib.contextmanager
def _build_lock(directory: Path, hold: bool) -> Iterator[None]:
    """An exclusive OS lock on building ``directory``, held by the main process of each job (``hold``), so that
    separate jobs (two runs sharing one cache folder) build it once: the second waits, then finds it complete.
    The lock file lies beside the folder (``.NAME.lock``), which a rebuild may delete."""
    if not hold:
        yield
        return
    directory.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(directory.parent / f".{directory.name}.lock"))
    try:
        lock.acquire(timeout=0)
    except TimeoutError:
        logger.info("%s: another process is building this teacher cache; waiting for it", directory)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def _segment_items(data: Iterable[Any], plan: _Plan, wanted: set[int]) -> Iterator[tuple[int, Iterator[Any]]]:
    """``(k, sentences of segment k)`` for the wanted segments, in order.  A sequence (``__len__`` and
    ``__getitem__``) is read at those segments only; any other iterable is read once, from the start (each
    segment's iterator must be consumed before the next is asked for)."""
    if hasattr(data, "__getitem__") and hasattr(data, "__len__"):
        for k in sorted(wanted):
            start, end = plan.bounds(k)
            yield k, (data[i] for i in range(start, end))
        return
    it = iter(data)
    for k in range(plan.n_segments):
        start, end = plan.bounds(k)
        block = itertools.islice(it, end - start)
        if k in wanted:
            yield k, block
        else:
            collections.deque(block, maxlen=0)
    if next(it, _END) is not _END:
        raise ValueError(f"data has more than the {plan.n} sentences of tokens")


_END = object()


def _compute_segments(plan: _Plan, data: Iterable[Any], run: Callable[[list[Any]], list[dict]], rank: int,
                      world: int, progress: bool) -> int:
    """Compute and commit the unfinished segments ``k`` with ``k % world == rank``; returns how many."""
    wanted = {k for k in range(rank, plan.n_segments, world) if not plan.done(k)}
    total = sum(plan.bounds(k)[1] - plan.bounds(k)[0] for k in wanted)
    with tqdm(total=total, desc="teacher cache", unit="sent", disable=not progress or rank != 0, leave=False,
              smoothing=0.1) as bar:
        for k, items in _segment_items(data, plan, wanted):
            _write_segment(plan, k, items, run, bar)
    return len(wanted)


def _write_segment(plan: _Plan, k: int, items: Iterator[Any], run: Callable[[list[Any]], list[dict]], bar: Any
                   ) -> None:
    """Segment ``k`` computed chunk by chunk into a temporary directory, renamed to its name when whole."""
    start, end = plan.bounds(k)
    tmp = plan.directory / "segments" / f".tmp-{k:06d}-{uuid.uuid4().hex[:12]}"
    writer = _SegmentWriter(tmp, plan.shared)
    try:
        index = start
        for chunk in _batched(items, plan.batch_size):
            outputs = run(chunk)
            if len(outputs) != len(chunk):
                raise ValueError(f"compute returned {len(outputs)} items for a batch of {len(chunk)} sentences")
            writer.add(index, outputs)
            index += len(chunk)
            bar.update(len(chunk))
        if index != end:
            raise ValueError(f"data has {index} sentences, but tokens has {plan.n}")
        writer.close(start, end - start)
        os.replace(tmp, plan.segment(k))
        fsync_dir(plan.segment(k).parent)
    except BaseException:
        writer.abort()
        raise


class _SegmentWriter:
    """Appends a segment's float16 values field by field; its shapes and shared fields are written on
    :meth:`close`.  Memory: one chunk's outputs and ``ndim`` integers per sentence of the segment."""

    def __init__(self, directory: Path, shared: Sequence[str]) -> None:
        self.directory = directory
        self.shared_names = frozenset(shared)
        directory.mkdir(parents=True)
        self.files: dict[str, Any] = {}
        self.shapes: dict[str, list[np.ndarray]] = {}
        self.totals: dict[str, int] = {}
        self.shared: dict[str, np.ndarray] = {}

    def _open(self, names: Iterable[str]) -> None:
        for name in sorted(names):
            if not _FIELD_NAME.match(name):
                raise ValueError(f"field name {name!r} must match {_FIELD_NAME.pattern}")
            self.files[name] = open(self.directory / f"{name}.f16", "wb")  # closed in close() or abort()
            self.shapes[name], self.totals[name] = [], 0

    def add(self, first: int, rows: Sequence[dict[str, Any]]) -> None:
        """The outputs of sentences ``first, first + 1, ...``."""
        for r, row in enumerate(rows):
            names = set(row) - self.shared_names
            if not self.files:
                self._open(names)
            elif names != set(self.files):
                raise ValueError(f"sentence {first + r}: fields {sorted(names)} differ from {sorted(self.files)}")
            for name in self.shared_names & set(row):
                self._add_shared(name, row[name], first + r)
        for name, fh in self.files.items():
            arrays = [torch.as_tensor(row[name]).detach().to("cpu", torch.float32).numpy() for row in rows]
            self._append(name, fh, arrays, first)

    def _append(self, name: str, fh: Any, arrays: list[np.ndarray], first: int) -> None:
        ndims = {a.ndim for a in arrays}
        if len(ndims) > 1 or (self.shapes[name] and self.shapes[name][0].shape[1] not in ndims):
            raise ValueError(f"sentences {first}-{first + len(arrays) - 1}: field {name!r} has tensors of "
                             f"different ranks")
        flat = np.concatenate([a.ravel() for a in arrays]) if arrays else np.zeros(0, np.float32)
        beyond = np.isfinite(flat) & (np.abs(flat) > _F16_MAX)
        if beyond.any():
            ends = np.cumsum([a.size for a in arrays])
            i = first + int(np.searchsorted(ends, int(np.argmax(beyond)), side="right"))
            raise ValueError(f"sentence {i}, field {name!r}: values beyond the float16 range")
        fh.write(flat.astype(np.float16).tobytes())
        self.shapes[name].append(np.array([a.shape for a in arrays], dtype=np.int64).reshape(len(arrays), -1))
        self.totals[name] += int(flat.size)

    def _add_shared(self, name: str, value: Any, i: int) -> None:
        array = torch.as_tensor(value).detach().to("cpu", torch.float32).numpy()
        known = self.shared.get(name)
        if known is None:
            self.shared[name] = array.copy()
        elif known.shape != array.shape or not np.array_equal(known, array):
            raise ValueError(f"sentence {i}: field {name!r} is stored once for every sentence, but differs here")

    def close(self, start: int, count: int) -> None:
        """Flush the values; write the shapes, the shared fields and ``segment.json``."""
        fields = {}
        for name, fh in self.files.items():
            fh.flush()
            os.fsync(fh.fileno())
            fh.close()
            shapes = np.concatenate(self.shapes[name]).astype(np.int32)
            _save_npy(self.directory / f"{name}.shapes.npy", shapes)
            fields[name] = {"ndim": int(shapes.shape[1]), "total": self.totals[name]}
        if self.shared:
            (self.directory / "shared").mkdir()
            for name, array in self.shared.items():
                _save_npy(self.directory / "shared" / f"{name}.npy", array)
        _write_json(self.directory / "segment.json", {"start": start, "count": count, "fields": fields,
                                                       "shared": sorted(self.shared)})

    def abort(self) -> None:
        for fh in self.files.values():
            fh.close()
        shutil.rmtree(self.directory, ignore_errors=True)


def _finalize(plan: _Plan) -> None:
    """Check that every segment is there and agrees; write the shapes, offsets, shared fields and, last,
    ``index.json`` (main process, after every process has committed its segments)."""
    metas = [_segment_meta(plan, k) for k in range(plan.n_segments)]
    fields = metas[0]["fields"] if metas else {}
    for k, meta in enumerate(metas):
        if {n: f["ndim"] for n, f in meta["fields"].items()} != {n: f["ndim"] for n, f in fields.items()}:
            raise ValueError(f"{plan.segment(k)}: fields {sorted(meta['fields'])} differ from segment 0's "
                             f"{sorted(fields)}")
    for name, info in fields.items():
        _write_index_arrays(plan, metas, name, int(info["ndim"]))
    shared = _merge_shared(plan, metas)
    index = {"format": FORMAT, "fingerprint": plan.fingerprint, "n_sentences": plan.n,
             "segment_size": plan.segment_size, "n_segments": plan.n_segments,
             "fields": {name: {"ndim": info["ndim"], "dtype": "float16",
                               "totals": [m["fields"][name]["total"] for m in metas]} for name, info in fields.items()},
             "shared": shared}
    _write_json(plan.directory / "index.json", index)


def _write_index_arrays(plan: _Plan, metas: list[dict[str, Any]], name: str, ndim: int) -> None:
    """``<field>.shapes.npy`` and ``<field>.offsets.npy``, filled segment by segment into memory-mapped files
    (memory: one segment's shapes, whatever the number of sentences)."""
    shapes = np.lib.format.open_memmap(plan.directory / f"{name}.shapes.npy", mode="w+", dtype=np.int32,
                                       shape=(plan.n, ndim))
    offsets = np.lib.format.open_memmap(plan.directory / f"{name}.offsets.npy", mode="w+", dtype=np.int64,
                                        shape=(plan.n,))
    for k, meta in enumerate(metas):
        path = plan.segment(k) / f"{name}.shapes.npy"
        block = np.load(path)
        sizes = np.prod(block, axis=1, dtype=np.int64)
        if block.shape != (meta["count"], ndim) or int(sizes.sum()) != meta["fields"][name]["total"]:
            raise CacheCorruptError(f"{path}: does not match its segment.json; {_REBUILD}")
        start, end = plan.bounds(k)
        shapes[start:end] = block
        offsets[start:end] = np.cumsum(sizes) - sizes
    for array in (shapes, offsets):
        array.flush()
    del shapes, offsets


def _segment_meta(plan: _Plan, k: int) -> dict[str, Any]:
    path = plan.segment(k) / "segment.json"
    if not path.is_file():
        raise CacheCorruptError(f"{plan.segment(k)}: missing, so the cache is not whole (did a process of the "
                                f"build fail?); build it again to compute the missing segments")
    meta = _read_json(path)
    start, end = plan.bounds(k)
    if meta.get("start") != start or meta.get("count") != end - start:
        raise CacheCorruptError(f"{path}: sentences {meta.get('start')} + {meta.get('count')}, expected "
                                f"{start} + {end - start}; {_REBUILD}")
    return meta


def _merge_shared(plan: _Plan, metas: list[dict[str, Any]]) -> dict[str, list[int]]:
    """The shared fields (``shared/<name>.npy``), the same in every segment that has them; their shapes."""
    values: dict[str, np.ndarray] = {}
    for k, meta in enumerate(metas):
        for name in meta["shared"]:
            array = np.load(plan.segment(k) / "shared" / f"{name}.npy")
            if name in values and not np.array_equal(values[name], array):
                raise ValueError(f"{plan.segment(k)}: the shared field {name!r} differs from an earlier segment's "
                                 f"(is the teacher the same in every process?)")
            values.setdefault(name, array)
    if values:
        (plan.directory / "shared").mkdir(exist_ok=True)
    for name, array in values.items():
        _save_npy(plan.directory / "shared" / f"{name}.npy", array)
    return {name: list(array.shape) for name, array in values.items()}


# -- reading ------------------------------------------------------------------------------------------------
def _read_index(path: Path) -> dict[str, Any]:
    """``index.json``, checked for the keys a cache needs (:class:`CacheCorruptError` naming it otherwise)."""
    index = _read_json(path)
    found = index.get("format") if isinstance(index, dict) else None
    if found in _EARLIER_FORMATS:
        raise CacheCorruptError(f"{path}: a teacher cache of an earlier structkd (format {found}, one JSON list "
                                f"entry per sentence), which this version does not read; {_REBUILD}")
    if found != FORMAT:
        raise CacheCorruptError(f"{path}: unknown cache format {found!r}; {_REBUILD}")
    fields = index.get("fields")
    keys = {"fingerprint", "n_sentences", "segment_size", "n_segments", "shared"}
    if not keys <= set(index) or not isinstance(index["fingerprint"], dict) or not isinstance(fields, dict) or not all(
            isinstance(info, dict) and {"ndim", "totals"} <= set(info) for info in fields.values()):
        raise CacheCorruptError(f"{path}: incomplete cache index (fingerprint or fields missing); {_REBUILD}")
    return index


def _load_array(path: Path, dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
    """A memory-mapped ``.npy`` file checked to be ``dtype`` of ``shape`` (:class:`CacheCorruptError`
    naming it otherwise)."""
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError, EOFError) as error:
        raise CacheCorruptError(f"{path}: missing, truncated or damaged ({error}); {_REBUILD}") from error
    if array.dtype != dtype or array.shape != shape:
        raise CacheCorruptError(f"{path}: {array.dtype} {array.shape}, but the index records {np.dtype(dtype)} "
                                f"{shape}; {_REBUILD}")
    return array


def _unfinished(directory: Path) -> str:
    """Why ``directory`` is no cache: nothing there, or an unfinished build (how far it got)."""
    if (directory / "build.json").is_file():
        done = len(list((directory / "segments").glob("[0-9]*/segment.json")))
        return (f"{directory}: an unfinished teacher cache ({done} segments done, no index.json); run the same "
                f"build again to resume it")
    return f"no teacher cache at {directory}"


class TeacherCache:
    """Read access to a built cache: ``get(i, field)``, padded ``batch(indices, field, pad_shape)`` and the
    fields stored once, ``shared(name)``.

    Build (or reuse, or resume) one with :meth:`build`; open an existing one with :meth:`load`.
    """

    def __init__(self, directory: str | os.PathLike, index: dict[str, Any]) -> None:
        self.directory = Path(directory)
        self.index = index
        self.fingerprint: dict[str, Any] = index["fingerprint"]
        n, self._segment_size = int(index["n_sentences"]), int(index["segment_size"])
        self._shapes = {name: _load_array(self.directory / f"{name}.shapes.npy", np.int32, (n, int(info["ndim"])))
                        for name, info in index["fields"].items()}
        self._offsets = {name: _load_array(self.directory / f"{name}.offsets.npy", np.int64, (n,))
                         for name in index["fields"]}
        self._shared = {name: torch.from_numpy(np.array(_load_array(
            self.directory / "shared" / f"{name}.npy", np.float32, tuple(shape)))) for name, shape in
            index["shared"].items()}
        self._maps: dict[tuple[str, int], np.ndarray] = {}
        for name, info in index["fields"].items():
            if len(info["totals"]) != int(index["n_segments"]):
                raise CacheCorruptError(f"{self.directory / 'index.json'}: field {name!r} lists "
                                        f"{len(info['totals'])} segments, not {index['n_segments']}; {_REBUILD}")
            for k, total in enumerate(info["totals"]):
                self._check_values(name, k, int(total))

    def _values_path(self, name: str, k: int) -> Path:
        return self.directory / "segments" / f"{k:06d}" / f"{name}.f16"

    def _check_values(self, name: str, k: int, total: int) -> None:
        path = self._values_path(name, k)
        try:
            size = path.stat().st_size
        except OSError as error:
            raise CacheCorruptError(f"{path}: missing ({error}); {_REBUILD}") from error
        if size != 2 * total:
            raise CacheCorruptError(f"{path}: {size} bytes, but the index records {total} float16 values "
                                    f"({2 * total} bytes): truncated or damaged; {_REBUILD}")

    def _values(self, name: str, k: int) -> np.ndarray:
        """The memory map of segment ``k``'s values of ``name`` (opened on first use)."""
        key = (name, k)
        if key not in self._maps:
            path = self._values_path(name, k)
            self._maps[key] = (np.memmap(path, dtype=np.float16, mode="r") if path.stat().st_size
                               else np.zeros(0, dtype=np.float16))
        return self._maps[key]

    # -- building --------------------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        directory: str | os.PathLike,
        data: Iterable[Any],
        compute: Callable[[Any], list[dict[str, torch.Tensor]]],
        *,
        teacher_id: str,
        tokens: Iterable[Sequence[Any]] | None = None,
        options: dict[str, Any] | None = None,
        batch_size: int = 32,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        rebuild: bool = False,
        progress: bool = True,
        shared_fields: Sequence[str] = (),
        segment_size: int | None = None,
    ) -> TeacherCache:
        """Return the cache at ``directory``, computing it first if needed (in one pass over ``data``).

        ``compute(collate_fn(chunk))`` gets ``batch_size`` consecutive sentences (fewer at the end) and must
        return one dict per sentence, mapping field names to that sentence's tensor (any shape, e.g.
        ``[n, n_tags]``, ``[n - 1, n_tags, n_tags]`` or ``[n + 1, n + 1]``); a field of ``shared_fields`` is the
        same for every sentence (a CRF teacher's transitions ``[n_tags, n_tags]``): it is stored once, may be
        missing from some rows, and must be equal wherever it is given.

        ``data`` is a sequence (read at the segments this process computes) or any iterable (read once, in
        order; nothing of it is kept).  ``tokens`` (default: ``data``, which is then read twice) are hashed
        into the fingerprint with ``teacher_id`` and ``options`` first, in one pass.  An existing cache with
        the same fingerprint is reused; with another fingerprint (or damaged files) :class:`CacheMismatchError`
        (:class:`CacheCorruptError`) is raised unless ``rebuild=True``.  An unfinished build of the same
        fingerprint resumes: its finished segments (``segment_size`` sentences, a multiple of ``batch_size``;
        default about :data:`SEGMENT_SENTENCES`) are kept.  Under ``accelerate launch`` every process computes
        its share of the segments (it must be called by all of them).  ``progress`` shows sentences per second
        (on the main process).
        """
        fingerprint = cache_fingerprint(tokens if tokens is not None else data, teacher_id, options)
        if hasattr(data, "__len__") and fingerprint["n_sentences"] != len(data):
            raise ValueError(f"tokens has {fingerprint['n_sentences']} sentences but data has {len(data)}")
        existing = cls._existing(directory, fingerprint, rebuild)
        if existing is not None:
            return existing
        plan = _Plan(Path(directory), fingerprint, batch_size, _segment_size(batch_size, segment_size),
                     tuple(shared_fields))
        rank, world = process_role()
        with _build_lock(plan.directory, rank == 0):
            wait_for_everyone()  # every process has looked at the directory before it changes
            # another job may have built it while this one waited for the lock
            existing = cls._existing(directory, fingerprint, rebuild)
            if existing is not None:
                return existing
            collate = collate_fn if collate_fn is not None else list
            if rank == 0:
                _prepare(plan)
            wait_for_everyone()
            _compute_segments(plan, data, lambda chunk: compute(collate(chunk)), rank, world, progress)
            wait_for_everyone()
            if rank == 0:
                _finalize(plan)
            wait_for_everyone()
        return cls.load(directory, fingerprint=fingerprint)

    @classmethod
    def _existing(cls, directory: str | os.PathLike, fingerprint: dict[str, Any], rebuild: bool
                  ) -> TeacherCache | None:
        """The complete cache at ``directory`` if it matches ``fingerprint``; ``None`` when there is none or
        (with ``rebuild``) it does not match or is damaged."""
        path = resolve_dir(directory, is_complete=_has_index)
        if path is None or not _has_index(path):
            return None
        try:
            return cls.load(directory, fingerprint=fingerprint)
        except (CacheMismatchError, CacheCorruptError):
            if not rebuild:
                raise
        return None

    # -- loading ---------------------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike,
        *,
        fingerprint: dict[str, Any] | None = None,
        tokens: Iterable[Sequence[Any]] | None = None,
        teacher_id: str | None = None,
        options: dict[str, Any] | None = None,
    ) -> TeacherCache:
        """Open the cache at ``directory``, checking it against ``fingerprint`` or against the fingerprint of
        ``tokens``, ``teacher_id`` and ``options`` when given (no check when none is).  A directory without
        ``index.json`` (nothing, or an unfinished build) raises ``FileNotFoundError`` saying which."""
        path = resolve_dir(directory, is_complete=_has_index)
        if path is None or not _has_index(path):
            raise FileNotFoundError(_unfinished(Path(directory)))
        index = _read_index(path / "index.json")
        if fingerprint is None and tokens is not None and teacher_id is not None:
            fingerprint = cache_fingerprint(tokens, teacher_id, options)
        if fingerprint is not None:
            diffs = _describe_mismatch(index["fingerprint"], fingerprint)
            if diffs:
                raise CacheMismatchError(f"teacher cache {path} does not match: " + "; ".join(diffs)
                                         + f" ({_REBUILD})")
        return cls(path, index)

    # -- access ----------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self.index["n_sentences"])

    @property
    def fields(self) -> list[str]:
        """The per-sentence fields."""
        return list(self.index["fields"])

    @property
    def shared_fields(self) -> list[str]:
        """The fields stored once for every sentence."""
        return list(self._shared)

    def shared(self, name: str) -> torch.Tensor:
        """The float32 tensor of a field stored once (``KeyError`` naming the fields if there is no such one)."""
        if name not in self._shared:
            raise KeyError(f"no shared field {name!r} in the teacher cache (shared fields: {self.shared_fields})")
        return self._shared[name].clone()

    def shape(self, i: int, field: str) -> tuple[int, ...]:
        """Shape of sentence ``i``'s tensor of ``field``."""
        self._check_field(field)
        return tuple(int(x) for x in self._shapes[field][self._sentence(i)])

    def _check_field(self, field: str) -> None:
        if field not in self.index["fields"]:
            raise KeyError(f"no field {field!r} in the teacher cache (fields: {self.fields})")

    def _sentence(self, i: int) -> int:
        if not 0 <= int(i) < len(self):
            raise IndexError(f"sentence {i} is not in the teacher cache of {len(self)} sentences")
        return int(i)

    def get(self, i: int, field: str) -> torch.Tensor:
        """Sentence ``i``'s tensor of ``field`` as float32, in its stored shape."""
        shape = self.shape(i, field)
        start = int(self._offsets[field][i])
        size = int(np.prod(shape)) if shape else 1
        values = self._values(field, int(i) // self._segment_size)[start : start + size]
        return torch.from_numpy(np.asarray(values, dtype=np.float32).reshape(shape))

    def batch(
        self, indices: Sequence[int], field: str, pad_shape: Sequence[int | None] | None = None,
        pad_value: float = 0.0,
    ) -> torch.Tensor:
        """Padded float32 tensor ``[len(indices), *pad_shape]``: sentence ``indices[b]``'s tensor sits in the
        leading corner ``out[b, :d0, :d1, ...]``, the rest is ``pad_value``.

        ``pad_shape`` entries that are ``None`` (or ``pad_shape=None`` altogether) take the maximum over the
        selected sentences. A tensor larger than ``pad_shape`` raises ``ValueError``.
        """
        shapes = [self.shape(i, field) for i in indices]
        ndim = int(self.index["fields"][field]["ndim"])
        if pad_shape is None:
            pad_shape = [None] * ndim
        if len(pad_shape) != ndim:
            raise ValueError(f"pad_shape {tuple(pad_shape)} has {len(pad_shape)} dims, field {field!r} has {ndim}")
        target = [p if p is not None else max((s[d] for s in shapes), default=0) for d, p in enumerate(pad_shape)]
        out = torch.full((len(indices), *target), float(pad_value), dtype=torch.float32)
        for b, (i, s) in enumerate(zip(indices, shapes)):
            if any(x > t for x, t in zip(s, target)):
                raise ValueError(f"sentence {i}: {field!r} of shape {tuple(s)} does not fit pad_shape {tuple(target)}")
            out[(b, *(slice(0, x) for x in s))] = self.get(i, field)
        return out
