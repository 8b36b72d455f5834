"""Black-box teachers (``kd.teacher_outputs``): every file kind read, checked and turned into cached fields that
equal a model teacher's where the information is the same, exact against brute force, end to end ``distill``
for each kind, and bad files refused at their line before any work."""

import json
import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from brute import is_projective, is_tree, tag_sequences, trees  # noqa: E402
from test_ner_pipeline import ROWS, write_corpus  # noqa: E402

from structkd.data import CorpusError, Sentence, read_conllu, write_columns  # noqa: E402
from structkd.kd.config import KdConfig as SharedKd  # noqa: E402
from structkd.ner import build_ner_config  # noqa: E402
from structkd.ner.config import KdConfig  # noqa: E402
from structkd.ner.distillation import compute_teacher_outputs, kd_loss  # noqa: E402
from structkd.ner.pipeline import TASK as NER  # noqa: E402
from structkd.numerics import LOG_ZERO  # noqa: E402
from structkd.parse import build_parse_config  # noqa: E402
from structkd.parse.config import KdConfig as ParseKd  # noqa: E402
from structkd.parse.distillation import StudentSpec  # noqa: E402
from structkd.parse.distillation import compute_teacher_outputs as parse_teacher_outputs  # noqa: E402
from structkd.parse.pipeline import TASK as PARSE  # noqa: E402
from structkd.structs.chain import LinearChainCRF  # noqa: E402
from structkd.tasks import runner  # noqa: E402
from structkd.tasks.blackbox import (  # noqa: E402
    TeacherOutputs,
    check_labels,
    check_method,
    ner_rows,
    parse_rows,
    read_teacher_outputs,
)
from structkd.train import CacheMismatchError  # noqa: E402

TREES = [  # (words, heads, relations); the fourth tree is non-projective (arcs 3->1 and 4->2 cross)
    ("John Smith lives in New York .", [3, 1, 0, 6, 6, 3, 3], "nsubj flat root case compound obl punct"),
    ("Paris is nice .", [3, 3, 0, 3], "nsubj cop root punct"),
    ("Hi john", [0, 1], "root vocative"),
    ("john paris is nice", [3, 4, 0, 3], "nsubj obj root xcomp"),
    ("the city of Paris", [2, 0, 4, 2], "det root case nmod"),
    ("Smith is in the city", [5, 5, 5, 5, 0], "nsubj cop case det root"),
]


def write_ner(path, rows, repeat=2):
    return write_corpus(path, rows, repeat)


def write_treebank(path, repeat=2):
    blocks = []
    for words, heads, rels in TREES * repeat:
        blocks.append("\n".join(f"{i}\t{w}\t{w.lower()}\tX\t_\t_\t{h}\t{r}\t_\t_" for i, (w, h, r) in
                                enumerate(zip(words.split(), heads, rels.split()), start=1)))
    path.write_text("\n\n".join(blocks) + "\n\n", encoding="utf-8")
    return str(path)


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


def training(out, epochs=1):
    return {"epochs": epochs, "batch_size": 4, "lr": 5e-3, "output_dir": str(out), "progress": False,
            "log_every": 100, "seed": 3}


NER_MODEL = {"kind": "bilstm", "word_dim": 8, "hidden": 8, "char_filters": 4}
PARSE_MODEL = {"kind": "biaffine", "tree": "projective", "encoder": "bilstm", "word_dim": 8, "hidden": 8,
               "char_filters": 4, "layers": 1, "arc_hidden": 8, "rel_hidden": 6, "sib_hidden": 4}


@pytest.fixture(scope="module")
def ner(tmp_path_factory):
    """A tiny corpus, unlabeled text and a BiLSTM-CRF teacher trained for one epoch."""
    root = tmp_path_factory.mktemp("blackbox_ner")
    train, dev = write_ner(root / "train.conll", ROWS), write_ner(root / "dev.conll", ROWS, 1)
    (root / "raw.txt").write_text("Paris is New York\nJohn lives\n", encoding="utf-8")
    data = {"train": train, "dev": dev}
    NER_CONFIG = build_ner_config({"data": data, "model": {**NER_MODEL, "head": "crf"},
                                   "training": training(root / "teacher")})
    runner.train_command(NER, NER_CONFIG)
    return {"root": root, "data": data, "raw": str(root / "raw.txt"), "teacher": str(root / "teacher" / "model")}


@pytest.fixture(scope="module")
def parse(tmp_path_factory):
    root = tmp_path_factory.mktemp("blackbox_parse")
    data = {"train": write_treebank(root / "train.conllu"), "dev": write_treebank(root / "dev.conllu", 1)}
    config = build_parse_config({"data": data, "model": PARSE_MODEL, "training": training(root / "teacher")})
    runner.train_command(PARSE, config)
    return {"root": root, "data": data, "teacher": str(root / "teacher" / "model")}


def ner_sentences(ner, unlabeled=False):
    data = NER.read_data(build_ner_config({"data": {**ner["data"], "unlabeled": [ner["raw"]] if unlabeled else []}
                                           }).data)
    return data.train + data.unlabeled


def probs_records(model, sentences, temperature=1.0):
    """The per-token label probabilities of a MaxEnt model (its marginals) as JSONL records."""
    with torch.no_grad():
        marginals = model(sentences).marginals
    return [{"tokens": s.tokens, "probs": marginals[b, :len(s)].double().tolist()} for b, s in enumerate(sentences)]


def stack(rows, name):
    """Pad one field of per-sentence rows into a batch (as the teacher cache does)."""
    shape = [max(r[name].shape[d] for r in rows) for d in range(rows[0][name].dim())]
    out = torch.full((len(rows), *shape), -1.0 if name == "topk_tags" else 0.0)
    for b, r in enumerate(rows):
        out[(b, *(slice(0, x) for x in r[name].shape))] = r[name]
    return out


# ------------------------------------------------------------------------------------------ NER: equal to a teacher
def test_probabilities_of_a_maxent_teacher_give_its_cached_fields(ner, tmp_path):
    from structkd.ner.modeling import build_model

    sentences = ner_sentences(ner)[:6]
    tags = NER.labels(sentences, build_ner_config({}))
    torch.manual_seed(0)
    teacher = build_model(build_ner_config({"model": {**NER_MODEL, "head": "maxent"}}).model, tags, "BIO", sentences)
    teacher.eval()
    header = {"labels": tags}
    path = write_jsonl(tmp_path / "probs.jsonl", [header, *probs_records(teacher, sentences)])
    outputs = read_teacher_outputs(path, [s.tokens for s in sentences], [s.source for s in sentences], "ner")
    assert outputs.kind == "probs" and outputs.labels() == tags
    for method, head, mode in [("structural", "crf", "global"), ("structural", "maxent", "global"),
                               ("posterior", "crf", "global"), ("structural", "crf", "local")]:
        kd = KdConfig(method=method, temperature=2.0, temperature_mode=mode)
        mine = ner_rows(outputs, range(6), kd, head, tags)
        theirs = compute_teacher_outputs(teacher, sentences, kd, head, tags, "BIO")
        for a, b in zip(mine, theirs):
            assert set(a) == set(b)
            for name in a:
                torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=1e-5)
    # token KD: the cached logits are log p, the teacher's logits shifted per token: the same loss at T = 1, and
    # the teacher distilled into itself costs nothing at any temperature
    with torch.no_grad():
        student = teacher(sentences)
    for temperature in (1.0, 2.0):
        kd = KdConfig(method="token", temperature=temperature)
        mine = kd_loss(kd, student, {"logits": stack(ner_rows(outputs, range(6), kd, "crf", tags), "logits")})
        torch.testing.assert_close(mine, torch.zeros(6), atol=1e-5, rtol=0)
    theirs = compute_teacher_outputs(teacher, sentences, kd := KdConfig(method="token"), "crf", tags, "BIO")
    torch.testing.assert_close(kd_loss(kd, student, {"logits": stack(ner_rows(outputs, range(6), kd, "crf", tags),
                                                                     "logits")}),
                               kd_loss(kd, student, {"logits": stack(theirs, "logits")}), atol=1e-5, rtol=1e-5)


def test_tags_and_kbest_files_of_a_teacher_give_its_cached_fields(ner, tmp_path):
    from structkd.ner.modeling import NerModel

    teacher = NerModel.load(ner["teacher"])
    sentences = ner_sentences(ner)[:6]
    with torch.no_grad():
        dist = teacher(sentences)
        best, scores = dist.topk(3), dist.kmax(3)
    names = teacher.tags
    kbest = [{"tokens": s.tokens, "sequences": [{"tags": [names[t] for t in best[r, b, :len(s)].tolist()],
                                                 "score": float(scores[r, b])} for r in (2, 0, 1)]}
             for b, s in enumerate(sentences)]  # in any order: sorted by score when read
    path = write_jsonl(tmp_path / "kbest.jsonl", kbest)
    outputs = read_teacher_outputs(path, [s.tokens for s in sentences], [s.source for s in sentences], "ner")
    for method in ("topk", "topwk", "seqlevel"):
        kd = KdConfig(method=method, top_k=3, temperature=2.0)
        mine = ner_rows(outputs, range(6), kd, "crf", names)
        theirs = compute_teacher_outputs(teacher, sentences, kd, "crf", names, "BIO")
        for a, b in zip(mine, theirs):
            torch.testing.assert_close(a["topk_tags"], b["topk_tags"])
            torch.testing.assert_close(a["topk_weights"], b["topk_weights"], atol=1e-6, rtol=1e-5)
    columns = tmp_path / "tags.conll"
    write_columns(columns, [Sentence(s.tokens, [names[t] for t in best[0, b, :len(s)].tolist()])
                            for b, s in enumerate(sentences)])
    outputs = read_teacher_outputs(columns, [s.tokens for s in sentences], [s.source for s in sentences], "ner")
    assert outputs.kind == "tags"
    kd = KdConfig(method="seqlevel")
    for a, b in zip(ner_rows(outputs, range(6), kd, "crf", names),
                    compute_teacher_outputs(teacher, sentences, kd, "crf", names, "BIO")):
        torch.testing.assert_close(a["topk_tags"], b["topk_tags"])
        torch.testing.assert_close(a["topk_weights"], b["topk_weights"])


def test_structural_kd_from_probabilities_into_a_constrained_crf_is_exact(tmp_path):
    """The cached fields of a probability file, through the loss's restriction, give the cross-entropy to the
    per-token teacher restricted to the student's sequences and renormalized (brute force, float64)."""
    tags = ["O", "B-X", "I-X"]
    torch.manual_seed(1)
    lengths = [4, 3]
    probs = [torch.rand(n, 3).double() ** 3 for n in lengths]
    probs = [p / p.sum(-1, keepdim=True) for p in probs]
    probs[1][0] = torch.tensor([0.0, 0.25, 0.75])  # a zero probability and mass on a forbidden start
    words = [[f"w{i}" for i in range(n)] for n in lengths]
    path = write_jsonl(tmp_path / "p.jsonl", [{"tokens": w, "labels": tags, "probs": p.tolist()}
                                              for w, p in zip(words, probs)])
    outputs = read_teacher_outputs(path, words, ["a", "b"], "ner")
    unary = torch.randn(2, 4, 3, dtype=torch.float64)
    edges = torch.randn(2, 3, 3, 3, dtype=torch.float64)
    edges[:, :, 0, 2] = LOG_ZERO  # O -> I-X forbidden
    unary[:, 0, 2] = LOG_ZERO     # no sentence starts with I-X
    student = LinearChainCRF(unary, edges, torch.tensor(lengths))
    for temperature in (1.0, 2.0):
        kd = KdConfig(method="structural", temperature=temperature)
        rows = ner_rows(outputs, [0, 1], kd, "crf", tags)
        cached = {name: stack(rows, name).double() for name in ("unary", "edges")}
        loss = kd_loss(kd, student, cached)
        for b, n in enumerate(lengths):
            allowed = [y for y in tag_sequences(n, 3) if y[0] != 2 and all((a, c) != (0, 2) for a, c in zip(y, y[1:]))]
            teacher = torch.tensor([math.prod(float(probs[b][i, t]) ** (1 / temperature) for i, t in enumerate(y))
                                    for y in allowed], dtype=torch.float64)
            teacher = teacher / teacher.sum()
            scaled = student.scaled(1 / temperature)
            log_q = []
            for y in allowed:
                structure = torch.zeros(2, 4, dtype=torch.long)
                structure[1, 3] = -1
                structure[b] = torch.tensor(list(y) + [-1] * (4 - n))
                log_q.append(scaled.log_prob(structure)[b])
            log_q = torch.stack(log_q)
            expected = -(teacher * log_q).sum() * temperature**2
            assert abs(float(loss[b]) - float(expected)) < 5e-5 * max(1.0, abs(float(expected)))


# ------------------------------------------------------------------------------------------ parsing
def arcs_record(words, probs, rels=None):
    record = {"tokens": words, "heads": probs.tolist()}
    return {**record, "rels": rels} if rels is not None else record


@pytest.mark.parametrize("tree,multiroot", [("projective", False), ("nonprojective", False),
                                            ("nonprojective", True), ("projective", True)])
def test_arc_probabilities_restricted_to_the_students_trees_are_exact(tmp_path, tree, multiroot):
    torch.manual_seed(2)
    n = 4
    probs = torch.rand(n, n + 1).double() ** 2
    probs[torch.arange(n), torch.arange(1, n + 1)] = 0.0
    probs[2, 0] = 0.0  # a zero probability: no tree uses it
    probs = probs / probs.sum(-1, keepdim=True)
    words = ["a", "b", "c", "d"]
    outputs = read_teacher_outputs(write_jsonl(tmp_path / "arcs.jsonl", [arcs_record(words, probs)]), [words],
                                   ["s"], "parse")
    spec = StudentSpec("biaffine", tree, multiroot, None)
    for temperature in (1.0, 2.0):
        kd = ParseKd(method="structural", temperature=temperature)
        arcs = parse_rows(outputs, [0], kd, spec, ["arcs"], ["dep"])[0]["arcs"].double()
        support = trees(n, multiroot, projective=tree == "projective")
        weights = torch.tensor([math.prod(float(probs[d, h]) ** (1 / temperature) for d, h in enumerate(y))
                                for y in support], dtype=torch.float64)
        weights = weights / weights.sum()
        expected = torch.zeros(n + 1, n + 1, dtype=torch.float64)
        for w, y in zip(weights, support):
            for d, h in enumerate(y, start=1):
                expected[d, h] += w
        torch.testing.assert_close(arcs, expected, atol=1e-6, rtol=0)
    seqlabel = parse_rows(outputs, [0], ParseKd(method="structural"), StudentSpec("seqlabel", None, True, ()),
                          ["arcs"], ["dep"])[0]["arcs"].double()
    torch.testing.assert_close(seqlabel[1:], probs, atol=1e-6, rtol=0)  # a per-word student: the heads as they are


def test_head_probabilities_of_a_teacher_give_its_arc_marginals(parse, tmp_path):
    """A first-order teacher's per-word head softmax rows, restricted to the student's trees, are that teacher's
    distribution (each tree has one head per word, so the per-word normalizers cancel): the teacher path's cached
    arcs, for students whose trees are the projective single-root teacher's (a student with more trees gets more
    from the file, whose teacher is the product over all head choices)."""
    from structkd.parse.modeling import ParseModel

    teacher = ParseModel.load(parse["teacher"])
    teacher.eval()
    sentences = read_conllu(parse["data"]["train"])[:6]
    with torch.no_grad():
        out = teacher(sentences)
    probs = out.dist.potentials[0].double().softmax(-1)
    rel_names = [teacher.rels[r] for r in range(len(teacher.rels))]
    records = [arcs_record(s.words, probs[b, 1:len(s) + 1, :len(s) + 1], [rel_names[0]] * len(s))
               for b, s in enumerate(sentences)]
    outputs = read_teacher_outputs(write_jsonl(tmp_path / "arcs.jsonl", records), [s.words for s in sentences],
                                   [s.source for s in sentences], "parse")
    for tree, multiroot in [("projective", False), ("2o", False)]:
        spec = StudentSpec("biaffine", tree, multiroot, None)
        kd = ParseKd(method="structural", relations="none", temperature=1.5)
        fields = ["arcs", "sibs"] if tree == "2o" else ["arcs"]
        mine = parse_rows(outputs, range(6), kd, spec, fields, teacher.rels)
        theirs = parse_teacher_outputs(teacher, sentences, kd, spec)
        for a, b in zip(mine, theirs):
            for name in fields:
                torch.testing.assert_close(a[name], b[name], atol=2e-5, rtol=1e-4)


# ------------------------------------------------------------------------------------------ end to end
def same_weights(a, b):
    from safetensors.torch import load_file

    x, y = load_file(str(a / "model" / "model.safetensors")), load_file(str(b / "model" / "model.safetensors"))
    return set(x) == set(y) and all(torch.equal(x[k], y[k]) for k in x)


def test_distilling_from_the_teachers_tags_equals_seqlevel_kd_from_the_teacher(ner, tmp_path):
    from structkd.ner.modeling import NerModel, predict

    teacher = NerModel.load(ner["teacher"])
    sentences = ner_sentences(ner, unlabeled=True)
    path = tmp_path / "teacher_tags.conll"
    write_columns(path, [Sentence(s.tokens, t) for s, t in zip(sentences, predict(teacher, sentences))])
    data = {**ner["data"], "unlabeled": [ner["raw"]]}
    results = {}
    for name, source in (("model", {"teacher": ner["teacher"]}), ("file", {"teacher_outputs": str(path)})):
        config = build_ner_config({"data": data, "model": {**NER_MODEL, "head": "crf"},
                                   "kd": {"method": "seqlevel", **source}, "training": training(tmp_path / name)})
        results[name] = runner.distill_command(NER, config)
    assert results["file"]["teacher_outputs"] == "tags"
    assert results["file"]["dev"]["f1"] == results["model"]["dev"]["f1"]
    assert same_weights(tmp_path / "model", tmp_path / "file")


@pytest.mark.parametrize("kind,method,head", [("kbest", "topwk", "crf"), ("probs", "structural", "crf"),
                                              ("probs", "posterior", "maxent"), ("probs", "token", "crf")])
def test_distill_from_each_ner_file_kind(ner, tmp_path, kind, method, head):
    from structkd.ner.modeling import NerModel

    teacher = NerModel.load(ner["teacher"])
    sentences = ner_sentences(ner, unlabeled=True)
    with torch.no_grad():
        dist = teacher(sentences)
    if kind == "kbest":
        best, scores = dist.topk(2), dist.kmax(2)
        records = [{"tokens": s.tokens, "sequences": [{"tags": [teacher.tags[t] for t in best[r, b, :len(s)].tolist()],
                                                       "score": float(scores[r, b])} for r in range(2)]}
                   for b, s in enumerate(sentences)]
    else:
        records = [{"tokens": s.tokens, "labels": teacher.tags, "probs": dist.marginals[b, :len(s)].double().tolist()}
                   for b, s in enumerate(sentences)]
    path = write_jsonl(tmp_path / "outputs.jsonl", records)
    config = build_ner_config({"data": {**ner["data"], "unlabeled": [ner["raw"]]}, "model": {**NER_MODEL, "head": head},
                               "kd": {"method": method, "teacher_outputs": path, "cache_dir": str(tmp_path / "cache")},
                               "training": training(tmp_path / "run")})
    results = runner.distill_command(NER, config)
    assert 0.0 <= results["dev"]["f1"] <= 1.0 and results["teacher_outputs"] == kind
    index = json.loads((tmp_path / "cache" / "index.json").read_text())
    assert index["fingerprint"]["teacher"].startswith(f"outputs:{kind}:")
    # another file under the same cache: refused (the cache knows the file by its SHA-256), rebuilt on request
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("\n")  # the same records, another file
    config.training.output_dir = str(tmp_path / "again")
    with pytest.raises(CacheMismatchError, match="teacher differs"):
        runner.distill_command(NER, config)
    config.training.output_dir = str(tmp_path / "rebuilt")
    runner.distill_command(NER, config, rebuild_cache=True)


@pytest.mark.parametrize("nonprojective", ["projectivize", "skip"])
def test_distilling_from_the_teachers_trees_equals_topk_kd_from_the_teacher(parse, tmp_path, nonprojective):
    from structkd.parse.modeling import ParseModel

    teacher = ParseModel.load(parse["teacher"])
    sentences = read_conllu(parse["data"]["train"])
    path = tmp_path / "teacher_trees.conllu"
    PARSE.write_predictions(str(path), sentences, teacher)  # every training tree, the non-projective ones too
    results = {}
    for name, source in (("model", {"teacher": parse["teacher"]}), ("file", {"teacher_outputs": str(path)})):
        config = build_parse_config({"data": {**parse["data"], "on_nonprojective": nonprojective},
                                     "model": PARSE_MODEL, "kd": {"method": "topk", "top_k": 1, **source},
                                     "training": training(tmp_path / name)})
        results[name] = runner.distill_command(PARSE, config)
    key = "skipped_nonprojective" if nonprojective == "skip" else "projectivized_nonprojective"
    assert results["file"][key] == results["model"][key] == 2  # the file's records of those trees follow them
    assert results["file"]["dev"]["las"] == results["model"]["dev"]["las"]
    assert same_weights(tmp_path / "model", tmp_path / "file")


@pytest.mark.parametrize("kind,relations", [("arcs", "marginal"), ("arcs", "none"), ("seqlabel", "marginal")])
def test_distill_from_head_probabilities(parse, tmp_path, kind, relations):
    from structkd.parse.modeling import ParseModel

    teacher = ParseModel.load(parse["teacher"])
    sentences = read_conllu(parse["data"]["train"])
    with torch.no_grad():
        out = teacher(sentences)
    probs = out.dist.potentials[0].double().softmax(-1)
    rels = out.rel_logits.argmax(-1)
    records = [arcs_record(s.words, probs[b, 1:len(s) + 1, :len(s) + 1],
                           [teacher.rels[int(rels[b, d, probs[b, d].argmax()])] for d in range(1, len(s) + 1)]
                           if relations != "none" else None) for b, s in enumerate(sentences)]
    path = write_jsonl(tmp_path / "arcs.jsonl", records)
    model = {**PARSE_MODEL, "kind": "seqlabel"} if kind == "seqlabel" else PARSE_MODEL
    config = build_parse_config({"data": parse["data"], "model": model,
                                 "kd": {"method": "structural", "relations": relations, "teacher_outputs": path},
                                 "training": training(tmp_path / "run")})
    results = runner.distill_command(PARSE, config)
    assert 0.0 <= results["dev"]["las"] <= results["dev"]["uas"] <= 1.0 and results["teacher_outputs"] == "arcs"


# ------------------------------------------------------------------------------------------ bad files
def bad_ner(tmp_path, text, name="t.jsonl"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


WORDS = [["Paris", "is", "nice"], ["Hi", "John"]]


@pytest.mark.parametrize("text,line,message", [
    ("Paris\tB-LOC\nis\tO\nnice\tO\n", None,
     "1 sentence\\(s\\), but the run distils 2.*sentence 2 \\(s2\\) has no teacher output"),
    ("Paris\tB-LOC\nis\tO\nnice\tO\n\nHi\tO\nJohn\tB-PER\n\nmore\tO\n", 8, "an extra sentence"),
    ("Paris\tB-LOC\nis\tO\n\nHi\tO\nJohn\tB-PER\n", 1, "2 tokens, the sentence has 3"),
    ("Paris\tB-LOC\nwas\tO\nnice\tO\n\nHi\tO\nJohn\tB-PER\n", 1, "token 2 is 'was', the sentence's is 'is'"),
    ("Paris\tB-LOC\nis\tO\nnice\tO\n\nHi\tO\nJohn\tB-MISC\n", 6, "unknown label 'B-MISC'"),
    ("Paris\n", 1, "expected a token and a tag"),
])
def test_bad_tag_files(tmp_path, text, line, message):
    path = bad_ner(tmp_path, text, "t.conll")
    where = f"{path}:{line}: " if line else f"{path}: "
    with pytest.raises(CorpusError, match=f"^{where}.*{message}" if line else f"^{where}{message}"):
        check_labels(read_teacher_outputs(path, WORDS, ["s1", "s2"], "ner"), ["O", "B-LOC", "B-PER", "I-PER"],
                     "the student's")


def record(tokens, **fields):
    return json.dumps({"tokens": tokens, **fields})


GOOD = record(["Hi", "John"], labels=["O", "B-PER"], probs=[[0.9, 0.1], [0.2, 0.8]])


@pytest.mark.parametrize("first,message", [
    (record(["Paris", "is", "nice"], labels=["O", "B-LOC"], probs=[[0.5, 0.6], [1, 0], [1, 0]]),
     r"\"probs\" row 1 \(token 'Paris'\) has values summing to 1.1, not 1 \(tolerance 0.001\)"),
    (record(["Paris", "is", "nice"], labels=["O", "B-LOC"], probs=[[1.5, -0.5], [1, 0], [1, 0]]),
     "row 1 .* has a negative value"),
    ('{"tokens": ["Paris", "is", "nice"], "labels": ["O", "B-LOC"], "probs": [[NaN, 1], [1, 0], [1, 0]]}',
     "row 1 .* has a value that is not finite"),
    (record(["Paris", "is", "nice"], labels=["O", "B-LOC"], probs=[[1, 0], [1, 0, 0], [1, 0]]),
     r"\"probs\" row 2 \(token 'is'\) has 3 values, not 2"),
    (record(["Paris", "is", "nice"], labels=["O", "B-LOC"], probs=[[1, 0], [1, 0]]),
     "one row per token \\(3\\), got 2"),
    (record(["Paris", "is", "nice"], labels=["O", "B-ORG"], probs=[[1, 0], [1, 0], [1, 0]]),
     "unknown label 'B-ORG'"),
    (record(["Paris", "is", "nice"], probs=[[1, 0], [1, 0], [1, 0]]), 'no "labels"'),
    (record(["Paris", "is", "nice"], sequences=[{"tags": ["B-LOC", "O"], "score": 1.0}]),
     "sequence 1's \"tags\" has 2 entries for 3 tokens"),
    ('{"tokens": ["Paris", "is", "nice"], "sequences": [{"tags": ["O", "O", "O"], "score": Infinity}]}',
     "sequence 1 has the score inf, not a finite number"),
    ('{"tokens": ["Paris", "is"', "not valid JSON"),
])
def test_bad_jsonl_files_for_taggers(tmp_path, first, message):
    path = bad_ner(tmp_path, first + "\n" + GOOD + "\n")
    with pytest.raises(CorpusError, match=f"^{path}:1: .*{message}"):
        check_labels(read_teacher_outputs(path, WORDS, ["s1", "s2"], "ner"), ["O", "B-LOC", "B-PER", "I-PER"],
                     "the student's")


def test_a_mixed_file_and_a_shared_label_header(tmp_path):
    kbest = record(["Hi", "John"], sequences=[{"tags": ["O", "B-PER"], "score": 0.0}])
    path = bad_ner(tmp_path, GOOD.replace('"labels": ["O", "B-PER"], ', "") + "\n" + kbest + "\n")
    with pytest.raises(CorpusError, match=f"^{path}:1: no \"labels\""):
        read_teacher_outputs(path, WORDS[1:] * 2, ["s1", "s2"], "ner")
    path = bad_ner(tmp_path, '{"labels": ["O", "B-PER"]}\n' + GOOD.replace('"labels": ["O", "B-PER"], ', "")
                   + "\n" + kbest + "\n")
    with pytest.raises(CorpusError, match=f"^{path}:3: a kbest record in a JSONL file of per-token"):
        read_teacher_outputs(path, WORDS[1:] * 2, ["s1", "s2"], "ner")
    path = bad_ner(tmp_path, '{"labels": ["B-PER", "O"]}\n' + GOOD.replace('"labels": ["O", "B-PER"], ', "") + "\n")
    outputs = read_teacher_outputs(path, WORDS[1:], ["s1"], "ner")
    assert outputs.records[0][0] == ["B-PER", "O"] and outputs.lines == [2]


@pytest.mark.parametrize("text,message", [
    (record(["a", "b"], heads=[[0.5, 0, 0.6], [1, 0, 0]]), "row 1 \\(token 'a'\\) has values summing to 1.1"),
    (record(["a", "b"], heads=[[0, 0, 1], [1, 0]]), "\"heads\" row 2 \\(token 'b'\\) has 2 values, not 3"),
    (record(["a", "b"], heads=[[0, 1, 0], [1, 0, 0]]), "row 1 \\(token 'a'\\) gives its own word probability 1"),
    (record(["a", "b"], heads=[[0, 0, 1], [1, 0, 0]], rels=["root", "nope"]), "unknown label 'nope'"),
    (record(["a", "b", "c"], heads=[[0, 0, 1], [1, 0, 0]]), "3 tokens, the sentence has 2"),
])
def test_bad_arc_files(tmp_path, text, message):
    path = bad_ner(tmp_path, text + "\n")
    with pytest.raises(CorpusError, match=f"^{path}:1: .*{message}"):
        check_labels(read_teacher_outputs(path, [["a", "b"]], ["s1"], "parse"), ["root", "dep"], "the student's")


def test_bad_tree_files(parse, tmp_path):
    sentences = read_conllu(parse["data"]["dev"])
    words, sources = [s.words for s in sentences], [s.source for s in sentences]
    text = open(parse["data"]["dev"], encoding="utf-8").read()
    path = tmp_path / "trees.conllu"
    path.write_text(text.replace("\tnsubj\t", "\tnsbj\t", 1), encoding="utf-8")
    with pytest.raises(CorpusError, match=f"^{path}:1: unknown label 'nsbj'"):
        check_labels(read_teacher_outputs(path, words, sources, "parse"), ["nsubj", "root"], "the student's")
    blocks = text.strip().split("\n\n")
    path.write_text("\n\n".join(blocks[:-1]) + "\n\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=f"^{path}: 5 sentence\\(s\\), but the run distils 6"):
        read_teacher_outputs(path, words, sources, "parse")
    path.write_text("\n\n".join(blocks[1:2] + blocks[1:]) + "\n\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=f"^{path}:1: not the tokens of sentence 1 of the run"):
        read_teacher_outputs(path, words, sources, "parse")


def test_refused_before_any_work(ner, parse, tmp_path):
    ok = bad_ner(tmp_path, "x\tO\n", "ok.conll")
    with pytest.raises(ValueError, match="set one of kd.teacher .* not both kd.teacher and kd.teacher_outputs"):
        SharedKd(teacher="t", teacher_outputs=ok)
    with pytest.raises(ValueError, match="need the teacher's model"):
        SharedKd(teacher_outputs=ok, hidden_weight=1.0)
    config = build_ner_config({"data": ner["data"], "model": {**NER_MODEL, "head": "crf"},
                               "kd": {"method": "structural", "teacher_outputs": str(tmp_path / "none.conll")},
                               "training": training(tmp_path / "run")})
    with pytest.raises(FileNotFoundError, match="kd.teacher_outputs: .*none.conll: no such file"):
        runner.distill_command(NER, config)
    sentences = ner_sentences(ner)
    tags = tmp_path / "tags.conll"
    write_columns(tags, sentences)
    config.kd.teacher_outputs = str(tags)
    with pytest.raises(ValueError, match="kd.method=structural cannot be served by kd.teacher_outputs=.*a column "
                                         "file of tags: it serves kd.method seqlevel"):
        runner.distill_command(NER, config)
    assert not (tmp_path / "run" / "teacher_cache").exists()
    # a bad line in the file: refused with its line before the student is trained
    lines = tags.read_text().splitlines()
    lines[1] = lines[1].split("\t")[0] + "\tB-MISC"
    tags.write_text("\n".join(lines) + "\n")
    config.kd.method = "seqlevel"
    with pytest.raises(CorpusError, match=f"^{tags}:2: unknown label 'B-MISC'"):
        runner.distill_command(NER, config, overwrite=True)
    assert not (tmp_path / "run" / "model").exists()
    # parsing: relations distilled from a file without them are refused at the record
    words = [s.words for s in read_conllu(parse["data"]["train"])]
    arcs = write_jsonl(tmp_path / "arcs.jsonl", [{"tokens": w, "heads": [[1.0] + [0.0] * len(w)] * len(w)}
                                                 for w in words])
    config = build_parse_config({"data": parse["data"], "model": PARSE_MODEL,
                                 "kd": {"method": "structural", "teacher_outputs": arcs},
                                 "training": training(tmp_path / "parse_run")})
    with pytest.raises(CorpusError, match=f"^{arcs}:1: no \"rels\""):
        runner.distill_command(PARSE, config)
    config.kd.method = "topk"
    with pytest.raises(ValueError, match="kd.method=topk cannot be served .* per-word head probabilities"):
        runner.distill_command(PARSE, config, overwrite=True)


def test_a_teacher_tree_the_student_cannot_express(tmp_path):
    outputs = TeacherOutputs("f.conllu", "trees", [([2, 0, 2], ["a", "root", "b"]), ([0, 0], ["root", "root"]),
                                                    ([3, 4, 0, 3], ["a", "b", "root", "c"])], [1, 5, 9], "x")
    from structkd.tasks.blackbox import check_trees

    assert check_trees(outputs, multiroot=False, projective=True, impossible="renormalize") == 2
    assert outputs.inexpressible == [False, True, True]
    assert is_tree([0, 0], True) and not is_projective([3, 4, 0, 3])
    rows = parse_rows(outputs, [0, 1], ParseKd(method="topk"), StudentSpec("biaffine", "projective", False, None),
                      ["topk_heads", "topk_rels", "topk_weights"], ["a", "b", "c", "root"])
    assert [float(r["topk_weights"]) for r in rows] == [1.0, 0.0]
    with pytest.raises(CorpusError, match="^f.conllu:5: a teacher tree the student cannot express \\(several root"):
        check_trees(outputs, multiroot=False, projective=True, impossible="error")
    check_method(outputs, "topk")


def test_upos_students_of_a_probability_file_without_training_data(parse, tmp_path):
    """The UPOS task inherits the NER task's black-box teachers: tags without a scheme; without data.train the
    student's labels are the file's."""
    from structkd.tasks.upos import TASK as UPOS
    from structkd.tasks.upos import build_upos_config

    sentences = read_conllu(parse["data"]["train"])
    upos = sorted({"X", "NOUN", "VERB"})
    records = [{"tokens": s.words, "labels": upos, "probs": [[0.2, 0.7, 0.1]] * len(s)} for s in sentences]
    path = write_jsonl(tmp_path / "upos.jsonl", records)
    config = build_upos_config({"data": {"unlabeled": [parse["data"]["train"]], "dev": parse["data"]["dev"]},
                                "model": {**NER_MODEL, "head": "crf"},
                                "kd": {"method": "structural", "teacher_outputs": path},
                                "training": training(tmp_path / "run")})
    results = runner.distill_command(UPOS, config)
    assert results["teacher_outputs"] == "probs"
    assert UPOS.load_model(tmp_path / "run" / "model").tags == upos
