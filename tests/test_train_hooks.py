"""The trainer's events (step context, callbacks), the console line, the learning curves' panels and the
experiment trackers of ``training.report_to`` (TensorBoard read back from its event files)."""

from __future__ import annotations

import functools
import json
import logging
import math

import pytest
from test_train import Crash, assert_same_weights, config, evaluate_fn, loss_fn, make_data, make_model, weights
from torch import nn

from structkd.train import (
    RESUME_FREE,
    StepContext,
    TrainConfig,
    Trainer,
    TrainerCallback,
    check_report_to,
    epoch_line,
    epoch_mean_loss,
    learning_curve_series,
    load_config,
    plot_learning_curves,
    read_jsonl,
    takes_step,
)
from structkd.train import tracking as tracking_module

# -- the step context -----------------------------------------------------------------------------------


def test_step_context_fraction_and_frozen():
    ctx = StepContext(global_step=3, total_steps=12, epoch=0, epochs=3, step_in_epoch=3, steps_per_epoch=4)
    assert ctx.fraction == 0.25
    assert StepContext(12, 12, 2, 3, 4, 4).fraction == 1.0 and StepContext(0, 12, 0, 3, 0, 4).fraction == 0.0
    assert StepContext(5, 0, 0, 1, 0, 0).fraction == 1.0  # no steps: nothing left to do
    with pytest.raises(AttributeError):
        ctx.global_step = 4


def test_takes_step_reads_the_signature():
    def two(model, batch):
        return batch

    def three(model, batch, step):
        return step

    def optional(model, batch, scale=1.0):
        return scale

    def star(*args):
        return args

    def keyword_only(model, batch, *, step):
        return step

    assert not takes_step(two) and takes_step(three) and takes_step(lambda m, b, s: s)
    assert not takes_step(optional)  # a third parameter with a default is the caller's own option
    assert takes_step(star) and not takes_step(keyword_only)
    assert takes_step(functools.partial(lambda w, m, b, s: s, 2.0)) and not takes_step(functools.partial(three, 1))
    assert takes_step(max) is False  # a builtin without a signature to read: the two-argument form


def _annealed(weight_at):
    """A loss whose second term's weight follows a schedule, as teacher annealing does."""
    def loss(model, batch, weight):
        logits = model(batch["x"])
        return (1 - weight) * nn.functional.cross_entropy(logits, batch["y"]) + weight * logits.pow(2).mean()
    return loss


def test_loss_fn_gets_the_step_context_of_the_step_being_computed(tmp_path):
    train, dev = make_data(40, 0), make_data(16, 1)  # 5 steps per epoch, 15 in all
    seen, trainer_ref = [], {}
    base = _annealed(None)

    def with_step(model, batch, step):
        p = trainer_ref["t"].progress
        seen.append((step, p.global_step, p.epoch, p.step_in_epoch))
        return base(model, batch, step.fraction)

    trainer = Trainer(make_model(0), config(tmp_path / "step"), train, dev, with_step, evaluate_fn)
    trainer_ref["t"] = trainer
    trainer.train()
    assert [s.global_step for s, *_ in seen] == list(range(15))
    assert all(s.global_step == g and s.epoch == e and s.step_in_epoch == i for s, g, e, i in seen)
    assert {(s.total_steps, s.epochs, s.steps_per_epoch) for s, *_ in seen} == {(15, 3, 5)}
    assert [s.step_in_epoch for s, *_ in seen[:6]] == [0, 1, 2, 3, 4, 0]

    # the closure over a mutable trainer the pipelines used gives the same weights, bit for bit
    state = {"trainer": None}

    def closure(model, batch):
        t = state["trainer"]
        return base(model, batch, min(max(t.progress.global_step / t.total_steps, 0.0), 1.0))

    old = Trainer(make_model(0), config(tmp_path / "closure"), train, dev, closure, evaluate_fn)
    state["trainer"] = old
    old.train()
    assert_same_weights(weights(trainer.model), weights(old.model))


def test_crash_and_resume_with_a_scheduled_loss_is_exact(tmp_path):
    train, dev = make_data(40, 0), make_data(16, 1)
    base = _annealed(None)
    kw = dict(checkpoint_every_steps=3, schedule="cosine")

    def scheduled(model, batch, step):
        return base(model, batch, step.fraction)

    ref = Trainer(make_model(0), config(tmp_path / "ref", **kw), train, dev, scheduled, evaluate_fn)
    ref.train()
    calls = {"n": 0}

    def crashing(model, batch, step):
        calls["n"] += 1
        if calls["n"] == 10:  # the 10th step; the last checkpoint is after the 9th (4th of its epoch)
            raise Crash
        return scheduled(model, batch, step)

    events = Recorder()
    with pytest.raises(Crash):
        Trainer(make_model(0), config(tmp_path / "run", **kw), train, dev, crashing, evaluate_fn,
                callbacks=[events]).train()
    assert events.names()[-1] == "on_train_end"  # fired when train() raises too
    resumed_events = Recorder()
    resumed = Trainer(make_model(7), config(tmp_path / "run", **kw), train, dev, scheduled, evaluate_fn,
                      callbacks=[resumed_events])
    resumed.train(resume=True)
    assert_same_weights(weights(ref.model), weights(resumed.model))
    begin = resumed_events.calls[0]
    assert begin[0] == "on_train_begin" and begin[1].global_step == 9 and begin[1].step_in_epoch == 4


# -- callbacks ------------------------------------------------------------------------------------------


class Recorder(TrainerCallback):
    """Every event with its step context and payload."""

    def __init__(self):
        self.calls = []

    def names(self):
        return [c[0] for c in self.calls]

    def on_train_begin(self, trainer, step):
        self.calls.append(("on_train_begin", step))

    def on_step_end(self, trainer, step, loss):
        self.calls.append(("on_step_end", step, float(loss)))

    def on_log(self, trainer, step, values):
        self.calls.append(("on_log", step, values))

    def on_evaluate(self, trainer, step, metrics):
        self.calls.append(("on_evaluate", step, metrics, trainer.progress.best_metric))

    def on_epoch_end(self, trainer, step):
        self.calls.append(("on_epoch_end", step))

    def on_train_end(self, trainer, step):
        self.calls.append(("on_train_end", step))


def test_callbacks_receive_every_event_in_order(tmp_path):
    class OnlyEpochs(TrainerCallback):
        def __init__(self):
            self.epochs = []

        def on_epoch_end(self, trainer, step):
            self.epochs.append(step.epoch)

    rec, only = Recorder(), OnlyEpochs()
    assert OnlyEpochs.events == ("on_epoch_end",) and only.handles("on_epoch_end") and not only.handles("on_log")
    trainer = Trainer(make_model(0), config(tmp_path, epochs=2, log_every=3), make_data(24, 0), make_data(8, 1),
                      loss_fn, evaluate_fn, callbacks=[rec, only])
    trainer.train()
    # 3 steps per epoch, log_every 3: one record per epoch, written after its last step
    epoch = ["on_step_end"] * 3 + ["on_log", "on_evaluate", "on_epoch_end"]
    assert rec.names() == ["on_train_begin", *epoch, *epoch, "on_train_end"]
    assert only.epochs == [0, 1]
    steps = [c[1] for c in rec.calls if c[0] == "on_step_end"]
    assert [(s.global_step, s.epoch, s.step_in_epoch) for s in steps] == [
        (1, 0, 1), (2, 0, 2), (3, 0, 3), (4, 1, 1), (5, 1, 2), (6, 1, 3)]
    losses = [c[2] for c in rec.calls if c[0] == "on_step_end"]
    logs = [c[2] for c in rec.calls if c[0] == "on_log"]
    assert [r["steps"] for r in logs] == [3, 3]
    assert logs[0]["loss"] == pytest.approx(sum(losses[:3]) / 3, rel=1e-6)
    evals = [c for c in rec.calls if c[0] == "on_evaluate"]
    records = [r for r in read_jsonl(tmp_path / "train_log.jsonl") if r["type"] == "eval"]
    assert [e[2]["f1"] for e in evals] == [r["f1"] for r in records]
    assert [e[3] for e in evals] == [r["best_metric"] for r in records]  # progress already updated
    assert rec.calls[-1][1].global_step == 6 and rec.calls[-1][1].fraction == 1.0


def test_callback_mistakes_are_refused():
    with pytest.raises(TypeError, match="on_step_ended, which the trainer never fires"):
        class Typo(TrainerCallback):
            def on_step_ended(self, trainer, step, loss):
                return loss

    with pytest.raises(ValueError, match="unknown trainer event 'on_batch'"):
        Recorder().handles("on_batch")


def test_a_callback_that_is_not_one_is_refused(tmp_path):
    with pytest.raises(TypeError, match=r"callbacks\[0\] is a function, not a TrainerCallback"):
        Trainer(make_model(0), config(tmp_path), make_data(8, 0), None, loss_fn, None,
                callbacks=[lambda trainer, step: None])


# -- the console line -----------------------------------------------------------------------------------


def test_epoch_line_format():
    step = StepContext(150, 500, 2, 10, 50, 50)
    metrics = {"f1": 0.55671, "sentences_per_second": 312.4}
    assert epoch_line(step, 1.2344, "f1", metrics, 0.55671, 2) == (
        "epoch 3/10  step 150/500  dev f1 55.67 (best 55.67 @ epoch 3)  loss 1.234  312 sent/s")
    assert epoch_line(step, None) == "epoch 3/10  step 150/500"
    assert epoch_line(step, 0.5, "loss", {"loss": 2.5}, 2.25, 0) == (
        "epoch 3/10  step 150/500  dev loss 2.5 (best 2.25 @ epoch 1)  loss 0.5")


def test_console_line_per_epoch_without_progress_bars(tmp_path, caplog):
    def timed_eval(model, data):
        return {**evaluate_fn(model, data), "sentences_per_second": 1234.0}

    cfg = config(tmp_path, epochs=2, log_every=100, progress=False)  # fewer steps than log_every
    with caplog.at_level(logging.INFO, logger="structkd.train"):
        Trainer(make_model(0), cfg, make_data(40, 0), make_data(16, 1), loss_fn, timed_eval).train()
    lines = [r.getMessage() for r in caplog.records
             if r.name == "structkd.train" and r.getMessage().startswith("epoch")]
    records = read_jsonl(tmp_path / "train_log.jsonl")
    evals = [r for r in records if r["type"] == "eval"]
    assert len(lines) == 2
    for epoch, (line, ev) in enumerate(zip(lines, evals)):
        loss = epoch_mean_loss(records, epoch)
        best = max(e["f1"] for e in evals[:epoch + 1])
        best_epoch = [e["f1"] for e in evals].index(best)
        assert line == (f"epoch {epoch + 1}/2  step {5 * (epoch + 1)}/10  dev f1 {100 * ev['f1']:.2f} "
                        f"(best {100 * best:.2f} @ epoch {best_epoch + 1})  loss {loss:.4g}  1234 sent/s")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="structkd.train"):  # silenced
        Trainer(make_model(0), config(tmp_path / "quiet", epochs=1), make_data(8, 0), make_data(8, 1), loss_fn,
                evaluate_fn).train()
    assert not [r for r in caplog.records if r.getMessage().startswith("epoch")]


# -- losses of short runs and the learning curves' panels -----------------------------------------------


def test_every_epoch_logs_its_loss_when_shorter_than_log_every(tmp_path):
    class Losses(TrainerCallback):
        def __init__(self):
            self.by_epoch = {}

        def on_step_end(self, trainer, step, loss):
            self.by_epoch.setdefault(step.epoch, []).append(float(loss))

    losses = Losses()
    Trainer(make_model(0), config(tmp_path, log_every=50), make_data(40, 0), make_data(16, 1), loss_fn,
            evaluate_fn, callbacks=[losses]).train()
    records = read_jsonl(tmp_path / "train_log.jsonl")
    train = [r for r in records if r["type"] == "train"]
    assert [(r["epoch"], r["global_step"], r["steps"]) for r in train] == [(0, 5, 5), (1, 10, 5), (2, 15, 5)]
    for epoch, values in losses.by_epoch.items():  # the epoch's mean, two ways
        assert epoch_mean_loss(records, epoch) == pytest.approx(sum(values) / len(values), rel=1e-6)
    assert len(learning_curve_series(records, "f1")["loss"]["train loss"]) == 3


def test_epoch_mean_loss_weights_records_by_their_steps():
    records = [{"type": "train", "epoch": 0, "loss": 1.0, "steps": 3}, {"type": "train", "epoch": 0, "loss": 2.0,
               "steps": 1}, {"type": "train", "epoch": 1, "loss": 9.0}, {"type": "eval", "epoch": 0, "loss": 7.0}]
    assert epoch_mean_loss(records, 0) == 1.25 and epoch_mean_loss(records, 1) == 9.0
    assert epoch_mean_loss(records, 2) is None


def _parser_log():
    """A parser-like log: scores in [0, 1], a speed in the hundreds and counts in the thousands."""
    records = [{"type": "train", "epoch": e, "global_step": 10 * e + 10, "loss": 2.0 / (e + 1), "steps": 10}
               for e in range(3)]
    for e in range(3):
        records.append({"type": "eval", "epoch": e, "global_step": 10 * e + 10, "las": 0.5 + 0.1 * e,
                        "uas": 0.6 + 0.1 * e, "sentences_per_second": 700.0 + e, "words": 25000,
                        "best_metric": 0.5 + 0.1 * e, "best_epoch": e, "lr": 0.001, "loss": 1.5 - 0.1 * e})
    return records


def test_learning_curve_series_puts_speed_and_counts_off_the_metric_axis():
    panels = learning_curve_series(_parser_log(), "las")
    assert set(panels["loss"]) == {"train loss", "dev loss"}
    assert panels["loss"]["train loss"] == [(10, 2.0), (20, 1.0), (30, 2.0 / 3)]
    assert panels["metrics"] == {"las": [(10, 0.5), (20, 0.6), (30, pytest.approx(0.7))],
                                 "uas": [(10, 0.6), (20, 0.7), (30, pytest.approx(0.8))]}
    assert set(panels["other"]) == {"sentences_per_second", "words"}  # not best_epoch, lr, epoch
    assert all(0 <= v <= 1 for pts in panels["metrics"].values() for _, v in pts)
    # a selected metric on another scale stays on the metric axis; the speed still does not
    big = [dict(r, las=100 * r["las"]) if r["type"] == "eval" else r for r in _parser_log()]
    assert "las" in learning_curve_series(big, "las")["metrics"]


def test_learning_curves_png(tmp_path):
    log = tmp_path / "train_log.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in _parser_log()), encoding="utf-8")
    png = plot_learning_curves(log, tmp_path / "learning_curves.png", "las")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    height, width = matplotlib.image.imread(png).shape[:2]
    assert width == 3 * 5 * 80 and height == 4 * 80  # three panels: loss, scores, speed and counts


# -- report_to ------------------------------------------------------------------------------------------


def test_report_to_values_and_refusals(monkeypatch):
    assert check_report_to(None) == [] and check_report_to("none") == [] and check_report_to([]) == []
    assert TrainConfig().report_to == [] and TrainConfig(report_to="none").report_to == []
    monkeypatch.setattr(tracking_module, "tracker_installed", lambda name: name != "wandb")
    assert check_report_to("tensorboard, mlflow") == ["tensorboard", "mlflow"]
    assert check_report_to(["mlflow", "tensorboard", "mlflow"]) == ["mlflow", "tensorboard"]
    assert check_report_to("all") == ["tensorboard", "mlflow"]
    with pytest.raises(ValueError, match=r"TrainConfig: report_to: wandb is not installed here: pip install wandb"):
        TrainConfig(report_to=["tensorboard", "wandb"])
    with pytest.raises(ValueError, match="unknown tracker.*comet; choose from none, tensorboard, wandb, mlflow, all"):
        check_report_to("comet")
    with pytest.raises(ValueError, match="stand alone"):
        check_report_to(["none", "mlflow"])
    monkeypatch.setattr(tracking_module, "tracker_installed", lambda name: False)
    with pytest.raises(ValueError, match="no tracker is installed.*pip install tensorboard"):
        check_report_to("all")
    assert {"report_to", "tracker_project"} <= RESUME_FREE


def test_report_to_from_yaml_and_overrides(tmp_path, monkeypatch):
    monkeypatch.setattr(tracking_module, "tracker_installed", lambda name: True)
    path = tmp_path / "train.yaml"
    path.write_text("report_to: mlflow\nepochs: 2\n", encoding="utf-8")
    assert load_config(path).report_to == ["mlflow"]
    assert load_config(path, ["report_to=[tensorboard, wandb]"]).report_to == ["tensorboard", "wandb"]
    assert load_config(path, ["report_to=none"]).report_to == []
    assert TrainConfig.from_json(TrainConfig(report_to="wandb").to_json()).report_to == ["wandb"]


def _scalars(directory):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(directory))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_receives_the_dev_metric_and_the_loss(tmp_path):
    pytest.importorskip("tensorboard")
    cfg = config(tmp_path, report_to="tensorboard")
    Trainer(make_model(0), cfg, make_data(40, 0), make_data(16, 1), loss_fn, evaluate_fn,
            run_config={"model": {"hidden": 8}}).train()
    records = read_jsonl(tmp_path / "train_log.jsonl")
    scalars = _scalars(tmp_path / "tensorboard")
    evals = [r for r in records if r["type"] == "eval"]
    train = [r for r in records if r["type"] == "train"]
    assert scalars["dev/f1"] == [(r["global_step"], pytest.approx(r["f1"], rel=1e-6)) for r in evals]
    assert scalars["dev/best_f1"] == [(r["global_step"], pytest.approx(r["best_metric"], rel=1e-6)) for r in evals]
    assert scalars["train/loss"] == [(r["global_step"], pytest.approx(r["loss"], rel=1e-6)) for r in train]
    assert [s for s, _ in scalars["train/lr"]] == [r["global_step"] for r in train]


def test_tensorboard_after_a_resume_holds_one_value_per_step(tmp_path):
    pytest.importorskip("tensorboard")
    train, dev = make_data(40, 0), make_data(16, 1)
    kw = dict(checkpoint_every_steps=3, log_every=1, report_to="tensorboard")
    Trainer(make_model(0), config(tmp_path / "ref", **kw), train, dev, loss_fn, evaluate_fn).train()
    calls = {"n": 0}

    def crashing(model, batch):
        calls["n"] += 1
        if calls["n"] == 8:  # the checkpoint is at step 6; step 7 was logged, then lost
            raise Crash
        return loss_fn(model, batch)

    with pytest.raises(Crash):
        Trainer(make_model(0), config(tmp_path / "run", **kw), train, dev, crashing, evaluate_fn).train()
    Trainer(make_model(0), config(tmp_path / "run", **kw), train, dev, loss_fn, evaluate_fn).train(resume=True)
    ref, run = _scalars(tmp_path / "ref" / "tensorboard"), _scalars(tmp_path / "run" / "tensorboard")
    assert [s for s, _ in run["train/loss"]] == list(range(1, 16))  # step 7 once, from the resumed run
    for tag in ("train/loss", "dev/f1"):
        assert [s for s, _ in run[tag]] == [s for s, _ in ref[tag]]
        assert all(math.isclose(a, b, rel_tol=1e-6) for (_, a), (_, b) in zip(run[tag], ref[tag]))
