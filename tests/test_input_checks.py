"""Mistakes refused before any work, each named: settings (issue #23 item 9), labels that do not match the
teacher or the training data (item 8), and the command line's one-line errors (``structkd: error: ...``)."""

import logging
import os
import re
import subprocess
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
from test_ner_pipeline import write_corpus  # noqa: E402
from tiny_models import write_tiny_bert  # noqa: E402

from structkd.cli import main  # noqa: E402
from structkd.data import Sentence  # noqa: E402
from structkd.models import encoders  # noqa: E402
from structkd.models.encoders import EncoderNameError, check_encoder  # noqa: E402
from structkd.ner import build_ner_config, distill_command, load_ner_config, train_command  # noqa: E402
from structkd.ner.pipeline import label_set, unlabel_unknown  # noqa: E402
from structkd.parse import build_parse_config  # noqa: E402
from structkd.parse import distill_command as parse_distill  # noqa: E402

ROWS = [("John Smith lives in New York .", "B-PER I-PER O O B-LOC I-LOC O"), ("Paris is nice .", "B-LOC O O O"),
        ("Hi john", "O B-PER"), ("the city of Paris", "O O O B-LOC")]


def write(path, rows, repeat=1):
    """A ``token<TAB>tag`` file of ``rows``, ``repeat`` times (:func:`test_ner_pipeline.write_corpus`)."""
    return write_corpus(path, rows, repeat)


def small(out, epochs=1):
    return {"model": {"kind": "bilstm", "word_dim": 8, "hidden": 8, "char_filters": 4},
            "training": {"epochs": epochs, "batch_size": 4, "output_dir": str(out), "progress": False}}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A BiLSTM-CRF teacher whose training data shows B-PER, I-PER, B-LOC and I-LOC."""
    root = tmp_path_factory.mktemp("labels")
    train_command(build_ner_config({"data": {"train": write(root / "train.conll", ROWS, 2)}, **small(root / "t")}))
    return str(root / "t" / "model")


# ------------------------------------------------------------------------------------------------ settings
@pytest.mark.parametrize("override, message", [
    ("training.metric=f2", "training.metric must be one of f1, precision, recall"),
    ("model.kind=lstm", "model.kind must be 'bilstm' or 'transformer'"),
])
def test_bad_settings_are_refused_when_the_config_is_built(tmp_path, override, message):
    train = write(tmp_path / "train.conll", ROWS)
    with pytest.raises(ValueError, match=message):
        load_ner_config(None, [f"data.train={train}", override])


def test_parser_metric_is_checked_against_the_parser_metrics():
    with pytest.raises(ValueError, match="training.metric must be one of las, uas"):
        build_parse_config({"training": {"metric": "f1"}})
    assert build_parse_config({"training": {"metric": "uas_nopunct"}}).training.metric == "uas_nopunct"


def test_sections_and_paths_of_the_wrong_type_name_the_key(tmp_path):
    with pytest.raises(ValueError, match="section 'data' must be a mapping"):
        build_ner_config({"data": 5})
    with pytest.raises(ValueError, match=r"\[data\]: cannot read train=\['a.conll', 'b.conll'\] as a string"):
        build_ner_config({"data": {"train": ["a.conll", "b.conll"]}})
    # files are checked when a command starts: a config may be written before its teacher exists
    train = write(tmp_path / "train.conll", ROWS)
    config = build_ner_config({"data": {"train": train, "dev": str(tmp_path / "missing.conll")},
                               **small(tmp_path / "out")})
    with pytest.raises(FileNotFoundError, match="data.dev: .*missing.conll: no such file"):
        train_command(config)
    config = build_parse_config({"data": {"train": train, "unlabeled": [str(tmp_path)]},
                                 "kd": {"teacher": str(tmp_path)}, "training": {"output_dir": str(tmp_path / "p")}})
    with pytest.raises(FileNotFoundError, match="data.unlabeled: .*: is a directory"):
        parse_distill(config)
    config = build_ner_config({"data": {"train": train}, "kd": {"teacher": str(tmp_path / "nowhere")},
                               **small(tmp_path / "out")})
    with pytest.raises(FileNotFoundError, match="kd.teacher: .*nowhere: no such directory"):
        distill_command(config)
    assert not (tmp_path / "out").exists() and not (tmp_path / "p").exists()


def test_encoder_names_are_checked_without_a_download(tmp_path, monkeypatch):
    bert = write_tiny_bert(tmp_path / "bert", layers=1)
    check_encoder(bert)  # a saved model: accepted
    (tmp_path / "empty").mkdir()
    with pytest.raises(EncoderNameError, match="holds no config.json"):
        check_encoder(str(tmp_path / "empty"))
    with pytest.raises(EncoderNameError, match="model.encoder='./nope': no model directory"):
        build_ner_config({"model": {"kind": "transformer", "encoder": "./nope"}})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EncoderNameError, match="'bilstmm' is not 'minilm'.*HF_HUB_OFFLINE is set"):
        build_parse_config({"model": {"encoder": "bilstmm"}})
    # online: the hub is asked once, and its answer names the problem (no retries, no download)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    asked = []
    monkeypatch.setattr(encoders, "_hub_problem", lambda name: asked.append(name) or "no model of that name")
    with pytest.raises(EncoderNameError, match="no model of that name"):
        build_ner_config({"model": {"kind": "transformer", "encoder": "bilstmm"}})
    assert asked == ["bilstmm"]
    build_ner_config({"model": {"kind": "bilstm", "encoder": "bilstmm"}})  # a BiLSTM has no encoder to check


# ------------------------------------------------------------------------------------------------ labels
def test_label_set_covers_every_tag_of_each_type_it_sees():
    seen = [Sentence(["a", "b"], ["B-PER", "O"]), Sentence(["c"], ["S-LOC"])]
    assert label_set(seen[:1], "BIO") == ["O", "B-PER", "I-PER"]
    assert label_set(seen, "BIOES") == ["O"] + sorted(f"{p}-{t}" for p in "BIES" for t in ("LOC", "PER"))


def test_dev_and_test_labels_the_teacher_lacks_are_scored_as_misses_with_a_warning(teacher, tmp_path, caplog):
    dev = write(tmp_path / "dev.conll", ROWS + [("He has a gun", "O O O B-weapon")])
    train = write(tmp_path / "train.conll", ROWS)
    config = build_ner_config({"data": {"train": train, "dev": dev, "test": dev}, "kd": {"teacher": teacher},
                               **small(tmp_path / "student")})
    with caplog.at_level("WARNING", logger="structkd.ner"):
        results = distill_command(config)
    assert re.search(r"1 tag\(s\) are not among the teacher's .* scored as misses: 'B-weapon' \(.*dev.conll:25, "
                     r"data.dev\)", caplog.text)
    assert 0 <= results["test"]["recall"] < 1  # the weapon is a gold entity no student can find


def test_training_sentences_with_a_tag_the_teacher_lacks_are_distilled_without_their_tags(tmp_path, caplog):
    root = tmp_path
    rows = [("Big Group here", "B-ORG O O"), ("Paris is nice .", "B-LOC O O O")]
    # a teacher from before complete label sets: trained when only B-ORG was seen would now have I-ORG too, so
    # take a teacher whose data has no ORG at all
    train_command(build_ner_config({"data": {"train": write(root / "t.conll", rows[1:], 2)}, **small(root / "t")}))
    train = write(root / "s.conll", rows)
    config = build_ner_config({"data": {"train": train}, "kd": {"teacher": str(root / "t" / "model")},
                               **small(root / "s")})
    with caplog.at_level("WARNING", logger="structkd.ner"):
        distill_command(config)  # a gold loss on the B-ORG sentence would raise: it has no such tag
    assert re.search(r"1 training sentence\(s\) have tags .* without their gold tags .*: 'B-ORG' \(.*s.conll:1, "
                     r"data.train\)", caplog.text)
    sentences = [Sentence(["Big", "Group"], ["B-ORG", "O"], "s:1", [1, 2]), Sentence(["Paris"], ["B-LOC"], "s:4")]
    kept = unlabel_unknown(sentences, ["O", "B-LOC", "I-LOC"], "the teacher's", logging.getLogger("t"))
    assert kept[0].tags is None and kept[0].tokens == ["Big", "Group"] and kept[0].lines == [1, 2]
    assert kept[1] is sentences[1]
    assert unlabel_unknown(sentences[1:], ["O", "B-LOC"], "", logging.getLogger("t")) == sentences[1:]


def test_training_warns_of_test_labels_it_could_never_predict(tmp_path, caplog):
    train = write(tmp_path / "train.conll", ROWS)
    test = write(tmp_path / "test.conll", ROWS + [("Big Group here", "B-group I-group O")])
    config = build_ner_config({"data": {"train": train, "test": test}, **small(tmp_path / "run")})
    with caplog.at_level("WARNING", logger="structkd.ner"):
        results = train_command(config)
    assert re.search(r"2 tag\(s\) are not among the training and development sets' .*'B-group' \(.*test.conll:22, "
                     r"data.test\), 'I-group' \(.*test.conll:23, data.test\)", caplog.text)
    assert results["test"]["recall"] < 1


def test_evaluate_warns_of_labels_the_model_lacks(teacher, tmp_path, capsys, caplog):
    test = write(tmp_path / "test.conll", [("Big Group here", "B-group I-group O")])
    with caplog.at_level("WARNING", logger="structkd.ner"):
        assert main(["ner", "evaluate", teacher, test]) == 0
    assert "2 tag(s) are not among the model's" in caplog.text and "test.conll:1, " in caplog.text
    assert "entity micro F1 0.00" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------ the CLI
def test_cli_errors_are_one_line_with_status_2(tmp_path, capsys):
    assert main(["ner", "train", f"data.train={tmp_path / 'nope.conll'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"structkd: error: data.train: {tmp_path / 'nope.conll'}: no such file"]
    assert main(["parse", "train", "model.tree=pine"]) == 2
    assert capsys.readouterr().err.startswith("structkd: error: model.tree must be one of")
    assert main(["ner", "train", "run.yaml"]) == 2  # a config file given where overrides go
    assert capsys.readouterr().err.strip() == ("structkd: error: override 'run.yaml' must look like "
                                               "section.key=value; a config file is given as --config run.yaml")
    with pytest.raises(FileNotFoundError):  # --debug anywhere: the exception itself, with its traceback
        main(["ner", "train", f"data.train={tmp_path / 'nope.conll'}", "--debug"])


def test_cli_corpus_errors_name_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.conll"
    bad.write_text("John\tB-PER\nSmith\tX-PER\n", encoding="utf-8")
    assert main(["ner", "train", f"data.train={bad}", f"training.output_dir={tmp_path / 'out'}"]) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith(f"structkd: error: {bad}:2: ") and "\n" not in line


def test_internal_errors_exit_1_and_point_to_debug(monkeypatch, capsys):
    import structkd.tasks.runner as runner

    def broken(task, config, **options):
        raise RuntimeError("boom")

    monkeypatch.setattr(runner, "train_command", broken)
    assert main(["ner", "train"]) == 1
    assert "internal error, RuntimeError: boom (rerun with --debug" in capsys.readouterr().err


def test_python_dash_m_structkd_runs_the_cli():
    done = subprocess.run([sys.executable, "-m", "structkd", "parse", "train", "training.metric=f1"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("structkd: error: training.metric must be one of las")


def test_hub_names_and_the_cache_lookup(tmp_path):
    """One reading of "a hub name" for encoders, teachers and fingerprints; an invalid name is simply not cached."""
    from structkd.models.encoders import cached_hub_file, is_hub_name

    assert is_hub_name("bert-base-cased") and is_hub_name("org/model")
    assert not is_hub_name("./model") and not is_hub_name("a/b/c") and not is_hub_name(str(tmp_path))
    assert cached_hub_file("not a valid repo name!!") is None and cached_hub_file("org/surely-not-cached") is None
