"""structkd: exact structural knowledge distillation for sequence labelers and dependency parsers.

The package's names are imported when first used (:pep:`562`), so that ``structkd.runtime`` and
``structkd.text`` run without torch: ``import structkd.runtime`` loads numpy and onnxruntime only.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# structkd.structs.__all__ (a test keeps the two the same)
_STRUCTS = ("StructuredDistribution", "LinearChainCRF", "MaxEnt", "SemiMarkovCRF", "chart_to_segments",
            "segments_to_chart", "DependencyCRF", "MatrixTree", "Dependency2oCRF", "arc_indicators", "is_tree",
            "projective")
_LAZY = {**{name: "structkd.structs" for name in _STRUCTS}, "LOG_ZERO": "structkd.numerics",
         **{name: "structkd.inference" for name in ("Parser", "Tagger", "load", "predict_stream")}}

__all__ = ["LOG_ZERO", "Parser", "Tagger", "load", "predict_stream", *_STRUCTS]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'structkd' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
