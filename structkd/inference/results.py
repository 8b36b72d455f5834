"""What :func:`structkd.load`'s taggers and parsers return (:class:`Document`, :class:`Entity`, :class:`Parse`,
:class:`Word`, each with ``to_dict()``) and the streaming writers (``conll``, ``conllu``, ``json``, ``jsonl``).

The definitions are in the torch-free :mod:`structkd.runtime.results` (importing this module runs
:mod:`structkd.inference`, whose predictors import torch); :func:`structkd.runtime.load` returns the same classes.
"""

from structkd.runtime.results import (
    WRITERS,
    Document,
    Entity,
    Parse,
    Result,
    Word,
    write_conll,
    write_conllu,
    write_json,
    write_jsonl,
    write_results,
)

__all__ = ["WRITERS", "Document", "Entity", "Parse", "Result", "Word", "write_conll", "write_conllu", "write_json",
           "write_jsonl", "write_results"]
