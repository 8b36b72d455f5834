"""Where a run computes: ``training.device``, and ``--device`` of ``evaluate``, ``predict``, the demo and the
benchmark drivers.

A device is named by a string, never held in a global: ``"auto"`` (the default), ``"cpu"``, ``"cuda"`` or
``"cuda:N"``.  ``"auto"`` keeps a model that the caller already put on an accelerator where it is, and otherwise
takes the first CUDA device when there is one and the CPU when not.  Other accelerators (``mps``, ...) are
refused by name: the Matrix-Tree and second-order dynamic programs work in float64, which they lack.
"""

from __future__ import annotations

import torch
from torch import nn

from .distributed import launched_device, running_under_accelerate

__all__ = ["DEVICES", "check_device_name", "resolve_device", "training_device"]

DEVICES = ("auto", "cpu", "cuda", "cuda:N")  # the accepted spellings, for messages and help texts


def check_device_name(name: str, what: str = "device") -> None:
    """Raise ``ValueError`` (naming ``what``) unless ``name`` is one of :data:`DEVICES`; does not ask whether the
    device exists here, so that a config can be written on a CPU machine for a GPU one."""
    if not isinstance(name, str):
        raise ValueError(f"{what} must be a string ({', '.join(DEVICES)}), got {name!r}")
    if name == "auto":
        return
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"{what}={name!r} is not a device name; use one of {', '.join(DEVICES)}") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"{what}={name!r}: structkd runs on 'cpu' or 'cuda' devices (its tree dynamic programs "
                         f"need float64)")


def resolve_device(name: str, model: nn.Module | None = None, what: str = "device") -> torch.device:
    """The ``torch.device`` that ``name`` means on this machine.

    Args:
        name: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        model: with ``"auto"``, a model already on an accelerator stays there.
        what: the setting's name, for the error messages.

    Raises:
        ValueError: a malformed name, or a CUDA device this machine does not have (the message says how many it
            has, or that this torch build has no CUDA).
    """
    check_device_name(name, what)
    if name == "auto":
        param = next(model.parameters(), None) if model is not None else None
        if param is not None and param.device.type != "cpu":
            return param.device
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{what}={name!r}, but CUDA is not available here (torch {torch.__version__}"
                             f"{', a build without CUDA' if torch.version.cuda is None else ''}); use 'cpu' or 'auto'")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(f"{what}={name!r}, but this machine has {count} CUDA device(s): cuda:0 to "
                             f"cuda:{count - 1}")
    return device


def training_device(name: str, what: str = "training.device") -> torch.device:
    """The device a pipeline's run computes on before its :class:`~structkd.train.Trainer` exists (the
    teacher's cache, say): the process's device under ``accelerate launch``, else :func:`resolve_device`."""
    if running_under_accelerate():
        return launched_device()
    return resolve_device(name, what=what)
