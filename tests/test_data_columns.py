"""Column readers: the four layouts, comments and hashtags, and errors that name file and line."""

from pathlib import Path

import pytest

from structkd.data import CorpusError, label_vocabulary, read_columns, read_text, write_columns

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def write(tmp_path, name, text, encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return path


def test_layouts(tmp_path):
    two = write(tmp_path, "a.conll", "#goals\tO\nJohn\tB-person\n\nParis\tB-location\nrocks\tO\n")
    s = read_columns(two)
    assert [x.tokens for x in s] == [["#goals", "John"], ["Paris", "rocks"]]
    assert s[1].tags == ["B-location", "O"] and s[1].source.endswith("a.conll:4")
    three = write(tmp_path, "b.conllu", "0\tR.H.\tB-ORG\n1\tSaunders\tI-ORG\n")
    assert read_columns(three)[0].tags == ["B-ORG", "I-ORG"]
    conll = write(tmp_path, "c.txt", "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n")
    assert read_columns(conll)[0].tokens == ["EU", "rejects"]
    commented = write(tmp_path, "d.iob2", "# sent_id = 1\nJohn\tB-PER\nlives\tO\n")
    assert read_columns(commented)[0].tokens == ["John", "lives"]
    custom = write(tmp_path, "e.tsv", "John\tX\tB-PER\tY\n")
    assert read_columns(custom, tag_column=2)[0].tags == ["B-PER"]


def test_conversion_and_unlabeled(tmp_path):
    path = write(tmp_path, "a.conll", "John\tB-PER\nSmith\tI-PER\nsaid\tO\n")
    assert read_columns(path, convert_to="BIOES")[0].tags == ["B-PER", "E-PER", "O"]
    assert read_columns(path, labeled=False)[0].tags is None
    text = write(tmp_path, "raw.txt", "one two\n\nthree\n")
    assert [s.tokens for s in read_text(text)] == [["one", "two"], ["three"]]
    assert label_vocabulary(read_columns(path)) == ["O", "B-PER", "I-PER"]


def test_write_round_trip(tmp_path):
    path = write(tmp_path, "a.conll", "John\tB-PER\nsaid\tO\n\nhi\tO\n")
    sentences = read_columns(path)
    out = tmp_path / "out.conll"
    write_columns(out, sentences)
    assert [(s.tokens, s.tags) for s in read_columns(out)] == [(s.tokens, s.tags) for s in sentences]


@pytest.mark.parametrize("text,line,problem", [
    ("John\tB-PER\nsaid\tO\textra\n", 2, "expected 2 columns"),
    ("John\tO\nSmith\tI-PER\n", 2, "cannot follow 'O'"),
    ("John\tZ-PER\n", 1, "malformed tag"),
])
def test_errors_name_file_and_line(tmp_path, text, line, problem):
    path = write(tmp_path, "bad.conll", text)
    with pytest.raises(CorpusError, match=problem) as err:
        read_columns(path)
    assert str(err.value).startswith(f"{path}:{line}:")


def test_empty_and_undecodable_files(tmp_path):
    with pytest.raises(CorpusError, match="no sentences"):
        read_columns(write(tmp_path, "empty.conll", "\n\n"))
    with pytest.raises(CorpusError, match=r":2: not valid UTF-8"):
        read_columns(write(tmp_path, "latin.conll", "a\tO\n\xe9t\xe9\tO\n".encode("latin-1")))


@pytest.mark.skipif(not SHARED.exists(), reason="shared corpora not present")
def test_shared_corpora_read_cleanly():
    assert len(read_columns(SHARED / "wnut17" / "dev.conll")) == 1009
    assert len(read_columns(SHARED / "wikiann-en" / "val.conllu")) == 10000
