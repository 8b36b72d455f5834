"""What differs between tasks: the :class:`Task` contract that the one runner (:mod:`structkd.tasks.runner`)
drives for training, distillation, evaluation and prediction.

A task reads its data, builds and loads its models, gives the gold loss of a batch (zero for unlabeled
sentences), describes the teacher outputs it caches (their fields, cache options and padded shapes), computes
those outputs and the student's KD loss from them, evaluates, and reads and writes prediction files.  The
runner owns everything else: the resume check, the output directory, the device, seeding, the teacher cache
(its segments shared by launched processes), the mix of KD and gold losses, the :class:`~structkd.train.Trainer`,
and ``finish_run``.  The command line of a task is generated from it (:func:`structkd.cli_common.add_task_commands`).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from structkd.data.lazy import sentence_lengths
from structkd.kd.config import KdConfig
from structkd.train.batching import BatchCost
from structkd.train.config import SectionedConfig

Tensor = torch.Tensor

__all__ = ["Task", "TaskData", "Prepared"]


@dataclass
class TaskData:
    """The sentences of every split named in a data config (``unlabeled``: distillation text without gold, a
    sequence read lazily, :mod:`structkd.data.lazy`: index it, slice it, iterate it, never make it a list)."""

    train: list = field(default_factory=list)
    dev: list = field(default_factory=list)
    test: list = field(default_factory=list)
    unlabeled: Sequence = field(default_factory=list)


@dataclass
class Prepared:
    """A model with the items it trains on, as a task prepares them for the runner.

    Attributes:
        model: the model to train (a teacher or baseline, or a student).
        items: its training sentences (a student's: the usable labeled ones, then the unlabeled ones, joined
            by :func:`structkd.data.lazy.concat` without a copy).
        extra: counts to report in ``results.json`` (skipped sentences, ...).
    """

    model: nn.Module
    items: Sequence
    extra: dict[str, Any] = field(default_factory=dict)


class Task(ABC):
    """One task (NER, dependency parsing, UPOS tagging, ...) behind the interface the runner drives.

    Batches are built by :meth:`collate` from ``(dataset index, sentence)`` pairs and must have ``indices`` and
    ``sentences`` attributes: the runner reads the teacher cache by ``indices``.
    """

    name: str = ""
    """The command-line name (``structkd NAME train``) and the ``structkd.NAME`` logger."""
    config_file: str = ""
    """The file a run's config is saved to in its output directory (``ner_config.json``)."""
    native_format: str = "conll"
    """The prediction format :meth:`write_predictions` writes (``conll`` columns, ``conllu``)."""
    default_max_words: int | None = None
    """The longest sentence ``predict`` reads by default (``None``: no limit)."""
    description: str = ""

    @property
    def logger(self) -> logging.Logger:
        return logging.getLogger(f"structkd.{self.name}")

    # -- config and data ----------------------------------------------------------------------------------
    @abstractmethod
    def load_config(self, path: str | Path | None, overrides: list[str] | None = None) -> SectionedConfig:
        """The task's config from a YAML file (or none) and ``section.key=value`` overrides."""

    def resolve_config(self, config: Any) -> Any:
        """The config with the settings that the data decide (``auto`` values) resolved, before a run records
        it in its checkpoints and output directory; by default the config as it is."""
        return config

    @abstractmethod
    def read_data(self, config: Any) -> TaskData:
        """Every corpus the data section names (errors name file and line)."""

    @abstractmethod
    def read_input(self, path: str, config: Any) -> list:
        """Sentences to predict (their gold, if any, is ignored)."""

    @abstractmethod
    def write_predictions(self, path: str, sentences: list, model: nn.Module, config: Any = None) -> None:
        """Predict ``sentences`` with ``model`` and write them to ``path`` in the task's file format (``config``:
        the data config of :meth:`output_config`, or ``None``)."""

    def output_config(self, config: Any, input_path: str) -> Any:
        """The data config predictions of ``input_path`` are read and written under (``structkd TASK predict``);
        by default ``config`` as it is."""
        return config

    @abstractmethod
    def read_evaluation(self, path: str, config: Any, model: nn.Module, model_dir: str) -> list:
        """A labeled file to evaluate ``model`` on (labels it cannot predict are refused by file and line)."""

    @abstractmethod
    def words(self, sentence: Any) -> list[str]:
        """A sentence's words (what the teacher cache is fingerprinted by)."""

    def predictor(self, model: nn.Module, tokenizer: str, max_words: int | None) -> Any:
        """A :mod:`structkd.inference` predictor of ``model`` (raw text, JSON output), or ``None`` for a task
        without one: ``predict`` then reads and writes the task's own format only."""
        return None

    def length(self, sentence: Any) -> int:
        """The number of words of a sentence (what ``group_by_length`` batches by)."""
        return len(self.words(sentence))

    def batch_cost(self, model: nn.Module) -> BatchCost | None:
        """How a training batch of ``model`` costs, from its sentences' lengths, when memory grows faster than
        the padded batch (``training.max_batch_cost`` then splits the batches above it into micro-batches): the
        model's ``batch_cost`` (a second-order parser's, a span head's), or ``None``: batches are computed
        whole."""
        return getattr(model, "batch_cost", None)

    def lengths(self, sentences: Sequence) -> list[int]:
        """:meth:`length` of each sentence; lazily read sentences give the word counts of their index, without
        being read (unless a task's ``length`` is not the word count)."""
        if type(self).length is not Task.length:
            return [self.length(s) for s in sentences]
        return sentence_lengths(sentences, self.length)

    # -- models ---------------------------------------------------------------------------------------------
    @abstractmethod
    def prepare_training(self, config: Any, data: TaskData) -> Prepared:
        """A fresh model and the training sentences of ``train`` (labels from the data, checked before any
        work)."""

    @abstractmethod
    def prepare_student(self, config: Any, data: TaskData, teacher: nn.Module) -> Prepared:
        """A fresh student of ``teacher`` and its distillation sentences (labels checked against the
        teacher's before any work)."""

    @abstractmethod
    def load_model(self, directory: str | Path, device: torch.device | str = "cpu") -> nn.Module:
        """A saved model."""

    @abstractmethod
    def collate(self, items: list[tuple[int, Any]], model: nn.Module) -> Any:
        """A batch of ``(dataset index, sentence)`` pairs for ``model``."""

    @abstractmethod
    def gold_loss(self, model: nn.Module, output: Any, batch: Any) -> Tensor:
        """Per-sentence gold loss ``[batch_size]``, exactly 0 for sentences without gold."""

    @abstractmethod
    def labeled(self, batch: Any, device: torch.device) -> Tensor:
        """``BoolTensor [batch_size]``: which sentences of the batch carry gold."""

    # -- the teacher ----------------------------------------------------------------------------------------
    @abstractmethod
    def teacher_fields(self, config: Any, student: nn.Module) -> list[str]:
        """The names of the teacher outputs ``config.kd.method`` caches for ``student``."""

    @abstractmethod
    def cache_options(self, config: Any, student: nn.Module) -> dict[str, Any]:
        """What the cached outputs depend on besides the sentences and the teacher's weights (a cache built
        under other options is refused)."""

    @abstractmethod
    def teacher_outputs(self, teacher: nn.Module, sentences: Sequence, config: Any, student: nn.Module
                        ) -> list[dict[str, Tensor]]:
        """The cached fields for a chunk of sentences, one dict of unpadded tensors per sentence."""

    @abstractmethod
    def cached_shapes(self, batch: Any) -> dict[str, tuple[list[int | None] | None, float]]:
        """For each field, the padded shape of one sentence's tensor in ``batch`` (``None`` entries keep the
        stored size) and the pad value."""

    @abstractmethod
    def kd_loss(self, kd: KdConfig, student: nn.Module, output: Any, cached: dict[str, Tensor], batch: Any
                ) -> Tensor:
        """Per-sentence KD loss ``[batch_size]`` from the batch's cached teacher outputs."""

    SHARED_CACHE_FIELDS: ClassVar[frozenset[str]] = frozenset()
    """Fields of the task's compact cache form stored once for the whole cache, not per sentence."""

    def cache_form(self, config: Any, student: nn.Module, teacher: Any) -> str:
        """How the teacher cache stores the method's fields for ``teacher`` (a model, the list of a mixture's
        models, or a black-box teacher's :class:`~structkd.tasks.blackbox.TeacherOutputs`): ``"marginals"``,
        the fields of :meth:`teacher_fields` as :meth:`teacher_outputs` gives them, or a smaller form of the
        task's (:meth:`cache_rows`) that :meth:`kd_loss` reads as well."""
        return "marginals"

    def cache_rows(self, teacher: Any, items: Sequence, config: Any, student: nn.Module) -> list[dict[str, Tensor]]:
        """The cache's rows in the task's compact form (:meth:`cache_form`): of ``teacher`` on the sentences
        ``items``, or of a black-box teacher's outputs at the indices ``items``."""
        raise ValueError(f"the {self.name} task stores its teacher cache as marginals only")

    # -- black-box teachers (kd.teacher_outputs, docs/teachers.md): known only by their outputs ---------------
    def prepare_from_outputs(self, config: Any, data: TaskData) -> tuple[Prepared, Any]:
        """A fresh student, its distillation sentences, and the teacher's outputs on them read from
        ``kd.teacher_outputs`` (a :class:`~structkd.tasks.blackbox.TeacherOutputs`), checked against the
        sentences, the student's labels and ``kd.method`` before any work."""
        raise ValueError(f"kd.teacher_outputs: the {self.name} task cannot distil from a file of teacher outputs; "
                         f"use kd.teacher")

    def rows_from_outputs(self, outputs: Any, indices: Sequence[int], config: Any, student: nn.Module
                          ) -> list[dict[str, Tensor]]:
        """The cached fields (as :meth:`teacher_outputs` gives them) of the distillation sentences at
        ``indices``, from the file's outputs."""
        raise ValueError(f"kd.teacher_outputs: the {self.name} task cannot distil from a file of teacher outputs")

    # -- the toolbox (docs/kd.md): hooks of the options that need the teacher online ------------------------
    MIXABLE_FIELDS: ClassVar[frozenset[str]] = frozenset()
    """Cached fields that are marginals of parts, so that their weighted average is the marginal of the
    teachers' mixture (``kd.teachers``)."""

    def mix_teacher_outputs(self, config: Any, outputs: list[list[dict[str, Tensor]]], weights: Sequence[float]
                            ) -> list[dict[str, Tensor]]:
        """The mixture's cached fields from each teacher's (``outputs[k][i]``: teacher ``k``, sentence ``i``):
        the weighted average of every field of :attr:`MIXABLE_FIELDS`; any other field is refused by name."""
        rows = []
        for i in range(len(outputs[0])):
            row = {}
            for name in outputs[0][i]:
                if name not in self.MIXABLE_FIELDS:
                    raise ValueError(f"kd.teachers: the {self.name} task cannot mix the teachers' {name!r} outputs "
                                     f"(not a marginal of parts); use one kd.teacher")
                row[name] = sum(w * out[i][name] for w, out in zip(weights, outputs))
            rows.append(row)
        return rows

    def encode_states(self, model: nn.Module, sentences: Sequence, attentions: bool = False) -> tuple[Any, Any]:
        """``(output, encoded)``: the model's output on ``sentences`` (as ``model(sentences)``) and the
        :class:`~structkd.models.transformer.EncoderOutput` it came from, with hidden states (and attentions);
        what ``kd.hidden_weight`` and ``kd.attention_weight`` match."""
        raise ValueError(f"kd.hidden_weight and kd.attention_weight need the models' hidden states, which the "
                         f"{self.name} task does not expose")

    def forward_mixed(self, model: nn.Module, sentences: Sequence, perm: Tensor, lam: Tensor) -> Any:
        """The model's output on mixed input embeddings, sentence ``b`` with ``perm[b]`` at weight ``lam[b]``,
        over ``max(len_b, len_perm[b])`` words (``kd.mixup_weight``)."""
        raise ValueError(f"kd.mixup_weight needs the models' input embeddings, which the {self.name} task does not "
                         f"expose")

    def teacher_outputs_of(self, teacher: nn.Module, output: Any, sentences: Sequence, config: Any,
                           student: nn.Module) -> list[dict[str, Tensor]]:
        """:meth:`teacher_outputs` from the teacher's output already computed on ``sentences`` (mixed inputs)."""
        raise ValueError(f"kd.mixup_weight: the {self.name} task cannot read teacher outputs on mixed inputs")

    def with_words(self, sentence: Any, words: list[str]) -> Any:
        """A sentence with other words and no gold (adversarial candidates; stand-ins for mixed sentences)."""
        raise ValueError(f"kd.augment and kd.mixup_weight: the {self.name} task cannot build sentences from words")

    def kd_divergence(self, kd: KdConfig, student: nn.Module, output: Any, cached: dict[str, Tensor], batch: Any
                      ) -> Tensor:
        """Per-sentence divergence between teacher and student that ``kd.augment: adversarial`` maximizes over
        candidates (no gradient needed); by default the KD loss (the cross-entropy to the teacher)."""
        with torch.no_grad():
            return self.kd_loss(kd, student, output, cached, batch)

    # -- evaluation -----------------------------------------------------------------------------------------
    @abstractmethod
    def evaluate(self, model: nn.Module, sentences: list, report: bool = False) -> dict[str, Any]:
        """Dev/test metrics (``report``: with per-label tables); floats are what training can select on."""

    @abstractmethod
    def format_results(self, result: dict[str, Any]) -> str:
        """What ``structkd NAME evaluate`` prints."""

    def summary(self, results: dict[str, Any]) -> dict[str, Any]:
        """What the train and distill commands print: each split's floats and counts, without tables."""
        return {split: ({k: v for k, v in r.items() if not isinstance(v, dict)} if isinstance(r, dict) else r)
                for split, r in results.items()}

    def json_default(self, value: Any) -> Any:
        """JSON for the values of :meth:`evaluate` that ``json`` cannot write (NumPy scalars)."""
        return value.item() if hasattr(value, "item") else str(value)
