"""NER distillation end to end: configs, models behind one interface, teacher caches, the commands."""

from structkd.ner.config import NerConfig, build_ner_config, load_ner_config
from structkd.ner.modeling import NerModel, build_model, evaluate, predict
from structkd.ner.pipeline import distill_command, evaluate_command, predict_command, train_command

__all__ = ["NerConfig", "NerModel", "build_model", "build_ner_config", "distill_command", "evaluate",
           "evaluate_command", "load_ner_config", "predict", "predict_command", "train_command"]
