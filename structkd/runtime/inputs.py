"""Graph inputs from sentences, in numpy: vocabulary lookup (BiLSTM) and subword windows (transformer).

The same numbers as :meth:`structkd.models.vocab.TaggerVocab.encode` and
:meth:`structkd.models.transformer.SubwordEncoder.tokenize`, without torch (``tests/test_export.py`` compares
them).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from structkd.runtime.lexicon import SubwordLexicon, load_lexicon, word_pieces

Sentences = Sequence[Sequence[str]]


class WordVocab:
    """Lowercased word and character lookup of a BiLSTM model (``vocab.json``: index 0 padding, 1 unknown), and
    its open vocabulary's lexicon when it has one (:mod:`structkd.runtime.lexicon`: words outside the vocabulary
    get ids from ``len(words)`` on and their vectors in ``oov``)."""

    def __init__(self, words: Sequence[str], chars: Sequence[str], max_word_len: int = 20,
                 lexicon: SubwordLexicon | None = None):
        self.words = {w: i for i, w in enumerate(words)}
        self.chars = {c: i for i, c in enumerate(chars)}
        self.max_word_len = max_word_len
        self.lexicon = lexicon

    @classmethod
    def load(cls, path: str | Path, max_word_len: int = 20) -> WordVocab:
        """``vocab.json`` at ``path``, with the ``lexicon/`` beside it if there is one."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            words, chars = data["words"], data["chars"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{path}: not a readable vocabulary ({error!r})") from error
        return cls(words, chars, max_word_len, load_lexicon(Path(path).parent))

    def encode(self, sentences: Sentences) -> dict[str, np.ndarray]:
        """``words [B, L]``, ``chars [B, L, W]`` and ``lens [B]`` (int64), and with a lexicon ``oov [K, hidden]``
        (float32), as ``TaggerVocab.encode``."""
        seq_len = max((len(s) for s in sentences), default=0)
        width = min(self.max_word_len, max((len(t) for s in sentences for t in s), default=0))
        words = np.zeros((len(sentences), seq_len), dtype=np.int64)
        chars = np.zeros((len(sentences), seq_len, width), dtype=np.int64)
        lookup = WordLookup(self.words, self.lexicon is not None)
        get_char = self.chars.get
        for b, sentence in enumerate(sentences):
            words[b, :len(sentence)] = lookup(sentence)
            for i, token in enumerate(sentence):
                row = [get_char(c, 1) for c in token[:width]]
                chars[b, i, :len(row)] = row
        feed = {"words": words, "chars": chars, "lens": np.array([len(s) for s in sentences], dtype=np.int64)}
        if self.lexicon is not None:
            feed["oov"] = self.lexicon.batch_vectors(lookup.unknown)
        return feed


class WordLookup:
    """Ids of lowercased words in ``index`` (a word-to-id dict): the unknown id 1 for the others, or with
    ``open_vocabulary`` ids ``len(index) + k`` for the ``k``-th distinct unknown word, listed in ``unknown``."""

    def __init__(self, index: dict[str, int], open_vocabulary: bool):
        self.index, self.open = index, open_vocabulary
        self.unknown: list[str] = []
        self._extra: dict[str, int] = {}

    def __call__(self, tokens: Sequence[str]) -> list[int]:
        get = self.index.get
        if not self.open:
            return [get(t.lower(), 1) for t in tokens]
        ids = []
        for token in tokens:
            word = token.lower()
            found = get(word)
            if found is None:
                found = self._extra.get(word)
                if found is None:
                    found = self._extra[word] = len(self.index) + len(self.unknown)
                    self.unknown.append(word)
            ids.append(found)
        return ids


def window_layout(word_sizes: Sequence[int], window: int, stride: int) -> tuple[list[int], list[int]]:
    """Sliding windows over one sentence's subwords and the window each subword is read from.

    Args:
        word_sizes: number of subwords of each word (at least 1 each).
        window: subwords per window (without special tokens).
        stride: subwords between the starts of consecutive windows (``1 <= stride <= window``).

    Returns:
        ``starts``: the first subword of each window (one window ``[0]`` when the sentence fits), the last
        window ending at the last subword; ``source``: for each subword, the index of its window.  A word is
        read from the window where it is most central (the most context on its less covered side, where a
        sentence boundary counts as full context); a word longer than any window falls back to the most
        central window of each of its subwords.
    """
    total = sum(word_sizes)
    if total <= window:
        return [0], [0] * total
    starts = list(range(0, total - window, stride)) + [total - window]

    def best(first: int, last: int) -> int | None:
        choice, choice_margin = None, -1
        for k, start in enumerate(starts):
            end = start + window - 1
            if start <= first and last <= end:
                left = first - start if start > 0 else total
                right = end - last if end < total - 1 else total
                if min(left, right) > choice_margin:
                    choice, choice_margin = k, min(left, right)
        return choice

    source: list[int] = []
    first = 0
    for size in word_sizes:
        whole = best(first, first + size - 1)
        source += [whole] * size if whole is not None else [best(p, p) for p in range(first, first + size)]
        first += size
    return starts, source


class SubwordInputs:
    """Subword windows of a transformer model from its ``tokenizer.json`` (the ``tokenizers`` library).

    Args:
        path: the tokenizer file.
        settings: ``prefix``/``suffix`` (special token ids around each window), ``unk`` (ids of a word with no
            subword), ``pad``, ``window``, ``stride`` and ``pooling`` (``first`` or ``mean``), as written by
            :func:`structkd.export.export_model`.
    """

    def __init__(self, path: str | Path, settings: dict):
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(path))
        self.prefix, self.suffix = list(settings["prefix"]), list(settings["suffix"])
        self.unk, self.pad = list(settings["unk"]), int(settings["pad"])
        self.window, self.stride = int(settings["window"]), int(settings["stride"])
        self.pooling = settings["pooling"]

    def pieces(self, sentences: Sentences) -> list[list[list[int]]]:
        """Subword ids of each word of each sentence (the unknown token for words with none)."""
        return word_pieces(self.tokenizer, sentences, self.unk)

    def encode(self, sentences: Sentences) -> dict[str, np.ndarray]:
        """The inputs of :class:`structkd.export.graphs.SubwordFeatures`."""
        pieces = self.pieces(sentences)
        windows, layouts = [], []
        for words in pieces:
            starts, source = window_layout([len(p) for p in words], self.window, self.stride)
            flat = [piece for word in words for piece in word]
            layouts.append((len(windows), starts, source))
            windows += [self.prefix + flat[s:s + self.window] + self.suffix for s in starts]
        width = max((len(w) for w in windows), default=0)
        input_ids = np.full((len(windows), width), self.pad, dtype=np.int64)
        attention_mask = np.zeros((len(windows), width), dtype=np.int64)
        for n, window in enumerate(windows):
            input_ids[n, :len(window)] = window
            attention_mask[n, :len(window)] = 1
        sources, weights = self._pooling(pieces, layouts, width)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "sources": sources, "weights": weights}

    def _pooling(self, pieces, layouts, width: int) -> tuple[np.ndarray, np.ndarray]:
        """``sources, weights [batch_size, n_words, n_pieces]``: flat index and pooling weight of each pooled
        subword of each word (index 0 and weight 0 at padding)."""
        n_words = max((len(s) for s in pieces), default=0)
        most = 1 if self.pooling == "first" else max((len(w) for s in pieces for w in s), default=1)
        sources = np.zeros((len(pieces), n_words, most), dtype=np.int64)
        weights = np.zeros((len(pieces), n_words, most), dtype=np.float32)
        offset = len(self.prefix)
        for b, (base, starts, source) in enumerate(layouts):
            position = 0
            for i, word in enumerate(pieces[b]):
                flat = [(base + source[position + k]) * width + offset + position + k - starts[source[position + k]]
                        for k in range(len(word))]
                chosen = flat[:1] if self.pooling == "first" else flat
                sources[b, i, :len(chosen)] = chosen
                weights[b, i, :len(chosen)] = 1.0 / len(chosen)
                position += len(word)
        return sources, weights


__all__ = ["SubwordInputs", "WordVocab", "WordLookup", "window_layout"]
