"""Several processes on one benchmark output directory: each group of student runs is claimed by a lock file.

A benchmark driver started with ``--worker`` next to a main run (another core, another machine on a shared
disk) trains the groups nobody has claimed, from the end of the list, and stops; the main run waits for the
groups it finds claimed and then writes the tables.  A lock names its owner's host and pid; a lock of a
process that no longer runs on this host is taken over, so a crashed worker's group is trained again.
``worker_processes`` starts such workers from the main run itself (the drivers' ``--jobs N``).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from structkd.train import DEVICES, changed_settings, resolve_device

# the default --jobs: one process per core, at most this many (the student runs are small models, which use a
# core or two well; a few dozen runs share out over 8 processes with little waiting at the end)
AUTO_JOBS = 8


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


def _resolved_data(values: dict) -> dict:
    """``values`` with the files of its data section named by their resolved paths: a corpus named by a relative
    path in one call and by an absolute one in the next (another checkout, another ``--data``) is the same
    setting; a name that is no file stays as it is."""
    def resolve(value):
        if isinstance(value, list):
            return [resolve(item) for item in value]
        return os.path.realpath(value) if isinstance(value, str) and os.path.isfile(value) else value

    data = values.get("data")
    return {**values, "data": {k: resolve(v) for k, v in data.items()}} if isinstance(data, dict) else values


def run_once(config, config_file: str, train: Callable[..., dict],
             resolve: Callable[[Any], Any] | None = None) -> dict:
    """One run of a benchmark table in ``config.training.output_dir``: its ``results.json`` if it finished,
    else ``train(config, resume=True)`` (a run cut short goes on from its last checkpoint).

    A finished run whose saved config (``config_file``, written by the pipeline) differs from ``config`` raises
    ``ValueError`` naming the settings, like a checkpoint's (:func:`structkd.train.check_resumable`): a table
    never mixes two protocols; move such runs aside to train them again.  ``resolve`` (the task's
    :meth:`~structkd.tasks.Task.resolve_config`) resolves ``config``'s ``auto`` settings first, as the saved
    config holds them resolved."""
    target = Path(config.training.output_dir)
    results = target / "results.json"
    if not results.exists():
        return train(config, resume=True)
    saved = target / config_file
    if saved.exists():
        current = resolve(config) if resolve is not None else config
        changes = changed_settings(_resolved_data(json.loads(saved.read_text(encoding="utf-8"))),
                                   _resolved_data(current.to_dict()))
        if changes:
            raise ValueError(f"{target}: this finished run was made with other settings ({'; '.join(changes)}); "
                             f"move it aside to run it again under the current ones")
    return json.loads(results.read_text(encoding="utf-8"))


def train_teachers(out: Path, names: list[str], train: Callable[[str, Path], object], worker: bool) -> dict[str, Path]:
    """Each teacher ``name`` is trained once, by ``train(name, out / f"teacher-{name}")``, which leaves the model in
    that directory's ``model/``: one teacher per process (a worker from the end), and every process waits for all
    of them.  Returns ``{name: model directory}``."""
    models = {name: out / f"teacher-{name}" / "model" for name in names}
    train_groups(out, list(names), lambda name: f"teacher-{name}",
                 lambda name: (models[name] / "model.safetensors").exists(),
                 lambda name: train(name, models[name].parent), worker, wait=True)
    return models


def add_sharing_arguments(parser: argparse.ArgumentParser) -> None:
    """A driver's ``--worker``, ``--jobs N`` and ``--device`` options (check them with
    ``check_sharing_arguments``)."""
    parser.add_argument("--worker", action="store_true",
                        help="help a main run on the same --out (say, on another core): train a teacher and "
                             "then the student runs nobody has claimed, from the end of the lists, then stop "
                             "(no tables)")
    parser.add_argument("--device", default="auto",
                        help=f"where every run trains ({', '.join(DEVICES)}; auto: the first CUDA device if there is "
                             f"one, else the CPU); the speed columns are always measured on the CPU")
    parser.add_argument("--jobs", type=int, metavar="N",
                        help="processes sharing the runs: this one and N-1 workers it starts itself, each with "
                             f"cores/N threads (worker logs in OUT/SETTING/logs/); default: one per core, at "
                             f"most {AUTO_JOBS}")


def check_sharing_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuses ``--jobs`` below 1 or on a worker, and fills in its default (1 for a worker); refuses a
    ``--device`` this machine does not have."""
    if args.jobs is not None and args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    if args.worker and args.jobs is not None:
        parser.error("--jobs belongs to the main run, which starts the workers; a --worker is one of them")
    if args.jobs is None:
        args.jobs = 1 if args.worker else min(os.cpu_count() or 1, AUTO_JOBS)
    try:  # a GPU this machine lacks is refused before any worker starts
        resolve_device(args.device, what="--device")
    except ValueError as error:
        parser.error(str(error))


def threads_per_job(jobs: int, cores: int | None = None) -> int:
    """The threads each of ``jobs`` processes gets on ``cores`` cores (``os.cpu_count()`` by default), at least
    one: processes that ask for more threads than there are cores slow each other down severalfold."""
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    return max(1, (cores or os.cpu_count() or 1) // jobs)


@contextmanager
def worker_processes(jobs: int, script: Path, argv: list[str], log_dir: Path,
                     threads: int | None = None) -> Iterator[list[subprocess.Popen]]:
    """Run ``jobs - 1`` workers (``python script *argv --worker``) beside the calling main run.

    Each worker gets ``threads`` threads (``OMP_NUM_THREADS``; ``threads_per_job(jobs)`` by default) and writes
    its output to ``log_dir/worker-<k>.log``.  On leaving the block the main run waits for them; a worker that
    failed is reported with its log (its claimed group was taken over by the main run, which trains what a dead
    owner left).  If the block raises (an error, Ctrl-C), the workers are stopped.
    """
    threads = threads or threads_per_job(jobs)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    workers, logs = [], []
    try:
        for k in range(1, jobs):
            log_dir.mkdir(parents=True, exist_ok=True)
            log = log_dir / f"worker-{k}.log"
            with open(log, "w") as handle:  # the child keeps its own descriptor
                workers.append(subprocess.Popen([sys.executable, str(script), *argv, "--worker"], env=env,
                                                stdout=handle, stderr=subprocess.STDOUT))
            logs.append(log)
        yield workers
    except BaseException:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait()
        raise
    for worker, log in zip(workers, logs):
        if worker.wait() != 0:
            warnings.warn(f"{log.stem} exited with status {worker.returncode}; see {log}", RuntimeWarning,
                          stacklevel=3)


def write_table(results: Path, stem: str, setting: str, block: str, payload: dict, text: str) -> None:
    """Write one table of a driver: ``results/<stem>[_<setting>][_<block>].json`` (``payload``) and ``.md``
    (``text``), the reduced setting and the base block unsuffixed, and print the text."""
    suffix = ("" if setting == "reduced" else f"_{setting}") + ("" if block == "base" else f"_{block}")
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{stem}{suffix}.json").write_text(json.dumps(payload, indent=2))
    (results / f"{stem}{suffix}.md").write_text(text + "\n")
    print(text)
