"""The interleaved timing of benchmarks/bench_structs.py: every implementation of a case is timed round by
round, so that a machine whose speed drifts during a case cannot favour the one measured first."""

from __future__ import annotations

import sys
from pathlib import Path

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
