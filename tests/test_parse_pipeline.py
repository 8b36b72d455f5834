"""The parsing commands end to end on a tiny treebank: teachers, every KD method, evaluate, predict, resume."""

import json
import logging
import os
import shutil

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from tiny_models import write_tiny_bert  # noqa: E402

from structkd.cli import main  # noqa: E402
from structkd.data import Sentence, read_conllu  # noqa: E402
from structkd.kd import structural_kd_loss  # noqa: E402
from structkd.parse import (  # noqa: E402
    ParseModel,
    build_model,
    build_parse_config,
    distill_command,
    load_parse_config,
    train_command,
)
from structkd.parse.config import KdConfig  # noqa: E402
from structkd.parse.distillation import (  # noqa: E402
    SHARED_CACHE_FIELDS,
    StudentSpec,
    cache_form,
    compute_teacher_outputs,
    expand_factored,
    factored_rows,
    kd_loss,
    teacher_fields,
)
from structkd.parse.modeling import stand_in_trees  # noqa: E402
from structkd.parse.pipeline import TASK  # noqa: E402
from structkd.tasks.runner import cached_batch  # noqa: E402
from structkd.train import TeacherCache  # noqa: E402

# (words, UPOS, heads, relations); the fifth tree is non-projective (arcs 3->1 and 4->2 cross)
TREES = [
    ("John Smith lives in New York .", "PROPN PROPN VERB ADP PROPN PROPN PUNCT", [3, 1, 0, 6, 6, 3, 3],
     "nsubj flat root case compound obl punct"),
    ("Paris is nice .", "PROPN AUX ADJ PUNCT", [3, 3, 0, 3], "nsubj cop root punct"),
    ("Hi john", "INTJ PROPN", [0, 1], "root vocative"),
    ("the city of Paris", "DET NOUN ADP PROPN", [2, 0, 4, 2], "det root case nmod"),
    ("john paris is nice", "PROPN PROPN AUX ADJ", [3, 4, 0, 3], "nsubj obj root xcomp"),
    ("Smith is in the city", "PROPN AUX ADP DET NOUN", [5, 5, 5, 5, 0], "nsubj cop case det root"),
    ("New York is unbelievable", "PROPN PROPN AUX ADJ", [2, 4, 4, 0], "compound nsubj cop root"),
    ("the city is nice , john", "DET NOUN AUX ADJ PUNCT PROPN", [2, 4, 4, 0, 6, 4], "det nsubj cop root punct "
     "vocative"),
    ("john lives in paris", "PROPN VERB ADP PROPN", [2, 0, 4, 2], "nsubj root case obl"),
    ("nice city", "ADJ NOUN", [2, 0], "amod root"),
    ("York is nice .", "PROPN AUX ADJ PUNCT", [3, 3, 0, 3], "nsubj cop root punct"),
]


def block(n, words, upos, heads, rels):
    words, upos, rels = words.split(), upos.split(), rels.split()
    lines = [f"# sent_id = s{n}", f"# text = {' '.join(words)}"]
    lines += [f"{i}\t{w}\t{w.lower()}\t{u}\t_\t_\t{h}\t{r}\t_\t_"
              for i, (w, u, h, r) in enumerate(zip(words, upos, heads, rels), start=1)]
    return "\n".join(lines)


MULTIWORD = "\n".join([
    "# sent_id = mwt", "# text = johns city", "1-2\tjohns\t_\t_\t_\t_\t_\t_\t_\t_",
    "1\tjohn\tjohn\tPROPN\t_\t_\t3\tnmod:poss\t_\t_", "2\ts\t's\tPART\t_\t_\t1\tcase\t_\t_",
    "3\tcity\tcity\tNOUN\t_\t_\t0\troot\t_\tSpaceAfter=No"])


def write_treebank(path, repeat):
    blocks = [block(n, *t) for n, t in enumerate(TREES)] + [MULTIWORD]
    path.write_text("\n\n".join(blocks * repeat) + "\n\n", encoding="utf-8")
    return str(path)


def bilstm(kind="biaffine", tree="projective"):
    return {"kind": kind, "tree": tree, "encoder": "bilstm", "word_dim": 8, "hidden": 8, "char_filters": 4,
            "layers": 1, "arc_hidden": 8, "rel_hidden": 6, "sib_hidden": 4}


def training(out, epochs=1):
    return {"epochs": epochs, "batch_size": 8, "lr": 5e-3, "output_dir": str(out), "progress": False, "log_every": 2}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("parse")
    return {"train": write_treebank(root / "train.conllu", 2), "dev": write_treebank(root / "dev.conllu", 1),
            "root": root}


@pytest.fixture(scope="module")
def teachers(corpus):
    """A second-order BiLSTM teacher, a first-order tiny-BERT teacher (non-projective)."""
    root = corpus["root"]
    data = {"train": corpus["train"], "dev": corpus["dev"]}
    results = train_command(build_parse_config({"data": data, "model": bilstm(tree="2o"),
                                                "training": training(root / "2o", epochs=2)}))
    assert 0.0 <= results["dev"]["las"] <= results["dev"]["uas"] <= 1.0
    assert results["skipped_nonprojective"] == 0 and results["projectivized_nonprojective"] == 2
    bert = write_tiny_bert(root / "bert", layers=2, max_positions=32)
    first = build_parse_config({"data": data, "model": {"kind": "biaffine", "tree": "nonprojective", "encoder": bert,
                                                        "arc_hidden": 8, "rel_hidden": 6},
                                "training": training(root / "1o")})
    results = train_command(first)
    assert results["skipped_nonprojective"] == 0
    assert (root / "1o" / "model" / "encoder" / "config.json").exists()
    return {"2o": str(root / "2o" / "model"), "1o": str(root / "1o" / "model")}


@pytest.mark.parametrize("method", ["structural", "token", "topk", "none"])
def test_second_order_teacher_to_first_order_student(corpus, teachers, tmp_path, method):
    config = build_parse_config({
        "data": {"train": corpus["train"], "dev": corpus["dev"]}, "model": bilstm(tree="projective"),
        "kd": {"method": method, "teacher": teachers["2o"], "temperature": 2.0, "top_k": 3},
        "training": training(tmp_path / method)})
    results = distill_command(config)
    dev = results["dev"]
    assert 0.0 <= dev["las"] <= dev["uas"] <= 1.0 and 0.0 <= dev["ucm"] <= 1.0 and dev["sentences_per_second"] > 0
    assert (tmp_path / method / "model" / "model.safetensors").exists()
    log = [json.loads(line) for line in (tmp_path / method / "train_log.jsonl").read_text().splitlines()]
    assert any(r.get("type") == "eval" and "las" in r for r in log)
    if method != "none":
        index = json.loads((tmp_path / method / "teacher_cache" / "index.json").read_text())
        assert index["fingerprint"]["options"]["support"] == "restricted"  # caches of unrestricted arcs refused


def test_first_order_teacher_to_students(corpus, teachers, tmp_path, caplog):
    data = {"train": corpus["train"], "dev": corpus["dev"]}
    # first-order (non-projective transformer) teacher to a non-projective BiLSTM: every tree is kept
    config = build_parse_config({"data": data, "model": bilstm(tree="nonprojective"),
                                 "kd": {"method": "structural", "teacher": teachers["1o"], "relations": "gold"},
                                 "training": training(tmp_path / "mt")})
    assert distill_command(config)["skipped_nonprojective"] == 0
    # to a projective student: the non-projective trees are projectivized (the default), with a logged count
    with caplog.at_level(logging.WARNING, logger="structkd.parse"):
        config = build_parse_config({"data": data, "model": bilstm(tree="projective"),
                                     "kd": {"method": "topk", "teacher": teachers["1o"], "top_k": 2},
                                     "training": training(tmp_path / "proj")})
        results = distill_command(config)
    assert results["skipped_nonprojective"] == 0 and results["projectivized_nonprojective"] == 2
    assert "projectivized 2 non-projective training trees of 24 (8.33%)" in caplog.text
    # second-order teacher to the sequence-labeling student
    config = build_parse_config({"data": data, "model": bilstm(kind="seqlabel"),
                                 "kd": {"method": "structural", "teacher": teachers["2o"], "temperature": 2.0},
                                 "training": training(tmp_path / "seq")})
    results = distill_command(config)
    assert 0.0 <= results["dev"]["las"] <= 1.0
    index = json.loads((tmp_path / "seq" / "teacher_cache" / "index.json").read_text())
    # the relation distributions as the teacher's factors (docs/cache.md): arcs, rel_dep, rel_head, rel_weight once
    assert index["fingerprint"]["options"]["cache_form"] == "factored"
    assert set(index["fields"]) == {"arcs", "rel_dep", "rel_head"} and sorted(index["shared"]) == ["rel_weight"]


def projective_first_order_teacher(rels, sentences) -> ParseModel:
    """An untrained first-order projective BiLSTM parser with scores spread as a trained one's."""
    torch.manual_seed(1)
    teacher = build_model(build_parse_config({"model": bilstm()}).model, rels, sentences).eval()
    with torch.no_grad():
        for weight in teacher.parser.arc.parameters():
            weight.mul_(4.0)
    return teacher


@pytest.mark.parametrize("kind,teacher_name,temperature,mode", [
    ("biaffine", "1o", 1.0, "global"), ("biaffine", "2o", 2.0, "global"), ("seqlabel", "1o", 2.0, "global"),
    ("seqlabel", "2o", 1.0, "global"), ("2o", "projective", 2.0, "global"), ("2o", "projective", 2.0, "local")])
def test_the_factored_cache_gives_the_loss_of_the_marginals(corpus, teachers, tmp_path, kind, teacher_name,
                                                            temperature, mode):
    """Through the cache and its padded batches: the loss from the teacher's scores (relation factors, and a
    first-order projective teacher's arc scores for a second-order student: recomputed relation distributions,
    arc and sibling marginals) equals the loss from its cached marginals, both forms float16, and the online
    teacher's within float16 precision."""
    sentences = read_conllu(corpus["dev"])[:7]
    if teacher_name == "projective":
        teacher = projective_first_order_teacher(ParseModel.load(teachers["2o"]).rels, sentences)
    else:
        teacher = ParseModel.load(teachers[teacher_name])
    with torch.no_grad():  # peaked relation distributions, as a trained teacher's (the tiny ones are near uniform)
        teacher.parser.rel.weight.mul_(50.0)
    torch.manual_seed(0)
    model = bilstm(tree="2o") if kind == "2o" else bilstm(kind)
    student = build_model(build_parse_config({"model": model}).model, teacher.rels, sentences).eval()
    with torch.no_grad():  # scores spread as a trained student's: the loss then depends on every teacher marginal
        for name, weight in student.parser.named_parameters():
            if name.startswith(("arc.", "sib.", "rel.")):
                weight.mul_(4.0)
    spec = StudentSpec.of(student)
    kd = KdConfig(method="structural", temperature=temperature, temperature_mode=mode)
    scores = kind == "2o"
    assert set(teacher_fields(kd, spec)) == ({"arcs", "sibs", "rels"} if scores else {"arcs", "rels"})
    assert cache_form(kd, spec, teacher) == "factored" and cache_form(kd, spec, teacher, n_teachers=2) == "marginals"
    assert cache_form(KdConfig(method="structural", relations="gold"), StudentSpec.of(
        build_model(build_parse_config({"model": bilstm()}).model, teacher.rels, sentences)), teacher) == "marginals"
    computes = {"marginals": lambda chunk: compute_teacher_outputs(teacher, chunk, kd, spec),
                "factored": lambda chunk: factored_rows(teacher, chunk, kd, spec)}
    heads, rels = stand_in_trees(sentences, student.rels, "cpu")
    losses = {}
    for form, compute in computes.items():
        cache = TeacherCache.build(tmp_path / form, sentences, compute, tokens=[s.words for s in sentences],
                                   teacher_id="t", options={"cache_form": form},
                                   batch_size=3, progress=False,
                                   shared_fields=sorted(SHARED_CACHE_FIELDS) if form == "factored" else ())
        batch = TASK.collate(list(enumerate(sentences)), student)
        cached = cached_batch(TASK, cache, teacher_fields(kd, spec), batch, torch.device("cpu"))
        assert ("rel_dep" in cached) == (form == "factored") and ("rels" in cached) == (form == "marginals")
        assert ("arc_scores" in cached) == (form == "factored" and scores) and ("sibs" in cached) == (
            form == "marginals" and scores)
        with torch.no_grad():
            out = student(sentences)
            losses[form] = kd_loss(kd, student, out, cached, heads, rels)
            expanded = expand_factored(kd, cached, out.dist)
        assert set(expanded) == set(teacher_fields(kd, spec))  # the marginals, the scores dropped
    torch.testing.assert_close(losses["factored"], losses["marginals"], rtol=2e-3, atol=2e-3)
    with torch.no_grad():  # the online teacher: its float32 outputs, padded
        rows = compute_teacher_outputs(teacher, sentences, kd, spec)
        size = max(len(s) for s in sentences) + 1
        padded = {name: torch.zeros(len(rows), size, size, *row.shape[2:]) if name == "rels" else
                  torch.zeros(len(rows), *[size] * row.dim()) for name, row in rows[0].items()}
        for b, row in enumerate(rows):
            for name, value in row.items():
                padded[name][b][tuple(slice(0, k) for k in value.shape)] = value
        online = kd_loss(kd, student, student(sentences), padded, heads, rels)
    torch.testing.assert_close(losses["factored"], online, rtol=5e-3, atol=5e-3)


def test_a_first_order_projective_teacher_caches_its_arc_scores_for_a_second_order_student(corpus, teachers,
                                                                                          tmp_path):
    """The second-order student's cache holds the teacher's arc scores ``[n + 1, n + 1]`` (and relation factors),
    not arc and sibling marginals ``[n + 1]^3``; the run trains and evaluates from it."""
    sentences = read_conllu(corpus["train"])
    teacher = projective_first_order_teacher(ParseModel.load(teachers["2o"]).rels, sentences)
    teacher.save(tmp_path / "teacher")
    for relations in ("marginal", "none"):
        out = tmp_path / relations
        results = distill_command(build_parse_config({
            "data": {"train": corpus["train"], "dev": corpus["dev"]}, "model": bilstm(tree="2o"),
            "kd": {"method": "structural", "teacher": str(tmp_path / "teacher"), "relations": relations},
            "training": training(out)}))
        assert 0.0 <= results["dev"]["las"] <= results["dev"]["uas"] <= 1.0
        index = json.loads((out / "teacher_cache" / "index.json").read_text())
        assert index["fingerprint"]["options"]["cache_form"] == "factored"
        assert set(index["fields"]) == ({"arc_scores", "rel_dep", "rel_head"} if relations == "marginal"
                                        else {"arc_scores"})


def test_a_cache_of_relation_distributions_from_before_is_read_as_it_is(corpus, teachers, tmp_path, monkeypatch):
    """A cache that stores ``rels`` (the marginals form, built before the factored one existed) of the same
    sentences, teacher and options is read as it is, not refused or rebuilt."""
    def config():
        return build_parse_config({"data": {"train": corpus["train"], "dev": corpus["dev"]}, "model": bilstm(),
                                   "kd": {"method": "structural", "teacher": teachers["1o"],
                                          "cache_dir": str(tmp_path / "cache")},
                                   "training": training(tmp_path / "run")})

    monkeypatch.setattr(type(TASK), "cache_form", lambda self, config, student, teacher: "marginals")
    first = distill_command(config())
    monkeypatch.undo()
    calls = []
    original = type(TASK).cache_rows
    monkeypatch.setattr(type(TASK), "cache_rows", lambda *a: calls.append(1) or original(*a))
    second = distill_command(config(), overwrite=True)
    index = json.loads((tmp_path / "cache" / "index.json").read_text())
    assert calls == [] and index["fingerprint"]["options"]["cache_form"] == "marginals" and "rels" in index["fields"]
    assert second["dev"]["las"] == first["dev"]["las"]


def test_resume_knows_the_teacher_by_its_weights(corpus, teachers, tmp_path):
    def config(teacher):
        return build_parse_config({"data": {"train": corpus["train"], "dev": corpus["dev"]},
                                   "model": bilstm(tree="projective"),
                                   "kd": {"method": "structural", "teacher": str(teacher)},
                                   "training": training(tmp_path / "run")})

    distill_command(config(teachers["2o"]))
    moved = tmp_path / "moved"
    shutil.copytree(teachers["2o"], moved)
    distill_command(config(moved), resume=True)  # the same teacher in another directory: the run is taken as is
    assert len([line for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()
                if '"type": "eval"' in line]) == 1
    with pytest.raises(ValueError, match=r"other settings \(teacher_weights: '[0-9a-f]{64}' -> '[0-9a-f]{64}'\)"):
        distill_command(config(teachers["1o"]), resume=True)


def test_cached_structural_loss_equals_direct_loss(corpus, teachers):
    """Second-order teacher, first-order student: the loss from cached (float16) arc marginals is the exact
    cross-entropy computed from both distributions."""
    teacher = ParseModel.load(teachers["2o"])
    sentences = read_conllu(corpus["dev"])[:5]
    torch.manual_seed(0)
    student = build_model(build_parse_config({"model": bilstm()}).model, teacher.rels, sentences).eval()
    spec = StudentSpec.of(student)
    kd = KdConfig(method="structural", relations="none")
    rows = compute_teacher_outputs(teacher, sentences, kd, spec)
    size = max(len(s) for s in sentences) + 1
    arcs = torch.zeros(len(sentences), size, size)
    for b, row in enumerate(rows):
        n = row["arcs"].shape[0]
        arcs[b, :n, :n] = row["arcs"]
    heads, rels = stand_in_trees(sentences, student.rels, "cpu")
    with torch.no_grad():
        t_out, s_out = teacher(sentences), student(sentences)
        loss = kd_loss(kd, student, s_out, {"arcs": arcs}, heads, rels)
        torch.testing.assert_close(loss, structural_kd_loss(t_out.dist, s_out.dist), atol=2e-3, rtol=1e-3)
    # the sequence-labeling student: label marginals = arc marginals x relation probabilities
    torch.manual_seed(0)
    tagger = build_model(build_parse_config({"model": bilstm("seqlabel")}).model, teacher.rels, sentences).eval()
    spec = StudentSpec.of(tagger)
    rows = compute_teacher_outputs(teacher, sentences, kd, spec)
    rel_probs = torch.zeros(len(sentences), size, size, len(teacher.rels))
    for b, row in enumerate(rows):
        n = row["arcs"].shape[0]
        arcs[b, :n, :n], rel_probs[b, :n, :n] = row["arcs"], row["rels"]
    with torch.no_grad():
        s_out = tagger(sentences)
        loss = kd_loss(kd, tagger, s_out, {"arcs": arcs, "rels": rel_probs}, heads, rels)
        direct = structural_kd_loss(t_out.dist, s_out.dist, offsets=tagger.parser.offsets,
                                    rel_probs=t_out.rel_logits.softmax(-1))
    torch.testing.assert_close(loss, direct, atol=5e-3, rtol=1e-3)


def test_cli_evaluate_predict_and_resume(corpus, teachers, tmp_path, capsys):
    assert main(["parse", "evaluate", teachers["2o"], corpus["dev"]]) == 0
    printed = capsys.readouterr().out
    assert "UAS" in printed and "without punct" in printed and "nsubj" in printed
    out = tmp_path / "pred.conllu"
    assert main(["parse", "predict", teachers["1o"], corpus["dev"], str(out)]) == 0
    predicted, gold = read_conllu(out), read_conllu(corpus["dev"])
    assert [s.words for s in predicted] == [s.words for s in gold]
    assert [s.comments for s in predicted] == [s.comments for s in gold]
    assert "1-2\tjohns" in out.read_text() and "SpaceAfter=No" in out.read_text()
    text = tmp_path / "raw.txt"
    text.write_text("John lives in Paris\nHi\n", encoding="utf-8")
    assert main(["parse", "predict", teachers["2o"], str(text), str(tmp_path / "raw.conllu")]) == 0
    assert [s.words for s in read_conllu(tmp_path / "raw.conllu")] == [["John", "lives", "in", "Paris"], ["Hi"]]
    config = tmp_path / "train.yaml"
    config.write_text(f"data:\n  train: {corpus['train']}\n  dev: {corpus['dev']}\nmodel:\n  kind: seqlabel\n"
                      f"  word_dim: 8\n  hidden: 8\n  char_filters: 4\n  layers: 1\ntraining:\n  epochs: 1\n"
                      f"  batch_size: 8\n  progress: false\n", encoding="utf-8")
    run = str(tmp_path / "run")
    args = ["parse", "train", "--config", str(config), f"training.output_dir={run}"]
    assert main(args) == 0 and main(args + ["--resume"]) == 0
    epochs = [r for r in map(json.loads, open(f"{run}/train_log.jsonl")) if r.get("type") == "eval"]
    assert len(epochs) == 1
    saved = (tmp_path / "run" / "parse_config.json").read_text()
    with pytest.raises(ValueError, match=r"other settings \(model.hidden: 8 -> 16; training.lr: 0.001 -> 0.01\)"):
        main(args + ["model.hidden=16", "training.lr=0.01", "--resume", "--debug"])
    assert (tmp_path / "run" / "parse_config.json").read_text() == saved  # refused before anything was written
    assert (tmp_path / "run" / "learning_curves.png").exists() and (tmp_path / "run" / "model").is_dir()


def test_config_errors_and_nonprojective_error(corpus, tmp_path):
    with pytest.raises(KeyError, match="unknown ModelConfig key 'trees'"):
        build_parse_config({"model": {"trees": "2o"}})
    with pytest.raises(ValueError, match="kd.method"):
        load_parse_config(None, ["kd.method=posterior"])
    with pytest.raises(ValueError, match="model.tree"):
        load_parse_config(None, ["model.tree=cubic"])
    with pytest.raises(ValueError, match="model.decoder must be one of mst, eisner, repair"):
        load_parse_config(None, ["model.kind=seqlabel", "model.decoder=greedy"])
    assert load_parse_config(None, ["model.kind=seqlabel", "model.decoder=eisner"]).model.decoder == "eisner"
    config = load_parse_config(None, ["kd.temperature=2", "data.multiroot=true"])
    assert config.training.metric == "las" and config.kd.temperature == 2.0 and config.data.multiroot
    strict = build_parse_config({"data": {"train": corpus["train"], "on_nonprojective": "error"},
                                 "model": bilstm(), "training": training(tmp_path)})
    with pytest.raises(ValueError, match=r"train.conllu:\d+: a non-projective training tree"):
        train_command(strict)
    with pytest.raises(ValueError, match="kd.teacher"):
        distill_command(build_parse_config({"data": {"train": corpus["train"]}, "model": bilstm(),
                                            "training": training(tmp_path)}))


@pytest.mark.parametrize("name", ["ewt_teacher.yaml", "ewt_distill.yaml"])
def test_example_configs_parse(name):
    from pathlib import Path

    config = load_parse_config(Path(__file__).resolve().parents[1] / "examples" / "configs" / name)
    assert config.data.train and config.training.output_dir.startswith("runs/") and config.training.metric == "las"


@pytest.mark.parametrize("override,name", [("kd.relations=x", "kd.relations"), ("kd.method=posterior", "kd.method"),
                                           ("kd.temperature_mode=x", "kd.temperature_mode")])
def test_kd_config_is_validated(override, name):
    from structkd.parse.config import load_parse_config

    with pytest.raises(ValueError, match=name):
        load_parse_config(None, [override])


def test_gold_loss_is_zero_without_a_tree_and_unchanged_with_one(corpus):
    from structkd.parse.modeling import has_tree, split_projective, without_tree

    sentences = split_projective(read_conllu(corpus["dev"]))[0][:6]
    mixed = [s if b % 2 == 0 else without_tree(s) for b, s in enumerate(sentences)]
    assert [has_tree(s) for s in mixed] == [True, False] * 3
    for kind in ("biaffine", "seqlabel"):
        torch.manual_seed(0)
        model = build_model(build_parse_config({"model": bilstm(kind)}).model,
                            sorted({r for s in sentences for r in s.deprels}), sentences).eval()
        with torch.no_grad():
            loss = model.gold_loss(model(mixed), mixed)
            alone = model.gold_loss(model(mixed[0::2]), mixed[0::2])
        assert loss[1::2].tolist() == [0.0] * 3
        torch.testing.assert_close(loss[0::2], alone, atol=1e-5, rtol=1e-5)
        # no gradient from the sentences without trees
        model.zero_grad()
        model.gold_loss(model(mixed[1::2]), mixed[1::2]).sum().backward()
        assert all(p.grad is None or not p.grad.any() for p in model.parameters())


def test_distillation_on_unlabeled_sentences(corpus, teachers, tmp_path):
    root = tmp_path
    # unlabeled data: a text file (one sentence per line) and a CoNLL-U file whose HEAD and DEPREL are "_"
    (root / "raw.txt").write_text("zorba lives in paris\n\nnice zorba city .\n", encoding="utf-8")
    blank = "\n".join(line if line.startswith("#") else "\t".join(c if i not in (6, 7) else "_"
                                                                for i, c in enumerate(line.split("\t")))
                      for line in block(0, *TREES[1]).splitlines())
    (root / "blank.conllu").write_text(blank + "\n\n", encoding="utf-8")
    unlabeled = [str(root / "raw.txt"), str(root / "blank.conllu")]
    data = {"train": corpus["train"], "dev": corpus["dev"], "unlabeled": unlabeled}
    for kind, method in (("biaffine", "structural"), ("seqlabel", "structural"), ("biaffine", "topk")):
        out = root / f"{kind}-{method}"
        config = build_parse_config({"data": data, "model": bilstm(kind),
                                     "kd": {"method": method, "teacher": teachers["2o"], "top_k": 2},
                                     "training": training(out)})
        results = distill_command(config)
        assert results["unlabeled_sentences"] == 3 and 0.0 <= results["dev"]["las"] <= 1.0
        index = json.loads((out / "teacher_cache" / "index.json").read_text())
        # the training trees the student learns (a projective one projectivizes 2 of the 24, where it skipped
        # them before) and every unlabeled sentence
        assert index["n_sentences"] == 24 + 3
        assert results["projectivized_nonprojective"] == (2 if kind == "biaffine" else 0)
        student = ParseModel.load(out / "model")
        assert "zorba" in student.parser.vocab.words.items  # unlabeled words are in the student's vocabulary
    # a biaffine student may learn from unlabeled sentences alone
    config = build_parse_config({"data": {"dev": corpus["dev"], "unlabeled": unlabeled}, "model": bilstm(),
                                 "kd": {"method": "structural", "teacher": teachers["2o"]},
                                 "training": training(root / "kd-only")})
    assert distill_command(config)["unlabeled_sentences"] == 3
    # what unlabeled sentences cannot serve, with the reason
    bad = [({"method": "structural", "relations": "gold"}, bilstm(), "kd.relations=gold"),
           ({"method": "structural"}, bilstm("seqlabel"), "label inventory from the training trees"),
           ({"method": "none"}, bilstm(), "kd.method=none")]
    for kd, model, message in bad:
        train = corpus["train"] if "relations" in kd else None
        config = build_parse_config({"data": {"train": train, "unlabeled": unlabeled}, "model": model,
                                     "kd": {**kd, "teacher": teachers["2o"]}, "training": training(root / "bad")})
        with pytest.raises(ValueError, match=message):
            distill_command(config)


def test_group_by_length_gets_the_length_of_every_training_item(corpus, teachers, tmp_path, record_trainers):
    """``training.group_by_length``: the Trainer gets the word count of each item it trains on (the projective
    trees a projective model keeps, then the unlabeled sentences), in the items' order."""
    import structkd.tasks.runner as pipeline  # the one runner builds every Trainer

    made = record_trainers(pipeline)
    (tmp_path / "raw.txt").write_text("zorba lives in paris\nnice zorba city today .\n", encoding="utf-8")
    data = {"train": corpus["train"], "dev": corpus["dev"], "on_nonprojective": "skip"}
    grouped = {**training(tmp_path / "gold"), "group_by_length": True}
    train_command(build_parse_config({"data": data, "model": bilstm(), "training": grouped}))
    grouped = {**training(tmp_path / "kd"), "group_by_length": True}
    distill_command(build_parse_config({"data": {**data, "unlabeled": [str(tmp_path / "raw.txt")]},
                                        "model": bilstm(), "kd": {"method": "structural", "teacher": teachers["2o"]},
                                        "training": grouped}))
    assert len(made) == 2
    for trainer, n_items in zip(made, (22, 24)):  # 2 non-projective trees skipped; 2 unlabeled sentences added
        items = [sentence for _, sentence in trainer.train_data]
        assert len(items) == n_items and trainer.lengths == [len(s.words) for s in items]
    assert [len(s.words) for _, s in made[1].train_data[-2:]] == [4, 5]


def test_importing_the_parser_package_leaves_the_ner_metrics_stack_unloaded():
    # seqeval pulls in scikit-learn and SciPy (about a second of start-up) for NER F1 only
    import subprocess
    import sys

    code = ("import sys, structkd.parse, structkd.cli; "
            "print(sorted(m for m in ('seqeval', 'sklearn', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_device_options_of_the_commands(corpus, teachers, tmp_path, capsys, monkeypatch):
    assert main(["parse", "evaluate", teachers["2o"], corpus["dev"], "--device", "cpu"]) == 0
    assert "UAS" in capsys.readouterr().out
    out = tmp_path / "pred.conllu"
    assert main(["parse", "predict", teachers["1o"], corpus["dev"], str(out), "--device", "cpu"]) == 0
    assert [s.words for s in read_conllu(out)] == [s.words for s in read_conllu(corpus["dev"])]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"--device='cuda', but CUDA is not available here"):
        main(["parse", "evaluate", teachers["2o"], corpus["dev"], "--device", "cuda", "--debug"])
    with pytest.raises(ValueError, match=r"--device='gpu' is not a device name"):
        main(["parse", "predict", teachers["2o"], corpus["dev"], str(out), "--device", "gpu", "--debug"])
    run = tmp_path / "run"
    args = ["parse", "distill", f"data.train={corpus['train']}", f"data.dev={corpus['dev']}", "model.kind=seqlabel",
            "model.word_dim=8", "model.hidden=8", "model.char_filters=4", "model.layers=1", "kd.method=structural",
            f"kd.teacher={teachers['2o']}", "training.epochs=1", "training.progress=false",
            f"training.output_dir={run}"]
    with pytest.raises(ValueError, match=r"training.device='cuda:1', but CUDA is not available here"):
        main(args + ["training.device=cuda:1", "--debug"])
    assert not run.exists()  # refused before any work
    assert main(args + ["training.device=cpu"]) == 0
    assert json.loads((run / "parse_config.json").read_text())["training"]["device"] == "cpu"
    assert main(args + ["--resume"]) == 0  # another device resumes: training.device is free (RESUME_FREE)
    epochs = [r for r in map(json.loads, open(run / "train_log.jsonl")) if r.get("type") == "eval"]
    assert len(epochs) == 1


def test_a_run_directory_is_refused_without_resume_or_overwrite(corpus, teachers, tmp_path):
    """A new run into a directory holding an earlier one is refused before any work; ``overwrite`` replaces the
    earlier run (its transformer ``model/encoder/`` does not stay inside the new BiLSTM parser)."""
    from structkd.train import RunDirectoryError

    run = tmp_path / "run"
    shutil.copytree(corpus["root"] / "1o", run)  # an earlier run: a transformer parser
    saved = (run / "parse_config.json").read_text()
    data = {"train": corpus["train"], "dev": corpus["dev"]}
    config = build_parse_config({"data": data, "model": bilstm(), "training": training(run)})
    with pytest.raises(RunDirectoryError, match=rf"output_dir {run} holds an earlier run .*--resume.*--overwrite"):
        train_command(config)
    kd = build_parse_config({"data": data, "model": bilstm(), "training": training(run),
                             "kd": {"method": "structural", "teacher": teachers["2o"]}})
    with pytest.raises(RunDirectoryError, match=rf"output_dir {run} holds an earlier run"):
        distill_command(kd)
    assert (run / "parse_config.json").read_text() == saved  # refused before anything was written
    distill_command(kd, overwrite=True)
    assert not (run / "model" / "encoder").exists() and ParseModel.load(run / "model").parser.vocab is not None


def test_kd_impossible_for_a_non_projective_teacher_and_a_projective_student(corpus, teachers, tmp_path):
    """kd.impossible reaches the parser task: error refuses before any work, ignore caches unrestricted arcs,
    renormalize (the default) restricted ones."""
    data = {"train": corpus["train"], "dev": corpus["dev"]}

    def config(rule, out):
        return build_parse_config({"data": data, "model": bilstm(tree="projective"),
                                   "kd": {"method": "structural", "teacher": teachers["1o"], "impossible": rule},
                                   "training": training(tmp_path / out)})

    with pytest.raises(ValueError, match="non-projective trees.*kd.impossible=error"):
        distill_command(config("error", "error"))
    assert not (tmp_path / "error" / "teacher_cache").exists()
    for rule, support in (("ignore", "unrestricted"), ("renormalize", "restricted")):
        distill_command(config(rule, rule))
        index = json.loads((tmp_path / rule / "teacher_cache" / "index.json").read_text())
        assert index["fingerprint"]["options"]["support"] == support


def test_init_from_teacher_starts_the_word_embeddings_from_the_teacher(corpus, teachers, tmp_path):
    """``model.init_from_teacher``: each word of a BiLSTM student's vocabulary starts as the mean of its subwords'
    input embeddings in the transformer teacher (the word width becomes the teacher's hidden size), the vocabulary
    covers the development and test words, and the distilled student saves and reloads with them; a BiLSTM
    teacher, a run without a teacher, a transformer student and a black-box teacher are refused."""
    from structkd.parse.modeling import build_model

    teacher = ParseModel.load(teachers["1o"])
    encoder = teacher.parser.encoder.transformer
    table = encoder.input_embeddings.detach()
    trees = read_conllu(corpus["train"])
    for kind in ("biaffine", "seqlabel"):
        options = build_parse_config({"model": {**bilstm(kind), "init_from_teacher": True}}).model
        student = build_model(options, teacher.rels, trees, teacher=teacher)
        words = student.parser.vocab.words.items
        weights = student.parser.encoder.bilstm.words.weight
        assert weights.shape == (len(words), encoder.hidden_size) and encoder.hidden_size != options.word_dim
        for n, word in enumerate(words):
            ids = encoder.tokenizer(word, add_special_tokens=False)["input_ids"]
            torch.testing.assert_close(weights[n], table[ids].mean(0), rtol=0, atol=1e-6)
        assert len(encoder.tokenizer("unbelievable", add_special_tokens=False)["input_ids"]) > 1
        assert "unbelievable" in words  # a word of several subwords: their mean
    # a distillation run: the open vocabulary (default) embeds a test word no other split has through the
    # teacher's subword table, saved and reloaded; without it, the vocabulary covers the test words
    test = tmp_path / "test.conllu"
    test.write_text(block(0, "zorba lives in paris", "PROPN VERB ADP PROPN", [2, 0, 4, 2], "nsubj root case obl")
                    + "\n\n", encoding="utf-8")
    data = {"train": corpus["train"], "dev": corpus["dev"], "test": str(test)}

    def config(out, model, kd=None):
        return build_parse_config({"data": data, "model": model, "training": training(tmp_path / out),
                                   "kd": kd or {"method": "structural", "teacher": teachers["1o"]}})

    results = distill_command(config("init", {**bilstm(tree="nonprojective"), "init_from_teacher": True}))
    assert 0.0 <= results["test"]["las"] <= 1.0
    saved = ParseModel.load(tmp_path / "init" / "model")
    assert "zorba" not in saved.parser.vocab.words.items and saved.parser.vocab.lexicon is not None
    assert saved.parser.encoder.bilstm.words.weight.shape[1] == encoder.hidden_size
    inputs = saved.parser.vocab.encode([Sentence(["Zorba", "lives"])])
    vectors = saved.parser.encoder.bilstm.word_vectors(inputs["words"], inputs["oov"])
    ids = encoder.tokenizer(["zorba"], is_split_into_words=True, add_special_tokens=False)["input_ids"]
    torch.testing.assert_close(vectors[0, 0], table[ids].mean(0), rtol=0, atol=1e-6)
    closed = distill_command(config("closed", {**bilstm(tree="nonprojective"), "init_from_teacher": True,
                                               "open_vocabulary": False}))
    assert 0.0 <= closed["test"]["las"] <= 1.0
    closed_model = ParseModel.load(tmp_path / "closed" / "model").parser
    assert "zorba" in closed_model.vocab.words.items and closed_model.vocab.lexicon is None
    distill_command(config("plain", {**bilstm(tree="nonprojective"), "init_from_teacher": False}))
    assert "zorba" not in ParseModel.load(tmp_path / "plain" / "model").parser.vocab.words.items
    distill_command(config("auto", bilstm(tree="nonprojective")))  # the default: on for a transformer teacher
    auto = ParseModel.load(tmp_path / "auto" / "model").parser
    assert auto.vocab.lexicon is not None and auto.encoder.bilstm.words.weight.shape[1] == encoder.hidden_size
    distill_command(config("auto-bilstm", bilstm(), {"method": "structural", "teacher": teachers["2o"]}))
    assert ParseModel.load(tmp_path / "auto-bilstm" / "model").parser.encoder.bilstm.words.weight.shape[1] == 8
    # refused, with the reason
    init = {**bilstm(), "init_from_teacher": True}
    with pytest.raises(ValueError, match="transformer teacher's input embeddings .* the teacher is a BiLSTM parser"):
        distill_command(config("bilstm-teacher", init, {"method": "structural", "teacher": teachers["2o"]}))
    with pytest.raises(ValueError, match="transformer teacher's input embeddings .* the run has no teacher"):
        train_command(config("train", init))
    with pytest.raises(ValueError, match="model.init_from_teacher .* needs model.encoder=bilstm"):
        build_parse_config({"model": {"encoder": "minilm", "init_from_teacher": True}})
    outputs = tmp_path / "trees.conllu"
    shutil.copy(corpus["train"], outputs)
    with pytest.raises(ValueError, match="model.init_from_teacher start the student from the teacher's weights"):
        distill_command(config("blackbox", init, {"method": "topk", "teacher_outputs": str(outputs)}))


def test_frozen_teacher_embeddings_stay_as_copied_in_a_parser_student(corpus, teachers, tmp_path):
    """``model.freeze_embeddings``: a distilled BiLSTM parser's word embeddings are still the teacher's mean
    subword embeddings after training; refused without ``init_from_teacher``."""
    data = {"train": corpus["train"], "dev": corpus["dev"]}
    model = {**bilstm(tree="nonprojective"), "init_from_teacher": True, "freeze_embeddings": True}
    distill_command(build_parse_config({"data": data, "model": model, "training": training(tmp_path / "frozen"),
                                        "kd": {"method": "structural", "teacher": teachers["1o"]}}))
    saved = ParseModel.load(tmp_path / "frozen" / "model")
    encoder = ParseModel.load(teachers["1o"]).parser.encoder.transformer
    start = encoder.embed_words(saved.parser.vocab.words.items)
    torch.testing.assert_close(saved.parser.encoder.bilstm.words.weight, start, rtol=0, atol=0)
    with pytest.raises(ValueError, match="model.freeze_embeddings .* needs model.init_from_teacher=true"):
        build_parse_config({"model": {"freeze_embeddings": True, "init_from_teacher": False}})


def test_training_trees_projectivize_skip_or_refuse_the_nonprojective_ones(corpus):
    from structkd.parse.config import DataConfig
    from structkd.parse.pipeline import training_trees
    from structkd.structs.heads import projective

    sentences = read_conllu(corpus["train"])
    chosen = training_trees(sentences, DataConfig(train="x"), needs_projective=True)
    assert chosen.projectivized == 2 and chosen.kept == list(range(len(sentences)))
    assert chosen.counts(len(sentences)) == {"skipped_nonprojective": 0, "projectivized_nonprojective": 2,
                                             "skipped_multiroot": 0}
    changed = [k for k, (a, b) in enumerate(zip(sentences, chosen.trees)) if a is not b]
    assert len(changed) == 2
    for k in changed:  # the same words and relations; a projective tree sharing all but the crossing arcs
        before, after = sentences[k], chosen.trees[k]
        assert after.words == before.words and after.deprels == before.deprels and after.source == before.source
        heads = torch.tensor([[-1] + after.heads])
        assert bool(projective(heads).all()) and 0 < sum(a != b for a, b in zip(before.heads, after.heads)) <= 2
    skip = training_trees(sentences, DataConfig(train="x", on_nonprojective="skip"), needs_projective=True)
    assert len(skip.trees) == len(sentences) - 2 and [sentences[k] for k in skip.kept] == skip.trees
    assert training_trees(sentences, DataConfig(train="x"), needs_projective=False).trees == sentences
    with pytest.raises(ValueError, match="data.on_nonprojective must be one of projectivize, skip, error"):
        DataConfig(on_nonprojective="lift")


def test_trees_with_several_roots_are_skipped_for_training_scored_in_evaluation_or_refused(tmp_path, caplog, capsys):
    # "Hi john" with both words on the root, once in the training file (its 12th tree) and in the dev file
    two_roots = block(99, "Hi john", "INTJ PROPN", [0, 0], "root root")
    train, dev = tmp_path / "train.conllu", tmp_path / "dev.conllu"
    train.write_text("\n\n".join([block(n, *t) for n, t in enumerate(TREES)] + [two_roots]) + "\n\n", encoding="utf-8")
    dev.write_text("\n\n".join([block(0, *TREES[0]), two_roots]) + "\n\n", encoding="utf-8")
    settings = [f"data.train={train}", f"data.dev={dev}", "model.encoder=bilstm", "model.word_dim=8", "model.hidden=8",
                "model.char_filters=4", "model.arc_hidden=8", "model.rel_hidden=6", "training.epochs=1",
                "training.progress=false"]
    with caplog.at_level(logging.WARNING):
        assert main(["parse", "train", *settings, f"training.output_dir={tmp_path / 'run'}"]) == 0
    line = train.read_text(encoding="utf-8").splitlines().index("# sent_id = s99") + 3  # its first word's line
    assert f"skipping 1 training tree of 12 with several root words (the first at {train}:{line})" in caplog.text
    assert f"data.dev: 1 of its 2 trees have several root words (the first at {dev}:" in caplog.text
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["skipped_multiroot"] == 1 and results["skipped_nonprojective"] == 0
    assert 0.0 <= results["dev"]["uas"] <= 1.0
    capsys.readouterr()
    assert main(["parse", "train", *settings, "data.on_multiroot=error", f"training.output_dir={tmp_path / 'x'}"]) == 2
    assert f"{train}:{line + 1}: words 1, 2 are all attached to the root" in capsys.readouterr().err  # the 2nd root
    # a multi-root parser learns them
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert main(["parse", "train", *settings, "data.multiroot=true", f"training.output_dir={tmp_path / 'm'}"]) == 0
    assert "several root words" not in caplog.text
    assert json.loads((tmp_path / "m" / "results.json").read_text())["skipped_multiroot"] == 0
    with pytest.raises(ValueError, match="data.on_multiroot must be one of skip, error"):
        load_parse_config(None, ["data.on_multiroot=repair"])


def test_a_second_order_parser_computes_batches_above_max_batch_cost_in_micro_batches(corpus, tmp_path,
                                                                                      record_trainers,
                                                                                      caches_in_pieces_match):
    import structkd.tasks.runner as pipeline
    from structkd.parse.modeling import cubic_cost
    from structkd.train.batching import MicroBatches

    made = record_trainers(pipeline)
    data = {"train": corpus["train"], "dev": corpus["dev"]}
    budget = 2 * 8 ** 3  # two sentences of 7 words
    results = train_command(build_parse_config({"data": data, "model": bilstm(tree="2o"),
                                                "training": {**training(tmp_path / "2o"), "max_batch_cost": budget}}))
    assert 0.0 <= results["dev"]["las"] <= 1.0
    (trainer,) = made
    assert trainer.batch_cost is cubic_cost and trainer.config.max_batch_cost == budget
    batches = list(trainer.epoch_loader(0))
    assert len(batches) == trainer.steps_per_epoch and any(isinstance(b, MicroBatches) for b in batches)
    for batch in batches:
        for part in batch.parts if isinstance(batch, MicroBatches) else [batch]:
            lengths = [len(s.words) for s in part.sentences]
            assert cubic_cost(lengths) <= budget or len(lengths) == 1
    # a first-order parser's memory grows with the square of the length: its batches are never split
    train_command(build_parse_config({"data": data, "model": bilstm(tree="projective"),
                                      "training": {**training(tmp_path / "1o"), "max_batch_cost": 1}}))
    assert made[1].batch_cost is None
    # inference and the teacher cache in pieces: the same trees and rows as whole batches
    from structkd.parse.modeling import ParseModel, predict

    teacher, sentences = ParseModel.load(tmp_path / "2o" / "model"), read_conllu(corpus["train"])
    assert predict(teacher, sentences, max_cost=budget) == predict(teacher, sentences, max_cost=None)
    assert pipeline._teachers_cost(TASK, [teacher]) is cubic_cost
    caches_in_pieces_match(TASK, teacher, sentences[:16], made[1].model, lambda cost: build_parse_config({
        "data": data, "model": bilstm(tree="projective"), "kd": {"teacher": str(tmp_path / "2o" / "model")},
        "training": {**training(tmp_path / f"c{cost}"), "max_batch_cost": cost}}), budget)
