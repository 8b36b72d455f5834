"""Atomic directory writes: build a directory next to its target, then swap it in with ``os.replace``.

A reader never sees a half-written directory: the new content is complete and flushed before it takes the
target's name. POSIX ``rename`` cannot replace a non-empty directory, so the previous version is first
renamed to ``.<name>.old-<random>``; after the swap it is renamed to ``.<name>.trash-<random>`` (one atomic
step, so an ``.old-*`` directory is never half deleted) and removed. If a crash happens between the two
renames of the swap, :func:`resolve_dir` finds the newest *complete* old version and puts it back; the next
write removes whatever leftovers (``.tmp-*``, ``.old-*``, ``.trash-*``) a crash left.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["atomic_directory", "resolve_dir", "fsync_dir", "remove_leftovers"]


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a directory entry to disk (no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    for root, _dirs, files in os.walk(path):
        for name in files:
            with open(os.path.join(root, name), "rb") as fh:
                os.fsync(fh.fileno())
        fsync_dir(root)


def _non_empty(path: Path) -> bool:
    return any(path.iterdir())


def _discard(path: Path, target: Path) -> None:
    """Remove ``path`` (a leftover of ``target``): first renamed to ``.<name>.trash-*`` so that a crash while
    deleting never leaves a half-deleted directory under a name :func:`resolve_dir` would restore."""
    trash = target.parent / f".{target.name}.trash-{uuid.uuid4().hex[:12]}"
    try:
        os.replace(path, trash)
    except OSError:
        return  # gone already (another process cleaned up)
    shutil.rmtree(trash, ignore_errors=True)


def _old_versions(target: Path) -> list[Path]:
    """The ``.<name>.old-*`` directories of ``target``, newest first."""
    olds = []
    for path in target.parent.glob(f".{target.name}.old-*"):
        with contextlib.suppress(OSError):
            olds.append((path.stat().st_mtime, path))
    return [path for _, path in sorted(olds, key=lambda item: item[0], reverse=True)]


def remove_leftovers(target: str | os.PathLike) -> None:
    """Remove every ``.<name>.tmp-*``, ``.<name>.old-*`` and ``.<name>.trash-*`` of ``target`` (left by
    crashes; only call this while ``target`` itself is complete or about to be rewritten)."""
    target = Path(target)
    for pattern in ("tmp", "old", "trash"):
        for stale in target.parent.glob(f".{target.name}.{pattern}-*"):
            if pattern == "old":
                _discard(stale, target)
            else:
                shutil.rmtree(stale, ignore_errors=True)


def resolve_dir(target: str | os.PathLike, is_complete: Callable[[Path], bool] | None = None) -> Path | None:
    """Return ``target`` if it exists; else restore the newest complete ``.<name>.old-*`` left by an
    interrupted swap (and remove the other, older or incomplete, ones).

    ``is_complete(path)`` says whether an old version is whole (default: it is a non-empty directory; a
    checkpoint checks its files, a cache its index).  Returns ``None`` when there is nothing to restore.
    """
    target = Path(target)
    if target.is_dir():
        return target
    check = is_complete or _non_empty
    for old in _old_versions(target):
        try:
            complete = old.is_dir() and check(old)
        except (OSError, ValueError):
            complete = False
        if not complete:
            continue
        try:
            os.replace(old, target)
        except OSError:
            if not target.is_dir():  # another process may have restored it first
                raise
        remove_leftovers(target)
        return target
    remove_leftovers(target)  # nothing whole to restore: the leftovers are partial
    return None


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary directory next to ``target``; on success it atomically becomes ``target``.

    If the ``with`` body raises, the temporary directory is removed and ``target`` is left untouched (as are
    the old versions of an earlier interrupted swap, until a write succeeds).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.tmp-*"):  # left by a crash in an earlier write
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
        _fsync_tree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.replace(target, old)  # ``old`` is an empty directory, so rename may replace it
    os.replace(tmp, target)
    fsync_dir(target.parent)
    remove_leftovers(target)  # this swap's old version and any an earlier crash left
