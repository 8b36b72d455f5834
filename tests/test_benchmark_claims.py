"""The lock files that let several benchmark processes share one output directory (benchmarks/run_claims.py)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from run_claims import Claims  # noqa: E402


def test_claim_is_exclusive_and_released(tmp_path):
    mine, other = Claims(tmp_path), Claims(tmp_path)
    assert mine.claim("g1") and mine.claim("g1")  # idempotent for the owner
    lock = tmp_path / "locks" / "g1.lock"
    assert lock.read_text() == mine.me
    other.me = f"{socket.gethostname()} 1"  # pid 1 is alive: a live owner keeps its claim
    assert not other.claim("g1")
    mine.release("g1")
    assert not lock.exists() and other.claim("g1")
    mine.release("g1")  # not the owner: nothing happens
    assert lock.exists()


def test_lock_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / "locks").mkdir()
    (tmp_path / "locks" / "g.lock").write_text(f"{socket.gethostname()} {int(dead.stdout)}")
    claims = Claims(tmp_path)
    assert claims.claim("g") and (tmp_path / "locks" / "g.lock").read_text() == claims.me


def test_wait_runs_free_work_and_polls_busy_groups(tmp_path):
    claims = Claims(tmp_path)
    done, calls = [], []
    claims.wait("free", lambda: bool(done), lambda: (calls.append("work"), done.append(1)), poll=0.01)
    assert calls == ["work"] and not (tmp_path / "locks" / "free.lock").exists()
    busy = Claims(tmp_path)
    busy.me = f"{socket.gethostname()} 1"
    assert busy.claim("busy")
    checks = iter([False, False, True])
    claims.wait("busy", lambda: next(checks), lambda: calls.append("never"), poll=0.01)
    assert calls == ["work"]  # the busy group was finished by its owner: only polled


def test_train_groups_main_in_order_worker_from_the_end(tmp_path):
    from run_claims import train_groups

    done, order = set(), []

    def train(group):
        order.append(group)
        done.add(group)

    Claims(tmp_path).claim("g2")  # held by this process, as if a worker were on it: a worker skips it
    lock = tmp_path / "locks" / "g2.lock"
    lock.write_text(f"{socket.gethostname()} 1")
    train_groups(tmp_path, ["g0", "g1", "g2", "g3"], str, lambda g: g in done, train, worker=True)
    assert order == ["g3", "g1", "g0"]  # from the end, skipping the claimed group
    lock.unlink()  # its owner finished without results: the main run trains it, and skips the finished ones
    train_groups(tmp_path, ["g0", "g1", "g2", "g3"], str, lambda g: g in done, train, worker=False)
    assert order == ["g3", "g1", "g0", "g2"] and not list((tmp_path / "locks").iterdir())


def test_train_groups_a_worker_told_to_wait_waits_for_the_claimed_groups(tmp_path, monkeypatch):
    import run_claims

    done, order, naps = set(), [], []

    def train(group):
        order.append(group)
        done.add(group)

    def nap(seconds):  # the owner of g0 (alive: pid 1) finishes it while the worker sleeps
        naps.append(seconds)
        done.add("g0")

    monkeypatch.setattr(run_claims.time, "sleep", nap)
    (tmp_path / "locks").mkdir()
    (tmp_path / "locks" / "g0.lock").write_text(f"{socket.gethostname()} 1")
    run_claims.train_groups(tmp_path, ["g0", "g1"], str, lambda g: g in done, train, worker=True)
    assert order == ["g1"] and not naps  # a worker does not wait by default
    run_claims.train_groups(tmp_path, ["g0", "g1", "g2"], str, lambda g: g in done, train, worker=True, wait=True)
    assert order == ["g1", "g2"] and naps and "g0" in done  # it waited for g0 and did not train it


def test_train_teachers_trains_the_missing_ones_and_names_their_model_directories(tmp_path):
    from run_claims import train_teachers

    trained = []

    def train(name, target):
        trained.append(name)
        (target / "model").mkdir(parents=True)
        (target / "model" / "model.safetensors").write_bytes(b"")

    train("a", tmp_path / "teacher-a")  # trained by an earlier call
    trained.clear()
    models = train_teachers(tmp_path, ["a", "b", "c"], train, worker=True)
    assert trained == ["c", "b"]  # a worker from the end, the trained one skipped
    assert models == {name: tmp_path / f"teacher-{name}" / "model" for name in "abc"}
    assert train_teachers(tmp_path, ["a", "b", "c"], train, worker=False) == models and trained == ["c", "b"]
