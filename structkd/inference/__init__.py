"""A raw-text Python API over saved models: ``structkd.load(path)`` gives a :class:`Tagger` or a :class:`Parser`.

* :mod:`structkd.inference.predictors`: :func:`load`, :class:`Tagger`, :class:`Parser`, :func:`predict_stream`,
  :func:`set_tokenizer` (the tokenizer saved with a model).
* :mod:`structkd.inference.results`: :class:`Document`, :class:`Entity`, :class:`Parse`, :class:`Word`
  (``to_dict()``) and the streaming writers (conll, conllu, json, jsonl).
* :mod:`structkd.inference.scores`: exact entity and head probabilities.

Tokenization is :mod:`structkd.text`.  See docs/inference.md.
"""

from structkd.inference.predictors import (
    Parser,
    Predictor,
    Tagger,
    load,
    predict_stream,
    saved_tokenizer,
    set_tokenizer,
)
from structkd.inference.results import (
    WRITERS,
    Document,
    Entity,
    Parse,
    Word,
    write_conll,
    write_conllu,
    write_json,
    write_jsonl,
    write_results,
)
from structkd.inference.scores import entity_events, entity_probabilities

__all__ = ["WRITERS", "Document", "Entity", "Parse", "Parser", "Predictor", "Tagger", "Word", "entity_events",
           "entity_probabilities", "load", "predict_stream", "saved_tokenizer", "set_tokenizer", "write_conll",
           "write_conllu", "write_json", "write_jsonl", "write_results"]
