"""structkd: exact structural knowledge distillation for sequence labelers and dependency parsers."""

from structkd.inference import Parser, Tagger, load, predict_stream
from structkd.numerics import LOG_ZERO
from structkd.structs import *  # noqa: F401,F403
from structkd.structs import __all__ as _structs_all

__version__ = "0.1.0"
__all__ = ["LOG_ZERO", "Parser", "Tagger", "load", "predict_stream", *_structs_all]
