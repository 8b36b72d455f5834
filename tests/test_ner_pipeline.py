"""The NER commands end to end on tiny data: train, distill with every KD method, evaluate, predict, resume."""

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from tiny_models import write_tiny_bert  # noqa: E402

from structkd.cli import main  # noqa: E402
from structkd.ner import NerModel, build_ner_config, distill_command, load_ner_config, train_command  # noqa: E402
from structkd.ner.config import KdConfig  # noqa: E402
from structkd.ner.distillation import compute_teacher_outputs, kd_loss  # noqa: E402

ROWS = [
    ("John Smith lives in New York .", "B-PER I-PER O O B-LOC I-LOC O"),
    ("Paris is nice .", "B-LOC O O O"),
    ("Hi john", "O B-PER"),
    ("the city of Paris", "O O O B-LOC"),
    ("Smith is in the city", "B-PER O O O O"),
    ("New York is unbelievable", "B-LOC I-LOC O O"),
]


def write_corpus(path, rows, repeat=3):
    lines = []
    for _ in range(repeat):
        for words, tags in rows:
            lines += [f"{w}\t{t}" for w, t in zip(words.split(), tags.split())] + [""]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("ner")
    return {"train": write_corpus(root / "train.conll", ROWS), "dev": write_corpus(root / "dev.conll", ROWS, 1),
            "root": root}


def bilstm(head="crf"):
    return {"kind": "bilstm", "head": head, "word_dim": 16, "hidden": 16, "char_filters": 8}


def training(out, epochs=2):
    return {"epochs": epochs, "batch_size": 4, "lr": 5e-3, "output_dir": str(out), "progress": False, "log_every": 2}


@pytest.fixture(scope="module")
def teachers(corpus):
    """A BiLSTM-CRF teacher and a tiny transformer span teacher, trained for a few steps."""
    root = corpus["root"]
    data = {"train": corpus["train"], "dev": corpus["dev"]}
    crf = build_ner_config({"data": data, "model": bilstm("crf"), "training": training(root / "crf")})
    results = train_command(crf)
    assert 0.0 <= results["dev"]["f1"] <= 1.0
    bert = write_tiny_bert(root / "bert", layers=2, max_positions=32)
    span = build_ner_config({"data": data, "model": {"kind": "transformer", "encoder": bert, "head": "span",
                                                     "max_width": 4},
                             "training": training(root / "span", epochs=1)})
    train_command(span)
    return {"crf": str(root / "crf" / "model"), "span": str(root / "span" / "model")}


@pytest.mark.parametrize("method", ["structural", "posterior", "token", "topk", "topwk", "seqlevel", "none"])
def test_distill_every_method(corpus, teachers, tmp_path, method):
    config = build_ner_config({
        "data": {"train": corpus["train"], "dev": corpus["dev"]},
        "model": bilstm("maxent"),
        "kd": {"method": method, "teacher": teachers["crf"], "temperature": 2.0, "top_k": 3},
        "training": training(tmp_path / method, epochs=1)})
    results = distill_command(config)
    assert set(results) == {"dev", "parameters"} and 0.0 <= results["dev"]["f1"] <= 1.0
    assert (tmp_path / method / "model" / "model.safetensors").exists()
    log = [json.loads(line) for line in (tmp_path / method / "train_log.jsonl").read_text().splitlines()]
    assert any(r.get("type") == "eval" for r in log)


def test_span_teacher_to_crf_student_and_cache_reuse(corpus, teachers, tmp_path):
    config = build_ner_config({
        "data": {"train": corpus["train"], "dev": corpus["dev"]}, "model": bilstm("crf"),
        "kd": {"method": "structural", "teacher": teachers["span"], "cache_dir": str(tmp_path / "cache")},
        "training": training(tmp_path / "student", epochs=1)})
    distill_command(config)
    index = json.loads((tmp_path / "cache" / "index.json").read_text())
    assert set(index["fields"]) == {"unary", "edges"}
    mtime = (tmp_path / "cache" / "index.json").stat().st_mtime
    config.training.output_dir = str(tmp_path / "again")
    distill_command(config)  # same teacher, data and options: the cache is reused, not rebuilt
    assert (tmp_path / "cache" / "index.json").stat().st_mtime == mtime


def test_cached_structural_loss_equals_direct_loss(corpus, teachers):
    from structkd.data import read_columns
    from structkd.kd import structural_kd_loss

    teacher = NerModel.load(teachers["crf"])
    sentences = read_columns(corpus["dev"])[:4]
    kd = KdConfig(method="structural")
    rows = compute_teacher_outputs(teacher, sentences, kd, "crf", teacher.tags, "BIO")
    seq_len = max(len(s) for s in sentences)
    unary = torch.zeros(4, seq_len, len(teacher.tags))
    edges = torch.zeros(4, seq_len - 1, len(teacher.tags), len(teacher.tags))
    for b, row in enumerate(rows):
        unary[b, :row["unary"].shape[0]] = row["unary"]
        edges[b, :row["edges"].shape[0]] = row["edges"]
    student = NerModel.load(teachers["crf"])
    with torch.no_grad():
        s_dist, t_dist = student(sentences), teacher(sentences)
    torch.testing.assert_close(kd_loss(kd, s_dist, {"unary": unary, "edges": edges}),
                               structural_kd_loss(t_dist, s_dist), atol=1e-4, rtol=1e-4)


def test_cli_evaluate_predict_and_resume(corpus, teachers, tmp_path, capsys):
    assert main(["ner", "evaluate", teachers["crf"], corpus["dev"]]) == 0
    assert "entity micro F1" in capsys.readouterr().out
    text = tmp_path / "raw.txt"
    text.write_text("John lives in Paris\nHi\n", encoding="utf-8")
    out = tmp_path / "pred.conll"
    assert main(["ner", "predict", teachers["crf"], str(text), str(out)]) == 0
    rows = [line.split("\t") for line in out.read_text().splitlines() if line]
    assert [r[0] for r in rows] == ["John", "lives", "in", "Paris", "Hi"] and all(len(r) == 2 for r in rows)
    config = tmp_path / "train.yaml"
    config.write_text(f"data:\n  train: {corpus['train']}\n  dev: {corpus['dev']}\nmodel:\n  kind: bilstm\n"
                      f"  word_dim: 8\n  hidden: 8\n  char_filters: 4\ntraining:\n  epochs: 2\n  batch_size: 8\n"
                      f"  progress: false\n", encoding="utf-8")
    run = str(tmp_path / "run")
    assert main(["ner", "train", "--config", str(config), f"training.output_dir={run}", "training.epochs=1"]) == 0
    args = ["ner", "train", "--config", str(config), f"training.output_dir={run}", "training.epochs=1", "--resume"]
    assert main(args) == 0
    epochs = [r for r in map(json.loads, open(f"{run}/train_log.jsonl")) if r.get("type") == "eval"]
    assert len(epochs) == 1  # resuming a finished run trains nothing more (crash-resume: tests/test_train.py)
    saved = (tmp_path / "run" / "ner_config.json").read_text()
    with pytest.raises(ValueError, match=r"other settings \(model.hidden: 8 -> 16\)"):
        main(args[:-1] + ["model.hidden=16", "--resume", "--debug"])
    assert (tmp_path / "run" / "ner_config.json").read_text() == saved  # refused before anything was written
    assert (tmp_path / "run" / "learning_curves.png").exists() and (tmp_path / "run" / "model").is_dir()


def test_config_errors(tmp_path):
    with pytest.raises(KeyError, match="unknown ModelConfig key 'heads'"):
        build_ner_config({"model": {"heads": "crf"}})
    with pytest.raises(KeyError, match="must name a section"):
        load_ner_config(None, ["epochs=3"])
    with pytest.raises(ValueError, match="kd.method"):
        load_ner_config(None, ["kd.method=magic"])
    with pytest.raises(ValueError, match="kd.temperature_mode"):
        load_ner_config(None, ["kd.temperature_mode=lukewarm"])
    with pytest.raises(ValueError, match="kd.kd_weight"):
        load_ner_config(None, ["kd.kd_weight=1.5"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n", encoding="utf-8")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_ner_config(bad)
    config = load_ner_config(None, ["training.lr=1e-4", "kd.temperature=2", "data.unlabeled=[a.txt, b.txt]"])
    assert config.training.lr == 1e-4 and config.kd.temperature == 2.0 and config.data.unlabeled == ["a.txt", "b.txt"]
    config.save(tmp_path / "saved.json")
    saved = json.loads((tmp_path / "saved.json").read_text())
    assert set(saved) == {"data", "model", "kd", "training"} and saved["kd"]["temperature"] == 2.0
    assert build_ner_config(saved).to_dict() == saved  # a saved config rebuilds the same config


def test_distill_requires_teacher(corpus, tmp_path):
    with pytest.raises(ValueError, match="kd.teacher"):
        distill_command(build_ner_config({"data": {"train": corpus["train"]}, "model": bilstm(),
                                          "training": training(tmp_path)}))


def test_span_head_covers_the_longest_training_entity(tmp_path):
    from structkd.data import Sentence
    from structkd.ner.config import ModelConfig
    from structkd.ner.modeling import build_model

    bert = write_tiny_bert(tmp_path / "bert", layers=1, max_positions=32)
    sentences = [Sentence("the new york city paris john smith".split(), ["O"] + ["B-LOC"] + ["I-LOC"] * 5)]
    config = ModelConfig(kind="transformer", encoder=bert, head="span", max_width=2)
    model = build_model(config, ["O", "B-LOC", "I-LOC"], "BIO", sentences)
    dist = model(sentences)
    tags, _ = model.tag_tensor(sentences)
    assert torch.isfinite(model.gold_loss(dist, tags)).all()  # a 6-token entity with max_width=2 in the config


def test_group_by_length_gets_the_length_of_every_training_item(corpus, teachers, tmp_path, record_trainers):
    """``training.group_by_length``: the Trainer gets the token count of each item it trains on (the training
    sentences, then the unlabeled ones), in the items' order."""
    import structkd.tasks.runner as pipeline  # the one runner builds every Trainer

    made = record_trainers(pipeline)
    (tmp_path / "raw.txt").write_text("zorba lives in paris\nnice zorba city today .\n", encoding="utf-8")
    data = {"train": corpus["train"], "dev": corpus["dev"]}
    grouped = {**training(tmp_path / "gold", epochs=1), "group_by_length": True}
    train_command(build_ner_config({"data": data, "model": bilstm(), "training": grouped}))
    grouped = {**training(tmp_path / "kd", epochs=1), "group_by_length": True}
    distill_command(build_ner_config({"data": {**data, "unlabeled": [str(tmp_path / "raw.txt")]},
                                      "model": bilstm(), "kd": {"method": "structural", "teacher": teachers["crf"]},
                                      "training": grouped}))
    assert len(made) == 2
    for trainer, n_items in zip(made, (18, 20)):  # 6 sentences 3 times; 2 unlabeled sentences added
        items = [sentence for _, sentence in trainer.train_data]
        assert len(items) == n_items and trainer.lengths == [len(s.tokens) for s in items]
    assert [len(s.tokens) for _, s in made[1].train_data[-2:]] == [4, 5]


def test_device_options_of_the_commands(corpus, teachers, tmp_path, capsys, monkeypatch):
    assert main(["ner", "evaluate", teachers["crf"], corpus["dev"], "--device", "cpu"]) == 0
    assert "entity micro F1" in capsys.readouterr().out
    text = tmp_path / "raw.txt"
    text.write_text("John lives in Paris\n", encoding="utf-8")
    assert main(["ner", "predict", teachers["span"], str(text), str(tmp_path / "pred.conll"), "--device", "cpu"]) == 0
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"--device='cuda', but CUDA is not available here"):
        main(["ner", "predict", teachers["crf"], str(text), str(tmp_path / "gpu.conll"), "--device", "cuda",
              "--debug"])
    run = tmp_path / "run"
    args = ["ner", "distill", f"data.train={corpus['train']}", f"data.dev={corpus['dev']}", "model.kind=bilstm",
            "model.word_dim=8", "model.hidden=8", "model.char_filters=4", "kd.method=structural",
            f"kd.teacher={teachers['crf']}", "training.epochs=1", "training.progress=false",
            f"training.output_dir={run}"]
    with pytest.raises(ValueError, match=r"training.device='cuda', but CUDA is not available here"):
        main(args + ["training.device=cuda", "--debug"])
    assert not run.exists()  # refused before any work
    capsys.readouterr()
    assert main(args + ["training.device=cpu"]) == 0 and (run / "model" / "model.safetensors").exists()
    assert "teacher cache" not in capsys.readouterr().err  # training.progress=false hides every bar


def test_a_run_directory_is_refused_without_resume_or_overwrite(corpus, teachers, tmp_path, capsys):
    """A new run into a directory holding an earlier one is refused before any work (train and distill, one line
    naming the directory and both flags); ``--overwrite`` replaces the earlier run's files and nothing else:
    a transformer's ``model/encoder/`` does not stay inside the new BiLSTM model."""
    import shutil

    from structkd.train import RunDirectoryError

    run = tmp_path / "run"
    shutil.copytree(corpus["root"] / "span", run)  # an earlier run: a transformer span tagger
    (run / "notes.txt").write_text("mine", encoding="utf-8")
    saved = (run / "ner_config.json").read_text()
    data = {"train": corpus["train"], "dev": corpus["dev"]}
    with pytest.raises(RunDirectoryError, match=rf"output_dir {run} holds an earlier run .*--resume.*--overwrite"):
        train_command(build_ner_config({"data": data, "model": bilstm(), "training": training(run, epochs=1)}))
    with pytest.raises(RunDirectoryError, match=rf"output_dir {run} holds an earlier run"):
        distill_command(build_ner_config({"data": data, "model": bilstm(), "training": training(run, epochs=1),
                                          "kd": {"method": "structural", "teacher": teachers["crf"]}}))
    assert (run / "ner_config.json").read_text() == saved  # refused before anything was written
    args = ["ner", "train", f"data.train={corpus['train']}", f"data.dev={corpus['dev']}", "model.kind=bilstm",
            "model.word_dim=8", "model.hidden=8", "model.char_filters=4", "training.epochs=1",
            "training.progress=false", f"training.output_dir={run}"]
    assert main(args) == 2 and "--overwrite" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0
    assert not (run / "model" / "encoder").exists() and (run / "notes.txt").read_text() == "mine"
    assert json.loads((run / "model" / "config.json").read_text())["class"] == "BiLSTMTagger"


def test_a_span_head_computes_batches_above_max_batch_cost_in_micro_batches(corpus, teachers, tmp_path,
                                                                            record_trainers, caches_in_pieces_match):
    import structkd.tasks.runner as pipeline
    from structkd.train.batching import MicroBatches, span_cost

    made = record_trainers(pipeline)
    bert = str(corpus["root"] / "bert")
    data = {"train": corpus["train"], "dev": corpus["dev"]}
    train_command(build_ner_config({"data": data, "model": {"kind": "transformer", "encoder": bert, "head": "span",
                                                            "max_width": 4},
                                    "training": {**training(tmp_path / "span", epochs=1), "max_batch_cost": 200}}))
    (trainer,) = made
    n_labels = len(trainer.model.tagger.head.span_labels)
    assert trainer.batch_cost([3, 5]) == span_cost([3, 5], n_labels) == 2 * 25 * n_labels
    batches = list(trainer.epoch_loader(0))
    assert any(isinstance(b, MicroBatches) for b in batches)
    for batch in batches:
        for part in batch.parts if isinstance(batch, MicroBatches) else [batch]:
            lengths = [len(s) for s in part.sentences]
            assert span_cost(lengths, n_labels) <= 200 or len(lengths) == 1
    # a CRF's memory grows with the padded batch: never split
    train_command(build_ner_config({"data": data, "model": bilstm("crf"),
                                    "training": {**training(tmp_path / "crf", epochs=1), "max_batch_cost": 1}}))
    assert made[1].batch_cost is None
    # inference and the teacher cache in pieces: the same tags and rows as whole batches
    from structkd.data import read_columns
    from structkd.ner.modeling import NerModel, predict
    from structkd.ner.pipeline import TASK

    teacher, sentences = NerModel.load(tmp_path / "span" / "model"), read_columns(corpus["train"])
    assert predict(teacher, sentences, max_cost=200) == predict(teacher, sentences, max_cost=None)
    assert pipeline._teachers_cost(TASK, [teacher]) is not None
    caches_in_pieces_match(TASK, teacher, sentences[:12], made[1].model, lambda cost: build_ner_config({
        "data": data, "model": bilstm("crf"), "kd": {"teacher": str(tmp_path / "span" / "model")},
        "training": {**training(tmp_path / f"c{cost}"), "max_batch_cost": cost}}), 200)
