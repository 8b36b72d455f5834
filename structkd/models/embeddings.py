"""``model.init_from_teacher``: a BiLSTM student's word embeddings from a transformer teacher's input embeddings.

Each word of the student's vocabulary starts as the mean of its subwords' input embeddings in the teacher
(:meth:`~structkd.models.transformer.SubwordEncoder.embed_words`), so the word width is the teacher's hidden
size.  The NER and UPOS taggers (:func:`structkd.ner.modeling.build_model`) and the parsers
(:func:`structkd.parse.modeling.build_model`) share it.  Such a student can embed any word: with
``model.open_vocabulary`` (the default) it keeps the teacher's subword table and embeds a word outside its
vocabulary when it reads it (:mod:`structkd.runtime.lexicon`, :func:`teacher_lexicon`); without, its vocabulary
covers every split (:func:`vocabulary_sentences`) and other words are unknown.

``model.init_from_teacher`` is ``auto`` by default (:func:`resolve_init_from_teacher`): on when a BiLSTM student
distils from a teacher with a transformer encoder.  With structural KD on unlabeled text such students kept
99-101% of the WikiANN teachers' test F1, and on a corpus new to the project the embeddings took one from 92% to
98% of its teacher (docs/levers.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from structkd.data.lazy import concat
from structkd.models.taggers import BiLSTMEncoder
from structkd.models.transformer import SubwordEncoder
from structkd.runtime.lexicon import SubwordLexicon

__all__ = ["AUTO", "check_init_options", "load_teacher_embeddings", "resolve_init_from_teacher",
           "teacher_lexicon", "teacher_word_encoder", "vocabulary_sentences"]

AUTO = "auto"  # model.init_from_teacher: on for a BiLSTM student of a transformer teacher


def teacher_word_encoder(encoder: Any, teacher: str | None) -> SubwordEncoder:
    """The teacher's subword encoder whose input embeddings ``model.init_from_teacher`` copies.

    Args:
        encoder: the teacher's transformer encoder (anything else is refused).
        teacher: what the teacher is, for the message (``"a BiLSTM parser"``; ``None``: the run has none).

    Raises:
        ValueError: no teacher, or a teacher without a transformer encoder.
    """
    if isinstance(encoder, SubwordEncoder):
        return encoder
    why = "the run has no teacher" if teacher is None else f"the teacher is {teacher}"
    raise ValueError(f"model.init_from_teacher copies a transformer teacher's input embeddings (kd.teacher), but "
                     f"{why}: distil from a transformer teacher, or set model.init_from_teacher=false")


def check_init_options(init: bool | str, freeze: bool, fits: bool, needs: str) -> None:
    """Check ``model.init_from_teacher`` (``init``: true, false or ``auto``) and ``model.freeze_embeddings``
    (``freeze``) when the config is built; ``fits``: whether the student has word embeddings of its own
    (``needs`` says what that takes, for the message)."""
    if init is not True and init is not False and init != AUTO:
        raise ValueError(f"model.init_from_teacher must be true, false or {AUTO}, got {init!r}")
    if init is True and not fits:
        raise ValueError(f"model.init_from_teacher initializes a BiLSTM student's word embeddings: it needs {needs}")
    if freeze and (init is False or not fits):
        raise ValueError("model.freeze_embeddings keeps the word embeddings copied from the teacher: it needs "
                         f"model.init_from_teacher=true (or {AUTO}) and {needs}")


def resolve_init_from_teacher(init: bool | str, freeze: bool, fits: bool, encoder: Any) -> bool:
    """Whether the student starts from the teacher's word embeddings: ``init`` as given, or for ``auto``
    whether the student has word embeddings of its own (``fits``) and the teacher a transformer encoder
    (``encoder``, a :class:`~structkd.models.transformer.SubwordEncoder`; ``None`` without a teacher).

    Raises:
        ValueError: ``auto`` with ``freeze`` (``model.freeze_embeddings``) and nothing to copy from.
    """
    if init != AUTO:
        return bool(init)
    if fits and isinstance(encoder, SubwordEncoder):
        return True
    if freeze:
        raise ValueError("model.freeze_embeddings keeps the word embeddings copied from a transformer teacher, and "
                         "this run has none (kd.teacher): set model.freeze_embeddings=false")
    return False


def load_teacher_embeddings(student: BiLSTMEncoder, encoder: SubwordEncoder, words: Sequence[str],
                            freeze: bool = False) -> None:
    """Set the student's word embeddings ``[len(words), hidden]`` to the teacher's mean subword input embedding
    of each vocabulary word (``words``: the vocabulary's items, padding and unknown entries included); with
    ``freeze`` (``model.freeze_embeddings``) training leaves them as they are."""
    vectors = encoder.embed_words(list(words))
    student.load_word_embeddings(vectors.to(student.words.weight.device, student.words.weight.dtype))
    student.words.weight.requires_grad_(not freeze)


def vocabulary_sentences(distilled: Sequence, others: Sequence[Sequence], from_teacher: bool,
                         open_vocabulary: bool = True) -> Sequence:
    """The sentences a BiLSTM student's vocabulary is built from: its distillation sentences, plus ``others``
    (the development and test sentences) when its word embeddings come from the teacher, which can embed any
    word, and it has no open vocabulary (``model.open_vocabulary=false``; tokens only: no label is read); joined
    without a copy (lazily read sentences stay unread)."""
    return concat(distilled, *others) if from_teacher and not open_vocabulary else distilled


def teacher_lexicon(encoder: SubwordEncoder, open_vocabulary: bool) -> SubwordLexicon | None:
    """The lexicon a student of ``encoder``'s embeddings keeps for words outside its vocabulary
    (``model.open_vocabulary``), or ``None``."""
    return SubwordLexicon.from_encoder(encoder) if open_vocabulary else None
