"""A new user's corpora as real files come, end to end through the CLI: a CoNLL-2003 file (byte-order mark, CRLF
line ends, ``-DOCSTART-`` lines, four columns, IOB1 tags, a test label the training data lacks)
and a CoNLL-U treebank (multiword tokens, an empty node, comments, non-projective trees, a long sentence).
Every run must finish with warnings that name what it met, and write what a user takes home."""

import json
import logging
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from structkd.cli import main  # noqa: E402

CONLL03 = """-DOCSTART- -X- -X- O

EU NNP B-NP I-ORG
rejects VBZ B-VP O
German JJ B-NP I-MISC
call NN I-NP O
. . O O

Peter NNP B-NP I-PER
Blackburn NNP I-NP I-PER

BRUSSELS NNP B-NP I-LOC
1996-08-22 CD I-NP O

-DOCSTART- -X- -X- O

Germany NNP B-NP I-LOC
's POS B-NP O
representative NN I-NP O
Werner NNP I-NP I-PER
Zwingmann NNP I-NP I-PER
said VBD B-VP O
"""

TEST03 = """-DOCSTART- -X- -X- O

Japan NNP B-NP I-LOC
beat VBD B-VP O
Syria NNP B-NP I-LOC
in IN B-PP O
the DT B-NP O
Asian JJ I-NP I-MISC
Cup NNP I-NP I-MISC
final NN I-NP B-EVENT
"""


TAGGER = ["model.kind=bilstm", "model.word_dim=8", "model.hidden=8", "model.char_filters=4", "training.epochs=1",
          "training.batch_size=4", "training.progress=false"]  # a tiny BiLSTM-CRF, one epoch


def train_tagger(train, dev, test, out) -> int:
    return main(["ner", "train", f"data.train={train}", f"data.dev={dev}", f"data.test={test}",
                 f"training.output_dir={out}", *TAGGER])


def crlf_with_bom(text: str) -> bytes:
    return b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode("utf-8")


def row(i, form, head, rel, upos="X"):
    return f"{i}\t{form}\t{form.lower()}\t{upos}\t_\t_\t{head}\t{rel}\t_\t_"


def treebank() -> str:
    """Three trees: a French multiword token with an empty node, a non-projective tree, a 120-word sentence."""
    mwt = ["# sent_id = fr-1", "# text = Il parle du livre.", row(1, "Il", 2, "nsubj"), row(2, "parle", 0, "root"),
           "3-4\tdu\t_\t_\t_\t_\t_\t_\t_\t_", row(3, "de", 5, "case"), row(4, "le", 5, "det"),
           row(5, "livre", 2, "obl"), "5.1\tpris\tprendre\tVERB\t_\t_\t_\t_\t2:conj\t_", row(6, ".", 2, "punct")]
    # A hearing is scheduled on the issue today: "on the issue" hangs on "hearing" across "is scheduled"
    crossing = ["# sent_id = en-1", row(1, "A", 2, "det"), row(2, "hearing", 4, "nsubj"), row(3, "is", 4, "aux"),
                row(4, "scheduled", 0, "root"), row(5, "on", 7, "case"), row(6, "the", 7, "det"),
                row(7, "issue", 2, "nmod"), row(8, "today", 4, "obl")]
    long = ["# sent_id = long-1", row(1, "w1", 0, "root")] + [row(i, f"w{i}", i - 1, "dep") for i in range(2, 121)]
    return "\n\n".join("\n".join(s) for s in (mwt, crossing, long, mwt, crossing)) + "\n\n"


def test_a_conll2003_file_trains_evaluates_and_predicts_with_warnings(tmp_path, caplog, capsys):
    train, test = tmp_path / "eng.train", tmp_path / "eng.testb"
    train.write_bytes(crlf_with_bom(CONLL03 * 3))
    test.write_bytes(crlf_with_bom(TEST03))
    out = tmp_path / "run"
    with caplog.at_level(logging.INFO):
        assert train_tagger(train, train, test, out) == 0
    # the scheme read off the training tags (data.scheme: auto): IOB1, whose entities begin with I-
    assert "eng.train: tags read as IOB1 (data.scheme: auto): its 18 entities begin with I-" in caplog.text
    assert json.loads((out / "ner_config.json").read_text())["data"]["scheme"] == "IOB1"
    assert "break the IOB1 scheme" not in caplog.text.split("eng.testb")[0]  # the training file is valid IOB1
    # the test's B-EVENT after I-MISC breaks IOB1 (read as conlleval reads it, I-EVENT); no training sentence
    # has EVENT, so it is scored as a miss
    assert "eng.testb: read 1 tag that breaks the IOB1 scheme" in caplog.text
    assert "'I-EVENT' (" in caplog.text and "eng.testb:10, data.test" in caplog.text
    results = json.loads((out / "results.json").read_text())
    assert 0.0 <= results["test"]["recall"] < 1.0
    text = tmp_path / "raw.txt"
    text.write_text("Werner Zwingmann said Germany rejects it.\n", encoding="utf-8")
    capsys.readouterr()
    assert main(["ner", "predict", str(out / "model"), str(text), str(tmp_path / "tags.jsonl"), "--format",
                 "jsonl"]) == 0
    assert (tmp_path / "tags.jsonl").read_text(encoding="utf-8").strip()


def test_a_ud_treebank_with_multiword_tokens_crossing_arcs_and_a_long_sentence(tmp_path, caplog):
    path = tmp_path / "fr_xx-ud-train.conllu"
    path.write_bytes(crlf_with_bom(treebank()))
    out = tmp_path / "run"
    settings = ["model.encoder=bilstm", "model.word_dim=8", "model.hidden=8", "model.char_filters=4",
                "model.arc_hidden=8", "model.rel_hidden=6", "model.sib_hidden=4", "training.epochs=1",
                "training.batch_size=4", "training.progress=false", "training.max_batch_cost=200000"]
    with caplog.at_level(logging.WARNING):
        assert main(["parse", "train", f"data.train={path}", f"data.dev={path}", "model.tree=2o",
                     f"training.output_dir={out}", *settings]) == 0
    assert "projectivized 2 non-projective training trees of 5" in caplog.text
    results = json.loads((out / "results.json").read_text())
    assert results["projectivized_nonprojective"] == 2 and 0.0 <= results["dev"]["las"] <= 1.0
    written = tmp_path / "parsed.conllu"
    assert main(["parse", "predict", str(out / "model"), str(path), str(written)]) == 0
    lines = written.read_text(encoding="utf-8").splitlines()
    # written back with its multiword token, empty node and comments; every word has a head
    assert "3-4\tdu\t_\t_\t_\t_\t_\t_\t_\t_" in lines and any(line.startswith("5.1\tpris") for line in lines)
    assert "# text = Il parle du livre." in lines
    words = [line.split("\t") for line in lines if line and line[0].isdigit() and "-" not in line.split("\t")[0]
             and "." not in line.split("\t")[0]]
    assert len(words) == 2 * 6 + 2 * 8 + 120 and all(w[6].isdigit() for w in words)
    # the same treebank saved as .txt is read as the CoNLL-U it holds, not as one raw sentence per line
    as_text = tmp_path / "fr.txt"
    as_text.write_bytes(path.read_bytes())
    assert main(["parse", "predict", str(out / "model"), str(as_text), str(tmp_path / "again.conllu")]) == 0
    assert (tmp_path / "again.conllu").read_text(encoding="utf-8") == written.read_text(encoding="utf-8")


BIOES = """John S-PER
lives O
in O
New B-LOC
York E-LOC
. O

The B-ORG
United I-ORG
Nations E-ORG
met O
Mary S-PER
"""


def test_a_bioes_corpus_is_read_as_bioes_trained_evaluated_and_refused_to_a_bio_teacher_reading(tmp_path, caplog,
                                                                                                 capsys):
    corpus = tmp_path / "bioes.conll"
    corpus.write_text(BIOES * 2, encoding="utf-8")
    out = tmp_path / "run"
    with caplog.at_level(logging.INFO):
        assert train_tagger(corpus, corpus, corpus, out) == 0
    assert "bioes.conll: tags read as BIOES (data.scheme: auto): it has S- tags ('S-PER')" in caplog.text
    assert "break the BIOES scheme" not in caplog.text
    assert json.loads((out / "ner_config.json").read_text())["data"]["scheme"] == "BIOES"
    saved = json.loads((out / "model" / "config.json").read_text())["args"]
    assert saved["scheme"] == "BIOES" and {"S-PER", "E-LOC", "I-ORG"} <= set(saved["tags"])
    # evaluated with no config: the file's own tags say BIOES (before, the BIO default refused S-PER)
    capsys.readouterr()
    assert main(["ner", "evaluate", str(out / "model"), str(corpus)]) == 0
    assert "f1" in capsys.readouterr().out.lower()
    # BIO data distilled from the BIOES teacher: converted to the teacher's scheme (before: refused)
    bio = tmp_path / "bio.conll"
    bio.write_text(BIOES.replace("S-", "B-").replace("E-", "I-"), encoding="utf-8")
    with caplog.at_level(logging.INFO):
        assert main(["ner", "distill", f"data.train={bio}", f"kd.teacher={out / 'model'}",
                     f"training.output_dir={tmp_path / 'student'}", *TAGGER]) == 0
    assert f"data.convert_to: BIOES, the teacher's scheme ({out / 'model'}): the data's BIO tags" in caplog.text
    assert json.loads((tmp_path / "student" / "ner_config.json").read_text())["data"]["convert_to"] == "BIOES"
    # a student made to keep BIO cannot take the BIOES teacher's labels: refused, naming data.convert_to
    capsys.readouterr()
    assert main(["ner", "distill", f"data.train={bio}", f"kd.teacher={out / 'model'}", "data.convert_to=BIO",
                 f"training.output_dir={tmp_path / 'bio-student'}", *TAGGER]) == 2
    error = capsys.readouterr().err
    assert "has BIOES labels" in error and "the data is read as BIO: set data.convert_to=BIOES" in error
    # distilled on unlabeled text alone, no file tells the scheme: the teacher's labels do (before, BIO and refused)
    text = tmp_path / "raw.txt"
    text.write_text("Mary met John in Paris .\nThe Acme Corp office is in New York .\n", encoding="utf-8")
    student = tmp_path / "from-text"
    with caplog.at_level(logging.INFO):
        assert main(["ner", "distill", f"data.unlabeled=[{text}]", f"kd.teacher={out / 'model'}",
                     f"training.output_dir={student}", *TAGGER]) == 0
    assert f"data.scheme: auto read as BIOES from the teacher's labels ({out / 'model'})" in caplog.text
    assert json.loads((student / "ner_config.json").read_text())["data"]["scheme"] == "BIOES"
    assert json.loads((student / "model" / "config.json").read_text())["args"]["scheme"] == "BIOES"


FEWNERD = """Paul\tperson-actor
Newman\tperson-actor
starred\tO
in\tO
The\tart-film
Sting\tart-film
in\tO
Chicago\tlocation-GPE
.\tO

He\tO
met\tO
Robert\tperson-director
Redford\tperson-director
"""


def test_an_io_corpus_of_bare_types_is_read_as_iob1_trained_evaluated_and_predicted(tmp_path, caplog, capsys):
    corpus = tmp_path / "supervised.txt"
    corpus.write_text(FEWNERD * 2, encoding="utf-8")  # Few-NERD's files: token<TAB>type, every word of an entity
    out = tmp_path / "run"
    with caplog.at_level(logging.INFO):
        assert train_tagger(corpus, corpus, corpus, out) == 0
    assert ("supervised.txt: tags read as IO (data.scheme: auto): its 14 entity tags are bare types ('person-actor') "
            "without B-/I- prefixes: IO, read as IOB1 (I-person-actor)") in caplog.text
    assert json.loads((out / "ner_config.json").read_text())["data"]["scheme"] == "IO"
    saved = json.loads((out / "model" / "config.json").read_text())["args"]
    assert saved["scheme"] == "IOB1" and {"I-person-actor", "I-art-film", "I-location-GPE"} <= set(saved["tags"])
    results = json.loads((out / "results.json").read_text())
    assert 0.0 <= results["test"]["f1"] <= 1.0
    capsys.readouterr()
    assert main(["ner", "evaluate", str(out / "model"), str(corpus)]) == 0  # no config: the file says IO
    # Few-NERD's files are .txt: read as the columns they hold, not as raw text (a line "Paul person-actor" each)
    written = tmp_path / "predicted.conll"
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert main(["ner", "predict", str(out / "model"), str(corpus), str(written)]) == 0
    assert "supervised.txt: read as a labeled corpus's columns, not as raw text" in caplog.text
    rows = [line.split("\t") for line in written.read_text(encoding="utf-8").splitlines() if line]
    assert [r[0] for r in rows] == [line.split("\t")[0] for line in (FEWNERD * 2).splitlines() if line]
    tags = [r[-1] for r in rows]  # written back in IO, the input's scheme: bare types (the model's are IOB1)
    assert len(tags) == 26 and set(tags) <= {"O", "person-actor", "person-director", "art-film", "location-GPE"}
    assert "supervised.txt: predictions written in IO, the scheme of its tags" in caplog.text
    # a prefixed tag in a file declared IO is refused at its line
    bad = tmp_path / "bad.txt"
    bad.write_text("Paul\tperson-actor\nNewman\tB-PER\n", encoding="utf-8")
    assert main(["ner", "train", f"data.train={bad}", "data.scheme=IO", f"training.output_dir={tmp_path / 'x'}",
                 *TAGGER]) == 2
    assert "bad.txt:2: tag 'B-PER' has a B- prefix, which IO tags lack" in capsys.readouterr().err


def test_a_bilou_corpus_is_read_as_bioes_and_predicted_back_in_bilou(tmp_path, caplog):
    corpus = tmp_path / "spacy.conll"  # spaCy's BILUO tags: U- for a one-word entity, L- for an entity's last word
    corpus.write_text((BIOES.replace("S-", "U-").replace("E-", "L-")) * 2, encoding="utf-8")
    out = tmp_path / "run"
    assert train_tagger(corpus, corpus, corpus, out) == 0
    assert json.loads((out / "ner_config.json").read_text())["data"]["scheme"] == "BILOU"
    assert json.loads((out / "model" / "config.json").read_text())["args"]["scheme"] == "BIOES"
    written = tmp_path / "predicted.conll"
    with caplog.at_level(logging.INFO):
        assert main(["ner", "predict", str(out / "model"), str(corpus), str(written)]) == 0
    assert "spacy.conll: predictions written in BILOU, the scheme of its tags" in caplog.text
    prefixes = {line.split("\t")[-1][:2] for line in written.read_text(encoding="utf-8").splitlines() if line}
    assert not prefixes & {"S-", "E-"}  # written back in BILOU (write_scheme, tested in test_schemes.py)
    text = tmp_path / "raw.txt"
    text.write_text("Mary met John\n", encoding="utf-8")
    assert main(["ner", "predict", str(out / "model"), str(text), str(tmp_path / "raw.conll")]) == 0  # the model's
