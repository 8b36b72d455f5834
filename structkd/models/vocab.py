"""Vocabularies of words, characters and labels, saved as JSON next to the model weights."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from structkd.runtime.inputs import WordLookup
from structkd.runtime.lexicon import SubwordLexicon

PAD, UNK = "<pad>", "<unk>"


@dataclass
class Vocabulary:
    """A string-to-index table with padding (index 0) and unknown (index 1) entries when ``special``."""

    items: list[str]
    special: bool = True

    def __post_init__(self):
        if self.special and self.items[:2] != [PAD, UNK]:
            self.items = [PAD, UNK] + [x for x in self.items if x not in (PAD, UNK)]
        self.index = {x: i for i, x in enumerate(self.items)}
        if len(self.index) != len(self.items):
            raise ValueError("vocabulary items must be unique")

    @classmethod
    def build(cls, values: Iterable[str], min_count: int = 1, special: bool = True) -> Vocabulary:
        return cls.from_counts(Counter(values), min_count, special)

    @classmethod
    def from_counts(cls, counts: Counter, min_count: int = 1, special: bool = True) -> Vocabulary:
        """The sorted items counted at least ``min_count`` times."""
        return cls(sorted(x for x, c in counts.items() if c >= min_count), special)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, item: str) -> int:
        if item in self.index:
            return self.index[item]
        if not self.special:
            raise KeyError(f"{item!r} is not in the label vocabulary {self.items}")
        return 1

    def lookup(self, values: Sequence[str]) -> list[int]:
        if self.special:
            get = self.index.get
            return [get(v, 1) for v in values]
        return [self[v] for v in values]


def count_words(sentences: Iterable, words: Callable[[Any], Sequence[str]],
                labels: Callable[[Any], Iterable[str]] | None = None) -> tuple[Counter, Counter, set[str]]:
    """``(lowercased word counts, character counts, labels)`` of the sentences in one pass (``words`` and
    ``labels`` read a sentence's)."""
    word_counts, char_counts, found = Counter(), Counter(), set()
    for sentence in sentences:
        tokens = words(sentence)
        word_counts.update(t.lower() for t in tokens)
        for token in tokens:
            char_counts.update(token)
        if labels is not None:
            found.update(labels(sentence))
    return word_counts, char_counts, found


@dataclass
class TaggerVocab:
    """Words (lowercased), characters and tags of a sequence-labeling model, and optionally the lexicon of an
    open vocabulary (:mod:`structkd.runtime.lexicon`: words outside ``words`` embedded by the teacher's subword
    table; saved beside the vocabulary by :func:`structkd.models.save_pretrained`)."""

    words: Vocabulary
    chars: Vocabulary
    tags: Vocabulary
    lexicon: SubwordLexicon | None = None

    @classmethod
    def build(cls, sentences, min_word_count: int = 1) -> TaggerVocab:
        """Words, characters and tags of the sentences, read in one pass (a lazily read sequence is read once)."""
        words, chars, found = count_words(sentences, lambda s: s.tokens, lambda s: s.tags or ())
        return cls(Vocabulary.from_counts(words, min_word_count), Vocabulary.from_counts(chars),
                   Vocabulary(["O"] + sorted(found - {"O"}), special=False))

    def to_json(self) -> dict:
        return {"words": self.words.items, "chars": self.chars.items, "tags": self.tags.items}

    @classmethod
    def from_json(cls, data: dict) -> TaggerVocab:
        return cls(Vocabulary(data["words"]), Vocabulary(data["chars"]), Vocabulary(data["tags"], special=False))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> TaggerVocab:
        return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")))

    def encode(self, sentences, max_word_len: int = 20, device: torch.device | str | None = None,
               gold: bool = True) -> dict:
        """Padded index tensors of a batch: ``words [B, L]``, ``chars [B, L, W]``, ``lens [B]`` and, for
        labeled sentences when ``gold``, ``tags [B, L]`` (-1 at padding); with a lexicon, ``oov [K, hidden]``,
        the vectors of the batch's words outside the vocabulary (word ``k`` of them has id ``len(words) + k``; at
        least one row).  Reading sentences for a prediction passes ``gold=False``: their tags, which may hold
        labels the model lacks (scored as misses), are not looked up."""
        seq_len = max(len(s) for s in sentences)
        width = min(max_word_len, max(len(t) for s in sentences for t in s.tokens))
        word_pad, char_pad, tag_pad = [0] * seq_len, [0] * width, [-1] * seq_len
        words, chars, tags = [], [], []
        lookup = WordLookup(self.words.index, self.lexicon is not None)
        for s in sentences:  # Python lists, one tensor each at the end (a tensor per word costs more than this)
            pad = seq_len - len(s)
            words.append(lookup(s.tokens) + word_pad[:pad])
            rows = [self.chars.lookup(token[:width]) for token in s.tokens]
            chars.append([row + char_pad[:width - len(row)] for row in rows] + [char_pad] * pad)
            if gold and s.tags is not None:
                tags.append(self.tags.lookup(s.tags) + tag_pad[:pad])
        lens = torch.tensor([len(s) for s in sentences])
        batch = {"words": torch.tensor(words, dtype=torch.long), "chars": torch.tensor(chars, dtype=torch.long),
                 "lens": lens}
        if len(tags) == len(sentences):
            batch["tags"] = torch.tensor(tags, dtype=torch.long)
        if self.lexicon is not None:
            batch["oov"] = torch.from_numpy(self.lexicon.batch_vectors(lookup.unknown))
        return {k: v.to(device) for k, v in batch.items()}
