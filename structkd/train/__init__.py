"""Training engine shared by the NER and parser pipelines.

- :class:`TrainConfig`, :func:`load_config` (YAML + ``key=value`` overrides); :func:`resolve_device` for its
  ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``)
- :class:`Trainer`: AdamW, warmup + decay schedules, clipping, early stopping, batches grouped by length,
  JSONL logs, learning curves, atomic resumable checkpoints, Accelerate (multi-process / multi-GPU) and mixed
  precision on CUDA
- :class:`TrainerCallback` and :class:`StepContext`: the trainer's events (a ``loss_fn(model, batch, step)``
  gets the step context too); built in: :class:`ConsoleReport` (one line per epoch), :class:`LearningCurves`,
  :class:`ExperimentTrackers` (``report_to``: TensorBoard, W&B, MLflow through Accelerate's trackers)
- :func:`save_checkpoint` / :func:`load_checkpoint`: pickle-free checkpoints (safetensors + JSON)
- :class:`TeacherCache`: a teacher's per-sentence outputs computed once, stored as float16 memory maps
- :func:`main_process_first`, :func:`is_main_process`: process roles around the loop in a launched run
- :func:`prepare_output_dir`: a new run refuses an output_dir holding an earlier one (unless resume/overwrite)
"""

from .batching import EpochBatchSampler, epoch_batches, move_to_device
from .cache import CacheCorruptError, CacheMismatchError, TeacherCache, cache_fingerprint, teacher_fingerprint
from .callbacks import EVENTS, StepContext, TrainerCallback
from .checkpoint import (
    CheckpointError,
    TrainProgress,
    get_rng_state,
    load_checkpoint,
    read_checkpoint_state,
    save_checkpoint,
    set_rng_state,
)
from .config import RESUME_FREE, TrainConfig, changed_settings, load_config, parse_overrides
from .devices import DEVICES, check_device_name, resolve_device, training_device
from .distributed import is_main_process, main_process_first, running_under_accelerate, wait_for_everyone
from .engine import Trainer, check_resumable, takes_step
from .finish import finish_run
from .logs import JsonlLogger, epoch_mean_loss, learning_curve_series, plot_learning_curves, read_jsonl
from .optim import WarmupDecay, build_optimizer, build_scheduler, fusable, param_groups
from .reporting import ConsoleReport, LearningCurves, default_callbacks, epoch_line
from .rundir import RunDirectoryError, prepare_output_dir
from .tracking import TRACKERS, ExperimentTrackers, check_report_to

__all__ = [
    "CacheCorruptError",
    "CacheMismatchError",
    "CheckpointError",
    "ConsoleReport",
    "DEVICES",
    "EVENTS",
    "EpochBatchSampler",
    "ExperimentTrackers",
    "JsonlLogger",
    "LearningCurves",
    "RESUME_FREE",
    "RunDirectoryError",
    "StepContext",
    "TRACKERS",
    "TeacherCache",
    "TrainConfig",
    "TrainProgress",
    "Trainer",
    "TrainerCallback",
    "WarmupDecay",
    "build_optimizer",
    "fusable",
    "build_scheduler",
    "cache_fingerprint",
    "changed_settings",
    "check_device_name",
    "check_report_to",
    "check_resumable",
    "default_callbacks",
    "epoch_batches",
    "epoch_line",
    "epoch_mean_loss",
    "finish_run",
    "get_rng_state",
    "is_main_process",
    "learning_curve_series",
    "load_checkpoint",
    "load_config",
    "main_process_first",
    "move_to_device",
    "param_groups",
    "parse_overrides",
    "plot_learning_curves",
    "prepare_output_dir",
    "read_checkpoint_state",
    "read_jsonl",
    "resolve_device",
    "running_under_accelerate",
    "save_checkpoint",
    "set_rng_state",
    "takes_step",
    "teacher_fingerprint",
    "training_device",
    "wait_for_everyone",
]
