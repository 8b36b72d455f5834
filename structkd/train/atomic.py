"""Atomic directory writes: build a directory next to its target, then swap it in with ``os.replace``.

A reader never sees a half-written directory: the new content is complete and flushed before it takes the
target's name. POSIX ``rename`` cannot replace a non-empty directory, so the previous version is first
renamed to ``.<name>.old-<random>`` and removed after the swap; if a crash happens between those two
renames, :func:`resolve_dir` finds the old version and puts it back.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_directory", "resolve_dir", "fsync_dir"]


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


def resolve_dir(target: str | os.PathLike) -> Path | None:
    """Return ``target`` if it exists; else restore a leftover ``.<name>.old-*`` from an interrupted swap.

    Returns ``None`` when neither exists.
    """
    target = Path(target)
    if target.is_dir():
        return target
    olds = sorted(target.parent.glob(f".{target.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if olds:
        os.replace(olds[-1], target)
        return target
    return None


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary directory next to ``target``; on success it atomically becomes ``target``.

    If the ``with`` body raises, the temporary directory is removed and ``target`` is left untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    resolve_dir(target)  # repair a previous interrupted swap before replacing
    for stale in target.parent.glob(f".{target.name}.tmp-*"):  # left by a crash in an earlier write
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
        _fsync_tree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.replace(target, old)  # ``old`` is an empty directory, so rename may replace it
    os.replace(tmp, target)
    fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
