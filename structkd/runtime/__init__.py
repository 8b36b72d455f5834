"""A torch-free runtime for exported models: numpy and ONNX Runtime only.

``structkd.runtime.load(directory)`` reads a directory written by :func:`structkd.export.export_model` (or
``structkd export MODEL OUT --format onnx``) and returns a :class:`Tagger` or :class:`Parser`, callable on a
string, a list of strings or a list of token lists.  The ONNX graph computes the scores; decoding (constrained
Viterbi, Eisner, Chu-Liu-Edmonds, tree repair), vocabulary lookup and sub-word tokenization (the
``tokenizers`` library) run here, in numpy.  Nothing in this package imports torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["ExportedModel", "ParsedSentence", "Parser", "TaggedSentence", "Tagger", "load"]


def __getattr__(name: str) -> Any:
    """The names of :mod:`structkd.runtime.models`, imported when first used: the numpy decoders
    (:mod:`structkd.runtime.decoding`), which the torch models share, need neither ONNX Runtime nor torch."""
    if name in __all__:
        value = getattr(importlib.import_module("structkd.runtime.models"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'structkd.runtime' has no attribute {name!r}")
