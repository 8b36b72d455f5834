"""Attachment scores against hand-computed values."""

import pytest

from structkd.data import ParsedSentence
from structkd.parse.metrics import attachment_scores, format_scores

GOLD = [
    ParsedSentence(["dogs", "bark", ".", "$"], ["NOUN", "VERB", "PUNCT", "SYM"], [2, 0, 2, 2],
                   ["nsubj", "root", "punct", "dep:sym"]),
    ParsedSentence(["John", "runs"], ["PROPN", "VERB"], [2, 0], ["nsubj", "root"]),
]
HEADS = [[2, 0, 1, 2], [2, 0]]
RELS = [["obj", "root", "punct", "dep"], ["nsubj", "root"]]


def test_hand_computed_scores():
    # sentence 1: word 1 right head / wrong relation, word 2 right, word 3 (PUNCT) wrong head, word 4 (SYM)
    # right head / relation without its subtype; sentence 2 entirely right
    r = attachment_scores(GOLD, HEADS, RELS)
    assert (r["words"], r["words_nopunct"], r["sentences"]) == (6, 4, 2)
    assert r["uas"] == pytest.approx(5 / 6) and r["las"] == pytest.approx(3 / 6)
    assert r["uas_nopunct"] == pytest.approx(4 / 4) and r["las_nopunct"] == pytest.approx(3 / 4)
    assert (r["ucm"], r["lcm"], r["ucm_nopunct"], r["lcm_nopunct"]) == (0.5, 0.5, 1.0, 0.5)
    per = r["per_relation"]
    assert per["nsubj"] == {"support": 2, "predicted": 1, "uas": 1.0, "las": 0.5, "precision": 1.0,
                            "f1": pytest.approx(2 / 3)}
    assert per["obj"] == {"support": 0, "predicted": 1, "uas": 0.0, "las": 0.0, "precision": 0.0, "f1": 0.0}
    assert per["punct"]["las"] == 0.0 and per["punct"]["precision"] == 0.0
    assert per["dep:sym"]["uas"] == 1.0 and per["dep:sym"]["las"] == 0.0 and per["root"]["f1"] == 1.0


def test_universal_relations_only():
    r = attachment_scores(GOLD, HEADS, RELS, subtypes=False)
    assert r["las"] == pytest.approx(4 / 6) and r["las_nopunct"] == pytest.approx(3 / 4)
    assert r["per_relation"]["dep"] == {"support": 1, "predicted": 1, "uas": 1.0, "las": 1.0, "precision": 1.0,
                                        "f1": 1.0}
    assert "dep:sym" not in r["per_relation"]


def test_punctuation_set_and_errors():
    r = attachment_scores(GOLD, HEADS, RELS, punct_upos={"PUNCT"})  # SYM counted: its relation is wrong
    assert r["words_nopunct"] == 5 and r["las_nopunct"] == pytest.approx(3 / 5)
    with pytest.raises(ValueError, match="2 predicted heads"):
        attachment_scores(GOLD, [[2, 0], [2, 0]], [["a", "b"], ["c", "d"]])
    with pytest.raises(ValueError, match="1 head rows"):
        attachment_scores(GOLD, HEADS[:1], RELS[:1])
    text = format_scores({**attachment_scores(GOLD, HEADS, RELS), "sentences_per_second": 10.0})
    assert "UAS 83.33  LAS 50.00" in text and "10 sentences/s" in text and "nsubj" in text
