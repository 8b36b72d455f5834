"""On-disk cache of a teacher's per-sentence outputs (e.g. projected KD marginals), computed once.

Layout of a cache directory::

    index.json          fingerprint, number of sentences, per field: file, offsets and shapes
    <field>.npy         all sentences' tensors of that field, flattened and concatenated, float16

Each ``.npy`` file is opened memory-mapped, so a cache larger than memory costs only the pages read.
The fingerprint is the sha256 of the dataset's tokens, a teacher identifier (e.g. a checkpoint hash) and
the projection options; loading with other values raises :class:`CacheMismatchError` saying what differs.
A cache whose files are missing, truncated or damaged raises :class:`CacheCorruptError` naming the file;
:meth:`TeacherCache.build` with ``rebuild=True`` (``--rebuild-cache``) recomputes it in either case.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .atomic import atomic_directory, resolve_dir

__all__ = ["TeacherCache", "CacheCorruptError", "CacheMismatchError", "cache_fingerprint", "teacher_fingerprint"]

FORMAT = "structkd-teacher-cache-1"
_FIELD_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_F16_MAX = float(np.finfo(np.float16).max)
_REBUILD = "pass --rebuild-cache (rebuild=True) to recompute it"
# the largest teacher files hashed: far beyond any real config.json or model.safetensors
MAX_TEACHER_FILE_BYTES = {"config.json": 64 << 20, "model.safetensors": 1 << 40, "pytorch_model.bin": 1 << 40,
                          "model.safetensors.index.json": 64 << 20, "pytorch_model.bin.index.json": 64 << 20}
_WEIGHTS = ("model.safetensors", "pytorch_model.bin")  # a structkd model's, then a transformers checkpoint's
_CHUNK = 1 << 20


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


def _has_index(directory: Path) -> bool:
    return (directory / "index.json").is_file()


def _read_index(path: Path) -> dict[str, Any]:
    """``index.json``, checked for the keys a cache needs (:class:`CacheCorruptError` naming it otherwise)."""
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CacheCorruptError(f"{path}: not valid JSON, the file is truncated or damaged; {_REBUILD}") from error
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        found = index.get("format") if isinstance(index, dict) else None
        raise CacheCorruptError(f"{path}: unknown cache format {found!r}; {_REBUILD}")
    fields = index.get("fields")
    if not isinstance(index.get("fingerprint"), dict) or not isinstance(fields, dict) or not all(
            isinstance(info, dict) and {"file", "offsets", "shapes", "total"} <= set(info) for info in fields.values()):
        raise CacheCorruptError(f"{path}: incomplete cache index (fingerprint or fields missing); {_REBUILD}")
    return index


def _open_field(directory: Path, name: str, info: dict[str, Any]) -> np.ndarray:
    """The memory map of one field's ``.npy`` file, checked to hold the ``total`` float16 values its index
    records (:class:`CacheCorruptError` naming the file otherwise)."""
    path = directory / str(info["file"])
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError, EOFError) as error:
        raise CacheCorruptError(f"{path}: missing, truncated or damaged ({error}); {_REBUILD}") from error
    if array.dtype != np.float16 or array.shape != (int(info["total"]),):
        raise CacheCorruptError(f"{path}: {array.dtype} {array.shape}, but the index records float16 "
                                f"({int(info['total'])},); {_REBUILD}")
    return array


class TeacherCache:
    """Read access to a built cache: ``get(i, field)`` and padded ``batch(indices, field, pad_shape)``.

    Build (or reuse) one with :meth:`build`; open an existing one with :meth:`load`.
    """

    def __init__(self, directory: str | os.PathLike, index: dict[str, Any]) -> None:
        self.directory = Path(directory)
        self.index = index
        self.fingerprint: dict[str, Any] = index["fingerprint"]
        self._arrays = {name: _open_field(self.directory, name, info) for name, info in index["fields"].items()}

    # -- building --------------------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        directory: str | os.PathLike,
        data: Sequence[Any],
        compute: Callable[[Any], list[dict[str, torch.Tensor]]],
        *,
        teacher_id: str,
        tokens: Sequence[Sequence[Any]] | None = None,
        options: dict[str, Any] | None = None,
        batch_size: int = 32,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        rebuild: bool = False,
        progress: bool = True,
    ) -> TeacherCache:
        """Return the cache at ``directory``, computing it first if needed.

        ``compute(collate_fn([data[i] for i in chunk]))`` must return one dict per sentence of the chunk,
        mapping field names to that sentence's tensor (any shape, e.g. ``[n, n_tags]``,
        ``[n - 1, n_tags, n_tags]`` or ``[n + 1, n + 1]``). ``tokens`` (default: ``data``) are hashed into the
        fingerprint with ``teacher_id`` and ``options``. An existing cache with the same fingerprint is reused;
        with another fingerprint :class:`CacheMismatchError` is raised unless ``rebuild=True``.
        The directory is written atomically (a crash leaves no partial cache).
        """
        fingerprint = cache_fingerprint(tokens if tokens is not None else data, teacher_id, options)
        if fingerprint["n_sentences"] != len(data):
            raise ValueError(f"tokens has {fingerprint['n_sentences']} sentences but data has {len(data)}")
        if resolve_dir(directory, is_complete=_has_index) is not None and (Path(directory) / "index.json").is_file():
            try:
                return cls.load(directory, fingerprint=fingerprint)
            except (CacheMismatchError, CacheCorruptError):
                if not rebuild:
                    raise
        collate = collate_fn if collate_fn is not None else list
        chunks = [list(range(i, min(i + batch_size, len(data)))) for i in range(0, len(data), batch_size)]
        with atomic_directory(directory) as tmp:
            index = cls._write(tmp, chunks, lambda chunk: compute(collate([data[i] for i in chunk])), progress)
            index["fingerprint"] = fingerprint
            (tmp / "index.json").write_text(json.dumps(index) + "\n", encoding="utf-8")
        return cls.load(directory, fingerprint=fingerprint)

    @staticmethod
    def _write(tmp: Path, chunks: list[list[int]], run: Callable[[list[int]], list[dict]], progress: bool) -> dict:
        """Compute every chunk, append float16 values to raw files, then convert them to ``.npy``."""
        fields: dict[str, dict[str, Any]] = {}
        raw: dict[str, Any] = {}
        try:
            for chunk in tqdm(chunks, desc="teacher cache", disable=not progress, leave=False):
                outputs = run(chunk)
                if len(outputs) != len(chunk):
                    raise ValueError(f"compute returned {len(outputs)} items for a batch of {len(chunk)} sentences")
                for i, out in zip(chunk, outputs):
                    if not fields:
                        for name in out:
                            if not _FIELD_NAME.match(name):
                                raise ValueError(f"field name {name!r} must match {_FIELD_NAME.pattern}")
                            fields[name] = {"file": f"{name}.npy", "offsets": [], "shapes": []}
                            raw[name] = open(tmp / f"{name}.raw", "wb")  # closed in the finally below
                    if set(out) != set(fields):
                        raise ValueError(f"sentence {i}: fields {sorted(out)} differ from {sorted(fields)}")
                    for name, value in out.items():
                        arr = torch.as_tensor(value).detach().float().cpu().numpy()
                        if np.isfinite(arr).all() and arr.size and np.abs(arr).max() > _F16_MAX:
                            raise ValueError(f"sentence {i}, field {name!r}: values beyond the float16 range")
                        info = fields[name]
                        info["offsets"].append(raw[name].tell() // 2)
                        info["shapes"].append(list(arr.shape))
                        raw[name].write(np.ascontiguousarray(arr, dtype=np.float16).tobytes())
        finally:
            for fh in raw.values():
                fh.close()
        for name, info in fields.items():
            src = np.memmap(tmp / f"{name}.raw", dtype=np.float16, mode="r") if os.path.getsize(
                tmp / f"{name}.raw") else np.zeros(0, dtype=np.float16)
            info["total"] = int(src.shape[0])
            dst = np.lib.format.open_memmap(tmp / info["file"], mode="w+", dtype=np.float16, shape=(src.shape[0],))
            step = 1 << 24
            for start in range(0, src.shape[0], step):
                dst[start : start + step] = src[start : start + step]
            dst.flush()
            del dst, src
            os.remove(tmp / f"{name}.raw")
        return {"format": FORMAT, "n_sentences": sum(len(c) for c in chunks), "fields": fields}

    # -- loading ---------------------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike,
        *,
        fingerprint: dict[str, Any] | None = None,
        tokens: Sequence[Sequence[Any]] | None = None,
        teacher_id: str | None = None,
        options: dict[str, Any] | None = None,
    ) -> TeacherCache:
        """Open the cache at ``directory``, checking it against ``fingerprint`` or against the fingerprint of
        ``tokens``, ``teacher_id`` and ``options`` when given (no check when none is)."""
        path = resolve_dir(directory, is_complete=_has_index)
        if path is None or not (path / "index.json").is_file():
            raise FileNotFoundError(f"no teacher cache at {directory}")
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
        return list(self.index["fields"])

    def shape(self, i: int, field: str) -> tuple[int, ...]:
        """Shape of sentence ``i``'s tensor of ``field``."""
        return tuple(self._info(field)["shapes"][i])

    def _info(self, field: str) -> dict[str, Any]:
        if field not in self.index["fields"]:
            raise KeyError(f"no field {field!r} in the teacher cache (fields: {self.fields})")
        return self.index["fields"][field]

    def get(self, i: int, field: str) -> torch.Tensor:
        """Sentence ``i``'s tensor of ``field`` as float32, in its stored shape."""
        info = self._info(field)
        shape = info["shapes"][i]
        start = info["offsets"][i]
        size = int(np.prod(shape)) if shape else 1
        arr = np.asarray(self._arrays[field][start : start + size], dtype=np.float32)
        return torch.from_numpy(arr.reshape(shape))

    def batch(
        self, indices: Sequence[int], field: str, pad_shape: Sequence[int | None] | None = None,
        pad_value: float = 0.0,
    ) -> torch.Tensor:
        """Padded float32 tensor ``[len(indices), *pad_shape]``: sentence ``indices[b]``'s tensor sits in the
        leading corner ``out[b, :d0, :d1, ...]``, the rest is ``pad_value``.

        ``pad_shape`` entries that are ``None`` (or ``pad_shape=None`` altogether) take the maximum over the
        selected sentences. A tensor larger than ``pad_shape`` raises ``ValueError``.
        """
        info = self._info(field)
        shapes = [info["shapes"][i] for i in indices]
        ndim = len(shapes[0]) if shapes else (len(pad_shape) if pad_shape is not None else 0)
        if any(len(s) != ndim for s in shapes):
            raise ValueError(f"field {field!r}: sentences have tensors of different ranks")
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
