"""Test configuration: make the brute-force enumerators in ``tests/brute.py`` importable as ``brute``; shared
fixtures."""

import os
import sys

import pytest

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
