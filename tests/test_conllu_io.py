"""CoNLL-U reading and writing: basic trees, exact round trips, errors naming file and line, UD EWT dev."""

from pathlib import Path

import pytest
import torch

from structkd.data import (
    CorpusError,
    ParsedSentence,
    heads_tensor,
    read_conllu,
    read_tokenized_text,
    treebank_stats,
    write_conllu,
)
from structkd.parse.config import DataConfig
from structkd.parse.pipeline import _read_input
from structkd.structs.heads import is_tree

GOOD = """# newdoc id = demo
# sent_id = 1
# text = Don't go to the cat's bed.
# a comment without an equals sign
1-2\tDon't\t_\t_\t_\t_\t_\t_\t_\tSpaceAfter=No
1\tDo\tdo\tAUX\tVBP\tMood=Ind\t3\taux\t3:aux\t_
2\tn't\tnot\tPART\tRB\t_\t3\tadvmod\t3:advmod\t_
3\tgo\tgo\tVERB\tVB\tVerbForm=Inf\t0\troot\t0:root\t_
4\tto\tto\tADP\tIN\t_\t7\tcase\t7:case\t_
5\tthe\tthe\tDET\tDT\t_\t6\tdet\t6:det\t_
6\tcat's\tcat\tNOUN\tNN\t_\t7\tnmod:poss\t7:nmod:poss\t_
7\tbed\tbed\tNOUN\tNN\t_\t3\tobl\t3:obl:to\tSpaceAfter=No
7.1\tsleeps\tsleep\tVERB\tVBZ\t_\t_\t_\t3:conj\t_
8\t.\t.\tPUNCT\t.\t_\t3\tpunct\t3:punct\t_

# sent_id = 2
1\tHi\thi\tINTJ\tUH\t_\t0\troot\t0:root\t_
"""

EWT_DEV = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "ud-english-ewt" / "en_ewt-ud-dev.conllu"


def write(tmp_path, text, name="t.conllu", raw=False):
    path = tmp_path / name
    if raw:
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_reads_words_subtypes_comments_and_skips_multiword_and_empty(tmp_path):
    path = write(tmp_path, GOOD)
    first, second = read_conllu(path)
    assert first.words == ["Do", "n't", "go", "to", "the", "cat's", "bed", "."]
    assert first.upos[:3] == ["AUX", "PART", "VERB"]
    assert first.heads == [3, 3, 0, 7, 6, 7, 3, 3]
    assert first.deprels[5] == "nmod:poss"
    assert first.source == f"{path}:6"
    assert first.word_lines == [6, 7, 8, 9, 10, 11, 12, 14]
    assert first.comments[3] == "# a comment without an equals sign"
    assert first.token_list.metadata["sent_id"] == "1"
    assert len(first.token_list) == 10  # the multiword token and the empty node are kept for writing
    assert second.words == ["Hi"] and second.heads == [0] and len(second) == 1
    assert heads_tensor([first, second]).tolist()[1] == [-1, 0] + [-1] * 7
    assert bool(is_tree(heads_tensor([first, second]), multiroot=False).all())


def test_max_sentences_reads_the_first_ones_only(tmp_path):
    broken = GOOD + "\n# sent_id = 3\n1\tOops\t_\t_\t_\t_\t5\troot\t_\t_\n"  # head out of range
    path = write(tmp_path, broken)
    with pytest.raises(CorpusError):
        read_conllu(path)
    assert [s.words for s in read_conllu(path, max_sentences=2)] == [s.words for s in read_conllu(write(
        tmp_path, GOOD, "good.conllu"))]
    (first,) = read_conllu(path, max_sentences=1)
    assert first.heads == [3, 3, 0, 7, 6, 7, 3, 3]


def test_round_trip_with_new_heads_and_relations(tmp_path):
    sentences = read_conllu(write(tmp_path, GOOD))
    out = tmp_path / "out.conllu"
    write_conllu(out, sentences)
    assert out.read_text(encoding="utf-8") == GOOD + "\n"  # byte-identical when nothing changes
    new_heads = [[3, 1, 0, 3, 3, 3, 6, 7], [0]]
    new_rels = [["a", "b", "root", "c", "d:sub", "e", "f", "g"], ["root"]]
    write_conllu(out, sentences, new_heads, new_rels)
    again = read_conllu(out)
    for old, new, heads, rels in zip(sentences, again, new_heads, new_rels):
        assert new.heads == heads and new.deprels == rels
        assert new.words == old.words and new.upos == old.upos and new.comments == old.comments
        for a, b in zip(old.lines, new.lines):
            fa, fb = a.split("\t"), b.split("\t")
            if len(fa) == 10 and fa[0].isdigit():
                assert fa[:6] + fa[8:] == fb[:6] + fb[8:]
            else:
                assert a == b  # comments, multiword tokens and empty nodes untouched
    # a decoded tensor [batch, seq_len + 1] works as well
    tensor = heads_tensor(sentences, new_heads)
    write_conllu(out, sentences, tensor, new_rels)
    assert [s.heads for s in read_conllu(out)] == new_heads
    with pytest.raises(ValueError, match="heads"):
        write_conllu(out, sentences, [[0], [0]], new_rels)


def test_unvalidated_reading_and_hand_built_sentences(tmp_path):
    text = "1\ta\t_\tX\t_\t_\t_\t_\t_\t_\n2\tb\t_\tX\t_\t_\t_\t_\t_\t_\n"
    (sentence,) = read_conllu(write(tmp_path, text), validate=False)
    assert sentence.heads == [-1, -1]
    out = tmp_path / "hand.conllu"
    write_conllu(out, [ParsedSentence(["x", "y"], ["X", "Y"], [0, 1], ["root", "dep"])])
    (back,) = read_conllu(out)
    assert back.words == ["x", "y"] and back.heads == [0, 1] and back.deprels == ["root", "dep"]
    multi = "1\ta\t_\tX\t_\t_\t0\troot\t_\t_\n2\tb\t_\tX\t_\t_\t0\troot\t_\t_\n"
    assert read_conllu(write(tmp_path, multi), multiroot=True)[0].heads == [0, 0]


def row(i, head, rel="dep", form="w"):
    return f"{i}\t{form}\t_\tX\t_\t_\t{head}\t{rel}\t_\t_"


ERRORS = {
    "cycle": ("\n".join(["# c", row(1, 0, "root"), row(2, 3), row(3, 2)]) + "\n", 3, "cycle"),
    "out_of_range": ("\n".join([row(1, 0, "root"), row(2, 5)]) + "\n", 2, "out of range"),
    "self_head": ("\n".join([row(1, 0, "root"), row(2, 2)]) + "\n", 2, "out of range"),
    "two_roots": ("\n".join([row(1, 0, "root"), row(2, 1), "", row(1, 0, "root"), row(2, 0, "root")]) + "\n", 5,
                  "single root"),
    "no_root": ("\n".join([row(1, 2), row(2, 1)]) + "\n", 1, "cycle"),
    "columns": ("\n".join([row(1, 0, "root"), "2\tw\t_\tX\t_\t_\t1\tdep"]) + "\n", 2, "10 tab-separated"),
    "non_integer_head": ("\n".join([row(1, 0, "root"), row(2, "x")]) + "\n", 2, "not an integer"),
    "missing_head": ("\n".join([row(1, 0, "root"), row(2, "_")]) + "\n", 2, "not an integer"),
    "missing_deprel": ("\n".join([row(1, 0, "root"), row(2, 1, "_")]) + "\n", 2, "DEPREL"),
    "bad_id": ("\n".join([row(1, 0, "root"), row("two", 1)]) + "\n", 2, "ID"),
    "id_order": ("\n".join([row(1, 0, "root"), row(3, 1)]) + "\n", 2, "word ID 3"),
    "empty": ("", 1, "no sentences"),
    "only_blank": ("\n\n", 1, "no sentences"),
    "only_comments": ("# sent_id = 1\n# text = x\n", 1, "without words"),
    "reversed_range": ("\n".join(["# c", row(1, 0, "root"), row("3-2", "_"), row(2, 1), row(3, 1)]) + "\n", 3,
                       "range 3-2"),
    "range_ahead": ("\n".join([row(1, 0, "root"), row("3-4", "_"), row(2, 1), row(3, 1), row(4, 1)]) + "\n", 2,
                    "starting at word 2"),
    "overlapping_ranges": ("\n".join([row("1-2", "_"), row(1, 0, "root"), row("2-3", "_"), row(2, 1), row(3, 1)])
                           + "\n", 3, "range 2-3"),
    "range_beyond": ("\n".join([row(1, 0, "root"), row("2-3", "_"), row(2, 1)]) + "\n", 2, "ends at word 3"),
    "empty_node": ("\n".join([row(1, 0, "root"), row("2.1", "_"), row(2, 1)]) + "\n", 2, "empty node 2.1"),
}


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_errors_name_file_and_line(tmp_path, name):
    text, line, message = ERRORS[name]
    path = write(tmp_path, text)
    with pytest.raises(CorpusError, match=message) as info:
        read_conllu(path)
    assert str(info.value).startswith(f"{path}:{line}:")
    assert info.value.line == line


def test_encoding_error_names_the_line(tmp_path):
    path = write(tmp_path, (row(1, 0, "root") + "\n" + row(2, 1, form="caf\xe9") + "\n").encode("latin-1"), raw=True)
    with pytest.raises(CorpusError, match="UTF-8") as info:
        read_conllu(path)
    assert str(info.value).startswith(f"{path}:2:")


def test_tokenized_text_for_the_parser(tmp_path):
    path = write(tmp_path, "\ufeffHello world .\n\n Bye \n", "in.txt")
    first, second = read_tokenized_text(path)
    assert first.words == ["Hello", "world", "."] and second.words == ["Bye"]
    assert first.heads == [-1] * 3 and second.source == f"{path}:3" and second.word_lines == [3]
    assert [s.words for s in _read_input(str(path), DataConfig(max_sentences=1))] == [first.words]
    empty = write(tmp_path, "\n", "empty.txt")
    with pytest.raises(CorpusError, match="no sentences"):
        _read_input(str(empty), DataConfig())
    latin = write(tmp_path, "ok\ncaf\xe9\n".encode("latin-1"), "latin.txt", raw=True)
    with pytest.raises(CorpusError, match="not valid UTF-8") as info:
        _read_input(str(latin), DataConfig())
    assert str(info.value).startswith(f"{latin}:2:")


def test_no_tree_checks_without_validation(tmp_path):
    path = write(tmp_path, ERRORS["cycle"][0])
    assert read_conllu(path, validate=False)[0].heads == [0, 3, 2]


def test_treebank_stats(tmp_path):
    crossing = "\n".join([row(1, 3), row(2, 4), row(3, 0, "root"), row(4, 3)]) + "\n"
    sentences = read_conllu(write(tmp_path, GOOD + "\n" + crossing))
    stats = treebank_stats(sentences)
    assert stats == {"sentences": 3, "words": 13, "nonprojective": 1, "nonprojective_fraction": 1 / 3,
                     "multiroot": 0}


@pytest.mark.skipif(not EWT_DEV.is_file(), reason="UD English EWT not in ../shared/data")
def test_ud_english_ewt_dev(tmp_path):
    sentences = read_conllu(EWT_DEV)
    stats = treebank_stats(sentences)
    assert stats["sentences"] == 2001 and stats["words"] == 25147
    assert abs(stats["nonprojective_fraction"] - 0.015) < 0.001
    assert any(":" in r for s in sentences for r in s.deprels)
    out = tmp_path / "dev.conllu"
    write_conllu(out, sentences)
    expected = EWT_DEV.read_text(encoding="utf-8-sig").replace("\r\n", "\n")
    assert out.read_text(encoding="utf-8").rstrip("\n") == expected.rstrip("\n")
    lens = torch.tensor([len(s) for s in sentences])
    assert bool(is_tree(heads_tensor(sentences), lens, multiroot=False).all())
