"""Dependency-parser distillation end to end: configs, parsers behind one interface, metrics, teacher caches,
the commands."""

from structkd.parse.config import ParseConfig, build_parse_config, load_parse_config
from structkd.parse.metrics import attachment_scores, format_scores
from structkd.parse.modeling import ParseModel, build_model, evaluate, predict
from structkd.parse.pipeline import distill_command, evaluate_command, predict_command, train_command

__all__ = ["ParseConfig", "ParseModel", "attachment_scores", "build_model", "build_parse_config", "distill_command",
           "evaluate", "evaluate_command", "format_scores", "load_parse_config", "predict", "predict_command",
           "train_command"]
