"""The training loop shared by the NER and parser pipelines: :class:`Trainer`.

One optimizer step per batch; evaluation, ``best/`` and ``last/`` checkpoints at every epoch end (and a
``last/`` checkpoint every ``checkpoint_every_steps``); resumable at the exact data position.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, default_collate
from tqdm.auto import tqdm

from .batching import (
    BatchCost,
    CostCollate,
    EpochBatchSampler,
    IndexedItems,
    MicroBatches,
    epoch_batches,
    move_to_device,
)
from .callbacks import StepContext, TrainerCallback, callback_table, check_callbacks
from .checkpoint import (
    CheckpointError,
    TrainProgress,
    get_rng_state,
    load_checkpoint,
    read_checkpoint_state,
    resolve_checkpoint,
    save_checkpoint,
)
from .config import TrainConfig, changed_settings
from .devices import resolve_device
from .distributed import running_under_accelerate
from .logs import JsonlLogger
from .optim import build_optimizer, build_scheduler
from .reporting import default_callbacks

__all__ = ["Trainer", "running_under_accelerate", "takes_step"]

logger = logging.getLogger("structkd.train")

LossFn = Callable[..., torch.Tensor]  # (model, batch) or (model, batch, step: StepContext)
EvaluateFn = Callable[[nn.Module, Any], dict[str, float]]


def takes_step(loss_fn: Callable[..., Any]) -> bool:
    """Whether ``loss_fn`` is called ``loss_fn(model, batch, step)``: its signature has a third positional
    parameter without a default (or ``*args``); otherwise it is called ``loss_fn(model, batch)``."""
    try:
        params = list(inspect.signature(loss_fn).parameters.values())
    except (TypeError, ValueError):  # no signature to read (some builtins): the two-argument form
        return False
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 3 and positional[2].default is inspect.Parameter.empty


def _make_accelerator(config: TrainConfig) -> Any:
    """An ``Accelerator`` for a launched run; on a machine without CUDA it runs multi-process on CPU (gloo)."""
    from accelerate import Accelerator

    mixed = None  # let ``accelerate launch`` decide
    if config.amp and torch.cuda.is_available():
        mixed = "bf16" if config.amp_dtype == "bfloat16" else "fp16"
    elif config.amp and config.amp_dtype == "bfloat16":  # CPU autocast supports bfloat16 only
        mixed = "bf16"
    return Accelerator(mixed_precision=mixed, cpu=not torch.cuda.is_available())


def check_resumable(output_dir: str | Path, config: TrainConfig, run_config: dict[str, Any] | None = None) -> bool:
    """Whether ``output_dir/last`` holds a checkpoint to resume (:meth:`Trainer.resume` does; a pipeline asks
    before its own setup work).

    Raises ``ValueError`` naming each setting that differs (:func:`changed_settings`) if the checkpoint was
    written under another ``config`` or, where both have one, another ``run_config``;
    :class:`~structkd.train.checkpoint.CheckpointError` naming the file if the checkpoint is incomplete or
    damaged, or has no RNG state (``rng.json``, without which the resumed run would not repeat the original)."""
    last = resolve_checkpoint(Path(output_dir) / "last")
    if last is None:
        return False
    saved = read_checkpoint_state(last)
    if not (last / "rng.json").is_file():
        raise CheckpointError(f"{last / 'rng.json'}: missing, so the random number generators cannot be restored "
                              f"and the resumed run would differ from an uninterrupted one; restore the file, or "
                              f"start over (--overwrite)")
    # the training settings under the name a pipeline's config gives them (its ``training`` section)
    changes = set(changed_settings(saved.get("config") or {}, config.to_dict(), prefix="training."))
    if run_config is not None and (saved.get("extra") or {}).get("run_config") is not None:
        changes |= set(changed_settings(saved["extra"]["run_config"], run_config))
    changes = sorted(changes)
    if changes:
        raise ValueError(f"{last}: this checkpoint was written with other settings ({'; '.join(changes)}); "
                         f"resuming would mix two runs: restore those settings, or start over in a new "
                         f"output_dir (or without resume)")
    return True


class _WrappedModelView:
    """What ``loss_fn`` receives in a distributed run: calls go through the wrapper (DistributedDataParallel
    records them to synchronize gradients), attributes come from the module it wraps."""

    def __init__(self, wrapper: nn.Module, module: nn.Module) -> None:
        self._wrapper, self._module = wrapper, module

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._wrapper(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)


class Trainer:
    """Train ``model`` with AdamW, a warmup + decay schedule, clipping, early stopping and checkpoints.

    Args:
        model: the module to train (on the caller's device, or moved to ``device`` / the accelerator's).
        config: a :class:`TrainConfig`.
        train_data: a map-style dataset (``len`` and ``__getitem__``); batches are
            ``collate_fn([train_data[i] for i in batch_indices])``.
        dev_data: anything ``evaluate_fn`` understands (or ``None``: no evaluation, no early stopping).
        loss_fn: ``loss_fn(model, batch) -> scalar tensor`` (the batch already on the device), or
            ``loss_fn(model, batch, step)`` when its third positional parameter has no default
            (:func:`takes_step`): ``step`` is the :class:`~structkd.train.callbacks.StepContext` of the step
            being computed (``step.global_step`` steps done so far, ``step.fraction`` of the run), what a
            KD-weight schedule such as teacher annealing reads.  In a distributed run ``model(...)`` goes
            through the DistributedDataParallel wrapper (which synchronizes the gradients) while any other
            attribute (``model.gold_loss``, ...) is the wrapped module's.
        evaluate_fn: ``evaluate_fn(model, dev_data) -> {name: value}`` including ``config.metric``; called
            under ``torch.no_grad()`` with the model in eval mode (the unwrapped model, on the main process
            only in a distributed run; the metrics are then broadcast to every process).
        collate_fn: builds a batch from a list of items (default: ``torch.utils.data.default_collate``).
        accelerator: an ``accelerate.Accelerator``; created automatically under ``accelerate launch``.
            It prepares the model, optimizer and data loaders; only its main process writes files.
        device: the device without an accelerator; default: ``config.device`` (``"auto"``: a model on an
            accelerator stays there, else the first CUDA device if there is one, else the CPU).
        lengths: the length of each training item (``len(train_data)`` of them), which
            ``config.group_by_length`` batches by and ``batch_cost`` reads; required with either.
        run_config: the whole run's settings (a pipeline's config as a JSON-able dict: data, model, KD), kept
            in every checkpoint: resuming under other settings is refused, as is resuming under another
            ``config`` (see :func:`changed_settings`).
        callbacks: :class:`~structkd.train.callbacks.TrainerCallback` instances, called after the built-in
            ones (:func:`~structkd.train.reporting.default_callbacks`: the console line per epoch, the learning
            curves, the trackers of ``config.report_to``) at each event they define.
        batch_cost: the cost of a batch from its items' lengths (:data:`~structkd.train.batching.BatchCost`);
            a batch costing more than ``config.max_batch_cost`` is computed in micro-batches accumulated into
            one step (:meth:`train_step`), which assumes ``loss_fn`` returns the mean over the batch's items.
            ``None``: batches are never split.

    ``config.output_dir`` receives ``config.json``, ``train_log.jsonl``, ``learning_curves.png``,
    ``last/`` (resume point) and ``best/`` (weights of the best evaluation).
    """

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig,
        train_data: Sequence[Any],
        dev_data: Any,
        loss_fn: LossFn,
        evaluate_fn: EvaluateFn | None,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        accelerator: Any | None = None,
        device: torch.device | str | None = None,
        lengths: Sequence[int] | None = None,
        run_config: dict[str, Any] | None = None,
        callbacks: Sequence[TrainerCallback] = (),
        batch_cost: BatchCost | None = None,
    ) -> None:
        self.config = config
        self.run_config = run_config
        self.train_data = train_data
        if lengths is not None and len(lengths) != len(train_data):
            raise ValueError(f"lengths has {len(lengths)} entries for {len(train_data)} training items")
        if config.group_by_length and lengths is None:
            raise ValueError("group_by_length needs the training items' lengths (Trainer(..., lengths=...))")
        if batch_cost is not None and lengths is None:
            raise ValueError("batch_cost needs the training items' lengths (Trainer(..., lengths=...))")
        self.lengths = list(lengths) if config.group_by_length else None
        self.batch_cost = batch_cost if config.max_batch_cost is not None else None
        self._item_lengths = list(lengths) if self.batch_cost is not None else None
        self.dev_data = dev_data
        self.loss_fn = loss_fn
        self._loss_takes_step = takes_step(loss_fn)
        self.callbacks = [*default_callbacks(config), *check_callbacks(callbacks)]
        self._hooks = callback_table(self.callbacks)
        self.evaluate_fn = evaluate_fn
        self.collate_fn = collate_fn
        if accelerator is None and running_under_accelerate():
            accelerator = _make_accelerator(config)
        self.accelerator = accelerator
        self.output_dir = Path(config.output_dir)
        self.log = JsonlLogger(self.output_dir / "train_log.jsonl")
        self.progress = TrainProgress()

        if accelerator is not None:
            self.device = accelerator.device
            self.num_processes = accelerator.num_processes
            self.process_index = accelerator.process_index
            self.is_main = accelerator.is_main_process
        else:
            self.device = (torch.device(device) if device is not None
                           else resolve_device(config.device, model, "training.device"))
            model = model.to(self.device)
            self.num_processes, self.process_index, self.is_main = 1, 0, True

        self.steps_per_epoch = self._steps_per_epoch()
        self.total_steps = self.steps_per_epoch * config.epochs
        optimizer = build_optimizer(model, config)
        self.scheduler = build_scheduler(optimizer, config, self.total_steps)
        self.autocast_dtype, self.scaler = self._setup_amp()
        if accelerator is not None:
            self.model, self.optimizer = accelerator.prepare(model, optimizer)
            wrapped = self.accelerator.unwrap_model(self.model)
            self._loss_view = self.model if wrapped is self.model else _WrappedModelView(self.model, wrapped)
        else:
            self.model, self.optimizer = model, optimizer
            self._loss_view = model

    # -- setup -----------------------------------------------------------------------------------------

    def _steps_per_epoch(self) -> int:
        cfg = self.config
        n_batches = len(epoch_batches(len(self.train_data), cfg.batch_size, cfg.seed, 0, False, cfg.drop_last))
        if n_batches == 0:
            raise ValueError("train_data yields no batch (empty dataset, or drop_last with too few items)")
        if self.num_processes == 1:
            return n_batches
        if cfg.drop_last:
            return n_batches // self.num_processes
        return math.ceil(n_batches / self.num_processes)

    def _setup_amp(self) -> tuple[torch.dtype | None, Any]:
        """Mixed precision without an accelerator: autocast dtype and a ``GradScaler`` (float16 only).

        bfloat16 (CUDA, or CPU with bfloat16 instructions) needs no loss scaling; float16 gets a
        ``GradScaler`` on the training device: the usual choice on CUDA, and on CPU the same code path (slow on
        most CPUs, where bfloat16 is the one to use, but it runs and is tested there).  Structured distributions
        are unaffected either way: their dynamic programs run in float32 or float64, which autocast leaves
        alone."""
        if not self.config.amp:
            return None, None
        if self.accelerator is not None:
            if self.accelerator.mixed_precision == "no":
                logger.info("amp=True but the Accelerator has mixed_precision='no': configure it there")
            return None, None
        if self.config.amp_dtype == "bfloat16":
            return torch.bfloat16, None
        if self.device.type == "cpu":
            logger.info("float16 autocast on CPU: correct but slow on most CPUs (amp_dtype: bfloat16 is faster)")
        return torch.float16, torch.amp.GradScaler(self.device.type)

    @property
    def unwrapped_model(self) -> nn.Module:
        """The bare module (without DDP or mixed-precision wrappers)."""
        if self.accelerator is not None:
            return self.accelerator.unwrap_model(self.model)
        return self.model

    def step_context(self) -> StepContext:
        """Where the run stands now (:class:`~structkd.train.callbacks.StepContext`)."""
        p = self.progress
        return StepContext(global_step=p.global_step, total_steps=self.total_steps, epoch=p.epoch,
                           epochs=self.config.epochs, step_in_epoch=p.step_in_epoch,
                           steps_per_epoch=self.steps_per_epoch)

    def _fire(self, event: str, *args: Any) -> None:
        """Call every callback handling ``event`` with ``(trainer, step_context, *args)``."""
        hooks = self._hooks[event]
        if hooks:
            step = self.step_context()
            for hook in hooks:
                hook(self, step, *args)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.accelerator is not None:
            return self.accelerator.autocast()
        if self.autocast_dtype is not None:
            return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)
        return contextlib.nullcontext()

    def _scaler_for_checkpoint(self) -> Any:
        if self.accelerator is not None:
            return getattr(self.accelerator, "scaler", None)
        return self.scaler

    # -- data ------------------------------------------------------------------------------------------

    def epoch_loader(self, epoch: int, skip: int = 0) -> Any:
        """The (per-process) data loader of ``epoch`` without its first ``skip`` optimizer steps."""
        cfg = self.config
        batches = epoch_batches(len(self.train_data), cfg.batch_size, cfg.seed, epoch, cfg.shuffle, cfg.drop_last,
                                self.lengths)
        if self.accelerator is None:
            batches = batches[skip:]
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)  # keeps the global RNG untouched
        data, collate = self.train_data, self.collate_fn
        if self.batch_cost is not None:  # batches above max_batch_cost come as micro-batches
            data = IndexedItems(self.train_data)
            collate = CostCollate(self.collate_fn or default_collate, self._item_lengths, self.batch_cost,
                                  cfg.max_batch_cost)
        loader = DataLoader(
            data,
            batch_sampler=EpochBatchSampler(batches, cfg.batch_size, cfg.drop_last),
            collate_fn=collate,
            num_workers=cfg.num_workers,
            generator=gen,
        )
        if self.accelerator is not None:
            loader = self.accelerator.prepare_data_loader(loader)
            if skip:
                loader = self.accelerator.skip_first_batches(loader, skip)
        return loader

    # -- steps -----------------------------------------------------------------------------------------

    def train_step(self, batch: Any) -> tuple[torch.Tensor, float | None]:
        """Forward, backward, clip, optimizer and scheduler step. Returns (detached loss, grad norm).

        :class:`~structkd.train.batching.MicroBatches` are computed part by part, each part's loss weighted by
        its share of the batch's items and its gradients accumulated (synchronized across processes at the
        last part only), then one step is taken."""
        self.model.train()
        parts = list(zip(batch.parts, batch.shares)) if isinstance(batch, MicroBatches) else [(batch, None)]
        total = None
        for k, (part, share) in enumerate(parts):
            last = k == len(parts) - 1
            syncing = last or self.accelerator is None
            with contextlib.nullcontext() if syncing else self.accelerator.no_sync(self.model):
                loss = self._backward(part, share)
            total = loss if total is None else total + loss
        grad_norm = None
        if self.config.max_grad_norm is not None:
            if self.accelerator is not None:
                norm = self.accelerator.clip_grad_norm_(self.model.parameters(), self.config.max_grad_norm)
            else:
                if self.scaler is not None:
                    self.scaler.unscale_(self.optimizer)
                norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.max_grad_norm)
            grad_norm = float(norm) if norm is not None else None
        skipped = False
        if self.scaler is not None:
            scale = self.scaler.get_scale()
            self.scaler.step(self.optimizer)  # skipped when the gradients overflowed
            self.scaler.update()
            skipped = self.scaler.get_scale() < scale
        else:
            self.optimizer.step()
        if not skipped:  # a skipped step leaves the schedule where it was
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return total.float(), grad_norm

    def _backward(self, batch: Any, share: float | None) -> torch.Tensor:
        """The loss of a batch (times ``share``, a micro-batch's share of its step) and its backward pass;
        returns the detached loss."""
        with self._autocast():
            if self._loss_takes_step:
                loss = self.loss_fn(self._loss_view, batch, self.step_context())
            else:
                loss = self.loss_fn(self._loss_view, batch)
        if loss.dim() != 0:
            raise ValueError(f"loss_fn must return a scalar tensor, got shape {tuple(loss.shape)}")
        if share is not None:
            loss = loss * share
        if self.accelerator is not None:
            self.accelerator.backward(loss)
        elif self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()
        return loss.detach()

    def evaluate(self) -> dict[str, float]:
        """Run ``evaluate_fn`` on the main process and share its metrics with every process."""
        metrics: dict[str, float] | None = None
        if self.is_main:
            model = self.unwrapped_model
            was_training = model.training
            model.eval()
            with torch.no_grad():
                metrics = {k: float(v) for k, v in self.evaluate_fn(model, self.dev_data).items()}
            model.train(was_training)
            if self.config.metric not in metrics:
                raise KeyError(f"evaluate_fn returned {sorted(metrics)} without config.metric "
                               f"{self.config.metric!r}")
        if self.accelerator is not None and self.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            metrics = broadcast_object_list([metrics])[0]
        return metrics

    def _improved(self, value: float) -> bool:
        best = self.progress.best_metric
        if best is None:
            return True
        return value < best if self.config.metric_mode == "min" else value > best

    # -- checkpoints -----------------------------------------------------------------------------------

    def save(self, name: str = "last") -> None:
        """Checkpoint model, optimizer, scheduler, scaler, RNG states and progress into ``output_dir/name``.

        Collective in a distributed run (the RNG states of every process are gathered); only the main
        process writes.
        """
        rng_states = [get_rng_state()]
        if self.accelerator is not None and self.num_processes > 1:
            from accelerate.utils import gather_object

            rng_states = gather_object([get_rng_state()])
        if self.is_main:
            self.progress.log_offset = self.log.offset()
            save_checkpoint(self.output_dir / name, self.unwrapped_model, self.optimizer, self.scheduler,
                            self._scaler_for_checkpoint(), self.progress, self.config, rng_states=rng_states,
                            extra={"run_config": self.run_config} if self.run_config is not None else None)
        self._barrier()

    def _save_best(self) -> None:
        if self.is_main:
            save_checkpoint(self.output_dir / "best", self.unwrapped_model, progress=self.progress,
                            config=self.config, save_rng=False)

    def resume(self) -> bool:
        """Load ``output_dir/last`` if it exists (restoring every state). Returns whether it did.

        Raises ``ValueError`` naming the settings that differ if the checkpoint was written under other
        training settings or another ``run_config`` (a run continued under new settings would be neither)."""
        if not check_resumable(self.output_dir, self.config, self.run_config):
            return False
        self._barrier()
        state = load_checkpoint(self.output_dir / "last", self.unwrapped_model, self.optimizer, self.scheduler,
                                self._scaler_for_checkpoint(), process_index=self.process_index)
        self.progress = state["progress"]
        if self.is_main:
            self.log.truncate(self.progress.log_offset)
        logger.info("resumed from %s at epoch %d, step %d (global step %d)", self.output_dir / "last",
                    self.progress.epoch, self.progress.step_in_epoch, self.progress.global_step)
        return True

    def _barrier(self) -> None:
        if self.accelerator is not None and self.num_processes > 1:
            self.accelerator.wait_for_everyone()

    def _seed(self) -> None:
        seed = self.config.seed + self.process_index
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)

    # -- the loop --------------------------------------------------------------------------------------

    def train(self, resume: bool = False) -> TrainProgress:
        """Run (or, with ``resume=True``, continue from ``output_dir/last``) until ``config.epochs`` or early
        stopping. Returns the final :class:`TrainProgress`.  Fires ``on_train_begin`` once the run's state is
        set up, and ``on_train_end`` when it returns or raises."""
        cfg = self.config
        if not (resume and self.resume()):
            self.progress = TrainProgress()
            self._seed()
            if self.is_main:
                self.output_dir.mkdir(parents=True, exist_ok=True)
                self.log.truncate(0)
        if self.is_main:
            cfg.to_json(self.output_dir / "config.json")
        self._fire("on_train_begin")
        try:
            self._run_epochs()
        finally:
            self._fire("on_train_end")
        self._barrier()
        return self.progress

    def _run_epochs(self) -> None:
        """Epochs until the last one or early stopping, each closed by an evaluation and a ``last/`` checkpoint."""
        p, cfg = self.progress, self.config
        start = time.perf_counter()
        running = torch.tensor(p.running_loss, device=self.device)
        while not (p.finished or p.stopped_early) and p.epoch < cfg.epochs:
            running = self._run_epoch(running, start)
            self._end_epoch()
            p.running_loss = float(running)
            self.save("last")

    def _run_epoch(self, running: torch.Tensor, start: float) -> torch.Tensor:
        """The optimizer steps left in the current epoch.  ``running`` is the sum of the losses since the last
        ``train`` record ([] on the device); the epoch's last steps get a record of their own, so every epoch
        logs its loss even when it is shorter than ``log_every``.  Returns the new (zero) sum."""
        p, cfg = self.progress, self.config
        loader = self.epoch_loader(p.epoch, skip=p.step_in_epoch)
        bar = tqdm(total=self.steps_per_epoch, initial=p.step_in_epoch, desc=f"epoch {p.epoch + 1}/{cfg.epochs}",
                   disable=not (cfg.progress and self.is_main), leave=False, dynamic_ncols=True)
        grad_norm = None
        for batch in loader:
            if self.accelerator is None:
                batch = move_to_device(batch, self.device)
            loss, grad_norm = self.train_step(batch)
            running = running + loss
            p.running_count += 1
            p.step_in_epoch += 1
            p.global_step += 1
            bar.update(1)
            self._fire("on_step_end", loss)
            if p.global_step % cfg.log_every == 0:
                running = self._log_train(running, grad_norm, start, bar)
            end_of_epoch = p.step_in_epoch >= self.steps_per_epoch
            if cfg.checkpoint_every_steps and p.global_step % cfg.checkpoint_every_steps == 0 and not end_of_epoch:
                p.running_loss = float(running)
                self.save("last")
        if p.running_count:
            running = self._log_train(running, grad_norm, start, bar)
        bar.close()
        return running

    def _log_train(self, running: torch.Tensor, grad_norm: float | None, start: float, bar: Any) -> torch.Tensor:
        """Write a ``train`` record (mean loss of the ``steps`` since the previous one) and fire ``on_log``."""
        p = self.progress
        mean = running / max(p.running_count, 1)
        if self.accelerator is not None and self.num_processes > 1:
            mean = self.accelerator.reduce(mean.reshape(1), reduction="mean")[0]
        loss = float(mean)
        record = {"type": "train", "epoch": p.epoch, "step": p.step_in_epoch, "global_step": p.global_step,
                  "loss": loss, "steps": p.running_count, "lr": self.scheduler.get_last_lr()[0],
                  "grad_norm": grad_norm, "time": time.perf_counter() - start}
        if self.is_main:
            self.log.write(record)
            bar.set_postfix(loss=f"{loss:.4f}")
        p.running_count = 0
        self._fire("on_log", record)
        return torch.zeros((), device=self.device)

    def _end_epoch(self) -> None:
        """Evaluate, keep ``best/``, update early stopping, log; fire ``on_evaluate`` (after an evaluation) and
        ``on_epoch_end`` (the console line, the curves); then move to the next epoch."""
        p, cfg = self.progress, self.config
        if self.evaluate_fn is not None and self.dev_data is not None:
            metrics = self.evaluate()
            value = metrics[cfg.metric]
            if self._improved(value):
                p.best_metric, p.best_epoch, p.bad_evals = value, p.epoch, 0
                self._save_best()
            else:
                p.bad_evals += 1
            record = {"epoch": p.epoch, "global_step": p.global_step, **metrics}
            p.history.append(record)
            p.stopped_early = cfg.patience is not None and p.bad_evals >= cfg.patience
            if self.is_main:
                self.log.write({"type": "eval", **record, "best_metric": p.best_metric, "best_epoch": p.best_epoch,
                                "lr": self.scheduler.get_last_lr()[0]})
            self._fire("on_evaluate", metrics)
        self._fire("on_epoch_end")
        if p.stopped_early:
            logger.info("early stopping after %d evaluations without improvement", p.bad_evals)
        p.epoch += 1
        p.step_in_epoch = 0
        p.finished = p.epoch >= cfg.epochs
