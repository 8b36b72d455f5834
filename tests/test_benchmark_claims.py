"""The lock files that let several benchmark processes share one output directory (benchmarks/run_claims.py)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_threads_per_job_shares_the_cores_and_gives_each_job_one_at_least():
    from run_claims import threads_per_job

    assert threads_per_job(1, cores=16) == 16 and threads_per_job(8, cores=16) == 2
    assert threads_per_job(3, cores=16) == 5 and threads_per_job(4, cores=2) == 1
    with pytest.raises(ValueError, match="at least 1"):
        threads_per_job(0, cores=2)


def _recording_script(tmp_path) -> Path:
    """A stand-in driver: records its arguments and thread count, fails when told to."""
    script = tmp_path / "driver.py"
    script.write_text("import json, os, sys\n"
                      "out = os.path.join(sys.argv[1], f'args-{os.getpid()}.json')\n"
                      "json.dump({'argv': sys.argv[2:], 'threads': os.environ['OMP_NUM_THREADS']}, open(out, 'w'))\n"
                      "print('worker ran'); sys.exit(3 if 'fail' in sys.argv else 0)\n")
    return script


def test_worker_processes_starts_jobs_minus_one_workers_and_waits_for_them(tmp_path):
    from run_claims import worker_processes

    script = _recording_script(tmp_path)
    with worker_processes(3, script, [str(tmp_path), "--quick"], tmp_path / "logs", threads=2) as workers:
        assert len(workers) == 2
    assert all(worker.returncode == 0 for worker in workers)  # waited for on leaving the block
    records = [json.loads(path.read_text()) for path in tmp_path.glob("args-*.json")]
    assert records == [{"argv": ["--quick", "--worker"], "threads": "2"}] * 2
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == ["worker-1.log", "worker-2.log"]
    assert (tmp_path / "logs" / "worker-1.log").read_text() == "worker ran\n"
    with worker_processes(1, script, [str(tmp_path)], tmp_path / "none") as workers:
        assert workers == []  # one job: the main run alone, no log directory
    assert not (tmp_path / "none").exists()


def test_worker_processes_reports_a_failed_worker_and_stops_them_when_the_main_run_fails(tmp_path):
    from run_claims import worker_processes

    script = _recording_script(tmp_path)
    with pytest.warns(RuntimeWarning, match=r"worker-1 exited with status 3; see .*worker-1\.log"):
        with worker_processes(2, script, [str(tmp_path), "fail"], tmp_path / "logs", threads=1) as workers:
            assert len(workers) == 1
    sleeper = tmp_path / "sleeper.py"
    sleeper.write_text("import time\ntime.sleep(60)\n")
    with pytest.raises(KeyboardInterrupt):
        with worker_processes(2, sleeper, [], tmp_path / "logs", threads=1) as workers:
            raise KeyboardInterrupt
    assert workers[0].returncode is not None and workers[0].returncode != 0  # terminated, not left running


def test_sharing_arguments_refuse_jobs_below_one_jobs_on_a_worker_and_missing_devices(monkeypatch, capsys):
    import argparse
    import os

    import run_claims
    import torch
    from run_claims import add_sharing_arguments, check_sharing_arguments

    parser = argparse.ArgumentParser()
    add_sharing_arguments(parser)
    args = parser.parse_args(["--jobs", "4"])
    check_sharing_arguments(parser, args)
    assert (args.jobs, args.worker) == (4, False)
    args = parser.parse_args([])
    check_sharing_arguments(parser, args)
    assert args.jobs == min(os.cpu_count(), run_claims.AUTO_JOBS)  # one per core, at most AUTO_JOBS
    args = parser.parse_args(["--worker"])
    check_sharing_arguments(parser, args)
    assert args.jobs == 1
    for argv in (["--jobs", "0"], ["--worker", "--jobs", "2"]):
        with pytest.raises(SystemExit):
            check_sharing_arguments(parser, parser.parse_args(argv))
    assert args.device == "auto"
    args = parser.parse_args(["--device", "cpu"])
    check_sharing_arguments(parser, args)
    assert args.device == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for argv, message in ((["--device", "gpu"], "--device='gpu' is not a device name"),
                          (["--device", "cuda:0"], "--device='cuda:0', but CUDA is not available here")):
        with pytest.raises(SystemExit):
            check_sharing_arguments(parser, parser.parse_args(argv))
        assert message in capsys.readouterr().err


def test_run_once_trains_or_resumes_and_refuses_a_finished_run_of_other_settings(tmp_path):
    from run_claims import run_once

    from structkd.parse import build_parse_config

    def config(epochs: int, directory: Path = tmp_path / "run"):
        return build_parse_config({"model": {"kind": "seqlabel"}, "training": {"epochs": epochs,
                                                                                "output_dir": str(directory)}})

    calls = []

    def train(cfg, resume=False):
        calls.append((cfg.training.epochs, resume))
        target = Path(cfg.training.output_dir)
        target.mkdir(parents=True, exist_ok=True)
        cfg.save(target / "parse_config.json")
        (target / "results.json").write_text(json.dumps({"dev": cfg.training.epochs}))
        return {"dev": cfg.training.epochs, "trained": True}

    assert run_once(config(3), "parse_config.json", train) == {"dev": 3, "trained": True}
    assert calls == [(3, True)]  # an unfinished run goes on from its checkpoint, if it has one
    assert run_once(config(3), "parse_config.json", train) == {"dev": 3}  # finished: read back
    assert len(calls) == 1
    with pytest.raises(ValueError, match=r"finished run was made with other settings \(training.epochs: 3 -> 5\)"):
        run_once(config(5), "parse_config.json", train)
    assert len(calls) == 1
    (tmp_path / "run" / "parse_config.json").unlink()  # a run saved without its config is taken as it is
    assert run_once(config(5), "parse_config.json", train) == {"dev": 3}


def test_run_once_reads_back_a_run_whose_corpus_was_named_another_way(tmp_path, monkeypatch):
    """A finished run saved with a relative path to its training file is read back when the same file is now
    named by its absolute path, and refused for another file."""
    from run_claims import run_once

    from structkd.parse import build_parse_config

    (tmp_path / "a.conllu").write_text("", encoding="utf-8")
    (tmp_path / "b.conllu").write_text("", encoding="utf-8")
    monkeypatch.chdir(tmp_path)

    def config(train: str):
        return build_parse_config({"data": {"train": train}, "model": {"kind": "seqlabel"},
                                   "training": {"output_dir": str(tmp_path / "run")}})

    def train(cfg, resume=False):
        target = Path(cfg.training.output_dir)
        target.mkdir(parents=True, exist_ok=True)
        cfg.save(target / "parse_config.json")
        (target / "results.json").write_text(json.dumps({"dev": 1}))
        return {"dev": 1, "trained": True}

    assert run_once(config("a.conllu"), "parse_config.json", train)["trained"]
    assert run_once(config(str(tmp_path / "a.conllu")), "parse_config.json", train) == {"dev": 1}
    with pytest.raises(ValueError, match="data.train"):
        run_once(config(str(tmp_path / "b.conllu")), "parse_config.json", train)


def test_run_once_reads_back_an_ner_run_saved_with_the_scheme_its_data_resolved_to(tmp_path):
    # the pipeline saves its config with data.scheme: auto resolved (BIO here); a driver's fresh config says auto
    from run_claims import run_once

    from structkd.ner import build_ner_config
    from structkd.ner.pipeline import NerTask

    corpus = tmp_path / "train.conll"
    corpus.write_text("John B-PER\nsaid O\n", encoding="utf-8")
    config = build_ner_config({"data": {"train": str(corpus)}, "training": {"output_dir": str(tmp_path / "run")}})
    assert config.data.scheme == "auto"
    run = tmp_path / "run"
    run.mkdir()
    NerTask().resolve_config(config).save(run / "ner_config.json")
    (run / "results.json").write_text(json.dumps({"dev": 1}))
    assert json.loads((run / "ner_config.json").read_text())["data"]["scheme"] == "BIO"
    assert run_once(config, "ner_config.json", None, resolve=NerTask().resolve_config) == {"dev": 1}
    with pytest.raises(ValueError, match="data.scheme: 'BIO' -> 'auto'"):  # compared unresolved
        run_once(config, "ner_config.json", None)
