"""Tag schemes for span labeling (BIO/IOB2, IOB1, BIOES): parsing, validity, conversion and spans.

A tag is ``"O"`` or ``"<prefix>-<type>"`` with prefix one of ``B I E S``.  A *span* is
``(start, end_inclusive, type)``.  These functions are the single place that knows what a scheme allows;
the CRF constraint masks, the data readers and the span-to-tag KD projection all use them.  Scheme names,
:func:`parse_tag` and :func:`spans` live in the torch-free :mod:`structkd.runtime.spans` (imported here).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache

import torch

# the torch-free reading of tags, shared with the numpy runtime of exported taggers
from structkd.runtime.spans import (  # noqa: F401
    BILOU_LETTERS,
    PREFIXES,
    SCHEMES,
    check_scheme,
    from_bilou,
    parse_tag,
    spans,
)


@lru_cache(maxsize=4096)
def check_tag(tag: str, scheme: str) -> tuple[str, str | None]:
    """:func:`parse_tag` that also refuses a prefix the scheme lacks (``S-PER`` in BIO) with ``ValueError``."""
    scheme = check_scheme(scheme)
    prefix, kind = parse_tag(tag)
    if prefix != "O" and prefix not in PREFIXES[scheme]:
        raise ValueError(f"tag {tag!r} is not a {scheme} tag (prefixes {', '.join(PREFIXES[scheme])}); is the "
                         f"scheme right?")
    return prefix, kind


AUTO = "auto"  # data.scheme: the scheme read off the data's tags (detect_scheme)
IO = "IO"  # data.scheme of files whose entity tags are bare types (Few-NERD's 'person-actor'), read as IOB1's I-X
BILOU = "BILOU"  # data.scheme of files in BILOU (spaCy's BILUO), read as BIOES (from_bilou)
READ_AS = {IO: "IOB1", BILOU: "BIOES"}  # the schemes files may be written in that models keep as another


def check_data_scheme(scheme: str) -> str:
    """:func:`check_scheme`, also taking ``IO`` and ``BILOU`` (``BILUO``): schemes files are written in, read as
    IOB1 (:func:`from_io`) and BIOES (:func:`from_bilou`)."""
    name = {"BILUO": BILOU}.get(scheme.upper(), scheme.upper())
    return name if name in READ_AS else check_scheme(scheme)


def model_scheme(scheme: str) -> str:
    """The scheme models keep for data written in ``scheme``: IOB1 for ``IO`` files, BIOES for ``BILOU`` ones,
    else ``scheme`` itself."""
    return READ_AS.get(scheme, scheme)


def write_scheme(tags: Sequence[str], scheme: str) -> list[str]:
    """Tags of any scheme (read as conlleval reads them, :func:`conlleval_spans`) written in ``scheme``, the
    files' schemes of :func:`check_data_scheme` included: ``IO`` writes each entity word's bare type (two adjacent
    entities of one type merge, as IO means them), ``BILOU`` BIOES's tags with ``U-`` for ``S-`` and ``L-`` for
    ``E-``."""
    if scheme == IO:
        return [tag if tag == "O" else parse_tag(tag)[1] for tag in tags]
    written = tags_from_spans(conlleval_spans(tags), len(tags), model_scheme(scheme))
    if scheme == BILOU:
        to_bilou = {bioes: bilou for bilou, bioes in BILOU_LETTERS.items()}
        return [f"{to_bilou[tag[0]]}{tag[1:]}" if tag[0] in to_bilou and tag[1:2] == "-" else tag for tag in written]
    return written


def from_io(tag: str) -> str:
    """An IO tag read as IOB1: a bare type ``X`` as ``I-X`` (``'person-actor' -> 'I-person-actor'``), ``O`` as it is.

    IO tags every word of an entity with its type, so two adjacent entities of one type read as one (IO cannot
    tell them apart), as IOB1 writes them without a ``B-``.

    Raises:
        ValueError: a tag with a prefix (``B-PER``): the file is not IO.
    """
    if tag == "O":
        return tag
    try:
        prefix, _ = parse_tag(from_bilou(tag))
    except ValueError:
        return f"I-{tag}"
    raise ValueError(f"tag {tag!r} has a {prefix}- prefix, which IO tags lack; is the scheme right?")


def is_bare_type(tag: str) -> bool:
    """Whether ``tag`` reads as an IO tag, a bare entity type: a word, not ``O``, without a tag prefix."""
    if tag == "O" or not any(c.isalpha() for c in tag):
        return False
    try:
        parse_tag(from_bilou(tag))
    except ValueError:
        return True
    return False


def detect_scheme(sequences: Iterable[Sequence[str]]) -> tuple[str, str]:
    """The tag scheme that tag sequences are written in, and why, in words.

    ``BILOU`` as soon as a tag has BILOU's ``U-`` or ``L-`` prefix (read as BIOES, :func:`from_bilou`); ``BIOES``
    as soon as one has an ``E-`` or ``S-`` prefix; else ``BIO`` when some ``B-X`` begins an entity (after ``O``,
    another type or the sentence start), which IOB1 never writes, more often than ``I-X`` begins one; else
    ``IOB1`` when entities begin with ``I-X`` (IOB1 writes ``B-X`` only between two adjacent entities of type
    ``X``, as CoNLL-2003's original files do); else ``IO`` (:func:`from_io`) when the entity tags are bare types
    (``person-actor``) and none has a prefix; else (no entity) ``BIO``.  Other malformed tags are skipped: the
    readers name them with their line.  The majority decides between BIO and IOB1, so that a BIO file with a few
    stray ``I-X`` after ``O`` stays BIO and an IOB1 file with a few ``B-X`` that begin an entity (after another
    type's ``I-Y``) stays IOB1.
    """
    b_starts = i_starts = prefixed = bare = 0
    first_bare = ""
    for tags in sequences:
        prev: tuple[str, str | None] = ("O", None)
        for tag in tags:
            if from_bilou(tag) != tag:
                return BILOU, (f"it has BILOU tags ({tag!r}), read as the BIOES tags they stand for (U- as S-, "
                               "L- as E-)")
            try:
                prefix, kind = parse_tag(tag)
            except ValueError:
                if is_bare_type(tag):
                    bare, first_bare = bare + 1, first_bare or tag
                prev = ("O", None)
                continue
            prefixed += prefix != "O"
            if prefix in ("E", "S"):
                return "BIOES", f"it has {prefix}- tags ({tag!r})"
            begins = prefix != "O" and not (prev[0] in ("B", "I") and prev[1] == kind)
            b_starts += begins and prefix == "B"
            i_starts += begins and prefix == "I"
            prev = (prefix, kind)
    if i_starts > b_starts:
        share = f"its {i_starts}" if not b_starts else f"{i_starts} of its {i_starts + b_starts}"
        return "IOB1", f"{share} entities begin with I- (B- only between adjacent entities of one type)"
    if b_starts:
        share = f"{b_starts}" if not i_starts else f"{b_starts} of its {i_starts + b_starts}"
        return "BIO", (f"{share} {'entity begins' if share == '1' else 'entities begin'} with B- and no tag has an "
                       "E- or S- prefix")
    if bare and not prefixed:
        return IO, (f"its {bare} entity tags are bare types ({first_bare!r}) without B-/I- prefixes: IO, read as "
                    f"IOB1 (I-{first_bare})")
    return "BIO", "no entity tells the schemes apart"


def read_labels(labels: Sequence[str]) -> tuple[list[str], str | None]:
    """A model's label inventory as the tags structkd keeps, and the scheme that reading implies (``None``: read it
    off the tags, :func:`label_scheme`): BILOU's ``U-``/``L-`` as BIOES's ``S-``/``E-``; an IO inventory (``O``
    and bare types only, ``person-actor``) as IOB1's ``I-X``, scheme IOB1.  Other labels as they are."""
    labels = [from_bilou(label) for label in labels]
    if "O" in labels and len(labels) > 1 and all(label == "O" or is_bare_type(label) for label in labels):
        return [from_io(label) for label in labels], "IOB1"
    return labels, None


def label_scheme(labels: Sequence[str]) -> str:
    """The scheme of a label inventory: ``BIOES`` when some label has an ``E-`` or ``S-`` prefix, else ``BIO``
    (IOB1 has BIO's labels: an inventory cannot tell them apart)."""
    prefixes = {parse_tag(t)[0] for t in labels}
    return "BIOES" if prefixes & {"E", "S"} else "BIO"


def entity_types(labels: Sequence[str]) -> list[str]:
    """The entity types of a tag inventory, in order of first appearance."""
    out: list[str] = []
    for tag in labels:
        kind = parse_tag(tag)[1]
        if kind is not None and kind not in out:
            out.append(kind)
    return out


def tag_inventory(types: Sequence[str], scheme: str) -> list[str]:
    """The full tag list of ``scheme`` for entity ``types``: ``O`` first, then the prefixes per type."""
    scheme = check_scheme(scheme)
    prefixes = PREFIXES[scheme]
    return ["O"] + [f"{p}-{t}" for t in types for p in prefixes]


def _can_follow(prev: tuple[str, str | None] | None, cur: tuple[str, str | None], scheme: str) -> bool:
    """Whether tag ``cur`` may follow ``prev`` (``None`` = sentence start) in ``scheme``."""
    p, pt = prev if prev is not None else ("O", None)
    c, ct = cur
    if scheme == "BIO":
        if c in ("E", "S"):
            return False
        return c != "I" or (p in ("B", "I") and pt == ct)
    if scheme == "IOB1":
        if c in ("E", "S"):
            return False
        return c != "B" or (p in ("B", "I") and pt == ct)
    # BIOES
    inside = p in ("B", "I")
    if c in ("I", "E"):
        return inside and pt == ct
    return not inside


def _can_end(tag: tuple[str, str | None], scheme: str) -> bool:
    return scheme != "BIOES" or tag[0] in ("O", "E", "S")


def allowed_transitions(labels: Sequence[str], scheme: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validity masks of a tag inventory, for :class:`structkd.structs.chain.LinearChainCRF`.

    Returns:
        ``allowed [n_tags, n_tags]`` (from-tag, to-tag), ``allowed_start [n_tags]``, ``allowed_end [n_tags]``,
        all boolean.
    """
    scheme = check_scheme(scheme)
    parsed = [parse_tag(t) for t in labels]
    n = len(labels)
    allowed = torch.tensor([[_can_follow(parsed[a], parsed[b], scheme) for b in range(n)] for a in range(n)])
    start = torch.tensor([_can_follow(None, parsed[b], scheme) for b in range(n)])
    end = torch.tensor([_can_end(parsed[a], scheme) for a in range(n)])
    return allowed, start, end


def first_invalid(tags: Sequence[str], scheme: str) -> int | None:
    """Index of the first tag that breaks ``scheme`` (including a sentence that ends inside an entity
    for BIOES, reported at its last index), or ``None`` when the sequence is valid."""
    scheme = check_scheme(scheme)
    prev = None
    for i, tag in enumerate(tags):
        cur = parse_tag(tag)
        if not _can_follow(prev, cur, scheme):
            return i
        prev = cur
    if prev is not None and not _can_end(prev, scheme):
        return len(tags) - 1
    return None


def _chunk_ends(prev: tuple[str, str | None], cur: tuple[str, str | None]) -> bool:
    """conlleval's (and seqeval's) end-of-chunk rule: whether the entity at ``prev`` ends before ``cur``."""
    (p, pt), (c, ct) = prev, cur
    if p in ("E", "S"):
        return True
    return p in ("B", "I") and (c in ("B", "S", "O") or pt != ct)


def _chunk_starts(prev: tuple[str, str | None], cur: tuple[str, str | None]) -> bool:
    """conlleval's (and seqeval's) start-of-chunk rule: whether ``cur`` begins an entity after ``prev``."""
    (p, pt), (c, ct) = prev, cur
    if c == "O":
        return False
    return c in ("B", "S") or p in ("O", "E", "S") or pt != ct


def conlleval_spans(tags: Sequence[str]) -> list[tuple[int, int, str]]:
    """Entity spans of any tag sequence, valid or not, read as conlleval reads it.

    An ``I-X`` or ``E-X`` after ``O``, after an entity's end or after a tag of another type begins an entity;
    an entity ends at ``E``/``S``, before ``B``/``S``/``O`` and before a tag of another type.  On valid
    sequences of any scheme this agrees with :func:`spans`.
    """
    out: list[tuple[int, int, str]] = []
    prev: tuple[str, str | None] = ("O", None)
    start: int | None = None
    for i, tag in enumerate([*tags, "O"]):
        cur = parse_tag(tag)
        if start is not None and _chunk_ends(prev, cur):
            out.append((start, i - 1, prev[1]))
            start = None
        if _chunk_starts(prev, cur):
            start = i
        prev = cur
    return out


def repair_tags(tags: Sequence[str], scheme: str) -> list[str]:
    """The valid ``scheme`` tags of the entities conlleval reads in ``tags`` (:func:`conlleval_spans`).

    BIO: ``I-X`` after ``O`` or after ``B-Y``/``I-Y`` becomes ``B-X``.  IOB1: ``B-X`` that does not follow
    ``X`` becomes ``I-X``.  BIOES: an ``I-X``/``E-X`` that cannot continue an entity begins one (``B-X``/``S-X``),
    and a ``B-X``/``I-X`` whose entity does not continue ends it (``S-X``/``E-X``).  Valid sequences are
    returned unchanged.
    """
    return tags_from_spans(conlleval_spans(tags), len(tags), scheme)


def tags_from_spans(entity_spans: Sequence[tuple[int, int, str]], length: int, scheme: str) -> list[str]:
    """Tag sequence of ``length`` tokens for non-overlapping ``entity_spans`` in ``scheme``."""
    scheme = check_scheme(scheme)
    tags = ["O"] * length
    ordered = sorted(entity_spans)
    for n, (start, end, kind) in enumerate(ordered):
        if scheme == "BIOES":
            if start == end:
                tags[start] = f"S-{kind}"
                continue
            tags[start], tags[end] = f"B-{kind}", f"E-{kind}"
            for i in range(start + 1, end):
                tags[i] = f"I-{kind}"
            continue
        first = "B"
        if scheme == "IOB1":
            adjacent = n > 0 and ordered[n - 1][1] == start - 1 and ordered[n - 1][2] == kind
            first = "B" if adjacent else "I"
        tags[start] = f"{first}-{kind}"
        for i in range(start + 1, end + 1):
            tags[i] = f"I-{kind}"
    return tags


def convert(tags: Sequence[str], source: str, target: str) -> list[str]:
    """Convert a valid tag sequence between schemes (through its spans)."""
    return tags_from_spans(spans(tags, source), len(tags), target)
