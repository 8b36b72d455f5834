"""Column readers: the four layouts, comments and hashtags, and errors that name file and line."""

import logging
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


@pytest.mark.parametrize("text,line,problem,options", [
    ("John\tB-PER\nsaid\tO\textra\n", 2, "expected 2 columns", {}),
    ("John\tO\nSmith\tI-PER\n", 2, "cannot follow 'O'.*data.repair: conlleval", {}),
    ("John\tZ-PER\n", 1, "malformed tag", {}),
    ("# c\nJohn\tB-PER\nSmith\tI-PER\nsaid\tZ-PER\n", 4, "malformed tag 'Z-PER'", {}),
    ("0\tJohn\tB-PER\n1\tSmith\tBPER\n", 2, "malformed tag 'BPER'", {}),
    ("John\tU-PER\nsaid\tO\n", 1, r"BILOU tag 'U-PER' read as 'S-PER': tag 'S-PER' is not a BIO tag", {}),
    ("John\tB-PER\nSmith\tS-PER\n", 2, "'S-PER' is not a BIO tag", {}),
    ("John\tO\n\tO\nsaid\tO\n", 2, "empty token", {}),
    ("John\tO\n \tO\n", 2, "empty token", {}),
    ("John\tS-PER\nSmith\tB-PER\n", 2, "ends inside an entity at tag 'B-PER'", {"scheme": "BIOES"}),
    ("John\tO\nSmith\tE-PER\nsaid\tO\n", 2, "'E-PER' cannot follow 'O' in BIOES", {"scheme": "BIOES"}),
    ("John\tB-PER\nsaid\tO\n", 1, "expected 3 columns for layout 'index-token-tag'",
     {"layout": "index-token-tag"}),
    ("John\tB-PER\nsaid\tO\n", 1, "no tag column 4", {"tag_column": 4}),
    ("a b c\nd e f\n", 1, "cannot tell which of the 3 columns.*data.tag_column", {}),
    ("John\nsaid\n", 1, "single column holds no tags", {}),
])
def test_errors_name_file_and_line(tmp_path, text, line, problem, options):
    path = write(tmp_path, "bad.conll", text)
    with pytest.raises(CorpusError, match=problem) as err:
        read_columns(path, **options)
    assert str(err.value).startswith(f"{path}:{line}:") and err.value.line == line


def test_bilou_tags_are_read_as_the_bioes_tags_they_stand_for(tmp_path, caplog):
    path = write(tmp_path, "bilou.conll", "Mary\tU-PER\nmet\tO\nJohn\tB-PER\nSmith\tL-PER\nin\tO\n"
                 "New\tB-LOC\nYork\tI-LOC\nCity\tL-LOC\n")
    with caplog.at_level(logging.INFO, logger="structkd.data"):
        [sentence] = read_columns(path, scheme="auto")
    assert sentence.tags == ["S-PER", "O", "B-PER", "E-PER", "O", "B-LOC", "I-LOC", "E-LOC"]
    assert "tags read as BILOU (data.scheme: auto): it has BILOU tags ('U-PER')" in caplog.text
    assert read_columns(path, scheme="BILOU")[0].tags == sentence.tags
    assert read_columns(path, scheme="BIOES")[0].tags == sentence.tags
    assert read_columns(path, scheme="BIOES", convert_to="BIO")[0].tags == ["B-PER", "O", "B-PER", "I-PER", "O",
                                                                           "B-LOC", "I-LOC", "I-LOC"]


def test_io_tags_bare_types_are_read_as_iob1(tmp_path):
    path = write(tmp_path, "io.tsv", "Paul\tperson-actor\nNewman\tperson-actor\nin\tO\nChicago\tlocation-GPE\n")
    expected = ["I-person-actor", "I-person-actor", "O", "I-location-GPE"]
    assert read_columns(path, scheme="auto")[0].tags == read_columns(path, scheme="io")[0].tags == expected
    assert read_columns(path, scheme="IO", convert_to="BIOES")[0].tags == ["B-person-actor", "E-person-actor", "O",
                                                                           "S-location-GPE"]
    with pytest.raises(CorpusError, match="malformed tag 'person-actor'"):  # declared BIO: a bare type is refused
        read_columns(path, scheme="BIO")
    from structkd.ner.config import DataConfig

    assert DataConfig(scheme="IO").scheme == "IO"
    with pytest.raises(ValueError, match="data.convert_to: unknown tag scheme 'IO'"):
        DataConfig(convert_to="IO")


def test_text_files_that_hold_columns_are_told_from_raw_text(tmp_path):
    from structkd.data.columns import column_text_reason, is_raw_text

    files = {
        "conll03.txt": ("EU NNP B-NP B-ORG\nrejects VBZ B-VP O\nGerman JJ B-NP B-MISC\n\nPeter NNP B-NP B-PER\n",
                        "its lines hold 4 fields, the last one a tag"),
        "docstart.txt": ("-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\n", "it has -DOCSTART- lines"),
        "fewnerd.txt": ("Paul\tperson-actor\nNewman\tperson-actor\nstarred\tO\n\nHe\tO\n",
                        "its lines hold 2 tab-separated fields"),
        "conllu.txt": ("# text = Hi john\n1\tHi\thi\tINTJ\t_\t_\t0\troot\t_\t_\n2\tjohn\tjohn\tPROPN\t_\t_\t1\t"
                       "vocative\t_\t_\n\n1\tOk\tok\tINTJ\t_\t_\t0\troot\t_\t_\n",
                       "its lines hold 10 tab-separated fields"),
        "text.txt": ("John Smith lives in New York .\nParis is nice .\nHi john\nThe city of Paris is big .\n", None),
        "short.txt": ("Hi O\nyes O\n", None),  # two lines: too few to tell, raw text
        "pairs.txt": ("Hi there\nGood morning\nSee you\n", None),  # equal lengths, but no tags and no tabs
        "id-sentence.tsv.txt": ("1\tThe cat sat .\n2\tA dog ran .\n3\tIt rained .\n", None),  # fields with spaces
    }
    for name, (text, reason) in files.items():
        path = write(tmp_path, name, text)
        assert column_text_reason(path) == reason, name
        assert is_raw_text(path) == (reason is None), name
    assert not is_raw_text(write(tmp_path, "a.conll", "Hi there\n"))  # not a text suffix
    assert is_raw_text(tmp_path / "missing.txt")  # its reader names the missing file


def test_a_no_break_space_stays_in_its_token(tmp_path):
    text = "Paid VBD B-VP O\n10\xa0000 CD B-NP O\neuros NNS I-NP O\nin IN B-PP O\nParis NNP B-NP B-LOC\n"
    (sentence,) = read_columns(write(tmp_path, "nbsp.txt", text))
    assert sentence.tokens == ["Paid", "10\xa0000", "euros", "in", "Paris"] and sentence.tags[-1] == "B-LOC"


def test_a_row_whose_token_is_a_hash_sign_is_data_and_comments_stay_comments(tmp_path):
    text = ("# id 7f3a domain=en\nPrice NN B-NP O\n# NN I-NP O\n1 CD I-NP O\n\n# text = Acme rose O\n"
            "Acme NNP B-NP B-ORG\n")
    first, second = read_columns(write(tmp_path, "hash.txt", text))
    assert first.tokens == ["Price", "#", "1"] and first.tags == ["O", "O", "O"]
    assert second.tokens == ["Acme"]  # "# text = Acme rose O" has 5 fields, not the file's 4: a comment


def test_only_newlines_break_lines_so_web_texts_separators_stay_in_their_tokens(tmp_path):
    from structkd.data.lazy import lazy_columns

    text = "RT\tO\nnew\u2028line\tO\nnext\x85line\tO\nParis\tB-LOC\r\nbad\tZ-LOC\n"
    path = write(tmp_path, "web.tsv", text)
    with pytest.raises(CorpusError, match=r"web\.tsv:5: malformed tag 'Z-LOC'"):  # the line an editor shows
        read_columns(path)
    path = write(tmp_path, "web.tsv", text.replace("Z-LOC", "O"))
    (sentence,) = read_columns(path)
    assert sentence.tokens == ["RT", "new\u2028line", "next\x85line", "Paris", "bad"]
    assert sentence.lines == [1, 2, 3, 4, 5]
    assert [s.tokens for s in lazy_columns(path)] == [sentence.tokens]


def test_a_trailing_tab_on_some_rows_is_not_a_column(tmp_path):
    (sentence,) = read_columns(write(tmp_path, "tabs.tsv", "John\tB-PER\t\nSmith\tI-PER\nsaid\tO\t\t\n"))
    assert sentence.tokens == ["John", "Smith", "said"] and sentence.tags == ["B-PER", "I-PER", "O"]
    with pytest.raises(CorpusError, match=r"expected 2 columns .* found 1: 'Smith\\t'"):  # a missing tag still is one
        read_columns(write(tmp_path, "missing.tsv", "John\tB-PER\nSmith\t\n"))


def test_docstart_is_skipped_in_every_layout(tmp_path):
    layouts = {
        "index.tsv": "0\t-DOCSTART-\tO\n\n0\tEU\tB-ORG\n1\trejects\tO\n0\t-DOCSTART-\tO\n0\tHi\tO\n",
        "two.tsv": "-DOCSTART-\tO\n\nEU\tB-ORG\nrejects\tO\n\n-DOCSTART-\tO\nHi\tO\n",
        "conll.txt": "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n-DOCSTART- -X- -X- O\n"
                     "Hi UH B-INTJ O\n",
    }
    for name, text in layouts.items():
        sentences = read_columns(write(tmp_path, name, text))
        assert [s.tokens for s in sentences] == [["EU", "rejects"], ["Hi"]], name
        assert read_columns(tmp_path / name, labeled=False)[1].tokens == ["Hi"]


def test_auto_recognises_common_layouts_and_logs_the_columns(tmp_path, caplog):
    files = {
        "token POS tag": ("John NNP B-PER\nSmith NNP I-PER\nsaid VBD O\n", 0, 2),
        "id token tag extra": ("1\tJohn\tB-PER\t_\tx\n2\tsaid\tO\t_\ty\n", 1, 2),
        "conll2003": ("John NNP B-NP B-PER\nSmith NNP I-NP I-PER\nsaid VBD B-VP O\n", 0, 3),
        "last column": ("doc 0 0 John NNP (TOP* - - B-PER\ndoc 0 1 said VBD * - - O\n", 3, 8),
        "token first, tag last": ("John NNP (TOP* - B-NP B-PER\nsaid VBD * - B-VP O\n", 0, 5),
        "an all-O column": ("1\tJohn\tB-PER\tO\n2\tsaid\tO\tO\n", 1, 2),
        "numbers as tokens": ("1990\tNN\tO\n1991\tNN\tO\nParis\tNNP\tB-LOC\n", 0, 2),
    }
    for name, (text, token, tag) in files.items():
        path = write(tmp_path, name.replace(" ", "_") + ".txt", text)
        caplog.clear()
        with caplog.at_level("INFO", logger="structkd.data"):
            (sentence,) = read_columns(path)
        lines = text.splitlines()
        assert sentence.tokens == [line.split()[token] for line in lines], name
        assert sentence.tags == [line.split()[tag] for line in lines], name
        assert f"column {token} as the token and column {tag} as the tag" in caplog.text, name


def test_auto_reads_the_outer_layer_of_a_nested_corpus_and_the_entity_column_beside_chunk_tags(tmp_path, caplog):
    germeval = ("# http://de.wikipedia.org/wiki/Schartau [2009-10-17]\n1\tSchartau\tB-PER\tO\n2\tsagte\tO\tO\n"
                "3\tder\tO\tO\n4\tBerliner\tB-ORG\tB-LOCderiv\n5\tZeitung\tI-ORG\tO\n6\tin\tO\tO\n"
                "7\tHamburg\tB-LOC\tO\n8\tdas\tO\tO\n")
    with caplog.at_level("INFO", logger="structkd.data"):
        (sentence,) = read_columns(write(tmp_path, "germeval.tsv", germeval))
    assert sentence.tags[:5] == ["B-PER", "O", "O", "B-ORG", "I-ORG"] and sentence.tokens[0] == "Schartau"
    assert "column 1 as the token and column 2 as the tag; columns [3] also look like tags" in caplog.text
    # a predictions file (token gold predicted), about as many entities in both: the last column is read
    assert read_columns(write(tmp_path, "pred.tsv", "John\tB-PER\tB-PER\nsaid\tO\tB-LOC\nit\tO\tO\n"
                                                     "here\tO\tO\n"))[0].tags == ["B-PER", "B-LOC", "O", "O"]
    # CoNLL-2003's chunk column tags most words, its entity column few: the entity column, wherever it stands
    rows = ["EU NNP B-NP B-ORG", "rejects VBZ B-VP O", "German JJ B-NP B-MISC", "call NN I-NP O", ". . O O",
            "Peter NNP B-NP B-PER", "Blackburn NNP I-NP I-PER", "said VBD B-VP O", "today NN B-NP O"]
    (sentence,) = read_columns(write(tmp_path, "conll03.txt", "\n".join(rows) + "\n"))
    assert sentence.tags == [row.split()[3] for row in rows]
    swapped = [" ".join(row.split()[i] for i in (0, 1, 3, 2)) for row in rows]
    (sentence,) = read_columns(write(tmp_path, "swapped.txt", "\n".join(swapped) + "\n"))
    assert sentence.tags == [row.split()[3] for row in rows]


def test_auto_keeps_the_tag_column_despite_a_malformed_tag(tmp_path):
    rows = ["w NN B-NP O"] * 9 + ["Smith NNP I-NP Z-PER"]
    with pytest.raises(CorpusError, match="malformed tag 'Z-PER'") as err:
        read_columns(write(tmp_path, "a.txt", "\n".join(rows) + "\n"))
    assert err.value.line == 10


def test_token_and_tag_columns_can_be_set(tmp_path):
    path = write(tmp_path, "a.tsv", "x\tJohn\tNNP\tB-PER\ty\nx\tsaid\tVBD\tO\ty\n")
    (sentence,) = read_columns(path, token_column=1, tag_column=-2)
    assert sentence.tokens == ["John", "said"] and sentence.tags == ["B-PER", "O"]
    (sentence,) = read_columns(path, token_column=1)  # the tag column guessed after the token column
    assert sentence.tags == ["B-PER", "O"]
    (sentence,) = read_columns(path, layout="token-tag", token_column=1, tag_column=3)
    assert sentence.tokens == ["John", "said"]


def test_repair_reads_invalid_transitions_as_conlleval(tmp_path, caplog):
    text = "John\tI-PER\nSmith\tI-PER\nin\tO\nNew\tB-LOC\nYork\tI-ORG\n\nok\tB-PER\n"
    path = write(tmp_path, "a.conll", text)
    with pytest.raises(CorpusError, match="data.repair: conlleval") as err:
        read_columns(path)
    assert err.value.line == 1
    with caplog.at_level("WARNING", logger="structkd.data"):
        first, second = read_columns(path, repair="conlleval")
    assert first.tags == ["B-PER", "I-PER", "O", "B-LOC", "B-ORG"] and first.repaired == 2
    assert second.repaired == 0
    assert f"read 2 tags that break the BIO scheme, in 1 sentence (the first at {path}:1), as conlleval" in caplog.text
    assert read_columns(path, repair="conlleval", convert_to="BIOES")[0].tags == [
        "B-PER", "E-PER", "O", "S-LOC", "S-ORG"]
    bioes = write(tmp_path, "b.conll", "John\tI-PER\nSmith\tI-PER\nsaid\tO\nHi\tB-LOC\n")
    assert read_columns(bioes, scheme="BIOES", repair="conlleval")[0].tags == ["B-PER", "E-PER", "O", "S-LOC"]
    with pytest.raises(ValueError, match="unknown repair"):
        read_columns(path, repair="yes")


def test_fields_are_stripped_and_a_bom_dropped(tmp_path):
    path = write(tmp_path, "a.tsv", "\ufeffJohn \tB-PER\r\nNew York\t I-PER \n")
    (sentence,) = read_columns(path)
    assert sentence.tokens == ["John", "New York"] and sentence.tags == ["B-PER", "I-PER"]


def test_text_files(tmp_path):
    (sentence,) = read_text(write(tmp_path, "bom.txt", "\ufeffHello world\n"))
    assert sentence.tokens == ["Hello", "world"]
    with pytest.raises(CorpusError, match=r"empty\.txt: the file holds no sentences"):
        read_text(write(tmp_path, "empty.txt", "\n \n"))
    with pytest.raises(CorpusError, match=r"latin\.txt:2: not valid UTF-8 .*convert it first, e.g. iconv -f latin1"):
        read_text(write(tmp_path, "latin.txt", "ok\ncaf\xe9\n".encode("latin-1")))
    with pytest.raises(CorpusError, match=r"mac\.txt:3: not valid UTF-8"):  # lines broken by a lone \r count too
        read_text(write(tmp_path, "mac.txt", "ok\rfine\r\ncaf\xe9\n".encode("latin-1")))


def test_empty_and_undecodable_files(tmp_path):
    with pytest.raises(CorpusError, match="no sentences"):
        read_columns(write(tmp_path, "empty.conll", "\n\n"))
    with pytest.raises(CorpusError, match=r":2: not valid UTF-8"):
        read_columns(write(tmp_path, "latin.conll", "a\tO\n\xe9t\xe9\tO\n".encode("latin-1")))


@pytest.mark.skipif(not SHARED.exists(), reason="shared corpora not present")
def test_shared_corpora_read_cleanly():
    assert len(read_columns(SHARED / "wnut17" / "dev.conll")) == 1009
    assert len(read_columns(SHARED / "wikiann-en" / "val.conllu")) == 10000


def test_ner_data_config_passes_the_column_and_repair_options(tmp_path):
    from structkd.ner.config import DataConfig, build_ner_config
    from structkd.ner.pipeline import read_data

    path = write(tmp_path, "a.tsv", "x\tJohn\tI-PER\nx\tsaid\tO\n")
    for repair in ([], ["data.repair=conlleval"]):  # conlleval, the pipelines' default, or named
        config = build_ner_config({"data": {"train": str(path)}}, ["data.token_column=1", "data.scheme=BIO",
                                                                  *repair]).data
        (sentence,) = read_data(config).train
        assert sentence.tokens == ["John", "said"] and sentence.tags == ["B-PER", "O"] and sentence.repaired == 1
    with pytest.raises(CorpusError, match="a.tsv:1: .*data.repair: conlleval"):
        read_data(DataConfig(train=str(path), token_column=1, scheme="BIO", repair="none"))
    # the default scheme, auto, reads an entity begun by I- (and none by B-) as IOB1, which it is valid in
    (sentence,) = read_data(DataConfig(train=str(path), token_column=1, repair="none")).train
    assert sentence.tags == ["I-PER", "O"] and sentence.repaired == 0
    with pytest.raises(ValueError, match="data.repair must be one of none, conlleval"):
        DataConfig(repair="yes")


def test_data_scheme_auto_is_resolved_before_a_run_so_runs_of_the_bio_default_resume(tmp_path):
    # the run's settings (kept in its checkpoints) hold the scheme read off the data, so a checkpoint written
    # under the earlier default, data.scheme: BIO, resumes on BIO data and is refused by name on BIOES data
    from structkd.ner.config import DataConfig, build_ner_config
    from structkd.ner.pipeline import NerTask
    from structkd.train.config import changed_settings

    bio, bioes = write(tmp_path, "bio.conll", "John B-PER\nsaid O\n"), write(tmp_path, "s.conll", "John S-PER\n")
    assert DataConfig().scheme == "auto"
    for path, scheme in ((bio, "BIO"), (bioes, "BIOES")):
        config = NerTask().resolve_config(build_ner_config({"data": {"train": str(path)}}))
        assert config.data.scheme == scheme
        saved = {"data": {**config.to_dict()["data"], "scheme": "BIO"}}
        assert changed_settings(saved, {"data": config.to_dict()["data"]}) == (
            [] if scheme == "BIO" else ["data.scheme: 'BIO' -> 'BIOES'"])
    # nothing to read it off yet (a missing file is refused by the run's file checks): left as it is
    missing = build_ner_config({"data": {"train": str(tmp_path / "none.conll")}})
    assert NerTask().resolve_config(missing).data.scheme == "auto"
    from structkd.data.columns import column_scheme

    assert column_scheme(bioes) == "BIOES" and column_scheme(bioes, layout="tokens") == "BIO"  # no tags to read
    # the library reader's own auto: each file's tags decide (unlabeled reading reads none)
    iob1 = write(tmp_path, "iob1.conll", "Peter I-PER\nBlackburn I-PER\n\nEU I-ORG\nsaid O\n")
    assert [s.tags for s in read_columns(iob1, scheme="auto", repair="none")] == [["I-PER", "I-PER"], ["I-ORG", "O"]]
    assert read_columns(bioes, scheme="auto")[0].tags == ["S-PER"]
    assert read_columns(bioes, scheme="auto", labeled=False)[0].tags is None
    with pytest.raises(ValueError, match="data.scheme: unknown tag scheme 'BILOU2'.*or auto"):
        DataConfig(scheme="BILOU2")
    assert DataConfig(scheme="BILOU").scheme == "BILOU"  # read as BIOES
    with pytest.raises(ValueError, match="data.convert_to: unknown tag scheme 'BILOU'"):  # models keep BIOES
        DataConfig(convert_to="BILOU")
    with pytest.raises(ValueError, match="data.convert_to: unknown tag scheme 'auto'"):
        DataConfig(convert_to="auto")


def test_a_run_read_with_repair_none_resumes_under_the_conlleval_default(tmp_path):
    # a corpus `none` read is read the same by `conlleval`; one it refuses stays refused on whichever side asks
    from structkd.ner.config import DataConfig
    from structkd.train.config import changed_settings

    assert DataConfig().repair == "conlleval"
    saved = {"data": {"train": "a.conll", "repair": "none"}}
    assert changed_settings(saved, {"data": {"train": "a.conll", "repair": "conlleval"}}) == []
    assert changed_settings(saved, {"data": {"train": "b.conll", "repair": "conlleval"}}) == [
        "data.train: 'a.conll' -> 'b.conll'"]
