"""Pickle-free, atomic training checkpoints.

A checkpoint is a directory:

``model.safetensors``
    the model's weights (``safetensors.torch.save_model``: tied weights stored once).
``optimizer.safetensors`` + ``optimizer.json``
    the optimizer's ``state_dict``: every tensor goes into the safetensors file under a flattened key
    (``state/3/exp_avg``), the rest (``param_groups``, hyper-parameters) into JSON with ``{"__tensor__": key}``
    placeholders. Same for ``scheduler.*`` and ``scaler.*`` (``GradScaler``).
``rng.safetensors`` + ``rng.json``
    per process (``{"processes": [...]}``): torch CPU RNG state (``uint8 [5056]``), CUDA RNG states (one
    ``uint8`` tensor per device, if CUDA is initialized), Python ``random`` and NumPy global RNG states as JSON lists.
``trainer_state.json``
    :class:`TrainProgress` (epoch, step in epoch, global step, best metric, ...), the config, free extras, and
    ``files``: the name and size in bytes of every other file (written last, so a checkpoint is complete
    exactly when this file is there and its files have those sizes).

Nothing is unpickled on load, so a checkpoint from an untrusted source cannot run code. The directory is
written with :func:`structkd.train.atomic.atomic_directory`: a crash while saving leaves the previous
checkpoint intact. Reading checks the files against ``files`` first: a missing or truncated file, or a damaged
JSON or safetensors file, raises an error naming it (:class:`CheckpointError`) before any state is touched.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file, save_model

from .atomic import atomic_directory, resolve_dir

__all__ = [
    "CheckpointError",
    "TrainProgress",
    "save_checkpoint",
    "load_checkpoint",
    "read_checkpoint_state",
    "flatten_state",
    "unflatten_state",
    "get_rng_state",
    "set_rng_state",
    "resolve_checkpoint",
    "verify_checkpoint",
]

STATE_FILE = "trainer_state.json"


class CheckpointError(ValueError):
    """A checkpoint on disk is incomplete or damaged (the message names the file)."""


@dataclass
class TrainProgress:
    """Where a run stands. ``epoch`` is the current (0-based) epoch; ``step_in_epoch`` the number of its
    optimizer steps already done (0 at an epoch boundary); ``history`` one dict per evaluation."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    best_metric: float | None = None
    best_epoch: int | None = None
    bad_evals: int = 0
    stopped_early: bool = False
    finished: bool = False
    log_offset: int = 0
    running_loss: float = 0.0
    running_count: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainProgress:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


# ---------------------------------------------------------------------------------------------------------
# state dict <-> (tensors, JSON)


def flatten_state(obj: Any, prefix: str = "") -> tuple[Any, dict[str, torch.Tensor]]:
    """Split a nested ``state_dict`` into a JSON-able skeleton and a flat ``{key: tensor}`` dict.

    Tensors become ``{"__tensor__": key}``; tuples ``{"__tuple__": [...]}``; dicts with non-string keys
    ``{"__items__": [[key, value], ...]}`` (optimizer state is keyed by int parameter ids).
    """
    tensors: dict[str, torch.Tensor] = {}

    def walk(x: Any, path: str) -> Any:
        if isinstance(x, torch.Tensor):
            key = path or "tensor"
            tensors[key] = x.detach().cpu().contiguous()
            return {"__tensor__": key}
        if isinstance(x, dict):
            if all(isinstance(k, str) for k in x):
                return {k: walk(v, f"{path}/{k}" if path else k) for k, v in x.items()}
            return {"__items__": [[k, walk(v, f"{path}/{k}" if path else str(k))] for k, v in x.items()]}
        if isinstance(x, tuple):
            return {"__tuple__": [walk(v, f"{path}/{i}") for i, v in enumerate(x)]}
        if isinstance(x, list):
            return [walk(v, f"{path}/{i}") for i, v in enumerate(x)]
        if isinstance(x, np.ndarray):
            return {"__ndarray__": x.tolist(), "dtype": str(x.dtype)}
        if isinstance(x, np.generic):
            return x.item()
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        raise TypeError(f"cannot store a {type(x).__name__} at {path!r} in a checkpoint without pickling")

    return walk(obj, prefix), tensors


def unflatten_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`flatten_state`."""
    if isinstance(skeleton, dict):
        if set(skeleton) == {"__tensor__"}:
            return tensors[skeleton["__tensor__"]]
        if set(skeleton) == {"__tuple__"}:
            return tuple(unflatten_state(v, tensors) for v in skeleton["__tuple__"])
        if set(skeleton) == {"__items__"}:
            return {k: unflatten_state(v, tensors) for k, v in skeleton["__items__"]}
        if set(skeleton) == {"__ndarray__", "dtype"}:
            return np.asarray(skeleton["__ndarray__"], dtype=skeleton["dtype"])
        return {k: unflatten_state(v, tensors) for k, v in skeleton.items()}
    if isinstance(skeleton, list):
        return [unflatten_state(v, tensors) for v in skeleton]
    return skeleton


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=1, sort_keys=False, allow_nan=True) + "\n", encoding="utf-8")


def _read_json(path: Path) -> Any:
    """The JSON in ``path``; a truncated or damaged file raises :class:`CheckpointError` naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path}: not valid JSON, the file is truncated or damaged ({error})") from error


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; a truncated or damaged one raises :class:`CheckpointError`."""
    try:
        return load_file(str(path), device="cpu")
    except SafetensorError as error:
        raise CheckpointError(f"{path}: not a valid safetensors file, it is truncated or damaged ({error})") from error


def _save_state(directory: Path, name: str, state: Any) -> None:
    skeleton, tensors = flatten_state(state)
    save_file(tensors, str(directory / f"{name}.safetensors"))
    _write_json(directory / f"{name}.json", skeleton)


def _load_state(directory: Path, name: str) -> Any:
    tensors = _load_tensors(directory / f"{name}.safetensors")
    return unflatten_state(_read_json(directory / f"{name}.json"), tensors)


def _file_sizes(directory: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in sorted(directory.iterdir()) if p.is_file() and p.name != STATE_FILE}


def verify_checkpoint(directory: str | os.PathLike) -> dict[str, Any]:
    """Read ``directory/trainer_state.json`` and check that every file it lists is there with its recorded size
    (checkpoints written before the list existed need ``model.safetensors``).  Returns the state; raises
    :class:`CheckpointError` naming the first file that is missing, truncated or damaged."""
    path = Path(directory)
    state = _read_json(path / STATE_FILE)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path / STATE_FILE}: not a checkpoint state (expected a JSON object)")
    files = state.get("files", {"model.safetensors": None})
    for name, size in files.items():
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"{file}: missing from the checkpoint (its {STATE_FILE} lists it)")
        if size is not None and file.stat().st_size != size:
            raise CheckpointError(f"{file}: {file.stat().st_size} bytes, but the checkpoint wrote {size}: the file "
                                  f"is truncated or damaged")
    return state


def _is_complete(directory: Path) -> bool:
    try:
        verify_checkpoint(directory)
    except (CheckpointError, OSError):
        return False
    return True


def resolve_checkpoint(directory: str | os.PathLike) -> Path | None:
    """``directory`` if it exists, else the newest complete old version an interrupted save left (put back
    under its name; :func:`structkd.train.atomic.resolve_dir`), else ``None``."""
    return resolve_dir(directory, is_complete=_is_complete)


# ---------------------------------------------------------------------------------------------------------
# RNG


def get_rng_state() -> dict[str, Any]:
    """Global RNG states: ``torch`` (``uint8`` tensor), ``cuda`` (list of tensors, if initialized),
    ``python`` and ``numpy`` (JSON-able lists)."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": [version, list(internal), gauss],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore states produced by :func:`get_rng_state` (CUDA states only if CUDA is available)."""
    torch.set_rng_state(state["torch"].to(torch.uint8).cpu())
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "cuda" in state and state["cuda"] and torch.cuda.is_available():
        cuda_states = list(state["cuda"])[: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all([s.to(torch.uint8).cpu() for s in cuda_states])


# ---------------------------------------------------------------------------------------------------------
# save / load


def save_checkpoint(
    directory: str | os.PathLike,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    scaler: Any | None = None,
    progress: TrainProgress | None = None,
    config: Any | None = None,
    extra: dict[str, Any] | None = None,
    save_rng: bool = True,
    rng_states: list[dict[str, Any]] | None = None,
) -> Path:
    """Write a checkpoint atomically to ``directory`` (replacing an existing one only once complete).

    ``model`` must be the unwrapped module (``accelerator.unwrap_model``). ``config`` may be a
    :class:`TrainConfig` (stored via ``to_dict``) or a JSON-able dict. ``rng_states`` holds one
    :func:`get_rng_state` per process of a distributed run (default: this process's state only).
    Returns the directory.
    """
    directory = Path(directory)
    with atomic_directory(directory) as tmp:
        save_model(model, str(tmp / "model.safetensors"))
        if optimizer is not None:
            _save_state(tmp, "optimizer", optimizer.state_dict())
        if scheduler is not None:
            _save_state(tmp, "scheduler", scheduler.state_dict())
        if scaler is not None:
            _save_state(tmp, "scaler", scaler.state_dict())
        if save_rng:
            _save_state(tmp, "rng", {"processes": rng_states if rng_states is not None else [get_rng_state()]})
        state = {
            "format": "structkd-checkpoint-1",
            "progress": (progress or TrainProgress()).to_dict(),
            "config": config.to_dict() if hasattr(config, "to_dict") else config,
            "extra": extra or {},
            "files": _file_sizes(tmp),
        }
        _write_json(tmp / STATE_FILE, state)
    return directory


def read_checkpoint_state(directory: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint's ``trainer_state.json`` (``format``, ``progress``, ``config``, ``extra``, ``files``) as
    stored, without loading any weights.  Raises ``FileNotFoundError`` if there is no checkpoint and
    :class:`CheckpointError` if it is incomplete or damaged (:func:`verify_checkpoint`)."""
    path = resolve_checkpoint(directory)
    if path is None or not (path / STATE_FILE).is_file():
        raise FileNotFoundError(f"no checkpoint at {directory}")
    return verify_checkpoint(path)


def load_checkpoint(
    directory: str | os.PathLike,
    model: torch.nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    scaler: Any | None = None,
    restore_rng: bool = True,
    strict: bool = True,
    process_index: int = 0,
) -> dict[str, Any]:
    """Restore a checkpoint into the given objects (each optional) and return its ``trainer_state.json``
    with ``"progress"`` as a :class:`TrainProgress`. The RNG states restored are those saved for
    ``process_index`` (those of process 0 if the checkpoint has fewer processes).

    Raises ``FileNotFoundError`` if there is no checkpoint (after repairing an interrupted swap) or if an
    object is given whose state the checkpoint lacks, and :class:`CheckpointError` naming the file if one is
    missing, truncated or damaged (checked before anything is restored).
    """
    state = read_checkpoint_state(directory)
    path = Path(directory)
    if model is not None:
        weights = path / "model.safetensors"
        try:
            load_model(model, str(weights), strict=strict)
        except SafetensorError as error:
            raise CheckpointError(f"{weights}: not a valid safetensors file, it is truncated or damaged "
                                  f"({error})") from error
        except RuntimeError as error:
            raise CheckpointError(f"{weights}: the weights do not fit the model ({error})") from error
    for name, obj in (("optimizer", optimizer), ("scheduler", scheduler), ("scaler", scaler)):
        if obj is None:
            continue
        if not (path / f"{name}.json").is_file():
            raise FileNotFoundError(f"checkpoint {path} has no {name} state")
        obj.load_state_dict(_load_state(path, name))
    if restore_rng and (path / "rng.json").is_file():
        states = _load_state(path, "rng")["processes"]
        set_rng_state(states[process_index] if process_index < len(states) else states[0])
    state["progress"] = TrainProgress.from_dict(state.get("progress", {}))
    return state
