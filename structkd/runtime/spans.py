"""Reading entities from tags, torch-free: scheme names, tag parsing, :func:`spans` and entity events.

:mod:`structkd.schemes` (tag validity, CRF masks, conversion) and :mod:`structkd.inference.scores` (exact entity
probabilities in torch) import these, and so does the numpy runtime of exported taggers: one reading of the
tags for ``structkd.load`` and ``structkd.runtime.load``.

A tag is ``"O"`` or ``"<prefix>-<type>"`` with prefix one of ``B I E S``; a span is ``(start, end_inclusive,
type)``.  An entity *event* (:func:`entity_events`) is a list of disjoint *clamps*, each ``{position: allowed
tag indices}``, whose union is "the tags read as this entity".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

SCHEMES = ("BIO", "IOB1", "BIOES")
PREFIXES = {"BIO": "BI", "IOB1": "BI", "BIOES": "BIES"}

Clamp = dict[int, frozenset[int]]


def check_scheme(scheme: str) -> str:
    """Normalize a scheme name (``IOB2`` = ``BIO``, ``IOBES`` = ``BIOES``) or raise ``ValueError``."""
    name = scheme.upper()
    name = {"IOB2": "BIO", "IOBES": "BIOES"}.get(name, name)
    if name not in SCHEMES:
        raise ValueError(f"unknown tag scheme {scheme!r}; expected one of {', '.join(SCHEMES)} (or IOB2, IOBES)")
    return name


BILOU_LETTERS = {"U": "S", "L": "E"}  # BILOU (BILUO) is BIOES with U- for S- (unit) and L- for E- (last)


def from_bilou(tag: str) -> str:
    """The BIOES tag a BILOU tag stands for (``"U-PER" -> "S-PER"``, ``"L-PER" -> "E-PER"``); other tags as they
    are.  The readers read BILOU files and labels through it: the models keep BIOES."""
    prefix, sep, kind = tag.partition("-")
    letter = BILOU_LETTERS.get(prefix)
    return f"{letter}-{kind}" if letter and sep and kind else tag


def parse_tag(tag: str) -> tuple[str, str | None]:
    """Split a tag into ``(prefix, type)``: ``"B-PER" -> ("B", "PER")``, ``"O" -> ("O", None)``."""
    if tag == "O":
        return "O", None
    prefix, sep, kind = tag.partition("-")
    if not sep or prefix not in ("B", "I", "E", "S") or not kind:
        hint = from_bilou(tag) if sep and kind and prefix in BILOU_LETTERS else None
        raise ValueError(f"malformed tag {tag!r}: expected 'O' or '<B|I|E|S>-<type>'" + (
            f" (a BILOU tag: BILOU is BIOES with U- for S- and L- for E-; read it through from_bilou as {hint!r})"
            if hint else ""))
    return prefix, kind


def spans(tags: Sequence[str], scheme: str) -> list[tuple[int, int, str]]:
    """Entity spans ``(start, end_inclusive, type)`` of a valid tag sequence."""
    scheme = check_scheme(scheme)
    out: list[tuple[int, int, str]] = []
    start, kind = None, None
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, cur = parse_tag(tag)
        begins = prefix in ("B", "S") or (prefix == "I" and (kind != cur or start is None))
        if scheme == "IOB1" and prefix == "B":
            begins = True
        if start is not None and (prefix == "O" or begins):
            out.append((start, i - 1, kind))
            start, kind = None, None
        if prefix != "O" and start is None:
            start, kind = i, cur
        if prefix in ("E", "S") and start is not None:
            out.append((start, i, kind))
            start, kind = None, None
    return out


def scheme_of(tags: Sequence[str], saved: str | None = None) -> str:
    """A tagger's scheme: the ``saved`` one, else (an unconstrained model) BIOES if the tag set has ``E-``/``S-``
    tags, else BIO."""
    if saved:
        return check_scheme(saved)
    return "BIOES" if any(parse_tag(t)[0] in ("E", "S") for t in tags) else "BIO"


def tag_sets(tags: Sequence[str], kind: str) -> dict[str, frozenset[int]]:
    """Indices of the tags an entity of type ``kind`` is read from: ``B``, ``I``, ``S``, ``E`` of that type, ``E*``
    (any type's ``E-``), ``closed`` (``O``, ``S-``, ``E-`` of any type) and ``all``."""
    parsed = [parse_tag(t) for t in tags]

    def where(test) -> frozenset[int]:
        return frozenset(n for n, (prefix, k) in enumerate(parsed) if test(prefix, k))

    return {"all": frozenset(range(len(tags))),
            "B": where(lambda p, k: p == "B" and k == kind), "I": where(lambda p, k: p == "I" and k == kind),
            "S": where(lambda p, k: p == "S" and k == kind), "E": where(lambda p, k: p == "E" and k == kind),
            "E*": where(lambda p, k: p == "E"), "closed": where(lambda p, k: p in ("O", "S", "E"))}


def entity_events(start: int, end: int, kind: str, length: int, tags: Sequence[str]) -> list[Clamp]:
    """Disjoint clamps whose union is "``spans(y)`` holds ``(start, end, kind)``", for any tag list (BIO, IOB1
    or BIOES tags; valid or not under the model's constraints).

    Returns:
        a list of ``{position: allowed tag indices}``; positions not named are free.  Clamps that allow no tag
        somewhere (``S-`` events of a BIO tag set) are left out, and so are constraints that allow every tag.
    """
    s = tag_sets(tags, kind)
    every = s["all"]
    open_kind = s["B"] | s["I"]
    stop = every - (s["I"] | s["E*"])  # the tag after the entity does not continue it
    starts: list[Clamp] = [{start: s["B"]}, {start: s["I"]} | ({start - 1: every - open_kind} if start > 0 else {})]
    events: list[Clamp] = []
    if start == end:
        events.append({start: s["S"]})
        events.append({start: s["E"]} | ({start - 1: s["closed"]} if start > 0 else {}))
        closes = [{start + 1: stop} if start + 1 < length else {}]
    else:
        middle = {k: s["I"] for k in range(start + 1, end)}
        closes = [middle | {end: s["E*"]}, middle | {end: s["I"]} | ({end + 1: stop} if end + 1 < length else {})]
    events += [first | close for first in starts for close in closes]
    out = []
    for event in events:
        if all(event.values()):
            out.append({k: v for k, v in event.items() if v != every})
    return out


def event_sums(entities: Sequence[tuple[int, int, str]], tags: Sequence[str], length: int,
               probabilities: Callable[[list[Clamp]], Sequence[float]]) -> list[float]:
    """The probability of each entity ``(start, end_inclusive, kind)`` of one sentence of ``length`` tokens: the
    sum over its event's clamps of ``probabilities(all clamps) -> [n_clamps]`` (one call for the sentence)."""
    events = [entity_events(i, j, kind, length, tags) for i, j, kind in entities]
    values = probabilities([clamp for event in events for clamp in event])
    out, k = [], 0
    for event in events:
        out.append(float(sum(float(v) for v in values[k:k + len(event)])))
        k += len(event)
    return out


__all__ = ["BILOU_LETTERS", "PREFIXES", "SCHEMES", "Clamp", "check_scheme", "entity_events", "event_sums",
           "from_bilou", "parse_tag", "scheme_of", "spans", "tag_sets"]
