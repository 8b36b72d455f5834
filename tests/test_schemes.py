"""Tag schemes: validity masks agree with the sequence checker, conversions round-trip through spans."""

import itertools

import pytest

from structkd.schemes import (
    allowed_transitions,
    check_scheme,
    check_tag,
    conlleval_spans,
    convert,
    entity_types,
    first_invalid,
    repair_tags,
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


@pytest.mark.parametrize("scheme", ["BIO", "IOB1", "BIOES"])
def test_repair_is_valid_and_keeps_valid_sequences(scheme):
    labels = tag_inventory(["PER", "LOC"], scheme)
    for length in range(1, 4):
        for seq in itertools.product(labels, repeat=length):
            repaired = repair_tags(seq, scheme)
            assert first_invalid(repaired, scheme) is None, seq
            if first_invalid(seq, scheme) is None:
                assert repaired == list(seq) and conlleval_spans(seq) == spans(seq, scheme)


def test_repair_reads_as_conlleval():
    assert repair_tags(["O", "I-PER", "I-PER"], "BIO") == ["O", "B-PER", "I-PER"]
    assert repair_tags(["B-LOC", "I-PER", "O", "I-PER"], "BIO") == ["B-LOC", "B-PER", "O", "B-PER"]
    assert repair_tags(["O", "B-PER", "I-PER"], "IOB1") == ["O", "I-PER", "I-PER"]
    assert repair_tags(["I-PER", "E-PER", "E-PER", "B-LOC", "O", "I-LOC"], "BIOES") == [
        "B-PER", "E-PER", "S-PER", "S-LOC", "O", "S-LOC"]
    assert repair_tags(["B-PER", "I-PER"], "BIOES") == ["B-PER", "E-PER"]
    assert conlleval_spans(["I-PER", "I-LOC", "I-LOC", "E-LOC", "S-PER"]) == [
        (0, 0, "PER"), (1, 3, "LOC"), (4, 4, "PER")]


def test_check_tag_refuses_prefixes_outside_the_scheme():
    assert check_tag("S-PER", "BIOES") == ("S", "PER") and check_tag("O", "BIO") == ("O", None)
    with pytest.raises(ValueError, match="not a BIO tag"):
        check_tag("S-PER", "BIO")


def test_conlleval_spans_agree_with_seqeval():
    from seqeval.metrics.sequence_labeling import get_entities

    labels = ["O"] + [f"{p}-{t}" for p in "BIES" for t in ("A", "B")]
    for length in range(1, 4):
        for seq in itertools.product(labels, repeat=length):
            expected = sorted((start, end, kind) for kind, start, end in get_entities(list(seq)))
            assert sorted(conlleval_spans(seq)) == expected, seq
