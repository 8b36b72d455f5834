"""Reading a saved model's JSON files with errors that name the file (torch-free: the runtime, the torch models'
serialization and ``structkd.load`` share it)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["read_json_in"]


def read_json_in(directory: str | os.PathLike, name: str, written_by: str, what: str = "model") -> Any:
    """The JSON document ``directory / name``.

    Args:
        written_by: what writes such directories, for the message of a missing file (``save_pretrained``).
        what: what the directory holds, for the message of a missing directory (``exported model``).

    Raises:
        FileNotFoundError: no such directory, or the file is missing; ``ValueError``: not valid JSON or UTF-8.
    """
    directory = Path(directory)
    path = directory / name
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such {what} directory")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; not a directory written by {written_by}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error
