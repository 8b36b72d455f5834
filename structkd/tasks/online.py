"""The KD toolbox options that need the teacher during training (``docs/kd.md``), for every task.

The plain methods read the teacher's outputs from the cache (:func:`structkd.tasks.runner.build_teacher_cache`).
The options here run the teacher (or teachers) on the batch instead, in eval mode and without gradient:

* ``kd.temperature_schedule: anneal``: the targets at the temperature of the step (:func:`kd_temperature`),
  computed as the cache would (:meth:`Task.teacher_outputs`), so every method anneals exactly;
* ``kd.hidden_weight``: student hidden states through a learned projection (``student.kd_hidden``, a
  :class:`~structkd.kd.HiddenStateKD`: trained and checkpointed with the student, not saved with its model)
  against the teacher's;
* ``kd.attention_weight``: the teacher's attention distributions;
* ``kd.mixup_weight``: structural KD on mixed input embeddings (:meth:`Task.forward_mixed`);
* ``kd.augment: adversarial``: word-replacement candidates, the one where teacher and student diverge most.

Random draws (mixing weights, partners, replacements) come from ``numpy`` generators seeded by
``(training.seed, global step)``, so a resumed run draws what the uninterrupted one did.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from structkd.kd.config import KdConfig, kd_temperature, parse_layer_pairs
from structkd.kd.mixup import sample_mixup
from structkd.kd.representation import HiddenStateKD, attention_kd_loss, attention_layer_map, hidden_layer_map
from structkd.tasks.base import Task
from structkd.train.callbacks import StepContext

Tensor = torch.Tensor

__all__ = ["Toolbox", "config_at", "pad_rows", "teacher_rows"]

STUDENT_SIDE = ("hidden_weight", "attention_weight", "mixup_weight", "augment_weight")


def config_at(config: Any, temperature: float) -> Any:
    """A shallow copy of a task config whose ``kd.temperature`` is ``temperature`` (nothing else revalidated)."""
    out = copy.copy(config)
    out.kd = dataclasses.replace(config.kd, temperature=temperature)
    return out


def teacher_rows(task: Task, teachers: Sequence[nn.Module], weights: Sequence[float], sentences: Sequence,
                 config: Any, student: nn.Module, outputs: Sequence[Any] | None = None) -> list[dict[str, Tensor]]:
    """The cached fields of ``sentences`` (:meth:`Task.teacher_outputs`, or :meth:`Task.teacher_outputs_of` the
    teachers' ``outputs`` on them), of the teachers' mixture when there are several
    (:meth:`Task.mix_teacher_outputs`)."""
    with torch.no_grad():
        if outputs is None:
            per = [task.teacher_outputs(t, sentences, config, student) for t in teachers]
        else:
            per = [task.teacher_outputs_of(t, o, sentences, config, student) for t, o in zip(teachers, outputs)]
    return per[0] if len(per) == 1 else task.mix_teacher_outputs(config, per, weights)


def pad_rows(rows: Sequence[dict[str, Tensor]], fields: Sequence[str], shapes: dict, device: torch.device
             ) -> dict[str, Tensor]:
    """Per-sentence fields padded as :meth:`TeacherCache.batch` pads them (``shapes``: :meth:`Task.cached_shapes`):
    ``[len(rows), *shape]`` float32 with each sentence's tensor in the leading corner."""
    out = {}
    for name in fields:
        shape, pad = shapes[name]
        tensors = [row[name] for row in rows]
        ndim = tensors[0].dim()
        shape = [None] * ndim if shape is None else shape
        target = [s if s is not None else max(t.shape[d] for t in tensors) for d, s in enumerate(shape)]
        padded = torch.full((len(rows), *target), float(pad), dtype=torch.float32, device=device)
        for b, t in enumerate(tensors):
            padded[(b, *(slice(0, x) for x in t.shape))] = t.to(device, torch.float32)
        out[name] = padded
    return out


def _rng(seed: int, step: StepContext, salt: int) -> np.random.Generator:
    return np.random.default_rng([seed, step.global_step, salt])


class Toolbox:
    """The online teacher(s) and the toolbox's loss terms of one distillation run.

    Args:
        task: the task.
        config: the run's config (its ``kd`` section holds the options).
        teachers: the loaded teachers, on the run's device.
        student: the fresh student (``student.kd_hidden`` is attached here for ``kd.hidden_weight``).
        sentences: the distillation sentences (a probe for the models' shapes; the replacement vocabulary).
        fields: the cached fields of the method (:meth:`Task.teacher_fields`).
    """

    def __init__(self, task: Task, config: Any, teachers: Sequence[nn.Module], student: nn.Module,
                 sentences: Sequence, fields: Sequence[str]):
        self.task, self.config, self.kd = task, config, config.kd
        self.teachers = [t.eval().requires_grad_(False) for t in teachers]
        self.weights = self.kd.mixture_weights
        self.student, self.fields, self.seed = student, list(fields), config.training.seed
        self.vocabulary = sorted({w for s in sentences for w in task.words(s)})
        self._check(sentences)
        self.attention_map: list[tuple[int, int]] = []
        if self.kd.hidden_weight > 0 or self.kd.attention_weight > 0:
            self._setup_states(sentences[:1])

    # -- setup ----------------------------------------------------------------------------------------------
    def _check(self, sentences: Sequence) -> None:
        kd = self.kd
        if len(self.teachers) > 1 and (kd.hidden_weight > 0 or kd.attention_weight > 0):
            raise ValueError("kd.hidden_weight and kd.attention_weight match one teacher's states: use kd.teacher, "
                             "not kd.teachers")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and any(getattr(kd, n) > 0 for n in STUDENT_SIDE):
            raise ValueError(f"kd.{', kd.'.join(STUDENT_SIDE)} run the student outside its distributed wrapper, "
                             f"whose gradients would not be synchronized: run them in one process")
        if (kd.mixup_weight > 0 or self.augments) and "gold_rels" in self.fields:
            raise ValueError("kd.mixup_weight and kd.augment distil on sentences without gold trees: "
                             "kd.relations=gold cannot apply (use kd.relations=marginal)")
        if (kd.mixup_weight > 0 or self.augments) and kd.method == "none":
            raise ValueError("kd.mixup_weight and kd.augment add a KD loss on new inputs: set a kd.method")
        if not sentences:
            raise ValueError("the toolbox needs distillation sentences")

    @property
    def augments(self) -> bool:
        return self.kd.augment != "none" and self.kd.augment_weight > 0

    @property
    def online_targets(self) -> bool:
        """Whether the KD targets of the batch come from the teacher online (``anneal``) instead of the cache."""
        return self.kd.temperature_schedule == "anneal" and self.kd.method != "none"

    @property
    def needs_states(self) -> bool:
        return self.kd.hidden_weight > 0 or self.kd.attention_weight > 0

    def _setup_states(self, probe: Sequence) -> None:
        """Check the models on one sentence; build the hidden projection; map the attention layers."""
        attentions = self.kd.attention_weight > 0
        with torch.no_grad():
            _, mine = self.task.encode_states(self.student, probe, attentions)
            _, theirs = self.task.encode_states(self.teachers[0], probe, attentions)
        if self.kd.hidden_weight > 0:
            pairs = hidden_layer_map(parse_layer_pairs(self.kd.hidden_layers), len(mine.hidden_states),
                                     len(theirs.hidden_states))
            projection = HiddenStateKD(mine.hidden_states[0].shape[-1], theirs.hidden_states[0].shape[-1], pairs)
            self.student.kd_hidden = projection.to(next(self.student.parameters()).device)
        if attentions:
            if mine.attentions is None or theirs.attentions is None:
                who = "student" if mine.attentions is None else "teacher"
                raise ValueError(f"kd.attention_weight matches attention distributions: the {who} is not a "
                                 f"transformer (model.kind=transformer)")
            if mine.attention_mask.shape != theirs.attention_mask.shape or not bool(
                    (mine.attention_mask.cpu() == theirs.attention_mask.cpu()).all()):
                raise ValueError("kd.attention_weight compares subword attentions position by position: student "
                                 "and teacher need the same tokenizer and window length")
            self.attention_map = attention_layer_map(len(mine.attentions), len(theirs.attentions))

    # -- per batch ------------------------------------------------------------------------------------------
    def forward(self, model: nn.Module, batch: Any) -> tuple[Any, Any, Any]:
        """``(student output, student encoder output or None, teacher (output, encoder output) or None)``."""
        if not self.needs_states:
            return model(batch.sentences), None, None
        attentions = self.kd.attention_weight > 0
        output, mine = self.task.encode_states(model, batch.sentences, attentions)
        with torch.no_grad():
            theirs = self.task.encode_states(self.teachers[0], batch.sentences, attentions)
        return output, mine, theirs

    def config_at(self, step: StepContext) -> Any:
        return config_at(self.config, kd_temperature(self.kd, step.fraction))

    def kd_loss(self, model: nn.Module, output: Any, batch: Any, step: StepContext, teacher: Any = None) -> Tensor:
        """Per-sentence KD loss ``[batch_size]`` to the teachers' outputs on the batch at the step's temperature
        (``teacher``: the teacher's ``(output, encoded)`` already computed on it)."""
        config = self.config_at(step)
        outputs = [teacher[0]] if teacher is not None else None
        rows = teacher_rows(self.task, self.teachers, self.weights, batch.sentences, config, self.student, outputs)
        targets = pad_rows(rows, self.fields, self.task.cached_shapes(batch), _device(output))
        return self.task.kd_loss(config.kd, model, output, targets, batch)

    def extra_loss(self, model: nn.Module, batch: Any, step: StepContext, mine: Any, theirs: Any) -> Tensor:
        """The weighted hidden-state, attention, mixup and adversarial terms (batch means), a scalar."""
        kd, total = self.kd, 0.0
        if kd.hidden_weight > 0:
            per = model.kd_hidden(mine.hidden_states, theirs[1].hidden_states, mine.word_mask)
            total = total + kd.hidden_weight * per.mean()
        if kd.attention_weight > 0:
            per = attention_kd_loss(mine.attentions, theirs[1].attentions, mine.attention_mask.bool(),
                                    self.attention_map)
            total = total + kd.attention_weight * per.mean()
        if kd.mixup_weight > 0:
            total = total + kd.mixup_weight * self.mixup_loss(model, batch, step).mean()
        if self.augments:
            total = total + kd.augment_weight * self.adversarial_loss(model, batch, step).mean()
        return torch.as_tensor(total)

    def mixup_loss(self, model: nn.Module, batch: Any, step: StepContext) -> Tensor:
        """Per-mixed-sentence structural KD (or the run's method) to the teachers' distribution on the same mixed
        input: sentence ``b`` with ``perm[b]``, weights ``lam ~ Beta(alpha, alpha)``."""
        sentences = batch.sentences
        lam, perm = sample_mixup(len(sentences), self.kd.mixup_alpha, _rng(self.seed, step, 1))
        output = self.task.forward_mixed(model, sentences, perm, lam)
        stand_ins = [self._longer(sentences[b], sentences[p]) for b, p in enumerate(perm.tolist())]
        config = self.config_at(step)
        with torch.no_grad():
            outputs = [self.task.forward_mixed(t, sentences, perm, lam) for t in self.teachers]
        rows = teacher_rows(self.task, self.teachers, self.weights, stand_ins, config, self.student, outputs)
        mixed = self.task.collate(list(enumerate(stand_ins)), self.student)
        targets = pad_rows(rows, self.fields, self.task.cached_shapes(mixed), _device(output))
        return self.task.kd_loss(config.kd, model, output, targets, mixed)

    def _longer(self, a: Any, b: Any) -> Any:
        """The stand-in of a mixed sentence: the longer sentence's words, no gold (its words are never read)."""
        longer = a if len(self.task.words(a)) >= len(self.task.words(b)) else b
        return self.task.with_words(longer, self.task.words(longer))

    def perturb(self, sentence: Any, rng: np.random.Generator) -> Any:
        """The sentence with each word replaced, at ``kd.augment_rate``, by a uniformly drawn word of the
        distillation vocabulary (at least one word replaced), without gold."""
        words = list(self.task.words(sentence))
        if not words:
            return self.task.with_words(sentence, words)
        chosen = rng.random(len(words)) < self.kd.augment_rate
        if not chosen.any():
            chosen[rng.integers(len(words))] = True
        draws = rng.integers(len(self.vocabulary), size=len(words))
        return self.task.with_words(sentence, [self.vocabulary[d] if c else w
                                               for w, c, d in zip(words, chosen, draws)])

    def adversarial_loss(self, model: nn.Module, batch: Any, step: StepContext) -> Tensor:
        """KD loss ``[batch_size]`` on each sentence's candidate (of ``kd.augment_candidates``) where
        :meth:`Task.kd_divergence` between teacher and student is largest."""
        rng = _rng(self.seed, step, 2)
        size, count = len(batch.sentences), self.kd.augment_candidates
        flat = [self.perturb(s, rng) for _ in range(count) for s in batch.sentences]
        config = self.config_at(step)
        rows = teacher_rows(self.task, self.teachers, self.weights, flat, config, self.student)
        best = self._most_divergent(model, flat, rows, config.kd).view(count, size).argmax(0).tolist()
        chosen = [flat[k * size + b] for b, k in enumerate(best)]
        chosen_batch = self.task.collate(list(enumerate(chosen)), self.student)
        output = model(chosen)
        targets = pad_rows([rows[k * size + b] for b, k in enumerate(best)], self.fields,
                           self.task.cached_shapes(chosen_batch), _device(output))
        return self.task.kd_loss(config.kd, model, output, targets, chosen_batch)

    def _most_divergent(self, model: nn.Module, flat: list, rows: list[dict], kd: KdConfig) -> Tensor:
        """:meth:`Task.kd_divergence` of every candidate, with the student in eval mode (no dropout)."""
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                batch = self.task.collate(list(enumerate(flat)), self.student)
                output = model(flat)
                targets = pad_rows(rows, self.fields, self.task.cached_shapes(batch), _device(output))
                return self.task.kd_divergence(kd, model, output, targets, batch).float().cpu()
        finally:
            model.train(was_training)


def _device(output: Any) -> torch.device:
    """The device of a model's output (a distribution, or a parser output holding one)."""
    dist = getattr(output, "dist", output)
    return dist.device
