"""Training configuration: the :class:`TrainConfig` dataclass, JSON round trip, YAML files with overrides."""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from .devices import check_device_name
from .tracking import check_report_to

__all__ = ["TrainConfig", "load_config", "parse_overrides", "changed_settings", "SCHEDULES", "RESUME_FREE",
           "EARLIER_DEFAULTS"]

SCHEDULES = ("linear", "cosine", "constant")
DEFAULT_MAX_BATCH_COST = 2.0 ** 27
"""The default ``training.max_batch_cost`` (cells), which inference batches of costly models keep to as well."""


# settings that may differ between a checkpoint and the run resuming it: where files are (a teacher's
# directory too: the distillation commands compare its weights instead) and how progress shows, none of which
# changes a number the run computes, and the device (a run cut short on a GPU may go on on a CPU: the numbers
# differ by rounding only); the experiment trackers only watch; and data.repair: a corpus that ``none`` reads,
# ``conlleval`` reads the same, and one that ``none`` refuses is refused whichever side of the resume asks for it
RESUME_FREE = frozenset({"output_dir", "progress", "log_every", "num_workers", "checkpoint_every_steps",
                         "cache_dir", "teacher", "device", "report_to", "tracker_project", "threads", "repair"})


def _bilstm_from_teacher(section: dict) -> bool:
    """Whether a saved model section may have started a BiLSTM student from the teacher's embeddings."""
    return (section.get("init_from_teacher", False) is not False
            and "bilstm" in (section.get("kind"), section.get("encoder")))


# settings added with a default that changes what some earlier runs did: a saved section without the key, for
# which the test holds, ran as the value given, so that resuming it under the new default is refused by name
# rather than silently mixed (model.open_vocabulary: such students had the development and test words in their
# vocabulary and no lexicon)
EARLIER_DEFAULTS = {"open_vocabulary": (False, _bilstm_from_teacher)}


def changed_settings(saved: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    """The settings that differ between two nested JSON-able config dicts, as ``"path: saved -> current"``.

    Keys of :data:`RESUME_FREE` are ignored at any depth, and so are keys ``saved`` lacks (options added to
    the library since, whose defaults keep the earlier behaviour), but for :data:`EARLIER_DEFAULTS`, which a
    section of ``saved`` it applies to is taken to hold at their earlier value; tuples and lists compare equal.

    Args:
        saved: the settings a checkpoint was written under (as read back from JSON).
        current: the settings of the run that would resume it.
    """
    current = json.loads(json.dumps(current))
    saved = {**{key: value for key, (value, applies) in EARLIER_DEFAULTS.items()
                if key in current and key not in saved and applies(saved)}, **saved}
    changes = []
    for key in sorted(saved, key=str):
        if key in RESUME_FREE:
            continue
        path = f"{prefix}{key}"
        old, new = saved.get(key, "<unset>"), current.get(key, "<unset>")
        if isinstance(old, dict) and isinstance(new, dict):
            changes += changed_settings(old, new, f"{path}.")
        elif old != new:
            changes.append(f"{path}: {old!r} -> {new!r}")
    return changes


@dataclass
class TrainConfig:
    """Hyper-parameters and run settings of :class:`structkd.train.Trainer`.

    ``warmup`` is a fraction of the total number of optimizer steps when it is a ``float`` in ``[0, 1]`` and
    a number of steps when it is an ``int``. ``schedule`` decays the learning rate after warmup
    (``"linear"`` or ``"cosine"`` to ``min_lr_ratio * lr``; ``"constant"`` keeps it). ``patience`` stops
    training after that many evaluations without improvement of ``metric`` (higher is better unless
    ``metric_mode="min"``); ``None`` disables early stopping. ``amp`` enables mixed precision
    (``amp_dtype``: bfloat16, or float16 with loss scaling; on CPU bfloat16 is the fast one).
    ``max_grad_norm=None`` disables clipping; ``checkpoint_every_steps=None`` checkpoints at epoch ends only.
    ``head_lr`` is the learning rate of every parameter outside a pretrained ``transformers`` model (the
    randomly initialized heads and layers of a fine-tuned encoder, which want a larger step than the
    pretrained weights' ``lr``); ``None`` uses ``lr`` for all.  ``group_by_length`` batches items of similar
    length together (:func:`~structkd.train.batching.epoch_batches`; the pipelines give the sentence lengths):
    far less padding, the same items and number of steps per epoch.  ``max_batch_cost`` bounds the memory of a
    batch of a model whose cost grows faster than its padded size (the task gives the cost: a second-order
    parser's is ``n * (L + 1) ** 3`` for ``n`` sentences of at most ``L`` words; the default, ``2 ** 27``, takes
    32 sentences of 159 words, EWT's longest, and holds a 300-word sentence to batches of 4): a batch above it is
    computed in micro-batches of neighbours in length whose gradients, each weighted by its share of the
    sentences, make one optimizer step, the step of the whole batch (up to float rounding) when the loss is
    the batch's mean; ``null`` never splits.  ``device`` is where the run computes:
    ``"auto"`` (a model already on an accelerator stays there; otherwise the first CUDA device if there is one,
    else the CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (:mod:`structkd.train.devices`); under
    ``accelerate launch`` the accelerator decides.  ``report_to`` sends the train loss and dev metrics to
    experiment trackers (:mod:`structkd.train.tracking`): ``"none"`` (the default, read as ``[]``),
    ``"tensorboard"``, ``"wandb"``, ``"mlflow"``, a list of them (or one string with commas), or ``"all"`` (every
    one installed); a tracker whose package is missing is refused here, with its ``pip install`` command.
    ``tracker_project`` names the W&B project and the MLflow experiment.  ``threads`` sets the run's CPU
    threads (``torch.set_num_threads``; ``None`` keeps torch's default): results repeat exactly for one thread
    count on one kind of CPU.
    """

    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    head_lr: float | None = None
    weight_decay: float = 0.01
    warmup: int | float = 0.0
    schedule: str = "linear"
    min_lr_ratio: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    max_grad_norm: float | None = 1.0
    patience: int | None = None
    metric: str = "f1"
    metric_mode: str = "max"
    seed: int = 42
    output_dir: str = "runs/default"
    checkpoint_every_steps: int | None = None
    amp: bool = False
    amp_dtype: str = "bfloat16"
    log_every: int = 50
    shuffle: bool = True
    group_by_length: bool = False
    max_batch_cost: float | None = DEFAULT_MAX_BATCH_COST
    drop_last: bool = False
    num_workers: int = 0
    progress: bool = True
    device: str = "auto"
    threads: int | None = None
    report_to: list[str] = field(default_factory=list)
    tracker_project: str = "structkd"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.adam_betas = tuple(float(b) for b in self.adam_betas)
        checks = [
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.max_batch_cost is None or self.max_batch_cost > 0, "max_batch_cost must be positive (or null)"),
            (self.lr > 0, "lr must be > 0"),
            (self.head_lr is None or self.head_lr > 0, "head_lr must be > 0 or None"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}, got {self.schedule!r}"),
            (self.metric_mode in ("max", "min"), f"metric_mode must be 'max' or 'min', got {self.metric_mode!r}"),
            (0.0 <= self.min_lr_ratio <= 1.0, "min_lr_ratio must be in [0, 1]"),
            (len(self.adam_betas) == 2, "adam_betas must have two values"),
            (self.max_grad_norm is None or self.max_grad_norm > 0, "max_grad_norm must be > 0 or None"),
            (self.patience is None or self.patience >= 1, "patience must be >= 1 or None"),
            (self.checkpoint_every_steps is None or self.checkpoint_every_steps >= 1,
             "checkpoint_every_steps must be >= 1 or None"),
            (self.log_every >= 1, "log_every must be >= 1"),
            (self.amp_dtype in ("bfloat16", "float16"), "amp_dtype must be 'bfloat16' or 'float16'"),
            (self.threads is None or self.threads >= 1, "threads must be >= 1 or None (torch's default)"),
        ]
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, (int, float)):
            raise ValueError(f"warmup must be an int (steps) or a float fraction, got {self.warmup!r}")
        if isinstance(self.warmup, float):
            checks.append((0.0 <= self.warmup <= 1.0, f"a float warmup is a fraction in [0, 1], got {self.warmup}"))
        else:
            checks.append((self.warmup >= 0, "warmup steps must be >= 0"))
        for ok, message in checks:
            if not ok:
                raise ValueError(f"TrainConfig: {message}")
        check_device_name(self.device, "TrainConfig: device")
        self.report_to = check_report_to(self.report_to, "TrainConfig: report_to")

    def warmup_steps(self, total_steps: int) -> int:
        """Number of warmup steps for a run of ``total_steps`` optimizer steps."""
        if isinstance(self.warmup, float):
            return int(round(self.warmup * total_steps))
        return int(self.warmup)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists)."""
        d = dataclasses.asdict(self)
        d["adam_betas"] = list(self.adam_betas)
        return d

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """Serialize to a JSON string; also write it to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True)
        if path is not None:
            Path(path).write_text(text + "\n", encoding="utf-8")
        return text

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> TrainConfig:
        """Build from a dict, coercing types; an unknown key raises ``KeyError`` naming it."""
        hints = _field_types()
        kwargs = {}
        for key, value in values.items():
            if key not in hints:
                raise KeyError(f"{source}: unknown TrainConfig key {key!r}; valid keys: {', '.join(sorted(hints))}")
            kwargs[key] = _coerce(key, value, hints[key], source)
        return cls(**kwargs)

    @classmethod
    def from_json(cls, source: str | os.PathLike) -> TrainConfig:
        """Load from a JSON string or from the path of a JSON file."""
        if isinstance(source, os.PathLike) or not str(source).lstrip().startswith("{"):
            text = Path(source).read_text(encoding="utf-8")
            name = str(source)
        else:
            text, name = str(source), "JSON"
        return cls.from_dict(json.loads(text), source=name)


def _field_types(cls: type = None) -> dict[str, Any]:
    cls = TrainConfig if cls is None else cls
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def dataclass_from_dict(cls: type, values: dict[str, Any], source: str = "config") -> Any:
    """Build any config dataclass from a dict, coercing values to the field types (YAML and ``key=value``
    overrides give strings); an unknown key raises ``KeyError`` naming it and listing the valid ones."""
    hints = _field_types(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in hints:
            raise KeyError(f"{source}: unknown {cls.__name__} key {key!r}; valid keys: {', '.join(sorted(hints))}")
        kwargs[key] = _coerce(key, value, hints[key], source)
    return cls(**kwargs)


_BOOL_WORDS = {"true": True, "yes": True, "1": True, "on": True, "false": False, "no": False, "0": False,
               "off": False}


def _coerce(key: str, value: Any, hint: Any, source: str) -> Any:
    """Coerce ``value`` (from YAML, JSON or an override string) to the type hint of field ``key``."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        if int in args and float in args:  # warmup: keep ints as steps, read other numbers as fractions
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return value
            return _coerce(key, value, float if any(c in str(value) for c in ".eE") else int, source)
        if bool in args and str in args:  # a switch with a named mode (model.init_from_teacher: auto)
            if isinstance(value, bool) or str(value).lower() in _BOOL_WORDS:
                return _coerce(key, value, bool, source)
            return _coerce(key, value, str, source)
        inner = [a for a in args if a is not type(None)]
        return _coerce(key, value, inner[0], source)
    try:
        if hint is bool:
            if isinstance(value, str):
                if value.lower() not in _BOOL_WORDS:
                    raise ValueError(value)
                return _BOOL_WORDS[value.lower()]
            return bool(value)
        if hint is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if hint is float:
            return float(value)
        if hint is str:
            if isinstance(value, (list, tuple, dict, set)):  # str() would turn it into a path that never exists
                raise ValueError(value)
            return str(value)
        if origin is tuple:
            if isinstance(value, str):
                value = yaml.safe_load(value)
            return tuple(float(v) for v in value)
        if origin is list:
            if isinstance(value, str):
                value = yaml.safe_load(value)
            if not isinstance(value, (list, tuple)):
                value = [value]
            return [_coerce(key, v, args[0], source) for v in value] if args else list(value)
        if origin is dict:
            if not isinstance(value, dict):
                raise ValueError(value)
            return dict(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{source}: cannot read {key}={value!r} as {_type_name(hint)}") from exc
    return value


def _type_name(hint: Any) -> str:
    """``str`` -> "a string", ``list[str]`` -> "a list of strings", for error messages."""
    names = {str: "a string (a path or a name)", int: "an integer", float: "a number", bool: "true or false"}
    if hint in names:
        return names[hint]
    return str(hint).replace("typing.", "")


def parse_overrides(overrides: list[str] | None) -> dict[str, Any]:
    """Parse command-line style ``key=value`` overrides; values are read as YAML scalars (``"3"`` -> 3).

    ``extra.name=value`` sets ``extra["name"]``.
    """
    out: dict[str, Any] = {}
    for item in overrides or []:
        if "=" not in item:
            hint = f"; a config file is given as --config {item}" if item.endswith((".yaml", ".yml")) else ""
            raise ValueError(f"override {item!r} must look like section.key=value{hint}")
        key, raw = item.split("=", 1)
        key = key.strip()
        value = yaml.safe_load(raw) if raw.strip() else ""
        if key.startswith("extra."):
            out.setdefault("extra", {})[key[len("extra."):]] = value
        else:
            out[key] = value
    return out


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Load a :class:`TrainConfig` from a YAML (or JSON) file, then apply ``key=value`` overrides.

    ``load_config("ner.yaml", overrides=["lr=1e-4", "epochs=3"])``. Unknown keys, in the file or in the
    overrides, raise ``KeyError`` naming the key.
    """
    values: dict[str, Any] = {}
    source = "overrides"
    if path is not None:
        source = str(path)
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: a training config must be a mapping of keys to values")
        values.update(loaded)
    for key, value in parse_overrides(overrides).items():
        if key == "extra":
            values.setdefault("extra", {}).update(value)
        else:
            values[key] = value
    return TrainConfig.from_dict(values, source=source)


def build_sections(values: dict[str, Any] | None, overrides: list[str] | None, sections: dict[str, type],
                   source: str = "config", defaults: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Build the section dataclasses of a pipeline config (``data``, ``model``, ``kd``, ``training``, ...).

    Args:
        values: nested ``{section: {key: value}}`` (e.g. parsed YAML).
        overrides: ``section.key=value`` strings, applied on top.
        sections: the dataclass of each section (:class:`TrainConfig` for the training section).
        source: where the values come from, for error messages.
        defaults: per-section values used when neither the file nor an override sets them.
    """
    for name, entries in (values or {}).items():
        if entries is not None and not isinstance(entries, dict):
            raise ValueError(f"{source}: section {name!r} must be a mapping of keys to values "
                             f"(e.g. {name}: {{key: value}}), got {entries!r}")
    values = {k: dict(v or {}) for k, v in (values or {}).items()}
    for key, value in parse_overrides(overrides).items():
        section, _, name = key.partition(".")
        if section == "extra" or not name:
            raise KeyError(f"override {key!r} must name a section: one of {', '.join(sections)} (e.g. kd.method)")
        values.setdefault(section, {})[name] = value
    unknown = set(values) - set(sections)
    if unknown:
        raise KeyError(f"{source}: unknown section(s) {sorted(unknown)}; expected {', '.join(sections)}")
    for section, entries in (defaults or {}).items():
        for key, value in entries.items():
            values.setdefault(section, {}).setdefault(key, value)
    return {name: (TrainConfig.from_dict(values.get(name, {}), source=f"{source} [{name}]") if cls is TrainConfig
                   else dataclass_from_dict(cls, values.get(name, {}), source=f"{source} [{name}]"))
            for name, cls in sections.items()}


def read_yaml_mapping(path: str | os.PathLike) -> dict[str, Any]:
    """A YAML file that must hold a mapping; errors name the file."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        values = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping of sections, got {type(values).__name__}")
    return values


def check_data_files(data: Any, keys: tuple[str, ...] = ("train", "dev", "test", "unlabeled")) -> None:
    """Refuse a data section whose files do not exist, naming the key (``data.dev``) and the path.

    Args:
        data: a data section whose ``keys`` hold a path, ``None`` or a list of paths.
    """
    for key in keys:
        value = getattr(data, key, None)
        for path in value if isinstance(value, list) else [value]:
            if path is not None and not Path(path).is_file():
                what = "is a directory, not a file" if Path(path).is_dir() else "no such file"
                raise FileNotFoundError(f"data.{key}: {path}: {what}")


def check_teacher_directory(path: str | None, key: str = "kd.teacher") -> None:
    """Refuse a teacher path that is not a directory, naming ``key`` (its contents are checked on loading); a
    Hugging Face hub name in the local cache is accepted (a token classifier teacher, docs/teachers.md)."""
    if path is not None and not Path(path).is_dir():
        from structkd.models.encoders import cached_hub_file, is_hub_name

        if is_hub_name(path) and cached_hub_file(path):
            return
        what = "is a file, not a model directory" if Path(path).exists() else "no such directory (nor a hub name " \
            "in the local Hugging Face cache)"
        raise FileNotFoundError(f"{key}: {path}: {what}")


class SectionedConfig:
    """Mixin for a pipeline config: a dataclass whose fields are section dataclasses.

    ``METRICS`` are the development metrics the task's evaluation reports (``training.metric`` must be one);
    a task config's ``validate`` adds its own checks.  Both run when the config is built, before any work.
    """

    METRICS: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Refuse settings that would fail only later, when the config is built: a ``training.metric`` the task
        does not report.  Task configs extend it (model kinds, encoders) and call this one."""
        metric = self.training.metric
        if self.METRICS and metric not in self.METRICS:
            raise ValueError(f"training.metric must be one of {', '.join(self.METRICS)} (what this task's "
                             f"evaluation reports), got {metric!r}")

    def check_files(self) -> None:
        """Refuse data files, a ``kd.teacher`` directory and a ``kd.teacher_outputs`` file that do not exist,
        naming the key: the first thing a command does (a config may be written before its teacher is trained,
        so not when it is built)."""
        check_data_files(self.data)
        check_teacher_directory(getattr(getattr(self, "kd", None), "teacher", None))
        outputs = getattr(getattr(self, "kd", None), "teacher_outputs", None)
        if outputs is not None and not Path(outputs).is_file():
            raise FileNotFoundError(f"kd.teacher_outputs: {outputs}: "
                                    f"{'a directory, not a file' if Path(outputs).exists() else 'no such file'}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able nested dict of every section."""
        out = {}
        for f in dataclasses.fields(self):
            section = getattr(self, f.name)
            out[f.name] = section.to_dict() if isinstance(section, TrainConfig) else dataclasses.asdict(section)
        return out

    def save(self, path: str | os.PathLike) -> None:
        """Write :meth:`to_dict` as JSON (kept next to a run's outputs)."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2), encoding="utf-8")
