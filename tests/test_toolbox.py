"""The KD toolbox from a config (docs/kd.md): annealing KD, teacher mixtures, hidden-state and attention matching,
MixKD and adversarial augmentation, end to end for NER and parsing, and what each loss term computes."""

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from test_ner_pipeline import ROWS, write_corpus  # noqa: E402
from test_parse_pipeline import MULTIWORD, TREES, block  # noqa: E402
from tiny_models import write_tiny_bert  # noqa: E402

from structkd.data import Sentence  # noqa: E402
from structkd.kd import HiddenStateKD, hidden_layer_map, structural_kd_loss  # noqa: E402
from structkd.kd.config import KdConfig, kd_temperature  # noqa: E402
from structkd.ner import NerModel, build_ner_config, train_command  # noqa: E402
from structkd.ner.pipeline import TASK as NER  # noqa: E402
from structkd.parse import ParseModel, build_parse_config  # noqa: E402
from structkd.parse import train_command as parse_train  # noqa: E402
from structkd.parse.pipeline import TASK as PARSE  # noqa: E402
from structkd.tasks import runner  # noqa: E402
from structkd.tasks.online import Toolbox, teacher_rows  # noqa: E402
from structkd.train.cache import CacheMismatchError  # noqa: E402
from structkd.train.callbacks import StepContext  # noqa: E402


def bilstm(head="maxent"):
    return {"kind": "bilstm", "head": head, "word_dim": 12, "hidden": 8, "char_filters": 6}


def training(out, epochs=1):
    return {"epochs": epochs, "batch_size": 6, "lr": 5e-3, "output_dir": str(out), "progress": False, "log_every": 2}


def step(fraction_steps, total=10):
    return StepContext(global_step=fraction_steps, total_steps=total, epoch=0, epochs=1, step_in_epoch=0,
                       steps_per_epoch=total)


@pytest.fixture(scope="module")
def ner(tmp_path_factory):
    """Two BiLSTM-CRF teachers (other seeds) and a tiny-BERT CRF teacher."""
    root = tmp_path_factory.mktemp("toolbox_ner")
    data = {"train": write_corpus(root / "train.conll", ROWS, 2), "dev": write_corpus(root / "dev.conll", ROWS, 1)}
    dirs = {}
    for name, seed in (("crf", 0), ("crf2", 1)):
        train_command(build_ner_config({"data": data, "model": bilstm("crf"),
                                        "training": {**training(root / name), "seed": seed}}))
        dirs[name] = str(root / name / "model")
    bert = write_tiny_bert(root / "bert", layers=2, max_positions=32)
    train_command(build_ner_config({"data": data, "model": {"kind": "transformer", "encoder": bert, "head": "crf"},
                                    "training": training(root / "bert_crf")}))
    dirs["bert"] = str(root / "bert_crf" / "model")
    return {"data": data, **dirs}


def ner_config(ner, out, kd, model=None):
    return build_ner_config({"data": ner["data"], "model": model or bilstm(), "kd": kd, "training": training(out)})


# -- config ----------------------------------------------------------------------------------------------------
def test_config_refusals():
    for bad, message in ((dict(teacher="a", teachers=["b"]), "not both"),
                         (dict(teachers=["a", "b"], teacher_weights=[1.0]), "1 entries for 2"),
                         (dict(teachers=["a"], method="topk"), "mixture"),
                         (dict(temperature_schedule="cosine"), "temperature_schedule"),
                         (dict(augment="generator"), "kd.augment"),
                         (dict(hidden_layers="1:2"), "hidden_layers"),
                         (dict(mixup_alpha=0.0), "mixup_alpha"),
                         (dict(hidden_weight=-1.0), "hidden_weight")):
        with pytest.raises(ValueError, match=message):
            KdConfig(**bad)
    assert KdConfig(teachers=["a", "b"], teacher_weights=[1, 3]).mixture_weights == [0.25, 0.75]


def test_annealed_temperature_follows_the_schedule():
    kd = KdConfig(temperature=4.0, temperature_schedule="anneal")
    assert kd_temperature(kd, 0.0) == 4.0 and kd_temperature(kd, 0.5) == 2.5 and kd_temperature(kd, 1.0) == 1.0
    assert kd_temperature(KdConfig(temperature=4.0), 0.7) == 4.0


def test_hidden_layer_maps():
    assert hidden_layer_map("uniform", 1, 3) == [(0, 2)]  # a BiLSTM's output to the teacher's top layer
    assert hidden_layer_map("uniform", 3, 5) == [(0, 0), (1, 2), (2, 4)]
    assert hidden_layer_map("last", 3, 5) == [(2, 4)]
    with pytest.raises(ValueError, match="out of range"):
        hidden_layer_map([(0, 7)], 2, 3)


def test_hidden_loss_is_zero_when_the_projection_maps_student_to_teacher():
    torch.manual_seed(0)
    student = torch.randn(2, 5, 4, dtype=torch.float64)
    kd = HiddenStateKD(4, 6, [(0, 0)]).double()
    weight, bias = torch.randn(6, 4, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    teacher = student @ weight.T + bias
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    with torch.no_grad():
        kd.projections[0].weight.copy_(weight)
        kd.projections[0].bias.copy_(bias)
    assert torch.allclose(kd([student], [teacher], mask), torch.zeros(2, dtype=torch.float64), atol=1e-20)
    teacher[0, 1] += 1.0
    assert kd([student], [teacher], mask)[0] > 0 and kd([student], [teacher], mask)[1] < 1e-20
    teacher[0, 4] += 5.0  # padding is not matched
    # 1 on every dim of 1 of 3 words
    assert torch.isclose(kd([student], [teacher], mask)[0], torch.tensor(1 / 3, dtype=torch.float64))


# -- teacher outputs online, mixtures ------------------------------------------------------------------------
def _student_and_batch(ner, tmp_path, kd):
    config = ner_config(ner, tmp_path, kd)
    data = NER.read_data(config.data)
    teachers = [NER.load_model(d) for d in config.kd.teacher_dirs]
    torch.manual_seed(0)
    prepared = NER.prepare_student(config, data, teachers[0])
    batch = NER.collate(list(enumerate(data.train[:5])), prepared.model)
    return config, teachers, prepared, batch


def test_annealing_at_temperature_one_is_structural_kd(ner, tmp_path):
    config, teachers, prepared, batch = _student_and_batch(
        ner, tmp_path, {"teacher": ner["crf"], "temperature": 3.0, "temperature_schedule": "anneal"})
    student = prepared.model.eval()
    toolbox = Toolbox(NER, config, teachers, student, prepared.items, NER.teacher_fields(config, student))
    dist = student(batch.sentences)
    with torch.no_grad():
        target = teachers[0](batch.sentences)
    end = toolbox.kd_loss(student, dist, batch, step(10))  # fraction 1: T = 1
    assert torch.allclose(end, structural_kd_loss(target, dist), atol=1e-4)
    start = toolbox.kd_loss(student, dist, batch, step(0))  # fraction 0: T = 3, global temperature with T^2
    assert torch.allclose(start, structural_kd_loss(target, dist, temperature=3.0), atol=1e-4)


def test_mixture_target_is_the_cross_entropy_to_the_mixture(ner, tmp_path):
    config, teachers, prepared, batch = _student_and_batch(
        ner, tmp_path, {"teachers": [ner["crf"], ner["crf2"]], "teacher_weights": [1.0, 3.0]})
    student = prepared.model.eval()
    fields = NER.teacher_fields(config, student)
    rows = teacher_rows(NER, teachers, config.kd.mixture_weights, batch.sentences, config, student)
    cached = {f: torch.nn.utils.rnn.pad_sequence([r[f] for r in rows], batch_first=True) for f in fields}
    dist = student(batch.sentences)
    with torch.no_grad():
        targets = [t(batch.sentences) for t in teachers]
    expected = structural_kd_loss(targets, dist, teacher_weights=[0.25, 0.75])
    assert torch.allclose(NER.kd_loss(config.kd, student, dist, cached, batch), expected, atol=1e-4)
    single = structural_kd_loss(targets[0], dist)
    assert not torch.allclose(single, expected, atol=1e-3)  # the second teacher matters


def test_mixture_distills_end_to_end_and_fingerprints_the_weights(ner, tmp_path):
    cache = tmp_path / "cache"
    kd = {"teachers": [ner["crf"], ner["crf2"]], "cache_dir": str(cache)}
    runner.distill_command(NER, ner_config(ner, tmp_path / "a", kd))
    first = json.loads((cache / "index.json").read_text())["fingerprint"]
    reweighted = ner_config(ner, tmp_path / "b", {**kd, "teacher_weights": [1.0, 3.0]})
    with pytest.raises(CacheMismatchError, match="teacher_weights: cached \\[0.5, 0.5\\], expected \\[0.25, 0.75\\]"):
        runner.distill_command(NER, reweighted)
    runner.distill_command(NER, reweighted, rebuild_cache=True, overwrite=True)
    second = json.loads((cache / "index.json").read_text())["fingerprint"]
    assert first != second and second["options"]["teacher_weights"] == [0.25, 0.75]
    with pytest.raises(FileNotFoundError, match=r"kd.teachers\[1\]"):
        runner.distill_command(NER, ner_config(ner, tmp_path / "c", {"teachers": [ner["crf"], str(tmp_path)]}))


# -- mixup and adversarial units ----------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["crf", "bert"])
def test_mixing_a_sentence_with_itself_at_weight_one_is_the_plain_forward(ner, which):
    model = NerModel.load(ner[which]).eval()
    sentences = [Sentence(w.split()) for w, _ in ROWS[:4]]
    with torch.no_grad():
        plain = model(sentences)
        mixed = NER.forward_mixed(model, sentences, torch.arange(4), torch.ones(4))
        assert torch.allclose(mixed.log_partition, plain.log_partition, atol=1e-5)
        # with a partner the mixed sentence is as long as the longer one
        swapped = NER.forward_mixed(model, sentences, torch.tensor([1, 0, 3, 2]), torch.full((4,), 0.5))
    lens = torch.tensor([len(s) for s in sentences])
    assert swapped.lens.tolist() == torch.maximum(lens, lens[[1, 0, 3, 2]]).tolist()


def test_adversarial_candidates_and_choice(ner, tmp_path):
    config, teachers, prepared, batch = _student_and_batch(
        ner, tmp_path, {"teacher": ner["crf"], "augment": "adversarial", "augment_weight": 1.0,
                        "augment_candidates": 3, "augment_rate": 0.3})
    student = prepared.model
    toolbox = Toolbox(NER, config, teachers, student, prepared.items, NER.teacher_fields(config, student))
    rng = __import__("numpy").random.default_rng(0)
    for s in batch.sentences:
        candidate = toolbox.perturb(s, rng)
        changed = [a != b for a, b in zip(candidate.tokens, s.tokens)]
        assert len(candidate.tokens) == len(s.tokens) and candidate.tags is None
        assert all(w in toolbox.vocabulary for w in candidate.tokens)
        assert any(changed) or len(set(toolbox.vocabulary)) == 1
    loss = toolbox.adversarial_loss(student, batch, step(3))
    loss.sum().backward()
    assert loss.shape == (5,) and bool((loss >= -1e-4).all())
    assert any(p.grad is not None for p in student.parameters())


# -- end to end: NER -------------------------------------------------------------------------------------------
NER_OPTIONS = {
    "anneal": ({"temperature": 3.0, "temperature_schedule": "anneal"}, None),
    "hidden_bilstm": ({"hidden_weight": 1.0}, None),
    "mixup": ({"mixup_weight": 0.5, "mixup_alpha": 0.4}, None),
    "adversarial": ({"augment": "adversarial", "augment_weight": 0.5, "augment_candidates": 2}, None),
}


@pytest.mark.parametrize("name", sorted(NER_OPTIONS))
def test_ner_distills_with_each_option(ner, tmp_path, name):
    kd, model = NER_OPTIONS[name]
    results = runner.distill_command(NER, ner_config(ner, tmp_path / name, {"teacher": ner["crf"], **kd}, model))
    assert 0.0 <= results["dev"]["f1"] <= 1.0
    assert not (tmp_path / name / "teacher_cache").exists() or name != "anneal"  # annealing targets are online


def test_transformer_student_matches_hidden_states_and_attentions(ner, tmp_path):
    out = tmp_path / "tiny"
    kd = {"teacher": ner["bert"], "hidden_weight": 1.0, "attention_weight": 1.0, "hidden_layers": "1-2",
          "mixup_weight": 0.5}
    model = {"kind": "transformer", "keep_every": 2, "head": "crf"}
    results = runner.distill_command(NER, ner_config(ner, out, kd, model))
    saved = NerModel.load(out / "model")
    assert results["parameters"] == sum(p.numel() for p in saved.parameters())  # the projection is not counted
    from safetensors.torch import load_file

    checkpoint = [k for f in (out / "last").rglob("*.safetensors") for k in load_file(str(f))]
    assert any(k.startswith("kd_hidden.") for k in checkpoint)  # ... but trained and checkpointed


def test_attention_matching_refuses_a_bilstm_student(ner, tmp_path):
    with pytest.raises(ValueError, match="student is not a transformer"):
        runner.distill_command(NER, ner_config(ner, tmp_path, {"teacher": ner["bert"], "attention_weight": 1.0}))


# -- end to end: parsing ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def parse(tmp_path_factory):
    root = tmp_path_factory.mktemp("toolbox_parse")
    text = "\n\n".join(block(n, *t) for n, t in enumerate(TREES)) + "\n\n" + MULTIWORD + "\n\n"
    (root / "train.conllu").write_text(text, encoding="utf-8")
    data = {"train": str(root / "train.conllu"), "dev": str(root / "train.conllu")}
    dirs = {}
    for name, seed in (("a", 0), ("b", 1)):
        parse_train(build_parse_config({"data": data, "model": parse_bilstm(),
                                        "training": {**training(root / name), "seed": seed}}))
        dirs[name] = str(root / name / "model")
    return {"data": data, **dirs}


def parse_bilstm(tree="projective"):
    return {"kind": "biaffine", "tree": tree, "encoder": "bilstm", "word_dim": 12, "hidden": 8, "char_filters": 6,
            "arc_hidden": 8, "rel_hidden": 6}


PARSE_OPTIONS = {
    "anneal": {"temperature": 2.0, "temperature_schedule": "anneal"},
    "teachers": {"teacher": None, "teacher_weights": [2.0, 1.0]},
    "hidden": {"hidden_weight": 1.0},
    "mixup": {"mixup_weight": 0.5},
    "adversarial": {"augment": "adversarial", "augment_weight": 0.5, "augment_candidates": 2},
}


@pytest.mark.parametrize("name", sorted(PARSE_OPTIONS))
def test_parse_distills_with_each_option(parse, tmp_path, name):
    kd = {"teacher": parse["a"], **PARSE_OPTIONS[name]}
    if name == "teachers":
        kd["teachers"] = [parse["a"], parse["b"]]
    config = build_parse_config({"data": parse["data"], "model": parse_bilstm(), "kd": kd,
                                 "training": training(tmp_path / name)})
    results = runner.distill_command(PARSE, config)
    assert 0.0 <= results["dev"]["las"] <= results["dev"]["uas"] <= 1.0


def test_parse_mixture_relations_are_the_mixture_conditionals(parse, tmp_path):
    config = build_parse_config({"data": parse["data"], "model": parse_bilstm(),
                                 "kd": {"teachers": [parse["a"], parse["b"]], "teacher_weights": [1.0, 3.0]},
                                 "training": training(tmp_path)})
    data = PARSE.read_data(config.data)
    teachers = [ParseModel.load(d) for d in config.kd.teacher_dirs]
    student = PARSE.prepare_student(config, data, teachers[0]).model
    sentences = data.train[:3]
    rows = teacher_rows(PARSE, teachers, [0.25, 0.75], sentences, config, student)
    single = [PARSE.teacher_outputs(t, sentences, config, student) for t in teachers]
    for i, row in enumerate(rows):
        a, b = single[0][i], single[1][i]
        assert torch.allclose(row["arcs"], 0.25 * a["arcs"] + 0.75 * b["arcs"])
        joint = 0.25 * a["arcs"].unsqueeze(-1) * a["rels"] + 0.75 * b["arcs"].unsqueeze(-1) * b["rels"]
        inside = row["arcs"] > 1e-6
        assert torch.allclose((row["rels"] * row["arcs"].unsqueeze(-1))[inside], joint[inside], atol=1e-6)
        assert torch.allclose(row["rels"][inside].sum(-1), torch.ones(int(inside.sum())), atol=1e-5)
