"""The one train / distill / evaluate / predict runner of every task (:class:`~structkd.tasks.base.Task`).

Everything the tasks share lives here once: the checks before any work (files, resume, the output directory,
the device), seeding, the saved config, the teacher cache (computed once, its segments shared by the processes
of a launched run), the mix of KD and gold losses (``kd_weight`` on labeled sentences, the KD loss alone on
unlabeled ones, annealed by the step context), the :class:`~structkd.train.Trainer`, and
:func:`~structkd.train.finish_run`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from structkd.data.lazy import enumerated
from structkd.data.splits import apply_slices
from structkd.kd.config import kd_weight
from structkd.tasks.base import Prepared, Task, TaskData
from structkd.tasks.online import Toolbox, teacher_rows
from structkd.train import (
    CacheCorruptError,
    CacheMismatchError,
    TeacherCache,
    Trainer,
    check_resumable,
    finish_run,
    is_main_process,
    prepare_output_dir,
    resolve_device,
    teacher_fingerprint,
    training_device,
)
from structkd.train.batching import BatchCost, map_in_pieces
from structkd.train.callbacks import StepContext

__all__ = ["train_command", "distill_command", "evaluate_command", "predict_command", "bound_commands", "cached_batch",
           "mix_losses"]


def _start(config: Any, run_config: dict, resume: bool, overwrite: bool, protect: tuple = ()) -> torch.device:
    """The checks every run makes before any work: files by key, a resumable checkpoint, an earlier run in
    ``output_dir`` (refused, or replaced with ``overwrite``: :func:`prepare_output_dir`), the device."""
    config.check_files()
    if resume:  # refused here, before any setup work, if output_dir/last was written under other settings
        check_resumable(config.training.output_dir, config.training, run_config)
    prepare_output_dir(config.training.output_dir, resume, overwrite, protect=protect)
    if config.training.threads:  # CPU threads of this process (its results repeat for one thread count)
        torch.set_num_threads(config.training.threads)
    return training_device(config.training.device)  # a device this machine lacks is refused before any work


def _without_unlabeled_for_no_kd(task: Task, kd: Any, data: TaskData) -> TaskData:
    """A ``kd.method=none`` baseline learns from gold alone: its unlabeled sentences are left out (they would
    only be stepped over with a zero loss, costing time and changing the batches)."""
    if kd.method != "none" or not data.unlabeled:
        return data
    if not data.train:
        raise ValueError("data.train is required: kd.method=none learns from gold labels alone")
    task.logger.warning("kd.method=none learns from gold labels alone: data.unlabeled (%d sentences) is not used",
                        len(data.unlabeled))
    return TaskData(data.train, data.dev, data.test, [])


def _save_config(task: Task, config: Any) -> None:
    """The run's config in its output directory, once the data and the labels are checked."""
    out = Path(config.training.output_dir)
    if is_main_process():
        out.mkdir(parents=True, exist_ok=True)
        config.save(out / task.config_file)


def _evaluate_fn(task: Task):
    def evaluate(model: nn.Module, dev: list) -> dict[str, float]:
        return {k: v for k, v in task.evaluate(model, dev).items() if isinstance(v, float)}

    return evaluate


def _trainer(task: Task, config: Any, prepared: Prepared, data: TaskData, loss_fn, run_config: dict,
             device: torch.device) -> Trainer:
    model, items = prepared.model, prepared.items  # items may be read lazily (structkd.data.lazy): no list made
    cost = task.batch_cost(model) if config.training.max_batch_cost is not None else None
    lengths = task.lengths(items) if config.training.group_by_length or cost is not None else None
    return Trainer(model, config.training, enumerated(items), data.dev or None, loss_fn,
                   _evaluate_fn(task) if data.dev else None, collate_fn=lambda chunk: task.collate(chunk, model),
                   lengths=lengths, run_config=run_config, device=device, batch_cost=cost)


def _finish(task: Task, config: Any, prepared: Prepared, data: TaskData) -> dict:
    """Best weights back, the model saved with its raw-text tokenizer (``inference.json``: the default of
    :mod:`structkd.text`, which ``structkd.load`` and ``predict`` read and may override), dev and test evaluated,
    ``results.json`` written.  The parameter count leaves out what only a student's training uses (the hidden
    projection ``kd_hidden``, which its saved model does not hold either)."""
    from structkd.inference import set_tokenizer
    from structkd.text import default_tokenizer

    model = prepared.model
    aux = getattr(model, "kd_hidden", None)
    extra = {**prepared.extra, "parameters": sum(p.numel() for p in model.parameters())
             - (sum(p.numel() for p in aux.parameters()) if aux is not None else 0)}
    results = finish_run(model, config.training.output_dir, {"dev": data.dev, "test": data.test},
                         lambda m, sentences: task.evaluate(m, sentences, report=True), extra,
                         json_default=task.json_default)
    if results:  # the main process saved the model
        set_tokenizer(Path(config.training.output_dir) / "model", default_tokenizer(warn=False))
    return results


def train_command(task: Task, config: Any, resume: bool = False, overwrite: bool = False) -> dict:
    """Train a teacher or a baseline on gold labels; returns dev/test results.

    ``resume`` continues the run in ``training.output_dir``, ``overwrite`` replaces an earlier one there; without
    either such a directory is refused before any work (:func:`structkd.train.prepare_output_dir`).
    """
    config = task.resolve_config(config)
    run_config = config.to_dict()
    device = _start(config, run_config, resume, overwrite)
    data = apply_slices(task.read_data(config.data), config.data.slices)
    if not data.train:
        raise ValueError("data.train is required")
    if data.unlabeled:
        task.logger.warning("data.unlabeled (%d sentences) is for distill: training on gold labels ignores it",
                            len(data.unlabeled))
    torch.manual_seed(config.training.seed)
    prepared = task.prepare_training(config, data)
    _save_config(task, config)

    def loss_fn(model: nn.Module, batch: Any) -> torch.Tensor:
        return task.gold_loss(model, model(batch.sentences), batch).mean()

    _trainer(task, config, prepared, data, loss_fn, run_config, device).train(resume=resume)
    return _finish(task, config, prepared, data)


def cached_batch(task: Task, cache: TeacherCache, fields: list[str], batch: Any, device: torch.device
                 ) -> dict[str, torch.Tensor]:
    """The batch's cached teacher outputs, padded to the task's shapes (:meth:`Task.cached_shapes`): the
    method's ``fields``, or what a cache in a compact form (:meth:`Task.cache_form`) holds instead of them,
    with its fields stored once (unpadded)."""
    shapes = task.cached_shapes(batch)
    compact = cache.fingerprint["options"].get("cache_form", "marginals") != "marginals"
    out = {}
    for name in cache.fields if compact else fields:
        shape, pad = shapes[name]
        out[name] = cache.batch(batch.indices, name, shape, pad_value=pad).to(device)
    for name in cache.shared_fields if compact else ():
        out[name] = cache.shared(name).to(device)
    return out


def mix_losses(distill: torch.Tensor, gold: torch.Tensor, labeled: torch.Tensor, weight: float) -> torch.Tensor:
    """Per-sentence training loss ``[batch_size]``: ``weight * KD + (1 - weight) * gold`` on labeled
    sentences, the KD loss alone on the others."""
    return torch.where(labeled, weight * distill + (1 - weight) * gold, distill)


def teachers_id(kd: Any) -> str:
    """The identity of the run's teachers: one teacher's :func:`teacher_fingerprint`, or each teacher's with its
    mixture weight (``kd.teachers``)."""
    dirs = kd.teacher_dirs
    if len(dirs) == 1:
        return teacher_fingerprint(dirs[0])
    return "mixture:" + ",".join(f"{teacher_fingerprint(d)}*{w:.17g}" for d, w in zip(dirs, kd.mixture_weights))


def build_teacher_cache(task: Task, teacher: nn.Module | list[nn.Module] | Any, config: Any, sentences: Sequence,
                        student: nn.Module, rebuild: bool = False) -> TeacherCache | None:
    """Compute (or reuse, or resume) the teacher's outputs over the student's distillation sentences: of the
    mixture of ``teacher`` when it is a list of several (``kd.teachers``), or read from the file of a black-box
    teacher (``kd.teacher_outputs``: ``teacher`` is its :class:`~structkd.tasks.blackbox.TeacherOutputs`, known
    by the file's SHA-256); none when the targets are computed online (``kd.temperature_schedule: anneal``,
    :mod:`structkd.tasks.online`).  Stored in the form :meth:`Task.cache_form` picks (the smaller of the
    teacher's marginals and its potentials).  Every process of a launched run calls it: each computes its share
    of the cache's segments (:meth:`TeacherCache.build`)."""
    kd = config.kd
    if kd.method == "none" or kd.temperature_schedule == "anneal":
        return None
    directory = Path(kd.cache_dir or Path(config.training.output_dir) / "teacher_cache")
    form = task.cache_form(config, student, teacher)
    options = {"method": kd.method, "temperature": kd.temperature, "mode": kd.temperature_mode,
               "top_k": kd.top_k, **task.cache_options(config, student), "cache_form": form}
    common = {"tokens": (task.words(s) for s in sentences), "batch_size": 32, "collate_fn": list,
              "rebuild": rebuild, "progress": config.training.progress,
              "shared_fields": sorted(task.SHARED_CACHE_FIELDS) if form != "marginals" else ()}
    if kd.teacher_outputs:  # a black-box teacher (TeacherOutputs): its rows from the file, by sentence index
        rows = task.rows_from_outputs if form == "marginals" else task.cache_rows
        return TeacherCache.build(directory, range(len(sentences)), lambda chunk: rows(teacher, chunk, config, student),
                                  teacher_id=teacher.identity, options={**options, "teacher_outputs": teacher.kind},
                                  **common)
    teachers = list(teacher) if isinstance(teacher, (list, tuple)) else [teacher]
    if len(teachers) > 1:
        options["teacher_weights"] = kd.mixture_weights
    earlier = _marginals_cache(task, directory, sentences, teachers_id(kd), options) if not rebuild else None
    if earlier is not None:
        return earlier
    for t in teachers:
        t.eval()
    if form == "marginals":
        def rows(chunk: list) -> list[dict]:
            return teacher_rows(task, teachers, kd.mixture_weights, chunk, config, student)
    else:
        def rows(chunk: list) -> list[dict]:
            return task.cache_rows(teachers[0], chunk, config, student)
    cost, budget = _teachers_cost(task, teachers), config.training.max_batch_cost
    compute = rows
    if cost is not None and budget is not None:
        def compute(chunk: list) -> list[dict]:  # a costly teacher's chunk of long sentences in pieces, row by row
            return map_in_pieces(chunk, [task.length(s) for s in chunk], cost, budget, rows)
    return TeacherCache.build(directory, sentences, compute, teacher_id=teachers_id(kd), options=options, **common)


def _teachers_cost(task: Task, teachers: Sequence[nn.Module]) -> BatchCost | None:
    """The batch cost of the costliest teacher (:meth:`Task.batch_cost`), or ``None`` when none has one."""
    costs = [cost for cost in (task.batch_cost(t) for t in teachers) if cost is not None]
    if len(costs) <= 1:
        return costs[0] if costs else None
    return lambda lengths: max(cost(lengths) for cost in costs)


def _marginals_cache(task: Task, directory: Path, sentences: Sequence, teacher_id: str, options: dict
                     ) -> TeacherCache | None:
    """A complete cache at ``directory`` of the same sentences, teacher and options in the marginals form, where
    the task would now pick a compact one: still exact, so it is read as it is (the loss reads either form)
    rather than refused; ``None`` when there is none."""
    if options["cache_form"] == "marginals":
        return None
    try:  # the stored form first (no pass over the sentences unless it is the marginals form)
        if TeacherCache.load(directory).fingerprint["options"].get("cache_form", "marginals") != "marginals":
            return None
        return TeacherCache.load(directory, tokens=(task.words(s) for s in sentences), teacher_id=teacher_id,
                                 options={**options, "cache_form": "marginals"})
    except (CacheMismatchError, CacheCorruptError, FileNotFoundError):
        return None


def _distill_loss(task: Task, kd: Any, cache: TeacherCache | None, fields: list[str], toolbox: Toolbox | None = None):
    """``loss_fn(model, batch, step)`` of a distillation run: the KD weight follows the step context; the
    ``toolbox`` adds the online options' targets and terms (:mod:`structkd.tasks.online`)."""

    def loss_fn(model: nn.Module, batch: Any, step: StepContext) -> torch.Tensor:
        output, mine, theirs = toolbox.forward(model, batch) if toolbox else (model(batch.sentences), None, None)
        gold = task.gold_loss(model, output, batch)
        if toolbox is not None and toolbox.online_targets:
            distill = toolbox.kd_loss(model, output, batch, step, theirs)
        elif cache is not None:
            distill = task.kd_loss(kd, model, output, cached_batch(task, cache, fields, batch, gold.device), batch)
        else:
            distill = None
        loss = gold.mean() if distill is None else mix_losses(
            distill, gold, task.labeled(batch, gold.device), kd_weight(kd, step.global_step, step.total_steps)).mean()
        return loss if toolbox is None else loss + toolbox.extra_loss(model, batch, step, mine, theirs)

    return loss_fn


def distill_command(task: Task, config: Any, resume: bool = False, rebuild_cache: bool = False,
                    overwrite: bool = False) -> dict:
    """Distill a saved teacher (``kd.teacher``) into a new student; returns the student's dev/test results.

    ``resume``, ``overwrite``: as in :func:`train_command` (``overwrite`` leaves the teacher and a
    ``kd.cache_dir`` alone); ``rebuild_cache`` recomputes the teacher's outputs.
    """
    config = task.resolve_config(config)
    kd = config.kd
    if kd.teacher_outputs:
        return _distill_from_outputs(task, config, resume, rebuild_cache, overwrite)
    if not kd.teacher_dirs:
        raise ValueError("kd.teacher (the directory of a trained teacher), kd.teachers or kd.teacher_outputs (a "
                         "file of a teacher's outputs) is required for distillation")
    config.check_files()  # before the teacher's weights are read
    _check_teacher_dirs(kd)
    # the run's settings, kept in its checkpoints, with the teachers by their weights (their directories may move)
    run_config = {**config.to_dict(), "teacher_weights": teachers_id(kd)}
    device = _start(config, run_config, resume, overwrite, protect=(*kd.teacher_dirs, kd.cache_dir))
    data = apply_slices(task.read_data(config.data), config.data.slices)
    if not data.train and not data.unlabeled:
        raise ValueError("distillation needs data.train or data.unlabeled sentences")
    data = _without_unlabeled_for_no_kd(task, kd, data)
    teachers = [task.load_model(d) for d in kd.teacher_dirs]
    torch.manual_seed(config.training.seed)
    prepared = task.prepare_student(config, data, teachers[0])
    _save_config(task, config)
    if kd.method != "none" or kd.online:  # the teacher's outputs are computed on the run's device
        teachers = [t.to(device) for t in teachers]
    # computed once, each process of a launched run its share of the segments; every process then reads it all
    cache = build_teacher_cache(task, teachers, config, prepared.items, prepared.model, rebuild=rebuild_cache)
    fields = task.teacher_fields(config, prepared.model)
    toolbox = Toolbox(task, config, teachers, prepared.model, prepared.items, fields) if kd.online else None
    del teachers
    loss_fn = _distill_loss(task, kd, cache, fields, toolbox)
    _trainer(task, config, prepared, data, loss_fn, run_config, device).train(resume=resume)
    return _finish(task, config, prepared, data)


def _distill_from_outputs(task: Task, config: Any, resume: bool, rebuild_cache: bool, overwrite: bool) -> dict:
    """:func:`distill_command` for a black-box teacher (``kd.teacher_outputs``, docs/teachers.md): its file is
    read and checked against the sentences, the student's labels and ``kd.method`` before any training, and the
    teacher cache is built from it."""
    from structkd.tasks.blackbox import file_sha256

    kd = config.kd
    config.check_files()
    run_config = {**config.to_dict(), "teacher_weights": f"outputs:{file_sha256(kd.teacher_outputs)}"}
    device = _start(config, run_config, resume, overwrite, protect=(kd.teacher_outputs, kd.cache_dir))
    data = task.read_data(config.data)
    if not data.train and not data.unlabeled:
        raise ValueError("distillation needs data.train or data.unlabeled sentences")
    torch.manual_seed(config.training.seed)
    prepared, outputs = task.prepare_from_outputs(config, data)
    _save_config(task, config)
    # computed once, each process of a launched run its share of the segments; every process then reads it all
    cache = build_teacher_cache(task, outputs, config, prepared.items, prepared.model, rebuild=rebuild_cache)
    loss_fn = _distill_loss(task, kd, cache, task.teacher_fields(config, prepared.model))
    _trainer(task, config, prepared, data, loss_fn, run_config, device).train(resume=resume)
    return _finish(task, config, prepared, data)


def _check_teacher_dirs(kd: Any) -> None:
    """Every ``kd.teachers`` entry is a saved model's directory, refused by key and position before any work."""
    for n, directory in enumerate(kd.teachers):
        if not (Path(directory) / "config.json").is_file():
            raise FileNotFoundError(f"kd.teachers[{n}]: {directory} holds no saved model (no config.json): each "
                                    f"entry must be a directory written by a train command")


def evaluate_command(task: Task, model_dir: str, data_path: str, data_config: Any, device: str = "auto") -> dict:
    """Metrics and per-label tables of a saved model on a labeled file, run on ``device`` (``auto``: the first
    CUDA device if there is one, else the CPU)."""
    model = task.load_model(model_dir, device=resolve_device(device, what="--device"))
    result = task.evaluate(model, task.read_evaluation(data_path, data_config, model, model_dir), report=True)
    result["parameters"] = sum(p.numel() for p in model.parameters())
    return result


def predict_command(task: Task, model_dir: str, input_path: str, output_path: str, data_config: Any,
                    device: str = "auto", fmt: str | None = None, max_words: int | None = None,
                    tokenizer: str | None = None, pretokenized: bool = False, chunk_size: int = 256,
                    progress: bool = False) -> int:
    """Predict a file (or ``-``, standard input) with a saved model on ``device`` (as in
    :func:`evaluate_command`) and write ``fmt`` (default: the task's own format) to ``output_path`` (or ``-``),
    streaming ``chunk_size`` sentences at a time (:func:`structkd.tasks.predicting.predict_file`); returns the
    number of inputs.  The output path is checked before any work.

    Args:
        max_words: the longest sentence read whole (default: the task's); a tagger reads longer inputs in
            pieces, a parser refuses them by line.
        tokenizer: overrides the model's saved tokenizer (:mod:`structkd.text`) for raw text.
        pretokenized: raw text lines are split on whitespace instead of tokenized.
    """
    from structkd.inference import saved_tokenizer
    from structkd.tasks.predicting import check_output, predict_file
    from structkd.text import check_tokenizer, default_tokenizer

    check_output(output_path)
    if input_path != "-" and not Path(input_path).is_file():
        raise FileNotFoundError(f"{input_path}: no such file")
    chosen = check_tokenizer(tokenizer) if tokenizer else saved_tokenizer(model_dir) or default_tokenizer()
    model = task.load_model(model_dir, device=resolve_device(device, what="--device"))
    limit = max_words if max_words is not None else task.default_max_words
    predictor = task.predictor(model, chosen, limit)
    data_config = task.output_config(data_config, input_path)
    return predict_file(task, model, input_path, output_path, data_config, fmt=fmt or task.native_format,
                        predictor=predictor, pretokenized=pretokenized, chunk_size=chunk_size, progress=progress,
                        max_words=limit)


def bound_commands(task: Task) -> tuple:
    """``(train_command, distill_command, evaluate_command, predict_command)`` with ``task`` bound: what a
    task's module exports (``structkd.ner.train_command(config)``)."""
    commands = []
    for command in (train_command, distill_command, evaluate_command, predict_command):
        bound = functools.partial(command, task)
        bound.__name__, bound.__module__ = command.__name__, command.__module__
        bound.__doc__ = f"{command.__doc__.splitlines()[0]} (the {task.name} task: :func:`{command.__module__}." \
                        f"{command.__name__}` with it bound)"
        commands.append(bound)
    return tuple(commands)

