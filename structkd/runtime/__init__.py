"""A torch-free runtime for exported models: numpy and ONNX Runtime only.

``structkd.runtime.load(directory)`` reads a directory written by :func:`structkd.export.export_model` (or
``structkd export MODEL OUT --format onnx``) and returns a :class:`Tagger` or :class:`Parser`, called like
``structkd.load``'s (a string, or a list of strings and token lists) and returning the same
:class:`Document` / :class:`Parse` objects.  The ONNX graph computes the scores; decoding (constrained Viterbi,
Eisner, Chu-Liu-Edmonds, tree repair), exact marginals (forward-backward, inside-outside, Matrix-Tree:
:mod:`structkd.runtime.marginals`), vocabulary lookup and sub-word tokenization (the ``tokenizers`` library) run
here, in numpy.  Nothing in this package imports torch; the torch side imports its shared parts (the decoders,
:mod:`~structkd.runtime.spans`, :mod:`~structkd.runtime.results`).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["Document", "Entity", "ExportedModel", "Parse", "Parser", "Tagger", "Word", "load"]


def __getattr__(name: str) -> Any:
    """The names of :mod:`structkd.runtime.models`, imported when first used: the numpy decoders
    (:mod:`structkd.runtime.decoding`), which the torch models share, need neither ONNX Runtime nor torch."""
    if name in __all__:
        value = getattr(importlib.import_module("structkd.runtime.models"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'structkd.runtime' has no attribute {name!r}")
