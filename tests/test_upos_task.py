"""UPOS tagging on CoNLL-U, the third task: one module (``structkd.tasks.upos``) on the shared runner, with its
command line generated from it (issue #22 item 1)."""

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
from test_parse_pipeline import write_treebank  # noqa: E402

from structkd.cli import main  # noqa: E402
from structkd.tasks import TASKS, get_task, runner  # noqa: E402
from structkd.tasks.upos import TASK, build_upos_config  # noqa: E402


def tiny(out, head="crf", epochs=2):
    return {"model": {"kind": "bilstm", "head": head, "word_dim": 8, "hidden": 8, "char_filters": 4},
            "training": {"epochs": epochs, "batch_size": 8, "lr": 1e-2, "output_dir": str(out), "progress": False}}


@pytest.fixture(scope="module")
def treebank(tmp_path_factory):
    root = tmp_path_factory.mktemp("upos")
    text = root / "raw.txt"
    text.write_text("john is nice\nthe city of york\n", encoding="utf-8")
    return {"train": write_treebank(root / "train.conllu", 3), "dev": write_treebank(root / "dev.conllu", 1),
            "unlabeled": str(text), "root": root}


@pytest.fixture(scope="module")
def teacher(treebank):
    config = build_upos_config({"data": {"train": treebank["train"], "dev": treebank["dev"]},
                                **tiny(treebank["root"] / "teacher", epochs=3)})
    results = runner.train_command(TASK, config)
    assert 0.0 <= results["dev"]["accuracy"] <= 1.0 and results["parameters"] > 0
    return str(treebank["root"] / "teacher" / "model")


def test_the_task_is_registered_and_its_commands_generated(capsys):
    assert "upos" in TASKS and get_task("upos") is TASK
    with pytest.raises(SystemExit):
        main(["upos", "--help"])
    out = capsys.readouterr().out
    assert all(command in out for command in ("train", "distill", "evaluate", "predict"))


def test_labels_are_the_upos_tags_seen_and_chains_are_unconstrained(treebank, teacher):
    model = TASK.load_model(teacher)
    assert model.tags == sorted({"PROPN", "VERB", "ADP", "PUNCT", "AUX", "ADJ", "INTJ", "DET", "NOUN", "PART"})
    assert model.head_kind == "crf" and model.tagger.head.allowed is None


@pytest.mark.parametrize("method, head", [("structural", "maxent"), ("structural", "crf"), ("posterior", "crf"),
                                          ("token", "maxent")])
def test_distillation_with_unlabeled_text(treebank, teacher, tmp_path, method, head):
    config = build_upos_config({"data": {"train": treebank["train"], "dev": treebank["dev"],
                                         "unlabeled": [treebank["unlabeled"]]},
                                "kd": {"method": method, "teacher": teacher, "temperature": 2.0},
                                **tiny(tmp_path / "student", head=head)})
    results = runner.distill_command(TASK, config)
    assert 0.0 <= results["dev"]["accuracy"] <= 1.0
    saved = json.loads((tmp_path / "student" / "upos_config.json").read_text())
    assert saved["kd"]["method"] == method and (tmp_path / "student" / "teacher_cache" / "index.json").exists()


def test_cli_train_evaluate_predict(treebank, teacher, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["upos", "train", f"data.train={treebank['train']}", f"data.dev={treebank['dev']}",
            "model.word_dim=8", "model.hidden=8", "model.char_filters=4", "training.epochs=1",
            f"training.output_dir={run}", "training.progress=false"]
    assert main(args) == 0
    assert main(args) == 2  # an earlier run in output_dir: refused, as in every task
    capsys.readouterr()
    assert main(["upos", "evaluate", teacher, treebank["dev"]]) == 0
    assert capsys.readouterr().out.startswith("accuracy ")
    out = tmp_path / "tags.conll"
    assert main(["upos", "predict", teacher, treebank["unlabeled"], str(out)]) == 0
    rows = [line.split("\t") for line in out.read_text().splitlines() if line]
    assert [r[0] for r in rows] == "john is nice the city of york".split()
    assert {r[1] for r in rows} <= set(TASK.load_model(teacher).tags)


def test_bad_upos_settings_are_refused():
    with pytest.raises(ValueError, match="model.constrained=false"):
        build_upos_config({"model": {"constrained": True}})
    with pytest.raises(ValueError, match="training.metric must be one of accuracy"):
        build_upos_config({"training": {"metric": "f1"}})
