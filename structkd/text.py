"""Raw text to tokens with character offsets, and sentence splitting: the front of :func:`structkd.load`.

Tokenizers are named by a string, so that the choice is saved with a model (:func:`structkd.inference.set_tokenizer`)
and read back by the runtime that serves it.  This module imports no torch: the numpy/ONNX runtime uses it too.

Names (:data:`TOKENIZERS`, :func:`tokenizer_names`):

* ``"spacy:<lang>"`` (``"spacy:en"``, the default): spaCy's rule-based tokenizer of ``spacy.blank(lang)``, no
  downloaded model.  It splits punctuation and clitics the way the treebanks do (``Paris ,``, ``York !``,
  ``U.S.`` kept whole, ``do n't``).  Needs the ``text`` extra (``pip install structkd[text]``).
* ``"punct"``: the ``tokenizers`` library's BERT pre-tokenizer (whitespace, then every punctuation character on
  its own: ``U . S .``, ``don ' t``).  Installed with ``transformers``; the fallback when spaCy is missing.
* ``"whitespace"``: the ``tokenizers`` library's whitespace split (``Paris,`` stays one token).

Every :class:`Token` keeps its character offsets: ``text[token.start:token.end] == token.text``.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

logger = logging.getLogger("structkd.text")

DEFAULT_TOKENIZER = "spacy:en"
FALLBACK_TOKENIZER = "punct"
SPACY_PREFIX = "spacy:"


@dataclass(frozen=True)
class Token:
    """A token of a text: ``text == source[start:end]`` (character offsets, end exclusive)."""

    text: str
    start: int
    end: int

    def to_dict(self) -> dict:
        return {"text": self.text, "start": self.start, "end": self.end}


Tokenizer = Callable[[str], list[Token]]


def _pre_tokenizer(kind: str) -> Tokenizer:
    from tokenizers import pre_tokenizers

    splitter = pre_tokenizers.BertPreTokenizer() if kind == "punct" else pre_tokenizers.WhitespaceSplit()

    def tokenize(text: str) -> list[Token]:
        return [Token(piece, start, end) for piece, (start, end) in splitter.pre_tokenize_str(text)]

    return tokenize


TOKENIZERS: dict[str, Callable[[], Tokenizer]] = {
    "punct": lambda: _pre_tokenizer("punct"),
    "whitespace": lambda: _pre_tokenizer("whitespace"),
}
"""Tokenizers other than spaCy's: name -> a function building the tokenizer (``text -> list[Token]``)."""


def register_tokenizer(name: str, build: Callable[[], Tokenizer]) -> None:
    """Make ``name`` usable by :func:`tokenize` (``build()`` returns a ``text -> list[Token]`` function)."""
    if name.startswith(SPACY_PREFIX) or not name:
        raise ValueError(f"tokenizer names starting with {SPACY_PREFIX!r} are spaCy's; choose another name")
    TOKENIZERS[name] = build
    _tokenizer.cache_clear()


def tokenizer_names() -> list[str]:
    """The names :func:`tokenize` accepts (``spacy:<lang>`` stands for every spaCy language code)."""
    return [f"{SPACY_PREFIX}<lang>", *TOKENIZERS]


def spacy_available() -> bool:
    return importlib.util.find_spec("spacy") is not None


def check_tokenizer(name: str) -> str:
    """``name`` when it names a tokenizer, else ``ValueError`` listing the names (no library is imported)."""
    if not isinstance(name, str) or not (name in TOKENIZERS or (name.startswith(SPACY_PREFIX)
                                                                and len(name) > len(SPACY_PREFIX))):
        raise ValueError(f"unknown tokenizer {name!r}; expected one of {', '.join(tokenizer_names())}")
    return name


def default_tokenizer(warn: bool = True) -> str:
    """:data:`DEFAULT_TOKENIZER` when spaCy is installed, else :data:`FALLBACK_TOKENIZER` (with a warning unless
    ``warn`` is false: a training run only records the choice)."""
    if spacy_available():
        return DEFAULT_TOKENIZER
    if warn:
        logger.warning("spaCy is not installed: tokenizing with %r (punctuation split, 'U . S .'); pip install "
                       "'structkd[text]' for %r", FALLBACK_TOKENIZER, DEFAULT_TOKENIZER)
    return FALLBACK_TOKENIZER


def _need_spacy(name: str):
    if not spacy_available():
        raise ImportError(f"tokenizer {name!r} needs spaCy: pip install 'structkd[text]' (or choose "
                          f"tokenizer={FALLBACK_TOKENIZER!r})")
    import spacy

    return spacy


@lru_cache(maxsize=8)
def _spacy_pipeline(language: str, sentencizer: bool):
    spacy = _need_spacy(f"{SPACY_PREFIX}{language}")
    try:
        nlp = spacy.blank(language)
    except ImportError as error:  # spaCy's error for an unknown language code
        raise ValueError(f"tokenizer {SPACY_PREFIX + language!r}: spaCy has no language {language!r} "
                         f"({error})") from error
    if sentencizer:
        nlp.add_pipe("sentencizer")
    return nlp


@lru_cache(maxsize=8)
def _tokenizer(name: str) -> Tokenizer:
    check_tokenizer(name)
    if name in TOKENIZERS:
        return TOKENIZERS[name]()
    nlp = _spacy_pipeline(name[len(SPACY_PREFIX):], False)

    def tokenize(text: str) -> list[Token]:
        return [Token(t.text, t.idx, t.idx + len(t.text)) for t in nlp.tokenizer(text) if not t.is_space]

    return tokenize


def tokenize(text: str, tokenizer: str = DEFAULT_TOKENIZER) -> list[Token]:
    """The tokens of ``text`` (whitespace dropped) with their character offsets.

    Args:
        text: any string (``TypeError`` otherwise).
        tokenizer: a name of :func:`tokenizer_names`.
    """
    if not isinstance(text, str):
        raise TypeError(f"tokenize reads a string, got {type(text).__name__}")
    return _tokenizer(tokenizer)(text)


def split_sentences(text: str, language: str = "en") -> list[tuple[int, int]]:
    """Character spans ``(start, end)`` of the sentences of running text, by spaCy's rule-based
    ``sentencizer`` (a sentence ends at ``. ! ?`` and their kin); surrounding whitespace is left out and
    whitespace-only text has no sentence.

    Args:
        language: a spaCy language code (the tokenizer of ``spacy:<language>`` finds the punctuation).
    """
    if not isinstance(text, str):
        raise TypeError(f"split_sentences reads a string, got {type(text).__name__}")
    nlp = _spacy_pipeline(language, True)
    out = []
    for sentence in nlp(text).sents:
        words = [t for t in sentence if not t.is_space]
        if words:
            out.append((words[0].idx, words[-1].idx + len(words[-1].text)))
    return out


def language_of(tokenizer: str) -> str:
    """The spaCy language of a tokenizer name (``"en"`` for tokenizers that are not spaCy's)."""
    return tokenizer[len(SPACY_PREFIX):] if tokenizer.startswith(SPACY_PREFIX) else "en"


__all__ = ["DEFAULT_TOKENIZER", "FALLBACK_TOKENIZER", "TOKENIZERS", "Token", "check_tokenizer", "default_tokenizer",
           "language_of", "register_tokenizer", "spacy_available", "split_sentences", "tokenize", "tokenizer_names"]
