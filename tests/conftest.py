"""Test configuration: make the brute-force enumerators in ``tests/brute.py`` importable as ``brute``; shared
fixtures."""

import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture
def record_trainers(monkeypatch):
    """``record_trainers(module)`` replaces ``module.Trainer`` (a pipeline module's) by a subclass that
    appends every Trainer it builds to the returned list."""

    def record(module):
        made = []

        class Recording(module.Trainer):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                made.append(self)

        monkeypatch.setattr(module, "Trainer", Recording)
        return made

    return record


@pytest.fixture
def caches_in_pieces_match():
    """``check(task, teacher, sentences, student, config_of)``: the teacher cache built with a small
    ``training.max_batch_cost`` (``config_of(budget)``, computed in pieces) holds what whole chunks give
    (``config_of(None)``), within float16 storage."""
    from structkd.tasks import runner

    def check(task, teacher, sentences, student, config_of, budget):
        caches = [runner.build_teacher_cache(task, teacher, config_of(cost), sentences, student)
                  for cost in (budget, None)]
        assert caches[0].fields == caches[1].fields and len(caches[0]) == len(caches[1]) == len(sentences)
        for k in range(len(sentences)):
            for field in caches[1].fields:
                torch.testing.assert_close(caches[0].get(k, field), caches[1].get(k, field), rtol=1e-3, atol=1e-4)

    return check
