"""Configuration of the parsing commands: YAML files with ``section.key=value`` command-line overrides.

A config has four sections::

    data:      {train: ..., dev: ..., test: ..., max_sentences: null, multiroot: false, on_multiroot: skip,
                on_nonprojective: projectivize}
    model:     {kind: biaffine | seqlabel, tree: projective | nonprojective | 2o, encoder: bilstm | minilm, ...}
    kd:        {method: structural, temperature: 1.0, kd_weight: 0.5, relations: marginal, teacher: ..., ...}
    training:  any TrainConfig field (epochs, lr, batch_size, output_dir, ...); ``metric`` defaults to ``las``
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from structkd.data.splits import SplitsConfig
from structkd.kd.config import KdConfig as SharedKdConfig
from structkd.models.embeddings import AUTO, check_init_options
from structkd.models.encoders import check_encoder
from structkd.models.seqlabel_parser import DECODERS
from structkd.train.config import (
    SectionedConfig,
    TrainConfig,
    build_sections,
    read_yaml_mapping,
)

KD_METHODS = ("structural", "token", "topk", "none")
RELATION_MODES = ("marginal", "gold", "none")
MODEL_KINDS = ("biaffine", "seqlabel")
TREES = ("projective", "nonprojective", "2o")


NONPROJECTIVE = ("projectivize", "skip", "error")
MULTIROOT = ("skip", "error")


@dataclass
class DataConfig(SplitsConfig):
    """CoNLL-U treebanks (:func:`structkd.data.read_conllu`); the splits, ``max_sentences`` and ``slices`` of
    :class:`~structkd.data.splits.SplitsConfig`.

    ``projective_only``: train on projective trees only (``None``: exactly when the trained model needs
    projective trees, i.e. a ``projective`` or ``2o`` biaffine parser).  ``on_nonprojective`` says what happens
    to the others: ``projectivize`` (the default) trains on the nearest projective tree instead (the most arcs
    kept, each changed word lifted to the nearest ancestor of its head that projectivity allows, its relation
    kept: :func:`structkd.structs.tree.nearest_projective`), ``skip`` drops the sentence, both logged with their
    count, and ``error`` refuses it.  Development and test trees are never changed or dropped.

    ``multiroot``: whether the parsers may attach several words to the root (UD: no, the default).  Without it,
    ``on_multiroot`` says what happens to a training tree with several root words, which a single-root parser
    cannot learn: ``skip`` (the default) drops it, with a logged count and the first one's line, and ``error``
    refuses the file at that line.  Development and test trees with several roots are scored as they are (with a
    warning), and refused under ``error``.

    ``unlabeled``: files of sentences the student distils from without gold trees (``structkd parse distill``
    only): CoNLL-U, whose HEAD and DEPREL are ignored (they may be ``_``), or ``.txt`` with one
    whitespace-tokenized sentence per line.  They get the KD loss alone; the training trees get the
    ``kd_weight`` mix of KD and gold loss.  ``max_sentences`` applies to each file.
    """

    multiroot: bool = False
    projective_only: bool | None = None
    on_nonprojective: str = "projectivize"
    on_multiroot: str = "skip"

    def __post_init__(self):
        super().__post_init__()
        if self.on_multiroot not in MULTIROOT:
            raise ValueError(f"data.on_multiroot must be one of {', '.join(MULTIROOT)}, got {self.on_multiroot!r}")
        if self.on_nonprojective not in NONPROJECTIVE:
            raise ValueError(f"data.on_nonprojective must be one of {', '.join(NONPROJECTIVE)}, got "
                             f"{self.on_nonprojective!r}")


@dataclass
class ModelConfig:
    """The parser to build (a teacher, a baseline or a student).

    ``kind``: ``biaffine`` (:class:`structkd.models.parsers.BiaffineParser`, with ``tree``) or ``seqlabel``
    (:class:`structkd.models.seqlabel_parser.SeqLabelingParser`, decoded with ``decoder``: ``mst``, ``eisner``
    (projective) or ``repair``).
    ``encoder``: ``bilstm`` (word embeddings + character CNN + BiLSTM of ``layers`` layers), ``minilm`` (the
    offline MiniLM), or any ``transformers`` hub name or local path.  ``keep_every`` builds a transformer
    student from a transformer teacher's layers (:func:`structkd.models.transformer.shrink_encoder`).
    ``init_from_teacher`` initializes a BiLSTM student's word embeddings from a transformer teacher's input
    embeddings (:mod:`structkd.models.embeddings`; ``word_dim`` is then the teacher's hidden size; ``auto``, the
    default: when the teacher is a transformer);
    ``freeze_embeddings`` keeps them as copied during training; ``open_vocabulary`` (default on) keeps the
    teacher's subword table in the student, which embeds every word outside its vocabulary (built from the
    distillation sentences alone) as the teacher does (:mod:`structkd.runtime.lexicon`); off, the vocabulary also
    covers the development and test words and any other word is unknown.
    """

    kind: str = "biaffine"
    tree: str = "projective"
    encoder: str = "bilstm"
    pooling: str = "first"
    word_dim: int = 100
    hidden: int = 200
    char_filters: int = 50
    layers: int = 2
    arc_hidden: int = 300
    rel_hidden: int = 100
    sib_hidden: int = 100
    sib_rank: int | None = None
    dropout: float = 0.33
    decoder: str = "mst"
    keep_every: int | None = None
    init_from_teacher: bool | str = AUTO
    freeze_embeddings: bool = False
    open_vocabulary: bool = True

    def __post_init__(self):
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"model.kind must be one of {', '.join(MODEL_KINDS)}, got {self.kind!r}")
        if self.tree not in TREES:
            raise ValueError(f"model.tree must be one of {', '.join(TREES)}, got {self.tree!r}")
        if self.decoder not in DECODERS:
            raise ValueError(f"model.decoder must be one of {', '.join(DECODERS)}, got {self.decoder!r}")
        check_init_options(self.init_from_teacher, self.freeze_embeddings, self.has_word_embeddings,
                           "model.encoder=bilstm (and no model.keep_every)")

    @property
    def has_word_embeddings(self) -> bool:
        """Whether the parser has word embeddings of its own (a BiLSTM encoder, not the teacher's layers)."""
        return self.encoder == "bilstm" and not self.keep_every

    @property
    def needs_projective(self) -> bool:
        """Whether the model's gold loss needs projective trees."""
        return self.kind == "biaffine" and self.tree in ("projective", "2o")


@dataclass
class KdConfig(SharedKdConfig):
    """Distillation options (see :mod:`structkd.parse.distillation`).

    ``relations``: how a biaffine student learns the teacher's relations: ``marginal`` (KL on every arc,
    weighted by the teacher's arc marginals), ``gold`` (KL on the gold arcs) or ``none``.  A sequence-labeling
    student always learns relations through its ``(offset, relation)`` labels.
    """

    relations: str = "marginal"

    METHODS: ClassVar[tuple[str, ...]] = KD_METHODS

    def __post_init__(self):
        super().__post_init__()
        if self.relations not in RELATION_MODES:
            raise ValueError(f"kd.relations must be one of {', '.join(RELATION_MODES)}, got {self.relations!r}")


@dataclass
class ParseConfig(SectionedConfig):
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    kd: KdConfig = field(default_factory=KdConfig)
    training: TrainConfig = field(default_factory=lambda: TrainConfig(metric="las"))

    METRICS: ClassVar[tuple[str, ...]] = ("las", "uas", "las_nopunct", "uas_nopunct", "lcm", "ucm", "lcm_nopunct",
                                          "ucm_nopunct")

    def validate(self) -> None:
        """Also refuses a transformer encoder that names no usable model, when the config is built
        (:func:`structkd.models.encoders.check_encoder`)."""
        super().validate()
        if self.model.encoder != "bilstm" and not self.model.keep_every:
            check_encoder(self.model.encoder, "model.encoder")



SECTIONS = {"data": DataConfig, "model": ModelConfig, "kd": KdConfig, "training": TrainConfig}


def build_parse_config(values: dict[str, Any], overrides: list[str] | None = None, source: str = "config"
                       ) -> ParseConfig:
    """A :class:`ParseConfig` from nested values plus ``section.key=value`` overrides (``training.metric``
    defaults to ``las``, the development metric that picks the best model)."""
    parts = build_sections(values, overrides, SECTIONS, source, defaults={"training": {"metric": "las"}})
    return ParseConfig(**parts)


def load_parse_config(path: str | Path | None, overrides: list[str] | None = None) -> ParseConfig:
    """Read a YAML config (or none) and apply overrides."""
    values = read_yaml_mapping(path) if path is not None else {}
    return build_parse_config(values, overrides, source=str(path or "overrides"))
