"""Where runs compute: ``training.device``, ``--device`` and :func:`structkd.train.resolve_device`.

These run on any machine: CUDA's presence is simulated where a test needs it (a device object is made, never a
CUDA tensor).  ``tests/test_cuda.py`` runs the same code on a real GPU where there is one."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from structkd.train import (
    TrainConfig,
    Trainer,
    changed_settings,
    check_device_name,
    load_config,
    resolve_device,
    training_device,
)


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def one_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


@pytest.mark.parametrize("name", ["auto", "cpu", "cuda", "cuda:0", "cuda:3"])
def test_device_names_that_are_accepted(name):
    check_device_name(name)  # a config may name a GPU on a machine without one


@pytest.mark.parametrize("name, message", [
    ("gpu", r"training.device='gpu' is not a device name; use one of auto, cpu, cuda, cuda:N"),
    ("cuda:x", r"'cuda:x' is not a device name"),
    ("mps", r"'mps': structkd runs on 'cpu' or 'cuda' devices"),
    ("meta", r"'meta': structkd runs on 'cpu' or 'cuda' devices"),
    (0, r"training.device must be a string"),
    (None, r"training.device must be a string"),
])
def test_bad_device_names_are_refused_by_name(name, message):
    with pytest.raises(ValueError, match=message):
        check_device_name(name, "training.device")
    with pytest.raises(ValueError, match="TrainConfig: device"):
        TrainConfig(device=name)


def test_auto_is_the_gpu_when_there_is_one_else_the_cpu(no_cuda, monkeypatch):
    assert resolve_device("auto") == torch.device("cpu")
    assert training_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("auto", nn.Linear(2, 2)) == torch.device("cuda")  # a CPU model moves to the GPU
    assert resolve_device("cpu") == torch.device("cpu")  # unless the CPU is asked for


def test_auto_keeps_a_model_the_caller_put_on_an_accelerator(no_cuda):
    placed = nn.Linear(2, 2, device="meta")  # stands in for a model on cuda:1: not on the CPU
    assert resolve_device("auto", placed) == torch.device("meta")
    assert resolve_device("cpu", placed) == torch.device("cpu")
    assert resolve_device("auto", nn.Sequential()) == torch.device("cpu")  # no parameters: the default


def test_missing_cuda_devices_are_named(no_cuda, monkeypatch):
    with pytest.raises(ValueError, match=r"training.device='cuda', but CUDA is not available here"):
        resolve_device("cuda", what="training.device")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(ValueError, match=r"--device='cuda:2', but this machine has 2 CUDA device\(s\): cuda:0 to "
                                         r"cuda:1"):
        resolve_device("cuda:2", what="--device")


def test_trainer_runs_where_the_config_says(tmp_path, no_cuda):
    data = [{"x": torch.randn(3), "y": torch.tensor(i % 2)} for i in range(8)]

    def loss(model, batch):
        assert batch["x"].device == torch.device("cpu")
        return nn.functional.cross_entropy(model(batch["x"]), batch["y"])

    config = TrainConfig(epochs=1, batch_size=4, output_dir=str(tmp_path / "run"), progress=False, device="cpu")
    trainer = Trainer(nn.Linear(3, 2), config, data, None, loss, None)
    assert trainer.device == torch.device("cpu")
    assert trainer.train().global_step == 2
    refused = TrainConfig(epochs=1, output_dir=str(tmp_path / "gpu"), progress=False, device="cuda")
    with pytest.raises(ValueError, match=r"training.device='cuda', but CUDA is not available here"):
        Trainer(nn.Linear(3, 2), refused, data, None, loss, None)
    assert not (tmp_path / "gpu").exists()  # refused before any file is written


def test_the_device_reads_from_yaml_and_is_free_on_resume(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("epochs: 2\ndevice: cuda:1\n", encoding="utf-8")
    assert load_config(path).device == "cuda:1"
    assert load_config(path, ["device=cpu"]).device == "cpu"
    assert TrainConfig().device == "auto"
    saved = json.loads(TrainConfig(device="cuda").to_json())
    assert changed_settings({"training": saved}, {"training": TrainConfig(device="cpu").to_dict()}) == []
    assert changed_settings({"training": saved}, {"training": TrainConfig(device="cpu", lr=0.5).to_dict()}) == [
        "training.lr: 0.001 -> 0.5"]
