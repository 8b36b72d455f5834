"""Tests of the training engine ``structkd.train``: schedules, config, checkpoints, resume, early stopping, logs."""

from __future__ import annotations

import json
import math
import random
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from structkd.train import (
    RESUME_FREE,
    TrainConfig,
    Trainer,
    WarmupDecay,
    build_optimizer,
    build_scheduler,
    changed_settings,
    fusable,
    load_checkpoint,
    load_config,
    param_groups,
    read_checkpoint_state,
    read_jsonl,
    save_checkpoint,
)
from structkd.train import checkpoint as ckpt_module
from structkd.train.batching import MicroBatches, split_by_cost
from structkd.train.logs import plot_learning_curves

N_FEATS, N_TAGS = 4, 3


def make_data(n: int, seed: int) -> list[dict[str, torch.Tensor]]:
    """``n`` items ``{"x": [N_FEATS], "y": []}`` from a fixed random linear rule."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, N_FEATS, generator=g)
    w = torch.randn(N_FEATS, N_TAGS, generator=torch.Generator().manual_seed(123))
    y = (x @ w).argmax(-1)
    return [{"x": x[i], "y": y[i], "idx": torch.tensor(i)} for i in range(n)]


def make_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(N_FEATS, 8), nn.LayerNorm(8), nn.Dropout(0.2), nn.Linear(8, N_TAGS))


def loss_fn(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return nn.functional.cross_entropy(model(batch["x"]), batch["y"])


def evaluate_fn(model: nn.Module, data: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    x = torch.stack([d["x"] for d in data])
    y = torch.stack([d["y"] for d in data])
    logits = model(x)
    return {"f1": (logits.argmax(-1) == y).float().mean().item(), "loss": nn.functional.cross_entropy(logits, y).item()}


def config(tmp_path, **kw) -> TrainConfig:
    # on the CPU even where there is a GPU: these tests' data and evaluate_fn are CPU tensors (tests/test_cuda.py
    # covers CUDA)
    base = dict(epochs=3, batch_size=8, lr=0.05, warmup=2, output_dir=str(tmp_path), progress=False, log_every=2,
                device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# -- schedules ------------------------------------------------------------------------------------------


def test_linear_schedule_values():
    f = WarmupDecay("linear", warmup_steps=4, total_steps=12)
    assert [f(s) for s in range(5)] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert f(8) == pytest.approx(0.5)  # halfway through the 8 decay steps
    assert f(12) == 0.0 and f(20) == 0.0
    g = WarmupDecay("linear", warmup_steps=0, total_steps=10, min_ratio=0.1)
    assert g(0) == 1.0 and g(5) == pytest.approx(0.55) and g(10) == pytest.approx(0.1)


def test_cosine_and_constant_schedule_values():
    f = WarmupDecay("cosine", warmup_steps=2, total_steps=10)
    assert f(1) == 0.5 and f(2) == 1.0
    assert f(4) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25)))
    assert f(6) == pytest.approx(0.5)
    assert f(10) == pytest.approx(0.0, abs=1e-12)
    c = WarmupDecay("constant", warmup_steps=3, total_steps=10)
    assert [c(s) for s in (0, 1, 3, 9, 50)] == [0.0, pytest.approx(1 / 3), 1.0, 1.0, 1.0]


def test_scheduler_drives_optimizer_lr(tmp_path):
    model = nn.Linear(2, 2)
    cfg = TrainConfig(lr=1.0, warmup=0.25, schedule="linear", output_dir=str(tmp_path))
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, total_steps=8)  # 2 warmup steps, then 6 decay steps
    lrs = []
    for _ in range(8):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.0, 0.5, 1.0, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6])


def test_no_weight_decay_on_bias_and_layernorm():
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    groups = param_groups(model, 0.1)
    decayed = {id(p) for p in groups[0]["params"]}
    assert groups[0]["weight_decay"] == 0.1 and groups[1]["weight_decay"] == 0.0
    assert decayed == {id(model[0].weight), id(model[2].weight)}
    assert len(groups[1]["params"]) == 4  # two biases, LayerNorm weight and bias


def test_head_lr_for_parameters_outside_pretrained_models():
    from transformers import BertConfig, BertModel

    class Tagger(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = BertModel(BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1,
                                                num_attention_heads=2, intermediate_size=16))
            self.head = nn.Linear(8, 3)

    model = Tagger()
    optimizer = build_optimizer(model, TrainConfig(lr=1e-4, head_lr=1e-2, weight_decay=0.1))
    lr_of = {id(p): (g["lr"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}
    assert len(lr_of) == len(list(model.parameters()))
    assert lr_of[id(model.head.weight)] == (1e-2, 0.1) and lr_of[id(model.head.bias)] == (1e-2, 0.0)
    assert {lr_of[id(p)][0] for p in model.encoder.parameters()} == {1e-4}
    scheduler = build_scheduler(optimizer, TrainConfig(warmup=2, schedule="constant"), total_steps=4)
    optimizer.step()
    scheduler.step()
    assert sorted({g["lr"] for g in optimizer.param_groups}) == pytest.approx([5e-5, 5e-3])  # warmup scales both
    assert param_groups(model, 0.1) == param_groups(model, 0.1, None)  # no head_lr: the two plain groups
    with pytest.raises(ValueError, match="head_lr"):
        TrainConfig(head_lr=0.0)


def test_the_fused_adamw_kernel_gives_the_plain_update_and_a_checkpoint_keeps_its_kernel(tmp_path):
    """build_optimizer takes torch's fused AdamW on the CPU: the same weights as the plain loop up to float
    rounding after many steps; a checkpoint written by a plain optimizer resumes plain (its bits unchanged)."""
    fused_model, plain_model = make_model(0).eval(), make_model(0).eval()  # eval: no dropout draws
    cfg = config(tmp_path)
    fused = build_optimizer(fused_model, cfg)
    plain = torch.optim.AdamW(param_groups(plain_model, cfg.weight_decay), lr=cfg.lr, betas=cfg.adam_betas,
                              eps=cfg.adam_eps)
    assert all(g["fused"] for g in fused.param_groups) and not any(g["fused"] for g in plain.param_groups)
    data = make_data(8, 1)
    batch = {"x": torch.stack([d["x"] for d in data]), "y": torch.stack([d["y"] for d in data])}
    for _ in range(30):
        for model, opt in ((fused_model, fused), (plain_model, plain)):
            opt.zero_grad()
            loss_fn(model, batch).backward()
            opt.step()
    for a, b in zip(fused_model.parameters(), plain_model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert not torch.equal(next(fused_model.parameters()), next(make_model(0).parameters()))  # it trained
    save_checkpoint(tmp_path / "plain", plain_model, plain, config=cfg)
    resumed = build_optimizer(plain_model, cfg)
    load_checkpoint(tmp_path / "plain", plain_model, resumed)
    assert not any(g["fused"] for g in resumed.param_groups)
    assert not fusable([{"params": [torch.zeros(2, dtype=torch.long)]}]) and not fusable([])


# -- config ---------------------------------------------------------------------------------------------


def test_config_yaml_overrides_and_json(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("epochs: 10\nlr: 0.001\nschedule: cosine\nwarmup: 0.1\npatience: 3\n", encoding="utf-8")
    cfg = load_config(path, overrides=["lr=1e-4", "epochs=3", "max_grad_norm=null", "amp=true", "extra.teacher=x"])
    assert cfg.lr == 1e-4 and isinstance(cfg.lr, float)
    assert cfg.epochs == 3 and cfg.schedule == "cosine" and cfg.patience == 3
    assert cfg.max_grad_norm is None and cfg.amp is True and cfg.extra == {"teacher": "x"}
    assert cfg.warmup == 0.1 and cfg.warmup_steps(50) == 5
    assert load_config(path, overrides=["warmup=100"]).warmup_steps(50) == 100
    assert TrainConfig.from_json(cfg.to_json()) == cfg
    cfg.to_json(tmp_path / "cfg.json")
    assert TrainConfig.from_json(tmp_path / "cfg.json") == cfg


def test_config_unknown_key_and_bad_values(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("epochs: 2\nlearning_rate: 0.1\n", encoding="utf-8")
    with pytest.raises(KeyError, match="learning_rate"):
        load_config(path)
    with pytest.raises(KeyError, match="bogus"):
        load_config(None, overrides=["bogus=1"])
    with pytest.raises(ValueError, match="schedule"):
        load_config(None, overrides=["schedule=step"])
    with pytest.raises(ValueError, match="epochs"):
        load_config(None, overrides=["epochs=many"])


# -- checkpoints ----------------------------------------------------------------------------------------


def _trained_objects(tmp_path, seed=0, steps=3):
    model = make_model(seed)
    cfg = config(tmp_path)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, total_steps=10)
    data = make_data(8, 1)
    batch = {"x": torch.stack([d["x"] for d in data]), "y": torch.stack([d["y"] for d in data])}
    for _ in range(steps):
        loss_fn(model, batch).backward()
        opt.step()
        sched.step()
        opt.zero_grad()
    return model, opt, sched, batch


def _draw():
    return torch.rand(4).tolist(), random.random(), np.random.rand(3).tolist()


def test_checkpoint_round_trip_restores_everything(tmp_path):
    model, opt, sched, batch = _trained_objects(tmp_path)
    save_checkpoint(tmp_path / "last", model, opt, sched, config=config(tmp_path))
    expected_draw = _draw()
    files = sorted(p.name for p in (tmp_path / "last").iterdir())
    assert "model.safetensors" in files and "optimizer.json" in files and not any(f.endswith(".pt") for f in files)

    model2, opt2, sched2, _ = _trained_objects(tmp_path, seed=5, steps=1)
    state = load_checkpoint(tmp_path / "last", model2, opt2, sched2)
    assert _draw() == expected_draw  # RNG streams continue where the checkpoint left them
    assert state["config"]["lr"] == 0.05
    assert_same_weights(weights(model), weights(model2))
    assert sched2.state_dict() == sched.state_dict()
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1["param_groups"] == s2["param_groups"]
    for k in s1["state"]:
        for name, v in s1["state"][k].items():
            assert torch.equal(v, s2["state"][k][name]), (k, name)
    # one more identical step from both gives identical weights
    for m, o, s in ((model, opt, sched), (model2, opt2, sched2)):
        torch.manual_seed(7)
        loss_fn(m, batch).backward()
        o.step()
        s.step()
    assert_same_weights(weights(model), weights(model2))


def test_interrupted_save_leaves_previous_checkpoint(tmp_path, monkeypatch):
    model, opt, sched, _ = _trained_objects(tmp_path)
    save_checkpoint(tmp_path / "last", model, opt, sched)
    before = weights(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)

    real = ckpt_module._save_state

    def crashing(directory, name, state):
        if name == "scheduler":
            raise RuntimeError("simulated crash during save")
        return real(directory, name, state)

    monkeypatch.setattr(ckpt_module, "_save_state", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        save_checkpoint(tmp_path / "last", model, opt, sched)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]  # no half-written directory left
    fresh = make_model(9)
    load_checkpoint(tmp_path / "last", fresh)
    assert_same_weights(before, weights(fresh))

    # a crash between the two renames of the swap: the old version is recovered on load
    (tmp_path / "last").rename(tmp_path / ".last.old-abc")
    fresh = make_model(10)
    load_checkpoint(tmp_path / "last", fresh)
    assert_same_weights(before, weights(fresh))


# -- trainer --------------------------------------------------------------------------------------------


class Crash(RuntimeError):
    """A crash injected into training."""


@pytest.mark.parametrize("group_by_length", [False, True])
def test_crash_and_resume_gives_identical_weights(tmp_path, group_by_length):
    train, dev = make_data(40, 0), make_data(16, 1)  # 5 steps per epoch, 15 steps in all
    kw = dict(checkpoint_every_steps=3, schedule="cosine", group_by_length=group_by_length)
    lengths = [(7 * i) % 13 + 1 for i in range(len(train))]

    ref = Trainer(make_model(0), config(tmp_path / "ref", **kw), train, dev, loss_fn, evaluate_fn, lengths=lengths)
    ref.train()
    expected = weights(ref.model)

    calls = {"n": 0}

    def crashing_loss(model, batch):
        calls["n"] += 1
        if calls["n"] == 14:  # epoch index 2, 4th step; the last checkpoint is at global step 12 (its 2nd step)
            raise Crash
        return loss_fn(model, batch)

    crashed = Trainer(make_model(0), config(tmp_path / "run", **kw), train, dev, crashing_loss, evaluate_fn,
                      lengths=lengths)
    with pytest.raises(Crash):
        crashed.train()
    state = json.loads((tmp_path / "run" / "last" / "trainer_state.json").read_text())
    assert state["progress"]["global_step"] == 12 and state["progress"]["epoch"] == 2
    assert state["progress"]["step_in_epoch"] == 2

    torch.manual_seed(1234)  # the resumed run must not depend on the process's RNG state
    resumed = Trainer(make_model(3), config(tmp_path / "run", **kw), train, dev, loss_fn, evaluate_fn,
                      lengths=lengths)
    progress = resumed.train(resume=True)
    assert progress.global_step == 15 and progress.finished
    assert_same_weights(expected, weights(resumed.model))

    def strip(records):
        return [{k: v for k, v in r.items() if k != "time"} for r in records]

    logs = [strip(read_jsonl(tmp_path / run / "train_log.jsonl")) for run in ("run", "ref")]
    assert logs[0] == logs[1]  # the lines written after the last checkpoint were dropped on resume
    best_ref, best_run = make_model(4), make_model(5)
    load_checkpoint(tmp_path / "ref" / "best", best_ref)
    load_checkpoint(tmp_path / "run" / "best", best_run)
    assert_same_weights(weights(best_ref), weights(best_run))


def test_changed_settings_names_every_difference_but_the_free_ones():
    saved = {"data": {"train": "a.conllu", "max_sentences": 10}, "training": {"lr": 0.1, "adam_betas": [0.9, 0.99],
             "output_dir": "runs/a", "log_every": 5}, "kd": {"method": "token", "cache_dir": "c1"}}
    same = {"data": {"train": "a.conllu", "max_sentences": 10}, "training": {"lr": 0.1, "adam_betas": (0.9, 0.99),
            "output_dir": "runs/b", "log_every": 50}, "kd": {"method": "token", "cache_dir": "c2"}}
    assert changed_settings(saved, same) == []  # tuples read back as lists; paths and logging are free
    other = {"data": {"train": "b.conllu"}, "training": {**same["training"], "lr": 0.2},
             "kd": {"method": "structural", "top_k": 5}}  # top_k: an option the saved settings predate
    assert changed_settings(saved, other) == [
        "data.max_sentences: 10 -> '<unset>'", "data.train: 'a.conllu' -> 'b.conllu'",
        "kd.method: 'token' -> 'structural'", "training.lr: 0.1 -> 0.2"]
    assert {"output_dir", "progress", "log_every", "teacher"} <= RESUME_FREE and "epochs" not in RESUME_FREE


def test_resume_under_other_settings_is_refused(tmp_path):
    train, dev = make_data(40, 0), make_data(16, 1)
    run_config = {"model": {"hidden": 8}, "kd": {"method": "structural"}}

    def crash_after(steps):
        calls = {"n": 0}

        def crashing_loss(model, batch):
            calls["n"] += 1
            if calls["n"] > steps:
                raise Crash
            return loss_fn(model, batch)
        return crashing_loss

    cfg = config(tmp_path, checkpoint_every_steps=3)
    with pytest.raises(Crash):
        Trainer(make_model(0), cfg, train, dev, crash_after(7), evaluate_fn, run_config=run_config).train()
    checkpoint = json.loads((tmp_path / "last" / "trainer_state.json").read_text())
    assert read_checkpoint_state(tmp_path / "last") == checkpoint  # read without loading a weight
    assert checkpoint["extra"]["run_config"] == run_config and checkpoint["config"]["lr"] == 0.05
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        read_checkpoint_state(tmp_path / "best-of-nothing")
    log = (tmp_path / "train_log.jsonl").read_bytes()
    refusals = [(config(tmp_path, checkpoint_every_steps=3, epochs=5), run_config, "training.epochs: 3 -> 5"),
                (config(tmp_path, checkpoint_every_steps=3, lr=0.1), run_config, "training.lr: 0.05 -> 0.1"),
                (cfg, {"model": {"hidden": 16}, "kd": {"method": "structural"}}, "model.hidden: 8 -> 16")]
    for other_cfg, other_run, named in refusals:
        with pytest.raises(ValueError, match=f"other settings \\({named}\\); resuming would mix two runs"):
            Trainer(make_model(0), other_cfg, train, dev, loss_fn, evaluate_fn,
                    run_config=other_run).train(resume=True)
        assert (tmp_path / "train_log.jsonl").read_bytes() == log  # nothing touched
        assert json.loads((tmp_path / "last" / "trainer_state.json").read_text()) == checkpoint
    # where files go and how progress shows may change; the run then ends as an uninterrupted one does
    ref = Trainer(make_model(0), config(tmp_path / "ref"), train, dev, loss_fn, evaluate_fn, run_config=run_config)
    ref.train()
    moved = config(tmp_path, checkpoint_every_steps=None, log_every=1)
    resumed = Trainer(make_model(0), moved, train, dev, loss_fn, evaluate_fn, run_config=run_config)
    assert resumed.train(resume=True).finished
    assert_same_weights(weights(ref.model), weights(resumed.model))
    # a checkpoint written without a run config is compared on its training settings only
    bare = tmp_path / "bare"
    with pytest.raises(Crash):
        Trainer(make_model(0), config(bare, checkpoint_every_steps=3), train, dev, crash_after(4),
                evaluate_fn).train()
    assert Trainer(make_model(0), config(bare), train, dev, loss_fn, evaluate_fn,
                   run_config=run_config).train(resume=True).finished


def test_early_stopping_best_checkpoint_logs_and_plot(tmp_path):
    scripted = iter([0.5, 0.7, 0.6, 0.65, 0.9, 0.95])
    snapshots = []

    def scripted_eval(model, data):
        snapshots.append(weights(model))
        return {"f1": next(scripted), "acc": 0.1}

    cfg = config(tmp_path, epochs=10, patience=2, log_every=1)
    trainer = Trainer(make_model(0), cfg, make_data(24, 0), make_data(8, 1), loss_fn, scripted_eval)
    progress = trainer.train()
    assert progress.stopped_early and progress.epoch == 4 and len(snapshots) == 4
    assert progress.best_metric == 0.7 and progress.best_epoch == 1
    best = make_model(1)
    load_checkpoint(tmp_path / "best", best)
    assert_same_weights(snapshots[1], weights(best))

    records = read_jsonl(tmp_path / "train_log.jsonl")
    train_records = [r for r in records if r["type"] == "train"]
    eval_records = [r for r in records if r["type"] == "eval"]
    assert len(train_records) == 4 * 3 and [r["global_step"] for r in train_records] == list(range(1, 13))
    assert all(math.isfinite(r["loss"]) and r["lr"] >= 0 for r in train_records)
    assert [r["f1"] for r in eval_records] == [0.5, 0.7, 0.6, 0.65]
    png = (tmp_path / "learning_curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    # resuming a stopped run does nothing more
    assert Trainer(make_model(0), cfg, make_data(24, 0), None, loss_fn, None).train(resume=True).epoch == 4


def test_metric_mode_min(tmp_path):
    scripted = iter([3.0, 2.0, 2.5, 1.0])
    cfg = config(tmp_path, epochs=4, metric="loss", metric_mode="min", patience=5)
    trainer = Trainer(make_model(0), cfg, make_data(16, 0), [0], loss_fn, lambda m, d: {"loss": next(scripted)})
    progress = trainer.train()
    assert progress.best_metric == 1.0 and progress.best_epoch == 3 and [h["loss"] for h in progress.history] == [
        3.0, 2.0, 2.5, 1.0]


def test_missing_metric_is_an_error(tmp_path):
    trainer = Trainer(make_model(0), config(tmp_path, epochs=1), make_data(8, 0), [0], loss_fn, lambda m, d: {"acc": 1})
    with pytest.raises(KeyError, match="f1"):
        trainer.train()


def test_finish_run_loads_best_saves_evaluates_and_writes_results(tmp_path):
    from structkd.train import finish_run

    class Saved(nn.Linear):
        def save(self, directory):
            directory.mkdir(parents=True)
            (directory / "weight.txt").write_text(str(float(self.weight.detach().sum())))

    model = Saved(2, 1)
    with torch.no_grad():
        model.weight.fill_(1.0)
    save_checkpoint(tmp_path / "best", model)
    with torch.no_grad():
        model.weight.fill_(5.0)  # later, worse weights: the best ones must come back
    results = finish_run(model, tmp_path, {"dev": [1, 2], "test": []},
                         lambda m, xs: {"n": len(xs), "w": float(m.weight.detach().sum())}, {"parameters": 3})
    assert results == {"dev": {"n": 2, "w": 2.0}, "parameters": 3}  # the empty test split is skipped
    assert json.loads((tmp_path / "results.json").read_text()) == results
    assert (tmp_path / "model" / "weight.txt").read_text() == "2.0"


def test_learning_curves_before_any_train_record_plot_without_warnings(tmp_path):
    # a log with an eval record only (as written before every epoch ended with a train record): no loss line,
    # and no legend for it
    log = tmp_path / "train_log.jsonl"
    log.write_text(json.dumps({"type": "eval", "epoch": 1, "global_step": 30, "las": 0.5}) + "\n", encoding="utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        png = plot_learning_curves(log, tmp_path / "curves.png", "las")
    assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- micro-batches ----------------------------------------------------------------------------------------
def test_split_by_cost_keeps_a_batch_under_budget_and_splits_one_above_it():
    lengths = [5, 1, 9, 3, 9, 2, 7, 4]
    cost = lambda lens: len(lens) * max(lens)  # noqa: E731
    assert split_by_cost([0, 1, 3], lengths, cost, 15) == [[0, 1, 3]]  # under budget: as it was, in its order
    pieces = split_by_cost(list(range(8)), lengths, cost, 20)
    assert sorted(i for piece in pieces for i in piece) == list(range(8))
    assert all(cost([lengths[i] for i in piece]) <= 20 for piece in pieces)
    assert pieces[0] == [2, 4]  # longest first: neighbours in length
    assert split_by_cost([2, 4], lengths, cost, 5) == [[2], [4]]  # an item above budget alone


def test_micro_batches_make_the_step_of_the_whole_batch(tmp_path):
    train = make_data(40, 0)
    lengths = [(7 * i) % 13 + 1 for i in range(len(train))]

    def cost(lens):
        return len(lens) * max(lens)

    def model():  # no dropout: the parts must draw no random numbers the whole batch would not
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(N_FEATS, 8), nn.LayerNorm(8), nn.Linear(8, N_TAGS))

    calls = {"whole": 0, "parts": 0}

    def counting(name):
        def loss(model, batch):
            calls[name] += 1
            return loss_fn(model, batch)
        return loss

    whole = Trainer(model(), config(tmp_path / "whole", max_batch_cost=None), train, None, counting("whole"), None,
                    lengths=lengths, batch_cost=cost)
    parts = Trainer(model(), config(tmp_path / "parts", max_batch_cost=30), train, None, counting("parts"), None,
                    lengths=lengths, batch_cost=cost)
    assert isinstance(next(iter(parts.epoch_loader(0))), MicroBatches)
    assert whole.train().global_step == parts.train().global_step == 15
    assert calls["whole"] == 15 and calls["parts"] > 30  # batches of 8 items up to 13 long cost up to 104
    for (name, a), b in zip(weights(whole.model).items(), weights(parts.model).values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    losses = [[r["loss"] for r in read_jsonl(tmp_path / run / "train_log.jsonl") if r.get("type") == "train"]
              for run in ("whole", "parts")]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    with pytest.raises(ValueError, match="batch_cost needs the training items' lengths"):
        Trainer(model(), config(tmp_path / "x"), train, None, loss_fn, None, batch_cost=cost)
    with pytest.raises(ValueError, match="max_batch_cost must be positive"):
        config(tmp_path / "x", max_batch_cost=0)
