"""The interleaved timing of benchmarks/bench_structs.py (every implementation of a case is timed round by
round, so that a machine whose speed drifts during a case cannot favour the one measured first) and of the
benchmark tables' model speeds (benchmarks/model_speed.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from bench_structs import _Timer, time_interleaved  # noqa: E402


def test_rounds_interleave_and_respect_each_budget():
    calls = []

    def thunk(name):
        def run():
            calls.append(name)
            return torch.zeros(2)
        return run

    cpu = torch.device("cpu")
    timers = [_Timer(thunk(name)) for name in "abc"]
    for timer in timers:
        timer.warm_up(cpu, repeats=4, max_seconds=10.0)
    timers[2].runs = 2  # a slow implementation gets fewer runs than the others
    calls.clear()
    time_interleaved(timers, cpu)
    assert [len(t.times) for t in timers] == [4, 4, 2]
    # each round runs every timer once, starting one further along
    assert calls == ["a", "b", "c", "b", "c", "a", "a", "b", "a", "b"]
    assert all(t.ms >= 0 and t.log_z.shape == (2,) for t in timers)


def test_a_run_longer_than_the_budget_is_the_measurement():
    timer = _Timer(lambda: torch.ones(1))
    timer.warm_up(torch.device("cpu"), repeats=5, max_seconds=0.0)
    assert timer.runs == 0 and len(timer.times) == 1
    time_interleaved([timer], torch.device("cpu"))
    assert len(timer.times) == 1


def test_fastest_passes_interleave_the_models_and_keep_each_ones_fastest_result():
    from model_speed import fastest_passes

    calls = []
    speeds = {"teacher": iter([5.0, 9.0, 7.0]), "student": iter([50.0, 40.0, 60.0]), "other": iter([1.0, 1.0, 2.0])}

    def run(name):
        calls.append(name)
        return {"sentences_per_second": next(speeds[name]), "pass": calls.count(name)}

    best = fastest_passes({name: name for name in speeds}, run, rounds=3)
    # round k starts k models further along the list
    assert calls == ["teacher", "student", "other", "student", "other", "teacher", "other", "teacher", "student"]
    assert list(best) == ["teacher", "student", "other"]
    assert best == {"teacher": {"sentences_per_second": 9.0, "pass": 2},
                    "student": {"sentences_per_second": 60.0, "pass": 3},
                    "other": {"sentences_per_second": 2.0, "pass": 3}}
    with pytest.raises(ValueError, match="rounds must be at least 1"):
        fastest_passes({"a": "a"}, run, rounds=0)


def test_speeds_and_sizes_report_parameters_scores_and_the_fastest_speed(tmp_path):
    from model_speed import speeds_and_sizes

    class Model:
        def __init__(self, directory):
            self.size = len(str(directory))
            self.passes = iter([{"sentences_per_second": 3.0, "las": 0.5}, {"sentences_per_second": 4.0, "las": 0.5}])

        def parameter_count(self):
            return self.size

    dirs = {"a": tmp_path / "a", "bb": tmp_path / "bb"}
    rows = speeds_and_sizes(dirs, Model, lambda model: next(model.passes), ("las",), rounds=2)
    assert rows == {"a": {"parameters": len(str(dirs["a"])), "sentences_per_second": 4.0, "las": 0.5},
                    "bb": {"parameters": len(str(dirs["bb"])), "sentences_per_second": 4.0, "las": 0.5}}
