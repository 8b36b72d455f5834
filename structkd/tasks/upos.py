"""Part-of-speech tagging (the UPOS column of CoNLL-U treebanks) as a third task: this module is all it takes.

It reuses the NER task's taggers, teacher outputs and KD losses (a tag sequence is a tag sequence), and changes
only what differs: the data (CoNLL-U words and UPOS, or ``.txt`` with one whitespace-tokenized sentence per
line for unlabeled text), the label inventory (the UPOS tags seen, with no BIO scheme, so CRFs are
unconstrained), and the metric (token accuracy).  ``structkd upos train|distill|evaluate|predict`` are generated
from :data:`TASK`; predictions are written as ``word<TAB>UPOS`` columns.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from structkd.data import ParsedSentence, Sentence, read_conllu, read_tokenized_text
from structkd.data.columns import is_raw_text
from structkd.data.conllu_io import as_parsed
from structkd.data.lazy import LazySentences, concat, lazy_conllu, lazy_text
from structkd.data.splits import SplitsConfig
from structkd.kd.config import KdConfig
from structkd.models.encoders import check_encoder
from structkd.ner.config import ModelConfig
from structkd.ner.modeling import NerModel, predict
from structkd.ner.pipeline import NerTask, warn_unknown_labels
from structkd.tasks.base import TaskData
from structkd.train.config import SectionedConfig, TrainConfig, build_sections, read_yaml_mapping

__all__ = ["UposConfig", "UposTask", "TASK", "load_upos_config", "build_upos_config"]


@dataclass
class UposDataConfig(SplitsConfig):
    """CoNLL-U treebanks (their UPOS column; HEAD and DEPREL are not read), and ``unlabeled`` CoNLL-U or
    ``.txt`` files; the splits, ``max_sentences`` and ``slices`` of :class:`~structkd.data.splits.SplitsConfig`."""


@dataclass
class UposConfig(SectionedConfig):
    data: UposDataConfig = field(default_factory=UposDataConfig)
    model: ModelConfig = field(default_factory=lambda: ModelConfig(constrained=False))
    kd: KdConfig = field(default_factory=KdConfig)
    training: TrainConfig = field(default_factory=lambda: TrainConfig(metric="accuracy"))

    METRICS: ClassVar[tuple[str, ...]] = ("accuracy",)

    def validate(self) -> None:
        """Also refuses what UPOS tags cannot have: a span head, BIO constraints, an encoder that is no model."""
        super().validate()
        if self.model.head == "span" or self.model.constrained:
            raise ValueError("UPOS tagging takes model.head crf or maxent with model.constrained=false (UPOS tags "
                             "have no BIO scheme)")
        if self.model.kind == "transformer" and not self.model.keep_every:
            check_encoder(self.model.encoder, "model.encoder")


SECTIONS = {"data": UposDataConfig, "model": ModelConfig, "kd": KdConfig, "training": TrainConfig}


def build_upos_config(values: dict[str, Any], overrides: list[str] | None = None, source: str = "config"
                      ) -> UposConfig:
    """A :class:`UposConfig` from nested values plus overrides (``training.metric`` defaults to ``accuracy``,
    ``model.constrained`` to false)."""
    parts = build_sections(values, overrides, SECTIONS, source,
                           defaults={"training": {"metric": "accuracy"}, "model": {"constrained": False}})
    return UposConfig(**parts)


def load_upos_config(path: str | Path | None, overrides: list[str] | None = None) -> UposConfig:
    return build_upos_config(read_yaml_mapping(path) if path is not None else {}, overrides,
                             source=str(path or "overrides"))


def read_upos(path: str, config: UposDataConfig, labeled: bool = True) -> list[Sentence]:
    """Sentences with their UPOS tags (``labeled``) or without (unlabeled text: CoNLL-U or ``.txt``)."""
    limit = config.max_sentences or None
    if is_raw_text(path):
        parsed = read_tokenized_text(path, max_sentences=limit)
    else:
        parsed = read_conllu(path, validate=False, max_sentences=limit)
    return [_tagged(s) if labeled else _untagged(s) for s in parsed]


def _tagged(parsed: ParsedSentence) -> Sentence:
    return Sentence(list(parsed.words), list(parsed.upos), parsed.source, list(parsed.word_lines))


def _untagged(parsed: ParsedSentence) -> Sentence:
    return Sentence(list(parsed.words), None, parsed.source, list(parsed.word_lines))


def read_unlabeled(path: str, config: UposDataConfig) -> LazySentences:
    """:func:`read_upos` of an unlabeled file, read lazily (:mod:`structkd.data.lazy`)."""
    limit = config.max_sentences or None
    if is_raw_text(path):
        return lazy_text(path, limit).map(as_parsed).map(_untagged)
    return lazy_conllu(path, validate=False, max_sentences=limit).map(_untagged)


def accuracy(model: NerModel, sentences: list[Sentence], report: bool = False) -> dict[str, Any]:
    """Token accuracy, sentences per second and, with ``report``, per-tag precision/recall/F1 and support."""
    labeled = [s for s in sentences if s.tags is not None]
    if not labeled:
        raise ValueError("evaluation needs labeled sentences")
    start = time.perf_counter()
    predicted = predict(model, labeled)
    elapsed = time.perf_counter() - start
    pairs = [(g, p) for s, row in zip(labeled, predicted) for g, p in zip(s.tags, row)]
    result: dict[str, Any] = {"accuracy": sum(g == p for g, p in pairs) / len(pairs),
                              "sentences_per_second": len(labeled) / elapsed}
    if report:
        result["per_tag"] = {tag: _tag_scores(pairs, tag) for tag in sorted({g for g, _ in pairs})}
    return result


def _tag_scores(pairs: list[tuple[str, str]], tag: str) -> dict[str, float]:
    gold = sum(g == tag for g, _ in pairs)
    guessed = sum(p == tag for _, p in pairs)
    correct = sum(g == p == tag for g, p in pairs)
    precision, recall = correct / guessed if guessed else 0.0, correct / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "support": gold}


class UposTask(NerTask):
    """UPOS tagging: the NER task's models and KD over CoNLL-U's UPOS column, scored by accuracy."""

    name = "upos"
    config_file = "upos_config.json"
    description = "part-of-speech tagging (UPOS, CoNLL-U)"

    def load_config(self, path, overrides=None) -> UposConfig:
        return load_upos_config(path, overrides)

    def read_data(self, config: UposDataConfig) -> TaskData:
        data = TaskData(**{name: read_upos(getattr(config, name), config) if getattr(config, name) else []
                           for name in ("train", "dev", "test")})
        data.unlabeled = concat(*(read_unlabeled(path, config) for path in config.unlabeled))
        return data

    def output_config(self, config: UposDataConfig, input_path: str) -> UposDataConfig:
        """UPOS tags have no tag scheme to write back: the config as it is."""
        return config

    def read_input(self, path: str, config: UposDataConfig) -> list[Sentence]:
        return read_upos(path, config, labeled=False)

    def read_evaluation(self, path: str, config: UposDataConfig, model: NerModel, model_dir: str) -> list:
        sentences = read_upos(path, config)
        warn_unknown_labels({path: sentences}, model.tags, f"the model's ({model_dir})", self.logger)
        return sentences

    def labels(self, sentences: list[Sentence], config: UposConfig) -> list[str]:
        return sorted({t for s in sentences for t in s.tags or ()})  # the tags seen: UPOS has no scheme

    def predictor(self, model: NerModel, tokenizer: str, max_words: int | None) -> None:
        return None  # structkd.inference's Tagger reads entities: UPOS predictions use this task's own writer

    def scheme(self, config: UposConfig) -> None:
        return None  # UPOS tags form no spans: unconstrained chains, no span teachers

    def resolve_config(self, config: UposConfig) -> UposConfig:
        return config  # no tag scheme to read off the data

    def evaluate(self, model: NerModel, sentences: list[Sentence], report: bool = False) -> dict:
        return accuracy(model, sentences, report)

    def format_results(self, result: dict) -> str:
        rows = [f"{'tag':8} {'precision':>9} {'recall':>7} {'f1':>7} {'support':>7}"]
        rows += [f"{tag:8} {100 * r['precision']:9.2f} {100 * r['recall']:7.2f} {100 * r['f1']:7.2f} "
                 f"{r['support']:7d}" for tag, r in result.get("per_tag", {}).items()]
        return (f"accuracy {100 * result['accuracy']:.2f}, {result['sentences_per_second']:.0f} sentences/s, "
                f"{result['parameters']:,} parameters\n" + "\n".join(rows))


TASK = UposTask()
