"""An open vocabulary for BiLSTM students: words outside the vocabulary embedded by the teacher's subword table.

A BiLSTM student that starts from a transformer teacher's input embeddings (``model.init_from_teacher``) embeds
each word of its vocabulary as the mean of the teacher's input embeddings of the word's subwords
(:mod:`structkd.models.embeddings`).  With ``model.open_vocabulary`` (the default) it keeps that table and the
teacher's tokenizer as its *lexicon*, and embeds every word it has no row for the same way when it reads it, so:

- its vocabulary holds the words of the sentences it distils on, not those of the development and test text
  (the scores it reports are those of a model that never saw the evaluation words);
- a word first seen at deployment gets the teacher's embedding of its subwords, not the unknown word's.

A batch then carries ``oov [n_oov, hidden]``, the vectors of its words outside the vocabulary, and those words'
ids are ``n_words + k`` for row ``k`` (:meth:`structkd.models.vocab.TaggerVocab.encode`; ``oov`` has at least
one row, zeros when every word is known, so that an exported graph always gets the input).

The lexicon is saved beside ``vocab.json`` in ``lexicon/``: ``tokenizer.json`` (read with the ``tokenizers``
library) and ``table.safetensors`` (the table ``[n_subwords, hidden]`` as float32, and the unknown token's ids
in its metadata).  It is numpy-only, so the torch-free runtime (:mod:`structkd.runtime`) shares it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

LEXICON_DIR = "lexicon"
TABLE_NAME = "table.safetensors"
TOKENIZER_NAME = "tokenizer.json"
CACHED_WORDS = 1 << 16
"""Words whose vectors a lexicon keeps once computed (the cache starts over when full)."""


def word_pieces(tokenizer: Any, sentences: Sequence[Sequence[str]], unk: Sequence[int]) -> list[list[list[int]]]:
    """Subword ids of each word of each sentence, as a ``tokenizers.Tokenizer`` splits the sentence given as
    words (no special tokens; the ``unk`` ids for a word with none): the same pieces as
    :meth:`structkd.models.transformer.SubwordEncoder.tokenize` reads."""
    out: list[list[list[int]]] = [[[] for _ in s] for s in sentences]
    nonempty = [n for n, s in enumerate(sentences) if len(s)]
    encoded = tokenizer.encode_batch([list(sentences[n]) for n in nonempty], is_pretokenized=True,
                                     add_special_tokens=False) if nonempty else []
    for n, encoding in zip(nonempty, encoded):
        for piece, word in zip(encoding.ids, encoding.word_ids):
            if word is not None:
                out[n][word].append(piece)
    return [[p if p else list(unk) for p in s] for s in out]


class SubwordLexicon:
    """The teacher's tokenizer and input embedding table, to embed any word as its subwords' mean.

    Args:
        tokenizer: a ``tokenizers.Tokenizer`` (a fast tokenizer's backend).
        table: ``[n_subwords, hidden]`` input embeddings (stored as float32).
        unk: the subword ids of a word the tokenizer gives no piece for.
    """

    def __init__(self, tokenizer: Any, table: np.ndarray, unk: Sequence[int]):
        table = np.ascontiguousarray(table, dtype=np.float32)
        if table.ndim != 2:
            raise ValueError(f"the lexicon's table must be [n_subwords, hidden], got shape {list(table.shape)}")
        self.tokenizer, self.table, self.unk = tokenizer, table, [int(u) for u in unk]
        self._cache: dict[str, np.ndarray] = {}  # word -> vector, for words met again (at most CACHED_WORDS)

    @classmethod
    def from_encoder(cls, encoder: Any) -> SubwordLexicon:
        """The lexicon of a :class:`structkd.models.transformer.SubwordEncoder` (its fast tokenizer and input
        embeddings, copied to the CPU)."""
        tokenizer = getattr(encoder.tokenizer, "backend_tokenizer", None)
        if tokenizer is None:
            raise ValueError("model.open_vocabulary keeps the teacher's tokenizer, which must be a fast (tokenizers) "
                             "tokenizer; set model.open_vocabulary=false")
        table = encoder.input_embeddings.detach().float().cpu().numpy()
        return cls(tokenizer, table, encoder._unk)

    @property
    def width(self) -> int:
        """The vectors' size (the teacher's hidden size)."""
        return int(self.table.shape[1])

    def vectors(self, words: Sequence[str]) -> np.ndarray:
        """``[len(words), hidden]`` float32: each word's mean subword embedding (the words split as one
        sentence, as :meth:`~structkd.models.transformer.SubwordEncoder.embed_words` splits a vocabulary)."""
        if not words:
            return np.zeros((0, self.width), dtype=np.float32)
        distinct = list(dict.fromkeys(words))
        new = [w for w in distinct if w not in self._cache]
        if new:
            if len(self._cache) + len(new) > CACHED_WORDS:  # start over, keeping none this call needs
                self._cache.clear()
                new = distinct
            pieces = word_pieces(self.tokenizer, [new], self.unk)[0]
            sizes = np.array([len(p) for p in pieces])
            starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
            sums = np.add.reduceat(self.table[np.fromiter((i for p in pieces for i in p), dtype=np.int64)], starts)
            self._cache.update(zip(new, sums / sizes[:, None].astype(np.float32)))
        return np.stack([self._cache[w] for w in words]).astype(np.float32, copy=False)

    def batch_vectors(self, words: Sequence[str]) -> np.ndarray:
        """:meth:`vectors` with at least one row (zeros for no word): a batch's ``oov`` input."""
        return self.vectors(words) if words else np.zeros((1, self.width), dtype=np.float32)

    def save(self, directory: str | Path) -> None:
        """Write ``tokenizer.json`` and ``table.safetensors`` into ``directory`` (created)."""
        from safetensors.numpy import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save(str(directory / TOKENIZER_NAME))
        save_file({"table": self.table}, str(directory / TABLE_NAME), metadata={"unk": json.dumps(self.unk)})

    @classmethod
    def load(cls, directory: str | Path) -> SubwordLexicon:
        """The lexicon saved in ``directory``; a missing or damaged file raises ``ValueError`` naming it."""
        from safetensors import safe_open
        from tokenizers import Tokenizer

        directory = Path(directory)
        for name in (TOKENIZER_NAME, TABLE_NAME):
            if not (directory / name).is_file():
                raise ValueError(f"{directory / name}: missing; a saved open vocabulary keeps the teacher's "
                                 f"tokenizer and subword table in {directory}")
        try:
            tokenizer = Tokenizer.from_file(str(directory / TOKENIZER_NAME))
        except Exception as error:  # tokenizers raises its own exception type for a damaged file
            raise ValueError(f"{directory / TOKENIZER_NAME}: not a readable tokenizer ({error})") from error
        try:
            with safe_open(str(directory / TABLE_NAME), framework="np") as handle:
                table, unk = handle.get_tensor("table"), json.loads((handle.metadata() or {})["unk"])
        except Exception as error:  # safetensors' errors, a missing key or metadata
            raise ValueError(f"{directory / TABLE_NAME}: not a readable subword table ({error!r})") from error
        return cls(tokenizer, table, unk)


def load_lexicon(directory: str | Path) -> SubwordLexicon | None:
    """The lexicon saved beside a model's ``vocab.json`` in ``directory/lexicon``, or ``None`` if it has none."""
    path = Path(directory) / LEXICON_DIR
    return SubwordLexicon.load(path) if path.exists() else None


__all__ = ["LEXICON_DIR", "SubwordLexicon", "load_lexicon", "word_pieces"]
