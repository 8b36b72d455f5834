"""Options a newcomer needs to run experiments (issue #19 item 5): slices of a split, CPU threads, a no-KD
baseline that leaves unlabeled text out, parameter counts from evaluate."""

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from test_input_checks import ROWS, small, write  # noqa: E402

from structkd.cli import main  # noqa: E402
from structkd.data.splits import parse_slice  # noqa: E402
from structkd.ner import build_ner_config, distill_command, train_command  # noqa: E402
from structkd.ner.pipeline import TASK, read_data  # noqa: E402
from structkd.tasks import runner  # noqa: E402


def test_slices_of_one_file_serve_as_labeled_and_unlabeled_text(tmp_path, record_trainers):
    corpus = write(tmp_path / "train.conll", ROWS, 3)  # 12 sentences
    made = record_trainers(runner)
    teacher = build_ner_config({"data": {"train": corpus}, **small(tmp_path / "t")})
    train_command(teacher)
    config = build_ner_config({"data": {"train": corpus, "unlabeled": [corpus],
                                        "slices": {"train": "0:5", "unlabeled": "5:"}},
                               "kd": {"teacher": str(tmp_path / "t" / "model")}, **small(tmp_path / "s")})
    distill_command(config)
    items = [s for _, s in made[-1].train_data]
    labeled, unlabeled = [s for s in items if s.tags], [s for s in items if s.tags is None]
    everything = read_data(config.data)
    assert [s.tokens for s in labeled] == [s.tokens for s in everything.train[:5]]
    assert [s.tokens for s in unlabeled] == [s.tokens for s in everything.train[5:]]


def test_bad_slices_are_refused_by_key():
    with pytest.raises(ValueError, match="data.slices.train must look like START:STOP"):
        build_ner_config({"data": {"slices": {"train": "five"}}})
    with pytest.raises(ValueError, match="unknown split 'trian'"):
        build_ner_config({"data": {"slices": {"trian": "0:5"}}})
    with pytest.raises(ValueError, match="STOP is before START"):
        parse_slice("5:2", "data.slices.dev")
    assert parse_slice(":7", "k") == slice(None, 7) and parse_slice("3:", "k") == slice(3, None)


def test_training_threads_are_set_for_the_run(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    config = build_ner_config({"data": {"train": write(tmp_path / "t.conll", ROWS)}, **small(tmp_path / "run")})
    config.training.threads = 1
    train_command(config)
    assert calls == [1]
    with pytest.raises(ValueError, match="threads must be >= 1"):
        build_ner_config({"training": {"threads": 0}})


def test_a_no_kd_baseline_leaves_the_unlabeled_text_out(tmp_path, record_trainers, caplog):
    corpus = write(tmp_path / "train.conll", ROWS)
    train_command(build_ner_config({"data": {"train": corpus}, **small(tmp_path / "t")}))
    raw = tmp_path / "raw.txt"
    raw.write_text("some words here\nand more\n", encoding="utf-8")
    made = record_trainers(runner)
    config = build_ner_config({"data": {"train": corpus, "unlabeled": [str(raw)]},
                               "kd": {"method": "none", "teacher": str(tmp_path / "t" / "model")},
                               **small(tmp_path / "s")})
    with caplog.at_level("WARNING", logger="structkd.ner"):
        distill_command(config)
    assert all(s.tags is not None for _, s in made[-1].train_data) and len(made[-1].train_data) == len(ROWS)
    assert "data.unlabeled (2 sentences) is not used" in caplog.text


def test_evaluate_prints_the_parameter_count(tmp_path, capsys):
    corpus = write(tmp_path / "train.conll", ROWS)
    results = train_command(build_ner_config({"data": {"train": corpus}, **small(tmp_path / "t")}))
    model = TASK.load_model(tmp_path / "t" / "model")
    assert results["parameters"] == sum(p.numel() for p in model.parameters())
    assert main(["ner", "evaluate", str(tmp_path / "t" / "model"), corpus]) == 0
    assert f"{results['parameters']:,} parameters" in capsys.readouterr().out
    saved = json.loads((tmp_path / "t" / "results.json").read_text())
    assert saved["parameters"] == results["parameters"]
