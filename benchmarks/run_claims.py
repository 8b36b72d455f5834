"""Several processes on one benchmark output directory: each group of student runs is claimed by a lock file.

A benchmark driver started with ``--worker`` next to a main run (another core, another machine on a shared
disk) trains the groups nobody has claimed, from the end of the list, and stops; the main run waits for the
groups it finds claimed and then writes the tables.  A lock names its owner's host and pid; a lock of a
process that no longer runs on this host is taken over, so a crashed worker's group is trained again.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path


class Claims:
    """Lock files ``<directory>/locks/<name>.lock`` holding ``host pid``."""

    def __init__(self, directory: Path):
        self.directory = directory / "locks"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.me = f"{socket.gethostname()} {os.getpid()}"

    def _path(self, name: str) -> Path:
        return self.directory / f"{name}.lock"

    def _owner_alive(self, owner: str) -> bool:
        host, _, pid = owner.partition(" ")
        if host != socket.gethostname():
            return True  # cannot tell: assume it runs
        try:
            os.kill(int(pid), 0)
        except (ProcessLookupError, ValueError):
            return False
        except PermissionError:
            return True
        return True

    def claim(self, name: str) -> bool:
        """True if this process now holds ``name`` (fresh, already its own, or taken over from a dead owner)."""
        path = self._path(name)
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                owner = path.read_text().strip() if path.exists() else ""
                if owner == self.me:
                    return True
                if owner and self._owner_alive(owner):
                    return False
                path.unlink(missing_ok=True)  # a dead owner's lock (or one being written): take it over
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(self.me)
            return True
        return False

    def release(self, name: str) -> None:
        path = self._path(name)
        if path.exists() and path.read_text().strip() == self.me:
            path.unlink()

    def wait(self, name: str, done: Callable[[], bool], work: Callable[[], None], poll: float = 20.0) -> None:
        """Until ``done()``: sleep while another live process holds ``name``; run ``work()`` if it is free."""
        while not done():
            if self.claim(name):
                try:
                    work()
                finally:
                    self.release(name)
            else:
                time.sleep(poll)


def train_groups(out: Path, groups: list, name: Callable[[object], str], finished: Callable[[object], bool],
                 train: Callable[[object], object], worker: bool, wait: bool | None = None) -> None:
    """Train every unfinished group, one claim at a time.

    The main run goes through ``groups`` in order and then waits for the groups other processes claimed
    (training any whose owner died); a worker goes from the end, skips claimed groups and returns when it
    finds nothing left to claim.  ``wait=True`` makes a worker wait for the claimed groups too (what it needs
    before it can go on, such as the teachers); ``wait=False`` lets the main run return without them.
    """
    claims, elsewhere = Claims(out), []
    for group in (reversed(groups) if worker else groups):
        if finished(group):
            continue
        if not claims.claim(name(group)):
            elsewhere.append(group)
            continue
        try:
            train(group)
        finally:
            claims.release(name(group))
    if wait is None:
        wait = not worker
    if not wait:
        return
    for group in elsewhere:
        claims.wait(name(group), lambda group=group: finished(group), lambda group=group: train(group))


def train_teachers(out: Path, names: list[str], train: Callable[[str, Path], object], worker: bool) -> dict[str, Path]:
    """Each teacher ``name`` is trained once, by ``train(name, out / f"teacher-{name}")``, which leaves the model in
    that directory's ``model/``: one teacher per process (a worker from the end), and every process waits for all
    of them.  Returns ``{name: model directory}``."""
    models = {name: out / f"teacher-{name}" / "model" for name in names}
    train_groups(out, list(names), lambda name: f"teacher-{name}",
                 lambda name: (models[name] / "model.safetensors").exists(),
                 lambda name: train(name, models[name].parent), worker, wait=True)
    return models
