"""Tag schemes: validity masks agree with the sequence checker, conversions round-trip through spans."""

import itertools

import pytest

from structkd.schemes import (
    allowed_transitions,
    check_scheme,
    convert,
    entity_types,
    first_invalid,
    spans,
    tag_inventory,
    tags_from_spans,
)


@pytest.mark.parametrize("scheme", ["BIO", "IOB1", "BIOES"])
def test_masks_agree_with_first_invalid(scheme):
    labels = tag_inventory(["PER", "LOC"], scheme)
    allowed, start, end = allowed_transitions(labels, scheme)
    for length in range(1, 4):
        for seq in itertools.product(range(len(labels)), repeat=length):
            ok = bool(start[seq[0]]) and bool(end[seq[-1]])
            ok = ok and all(bool(allowed[a, b]) for a, b in zip(seq, seq[1:]))
            assert ok == (first_invalid([labels[t] for t in seq], scheme) is None), [labels[t] for t in seq]


@pytest.mark.parametrize("scheme", ["BIO", "IOB1", "BIOES"])
def test_spans_round_trip(scheme):
    entity = [(0, 1, "PER"), (2, 2, "PER"), (4, 6, "LOC"), (7, 7, "LOC")]
    tags = tags_from_spans(entity, 9, scheme)
    assert first_invalid(tags, scheme) is None
    assert spans(tags, scheme) == entity


def test_known_conversions():
    bio = ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC"]
    assert convert(bio, "BIO", "BIOES") == ["B-PER", "E-PER", "O", "S-LOC", "B-LOC", "E-LOC"]
    assert convert(bio, "BIO", "IOB1") == ["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-LOC"]
    assert convert(convert(bio, "BIO", "IOB1"), "IOB1", "BIO") == bio
    assert entity_types(bio) == ["PER", "LOC"]
    assert check_scheme("iob2") == "BIO" and check_scheme("IOBES") == "BIOES"


def test_errors():
    with pytest.raises(ValueError, match="unknown tag scheme"):
        check_scheme("BILOU")
    with pytest.raises(ValueError, match="malformed tag"):
        spans(["B-PER", "X-PER"], "BIO")
    assert first_invalid(["O", "I-PER"], "BIO") == 1
    assert first_invalid(["B-PER", "I-PER"], "BIOES") == 1
