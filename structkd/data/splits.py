"""The splits every task's ``data`` section names, and slices of them.

:class:`SplitsConfig` holds what all tasks share: the ``train``, ``dev`` and ``test`` files, the ``unlabeled``
files a student distils from, ``max_sentences`` (the first sentences of each file) and ``slices``: a part of a
split as ``START:STOP`` sentence indices, Python-style, taken after reading (for ``unlabeled``, of all its
files in order).  One file can so serve as labeled and as unlabeled text::

    data: {train: wikiann/train.conll, unlabeled: [wikiann/train.conll],
           slices: {train: "0:2000", unlabeled: "2000:"}}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["SPLITS", "SplitsConfig", "apply_slices", "parse_slice"]

SPLITS = ("train", "dev", "test", "unlabeled")


def parse_slice(text: str, key: str) -> slice:
    """``"START:STOP"`` (either may be empty; non-negative integers) as a :class:`slice`; errors name ``key``."""
    parts = str(text).split(":")
    if len(parts) != 2 or not all(p.strip().isdigit() or not p.strip() for p in parts):
        raise ValueError(f"{key} must look like START:STOP (sentence indices, e.g. '0:2000' or '2000:'), got "
                         f"{text!r}")
    start, stop = (int(p) if p.strip() else None for p in parts)
    if start is not None and stop is not None and stop < start:
        raise ValueError(f"{key}={text!r}: STOP is before START")
    return slice(start, stop)


@dataclass
class SplitsConfig:
    """Files of each split, ``max_sentences`` per file, and ``slices`` of splits (see the module docstring)."""

    train: str | None = None
    dev: str | None = None
    test: str | None = None
    unlabeled: list[str] = field(default_factory=list)
    max_sentences: int | None = None
    slices: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        for split, text in self.slices.items():
            if split not in SPLITS:
                raise ValueError(f"data.slices: unknown split {split!r}; expected one of {', '.join(SPLITS)}")
            parse_slice(text, f"data.slices.{split}")
        if self.max_sentences is not None and self.max_sentences < 1:
            raise ValueError(f"data.max_sentences must be at least 1, got {self.max_sentences}")


def apply_slices(data: Any, slices: dict[str, str]) -> Any:
    """Cut each split of ``data`` (attributes named by :data:`SPLITS`, lists of sentences) to its slice."""
    for split, text in slices.items():
        setattr(data, split, getattr(data, split)[parse_slice(text, f"data.slices.{split}")])
    return data
