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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_cpu_processes(tmp_path):
    out = tmp_path / "run"
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
    # ``--cpu`` alone runs a single process without MPI; ``--multi_gpu`` goes through torchrun, and with no
    # visible GPU, Accelerate sets up gloo between the CPU processes.
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_ip", "127.0.0.1", "--main_process_port", str(_free_port()), str(SCRIPT), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
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
