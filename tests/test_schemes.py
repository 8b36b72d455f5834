"""Tag schemes: validity masks agree with the sequence checker, conversions round-trip through spans."""

import itertools

import pytest

from structkd.schemes import (
    allowed_transitions,
    check_data_scheme,
    check_scheme,
    check_tag,
    conlleval_spans,
    convert,
    detect_scheme,
    entity_types,
    first_invalid,
    from_bilou,
    from_io,
    is_bare_type,
    label_scheme,
    model_scheme,
    read_labels,
    repair_tags,
    spans,
    tag_inventory,
    tags_from_spans,
    write_scheme,
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


def _segmentations(length: int):
    """Every labeled segmentation of ``length`` tokens into entities of types A and B and outside tokens."""
    if length == 0:
        yield []
        return
    for rest in _segmentations(length - 1):  # token length - 1 outside
        yield rest
    for width in range(1, length + 1):
        for rest in _segmentations(length - width):
            for kind in "AB":
                yield rest + [(length - width, length - 1, kind)]


@pytest.mark.parametrize("scheme", ["BIO", "IOB1", "BIOES"])
def test_detect_scheme_reads_every_segmentation_written_in_a_scheme_as_that_scheme(scheme):
    for length in range(1, 5):
        for entities in _segmentations(length):
            tags = tags_from_spans(entities, length, scheme)
            expected = scheme if entities else "BIO"  # no entity tells the schemes apart
            assert detect_scheme([tags])[0] == expected, tags
            assert detect_scheme([["O"], tags, []])[0] == expected  # other sentences tell nothing
    # a whole file: one entity of each sentence decides
    files = [[tags_from_spans(e, n, scheme) for n in range(1, 4) for e in _segmentations(n)]]
    assert [detect_scheme(f)[0] for f in files] == [scheme]


def test_detect_scheme_reasons_stray_tags_and_malformed_ones():
    scheme, reason = detect_scheme([["B-PER", "I-PER", "O", "I-LOC"], ["O", "B-ORG"]])  # one stray I-LOC
    assert scheme == "BIO" and reason.startswith("2 of its 3 entities begin with B-")
    # and an IOB1 file with a stray B- that begins an entity (after another type) stays IOB1: the majority decides
    scheme, reason = detect_scheme([["I-PER", "I-PER", "O", "I-LOC"], ["I-ORG", "B-MISC"], ["I-LOC"]])
    assert scheme == "IOB1" and reason.startswith("4 of its 5 entities begin with I-")
    scheme, reason = detect_scheme([["I-PER", "B-PER", "O"], ["I-LOC"]])
    assert scheme == "IOB1" and reason.startswith("its 2 entities begin with I-")
    assert detect_scheme([["O", "S-PER"]]) == ("BIOES", "it has S- tags ('S-PER')")
    assert detect_scheme([["B-PER", "L-PER"]])[0] == "BILOU"  # read as BIOES (from_bilou)
    assert detect_scheme([["O", "person-actor"], ["art-film", "_"]])[0] == "IO"  # bare types, no prefixed tag
    assert detect_scheme([["O", "PER", "B-LOC"]])[0] == "BIO"  # one prefixed tag: PER is a malformed tag
    assert [from_io(t) for t in ("O", "PER", "location-GPE")] == ["O", "I-PER", "I-location-GPE"]
    with pytest.raises(ValueError, match="'B-PER' has a B- prefix, which IO tags lack"):
        from_io("B-PER")
    assert read_labels(["O", "U-PER", "L-PER", "B-PER"]) == (["O", "S-PER", "E-PER", "B-PER"], None)
    assert [check_data_scheme(s) for s in ("io", "biluo", "BILOU", "iob2")] == ["IO", "BILOU", "BILOU", "BIO"]
    assert [model_scheme(s) for s in ("IO", "BILOU", "BIOES", "IOB1")] == ["IOB1", "BIOES", "BIOES", "IOB1"]
    assert [is_bare_type(t) for t in ("PER", "art-film", "O", "B-PER", "U-PER", "_", "12")] == [
        True, True, False, False, False, False, False]
    assert read_labels(["O", "PER", "art-film"]) == (["O", "I-PER", "I-art-film"], "IOB1")
    assert read_labels(["LABEL_0", "LABEL_1"]) == (["LABEL_0", "LABEL_1"], None)  # no O: refused by the caller
    assert [from_bilou(t) for t in ("U-PER", "L-LOC", "B-PER", "I-X", "O", "U-", "L")] == [
        "S-PER", "E-LOC", "B-PER", "I-X", "O", "U-", "L"]
    assert detect_scheme([["PER", "B_PER", "I-PER"]])[0] == "IOB1"  # malformed tags skipped, reported by the reader
    assert detect_scheme([]) == ("BIO", "no entity tells the schemes apart")


@pytest.mark.parametrize("scheme", ["BIO", "IOB1", "BIOES"])
def test_write_scheme_writes_the_same_entities_in_every_scheme(scheme):
    """Every segmentation of 5 tokens into entities of 2 types, written in ``scheme``: written again in each
    scheme (the files' IO and BILOU included), read back to the same entities (IO: adjacent ones of a type merge)."""
    from itertools import product

    for labels in product(["O", "A1", "A2", "B1"], repeat=5):  # X1/X2: two entities of type X that may touch
        entities, start = [], None
        for i, label in enumerate([*labels, "O"]):
            if start is not None and label != labels[start]:
                entities.append((start, i - 1, labels[start][0]))
                start = None
            if label != "O" and start is None:
                start = i
        tags = tags_from_spans(entities, 5, scheme)
        for target in ("BIO", "IOB1", "BIOES"):
            assert spans(write_scheme(tags, target), target) == entities
        bilou = write_scheme(tags, "BILOU")
        assert not {t[0] for t in bilou} & {"S", "E"} and [from_bilou(t) for t in bilou] == write_scheme(tags, "BIOES")
        io = write_scheme(tags, "IO")
        assert [from_io(t) for t in io] == [("O" if t == "O" else f"I-{t[2:]}") for t in tags]


def test_label_scheme():
    assert label_scheme(tag_inventory(["PER"], "BIOES")) == "BIOES"
    assert label_scheme(tag_inventory(["PER"], "IOB1")) == label_scheme(["O"]) == "BIO"
