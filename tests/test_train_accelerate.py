"""Two CPU processes (gloo) through ``accelerate launch``: sharded data, identical weights, main-only files."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("accelerate")

SCRIPT = Path(__file__).with_name("accelerate_script.py")
CACHE_SCRIPT = Path(__file__).with_name("accelerate_cache_script.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch_env(tmp_path) -> dict:
    env = dict(os.environ)
    env.update({
        "HF_HOME": str(tmp_path / "hf"),  # no accelerate config file: defaults only
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",  # CPU processes even on a GPU machine
        "ACCELERATE_USE_CPU": "true",
    })
    return env


def _launch(tmp_path, *target: str, check: bool = True, **env: str) -> subprocess.CompletedProcess:
    """``accelerate launch`` with two CPU processes: ``--cpu`` alone runs a single process without MPI;
    ``--multi_gpu`` goes through torchrun, and with no visible GPU, Accelerate sets up gloo between them."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_ip", "127.0.0.1", "--main_process_port", str(_free_port()), *target]
    proc = subprocess.run(cmd, env={**_launch_env(tmp_path), **env}, capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:-1500]
    return proc


def test_two_cpu_processes(tmp_path):
    out = tmp_path / "run"
    _launch(tmp_path, str(SCRIPT), str(out))
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert ranks[0]["weights"] == ranks[1]["weights"]  # gradients were synchronized
    assert ranks[0]["steps"] == ranks[1]["steps"] == 8  # 32 items / batch 4 / 2 processes * 2 epochs
    for epoch in ("0", "1"):
        a, b = set(ranks[0]["seen"][epoch]), set(ranks[1]["seen"][epoch])
        assert not a & b and a | b == set(range(32))  # disjoint shards covering the data
    assert ranks[0]["seen"]["0"] != ranks[0]["seen"]["1"]  # reshuffled each epoch
    records = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert len([r for r in records if r["type"] == "train"]) == 8  # written once, by the main process
    assert len([r for r in records if r["type"] == "eval"]) == 2
    assert (out / "last" / "model.safetensors").is_file() and (out / "best" / "model.safetensors").is_file()
    rng = json.loads((out / "last" / "rng.json").read_text())
    assert len(rng["processes"]) == 2


def _ranks(log_dir: Path) -> list[dict]:
    return [json.loads((log_dir / f"rank{r}.json").read_text()) for r in (0, 1)]


def test_two_processes_share_the_teacher_cache_build(tmp_path):
    """Each process computes every other segment (4 sentences each: 0-3, 8-11, 16-19 on process 0); the main
    process indexes them; both read the cache the single-process build gives."""
    import accelerate_cache_script as script

    _launch(tmp_path, str(CACHE_SCRIPT), str(tmp_path / "cache"), str(tmp_path / "log"))
    ranks = _ranks(tmp_path / "log")
    assert [r["world"] for r in ranks] == [2, 2] and [r["n"] for r in ranks] == [22, 22]
    mine, theirs = (set(r["computed"]) for r in ranks)
    assert mine == {*range(0, 4), *range(8, 12), *range(16, 20)} and theirs == set(range(22)) - mine
    single = script.build(str(tmp_path / "single"), lambda batch: [script.outputs(s) for s in batch])
    assert ranks[0]["digest"] == ranks[1]["digest"] == script.digest(single)


def test_a_launched_cache_build_cut_short_resumes(tmp_path):
    """Process 1 fails on its second batch: the launch fails without an index; the next launch computes only
    the segments that were not finished, and the cache equals the single-process one."""
    import accelerate_cache_script as script

    cache = tmp_path / "cache"
    failed = _launch(tmp_path, str(CACHE_SCRIPT), str(cache), str(tmp_path / "log"), check=False, FAIL_RANK="1")
    assert failed.returncode != 0 and "process 1 cut short" in failed.stdout + failed.stderr
    assert not (cache / "index.json").exists()
    kept = {int(p.name) for p in (cache / "segments").iterdir() if not p.name.startswith(".")}
    assert 0 in kept and 1 not in kept  # process 0's first segment was finished, process 1's was not
    _launch(tmp_path, str(CACHE_SCRIPT), str(cache), str(tmp_path / "log"))
    computed = set().union(*(r["computed"] for r in _ranks(tmp_path / "log")))
    assert computed == {i for i in range(22) if i // 4 not in kept}
    single = script.build(str(tmp_path / "single"), lambda batch: [script.outputs(s) for s in batch])
    assert _ranks(tmp_path / "log")[0]["digest"] == script.digest(single)


def test_ner_distill_command_under_two_processes(tmp_path):
    """``structkd ner distill`` launched on two processes: the teacher cache is computed once (each process its
    share of the segments, here the one segment by the main process), the student is trained on both, and the
    model, config and results are written once; the result loads and matches the main process's report."""
    from structkd.ner import NerModel, build_ner_config, train_command

    rows = [("John Smith lives in New York .", "B-PER I-PER O O B-LOC I-LOC O"), ("Paris is nice .", "B-LOC O O O"),
            ("Hi john", "O B-PER"), ("the city of Paris", "O O O B-LOC")]
    lines = []
    for _ in range(4):
        for words, tags in rows:
            lines += [f"{w}\t{t}" for w, t in zip(words.split(), tags.split())] + [""]
    train = tmp_path / "train.conll"
    train.write_text("\n".join(lines) + "\n", encoding="utf-8")
    model = {"kind": "bilstm", "head": "crf", "word_dim": 8, "hidden": 8, "char_filters": 4}
    training = {"epochs": 1, "batch_size": 4, "lr": 5e-3, "progress": False, "log_every": 1}
    teacher = build_ner_config({"data": {"train": str(train), "dev": str(train)}, "model": model,
                                "training": {**training, "output_dir": str(tmp_path / "teacher")}})
    train_command(teacher)
    out = tmp_path / "student"
    overrides = [f"data.train={train}", f"data.dev={train}", "model.kind=bilstm", "model.head=maxent",
                 "model.word_dim=8", "model.hidden=8", "model.char_filters=4", "kd.method=structural",
                 f"kd.teacher={tmp_path / 'teacher' / 'model'}", "training.epochs=2", "training.batch_size=2",
                 "training.progress=false", "training.log_every=1", f"training.output_dir={out}"]
    proc = _launch(tmp_path, "--module", "structkd.cli", "ner", "distill", *overrides)
    reported = json.loads(proc.stdout[proc.stdout.index("{"):])  # printed once, by the main process
    assert proc.stdout.count('"dev"') == 1
    cache = out / "teacher_cache"
    assert json.loads((cache / "index.json").read_text())["fingerprint"]["n_sentences"] == 16
    # no leftover temporary dirs; the cache build's lock file stays beside the cache
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [".teacher_cache.lock"]
    results = json.loads((out / "results.json").read_text())
    assert results["dev"]["f1"] == reported["dev"]["f1"]
    records = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert len([r for r in records if r["type"] == "train"]) == 8  # 16 sentences / batch 2 / 2 processes, 2 epochs
    assert NerModel.load(out / "model").head_kind == "maxent"
