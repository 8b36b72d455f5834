"""Hugging Face token classifiers as teachers, softmax teachers of constrained CRF students (kd.impossible), and
round trips of taggers on any transformers encoder.  Everything is built offline in tmp_path."""

import itertools
import json
import math
import os
import re

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from brute import tag_sequences  # noqa: E402
from tiny_models import VOCAB  # noqa: E402

from structkd.data import Sentence, read_columns  # noqa: E402
from structkd.kd import project, structural_kd_loss, structural_kd_loss_from_marginals  # noqa: E402
from structkd.kd.projections import restrict_chain, restriction_lost_mass  # noqa: E402
from structkd.kd.structural import restricted_chain_marginals  # noqa: E402
from structkd.models.hf_teacher import is_hf_checkpoint  # noqa: E402
from structkd.models.serialization import load_pretrained, save_pretrained  # noqa: E402
from structkd.models.transformer import SubwordEncoder, TransformerTagger  # noqa: E402
from structkd.ner import NerModel, build_ner_config, distill_command  # noqa: E402
from structkd.ner.config import KdConfig  # noqa: E402
from structkd.ner.distillation import compute_teacher_outputs, kd_loss  # noqa: E402
from structkd.ner.modeling import evaluate, saved_scheme  # noqa: E402
from structkd.ner.pipeline import TASK  # noqa: E402
from structkd.schemes import allowed_transitions  # noqa: E402
from structkd.structs.chain import LinearChainCRF, MaxEnt  # noqa: E402
from structkd.structs.semimarkov import SemiMarkovCRF  # noqa: E402
from structkd.train import teacher_fingerprint  # noqa: E402
from structkd.train.config import check_teacher_directory  # noqa: E402

LABELS = ["I-PER", "O", "B-LOC", "B-PER", "I-LOC", "B-MISC", "I-MISC"]  # any order; MISC unused by the data
ROWS = [("john smith lives in new york .", "B-PER I-PER O O B-LOC I-LOC O"), ("paris is nice .", "B-LOC O O O"),
        ("hi john", "O B-PER"), ("the city , paris", "O O O B-LOC"), ("smith is unbelievable", "B-PER O O")]


def tokenizer():
    return transformers.BertTokenizerFast(vocab={w: i for i, w in enumerate(VOCAB)})


def write_token_classifier(directory, labels=LABELS, max_positions=32, safe=True, seed=0):
    """A tiny random BertForTokenClassification with ``labels`` and its tokenizer, saved to ``directory``."""
    torch.manual_seed(seed)
    config = transformers.BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=max_positions,
                                     id2label=dict(enumerate(labels)), label2id={t: i for i, t in enumerate(labels)})
    model = transformers.BertForTokenClassification(config)
    with torch.no_grad():
        model.classifier.weight.mul_(20.0)  # peaked enough that the softmax teacher breaks BIO often
    model.save_pretrained(str(directory))
    if not safe:  # the older checkpoint format (recent transformers write safetensors only)
        from safetensors.torch import load_file

        weights = directory / "model.safetensors"
        torch.save(load_file(str(weights)), str(directory / "pytorch_model.bin"))
        weights.unlink()
    tokenizer().save_pretrained(str(directory))
    return str(directory)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    return write_token_classifier(tmp_path_factory.mktemp("hf") / "teacher")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    lines = []
    for words, tags in ROWS * 2:
        lines += [f"{w}\t{t}" for w, t in zip(words.split(), tags.split())] + [""]
    (root / "train.conll").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(root / "train.conll")


# ------------------------------------------------------------------------------------------- the teacher
@pytest.mark.parametrize("pooling", ["first", "mean"])
def test_word_scores_are_the_models_logits_at_first_subwords(hf_dir, pooling):
    teacher = NerModel.load(hf_dir, pooling=pooling)
    assert teacher.head_kind == "maxent" and teacher.tags == LABELS and teacher.tagger.scheme == "BIO"
    sentences = [["john", "unbelievables", "in", "paris"], ["hi", "unbelievable", ",", "new", "york", "."]]
    dist = teacher([Sentence(s) for s in sentences])
    assert isinstance(dist, MaxEnt)
    model, tok = teacher.tagger.model, teacher.tagger.encoder.tokenizer
    for b, words in enumerate(sentences):
        encoded = tok(words, is_split_into_words=True, return_tensors="pt")
        with torch.no_grad():
            logits = model(**encoded).logits[0]
        word_ids = encoded.word_ids(0)
        for i in range(len(words)):
            pieces = [n for n, w in enumerate(word_ids) if w == i]
            assert len(pieces) > 1 or words[i] != "unbelievables"
            expected = logits[pieces[0]] if pooling == "first" else logits[pieces].mean(0)
            torch.testing.assert_close(dist.potentials[0][b, i], expected, rtol=0, atol=1e-5)


def test_long_sentences_are_read_in_windows(tmp_path):
    directory = write_token_classifier(tmp_path / "short", max_positions=8)
    teacher = NerModel.load(directory)
    words = ["john", "smith", "lives", "in", "new", "york", "."] * 3
    dist = teacher([Sentence(words)])
    assert dist.lens.tolist() == [21] and teacher.tagger.encoder.window == 6
    # a word read from a window: the model's logits on that window's sub-words
    window = teacher.tagger.encoder.tokenize([words])
    assert window.input_ids.shape[0] > 1
    assert torch.isfinite(dist.log_partition).all()


def test_labels_that_fit_no_scheme_are_listed(tmp_path):
    directory = write_token_classifier(tmp_path / "anonymous", labels=["LABEL_0", "B-PER", "LABEL_2"])
    with pytest.raises(ValueError, match=r"2 label\(s\).*'LABEL_0', 'LABEL_2'"):
        NerModel.load(directory)
    bilou = write_token_classifier(tmp_path / "bilou", labels=["O", "B-PER", "L-PER", "U-PER", "I-PER"])
    assert NerModel.load(bilou).tags == ["O", "B-PER", "E-PER", "S-PER", "I-PER"]  # BILOU: BIOES in other letters
    assert NerModel.load(bilou).tagger.scheme == "BIOES" and saved_scheme(bilou) == "BIOES"
    io = write_token_classifier(tmp_path / "io", labels=["O", "person-actor", "art-film"])  # IO: read as IOB1
    assert NerModel.load(io).tags == ["O", "I-person-actor", "I-art-film"]
    assert NerModel.load(io).tagger.scheme == "IOB1" and saved_scheme(io) == "IOB1"
    default = write_token_classifier(tmp_path / "default", labels=["LABEL_0", "LABEL_1"])  # no O: not IO
    with pytest.raises(ValueError, match=r"2 label\(s\).*'LABEL_0', 'LABEL_1'"):
        NerModel.load(default)
    bioes = write_token_classifier(tmp_path / "bioes", labels=["O", "B-PER", "I-PER", "E-PER", "S-PER"])
    assert NerModel.load(bioes).tagger.scheme == "BIOES"
    # read without the weights (data.scheme: auto with no labeled file): the scheme, or None when labels fit none
    assert saved_scheme(bioes) == "BIOES" and saved_scheme(directory) is None and saved_scheme(tmp_path) is None
    with pytest.raises(ValueError, match="'E-PER', 'S-PER' are not BIO tags"):
        NerModel.load(bioes, scheme="BIO")


def test_a_bare_encoder_is_not_a_teacher(tmp_path):
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=16)
    transformers.BertModel(config).save_pretrained(str(tmp_path / "bert"))
    tokenizer().save_pretrained(str(tmp_path / "bert"))
    with pytest.raises(ValueError, match="BertModel, not a token classifier"):
        NerModel.load(tmp_path / "bert")


def test_checkpoint_detection_and_fingerprints(hf_dir, tmp_path):
    assert is_hf_checkpoint(hf_dir) and is_hf_checkpoint("org/name") and not is_hf_checkpoint(tmp_path)
    safe = teacher_fingerprint(hf_dir)
    pickled = write_token_classifier(tmp_path / "bin", safe=False)
    assert (tmp_path / "bin" / "pytorch_model.bin").exists() and not (tmp_path / "bin" / "model.safetensors").exists()
    assert teacher_fingerprint(pickled) != safe
    other = write_token_classifier(tmp_path / "other", seed=1)
    assert teacher_fingerprint(other) != safe
    assert NerModel.load(pickled).tags == LABELS


def test_hub_name_in_the_local_cache(hf_dir, tmp_path, monkeypatch):
    import huggingface_hub

    root = tmp_path / "hub" / "models--org--tiny-ner"
    snapshot = root / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text("0" * 40)
    for name in ("config.json", "model.safetensors"):
        (snapshot / name).write_bytes((tmp_path / ".." / hf_dir / name).resolve().read_bytes())
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    check_teacher_directory("org/tiny-ner")  # accepted: cached
    assert teacher_fingerprint("org/tiny-ner") == teacher_fingerprint(hf_dir)
    with pytest.raises(FileNotFoundError, match="kd.teacher: org/missing: no such directory"):
        check_teacher_directory("org/missing")


def test_evaluate_with_the_teacher_as_it_is(hf_dir, corpus):
    result = evaluate(NerModel.load(hf_dir), read_columns(corpus))
    assert 0.0 <= result["f1"] <= 1.0


# ------------------------------------------------------------------------------------------- distillation
def distill_config(corpus, teacher, out, **kd):
    return build_ner_config({
        "data": {"train": corpus, "dev": corpus},
        "model": {"kind": "bilstm", "head": kd.pop("head", "crf"), "word_dim": 8, "hidden": 8, "char_filters": 4},
        "kd": {"teacher": teacher, **kd},
        "training": {"epochs": 1, "batch_size": 4, "output_dir": str(out), "progress": False}})


@pytest.mark.parametrize("head,method", [("crf", "structural"), ("maxent", "structural"), ("crf", "posterior"),
                                         ("crf", "token"), ("crf", "topwk"), ("crf", "seqlevel")])
def test_distill_into_crf_and_maxent_students(corpus, hf_dir, tmp_path, head, method, caplog):
    caplog.set_level("INFO", logger="structkd.ner")
    results = distill_command(distill_config(corpus, hf_dir, tmp_path / "run", head=head, method=method))
    assert 0.0 <= results["dev"]["f1"] <= 1.0
    student = NerModel.load(tmp_path / "run" / "model")
    assert student.tags == LABELS  # the teacher's labels, in its order, MISC included (the superset rule)
    assert student.head_kind == head
    if head == "crf" and method == "structural":
        assert any("mean mass" in r.message and "renormalize" in r.message for r in caplog.records)


def test_a_bilstm_student_starts_from_the_classifiers_input_embeddings(corpus, hf_dir, tmp_path):
    """``model.init_from_teacher`` (``auto``, the default) copies a Hugging Face token classifier's input
    embeddings as it does a structkd transformer's: each word is the mean of its subwords'."""
    distill_command(distill_config(corpus, hf_dir, tmp_path / "run", method="structural"))
    student = NerModel.load(tmp_path / "run" / "model")
    table = transformers.AutoModelForTokenClassification.from_pretrained(hf_dir).get_input_embeddings().weight
    words = student.vocab.words.items
    weights = student.tagger.encoder.words.weight
    assert weights.shape == (len(words), 32)
    ids = tokenizer()("paris", add_special_tokens=False)["input_ids"]
    assert "paris" in words and ids
    assert not torch.allclose(weights[words.index("paris")], table[ids].mean(0))  # trained: not frozen
    frozen = distill_config(corpus, hf_dir, tmp_path / "frozen", method="structural")
    frozen.model.freeze_embeddings = True
    distill_command(frozen)
    student = NerModel.load(tmp_path / "frozen" / "model")
    words = student.vocab.words.items
    torch.testing.assert_close(student.tagger.encoder.words.weight[words.index("paris")], table[ids].mean(0),
                               rtol=0, atol=1e-6)


def test_kd_impossible_error_and_ignore_reach_the_loss(corpus, hf_dir, tmp_path):
    with pytest.raises(ValueError, match="forbids.*kd.impossible=renormalize"):
        distill_command(distill_config(corpus, hf_dir, tmp_path / "error", impossible="error"))
    assert distill_command(distill_config(corpus, hf_dir, tmp_path / "ignore", impossible="ignore"))["dev"]
    with pytest.raises(ValueError, match="kd.impossible must be one of"):
        KdConfig(impossible="drop")


def test_data_labels_the_teacher_lacks_are_distilled_unlabeled_and_scored_as_misses(corpus, tmp_path, caplog):
    small = write_token_classifier(tmp_path / "per", labels=["O", "B-PER", "I-PER"])
    with caplog.at_level("WARNING", logger="structkd.ner"):
        results = distill_command(distill_config(corpus, small, tmp_path / "run"))
    # 3 of the 5 sentences (twice over) have a LOC tag: the student learns them from the teacher alone
    assert re.search(r"6 training sentence\(s\) have tags that are not among the teacher's .*'B-LOC'", caplog.text)
    assert re.search(r"2 tag\(s\) are not among the teacher's .*'B-LOC' .*'I-LOC'", caplog.text)
    assert results["dev"]["recall"] < 1


def test_the_data_takes_the_teachers_scheme_unless_told_otherwise(corpus, tmp_path):
    bioes = write_token_classifier(tmp_path / "bioes", labels=["O", "B-PER", "I-PER", "E-PER", "S-PER", "B-LOC",
                                                               "I-LOC", "E-LOC", "S-LOC"])
    config = distill_config(corpus, bioes, tmp_path / "run")
    config.data.convert_to = "BIO"  # the student made to keep the data's BIO: refused
    with pytest.raises(ValueError, match="BIOES labels .* the data is read as BIO: set data.convert_to=BIOES"):
        distill_command(config)
    resolved = TASK.resolve_config(distill_config(corpus, bioes, tmp_path / "run"))  # by default: converted
    assert resolved.data.scheme == "BIO" and resolved.data.convert_to == "BIOES"
    # CoNLL-2003's IOB1 files and a Hugging Face teacher of B-/I- labels (BIO, as Hugging Face's datasets write
    # them): converted to BIO, whose entities begin with the B- that IOB1 forbids after O
    iob1 = tmp_path / "iob1.conll"
    iob1.write_text("John\tI-PER\nSmith\tI-PER\nsaid\tO\n\nParis\tI-LOC\n", encoding="utf-8")
    resolved = TASK.resolve_config(distill_config(str(iob1), str(tmp_path / "bioes"), tmp_path / "x"))
    assert resolved.data.scheme == "IOB1" and resolved.data.convert_to == "BIOES"
    bio_teacher = write_token_classifier(tmp_path / "bio", labels=["O", "B-PER", "I-PER", "B-LOC", "I-LOC"])
    resolved = TASK.resolve_config(distill_config(str(iob1), bio_teacher, tmp_path / "y"))
    assert resolved.data.scheme == "IOB1" and resolved.data.convert_to == "BIO"


def test_a_teacher_whose_predictions_are_iob1_is_named_for_a_bio_student(corpus, hf_dir, tmp_path, caplog,
                                                                          monkeypatch):
    from structkd.models.hf_teacher import HFTokenClassifier

    def iob1(self, dist):  # every sentence's first word an entity begun by I-, as a teacher of IOB1 files writes
        return [["I-PER"] + ["O"] * (n - 1) for n in dist.lens.tolist()]

    caplog.set_level("WARNING", logger="structkd.ner")
    distill_command(distill_config(corpus, hf_dir, tmp_path / "bio"))
    assert "writes" not in caplog.text  # the random teacher's own tags: no IOB1 entity start
    monkeypatch.setattr(HFTokenClassifier, "decode", iob1)
    distill_command(distill_config(corpus, hf_dir, tmp_path / "iob1"))
    assert (f"the teacher {hf_dir} writes IOB1 tags on the first 10 training sentences (its 10 entities begin with "
            f"I- (B- only between adjacent entities of one type)), but the student learns BIO tags: if the teacher "
            f"was trained on IOB1 tags, set data.convert_to=IOB1") in caplog.text


def test_cached_outputs_under_the_three_rules_match_the_direct_loss(corpus, hf_dir):
    teacher = NerModel.load(hf_dir)
    sentences = read_columns(corpus)[:4]
    allowed, start, end = allowed_transitions(LABELS, "BIO")
    torch.manual_seed(1)
    lens = torch.tensor([len(s) for s in sentences])
    student = LinearChainCRF(torch.randn(4, int(lens.max()), len(LABELS)), torch.randn(len(LABELS), len(LABELS)),
                             lens, None, None, allowed, start, end)
    for rule in ("renormalize", "ignore"):
        kd = KdConfig(teacher=hf_dir, impossible=rule)
        rows = compute_teacher_outputs(teacher, sentences, kd, "crf", LABELS, "BIO")
        n = int(lens.max())
        cached = {"unary": torch.zeros(4, n, len(LABELS)), "edges": torch.zeros(4, n - 1, len(LABELS), len(LABELS))}
        for b, row in enumerate(rows):
            cached["unary"][b, :len(row["unary"])] = row["unary"]
            cached["edges"][b, :len(row["edges"])] = row["edges"]
        with torch.no_grad():
            direct = structural_kd_loss(teacher(sentences), student, impossible=rule)
        torch.testing.assert_close(kd_loss(kd, student, cached), direct, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="forbids"):
        kd_loss(KdConfig(impossible="error"), student, cached)


# ------------------------------------------------------------------------------------------- brute force
TAGS = ["O", "B-A", "I-A", "B-B", "I-B"]


def brute_chain(teacher_score, student, length):
    """Per-sequence teacher probabilities, the student's allowed sequences and log-probabilities."""
    allowed, start, end = (m.tolist() for m in allowed_transitions(TAGS, "BIO"))
    sequences = list(tag_sequences(length, len(TAGS)))
    weights = [math.exp(teacher_score(y)) for y in sequences]
    z = sum(weights)
    probs = {y: w / z for y, w in zip(sequences, weights)}
    valid = [y for y in sequences if start[y[0]] and end[y[-1]] and all(allowed[a][b] for a, b in zip(y, y[1:]))]
    unary, edges = (p[0].double() for p in student.potentials)
    score = {y: float(sum(unary[i, t] for i, t in enumerate(y)) + sum(edges[i, a, b] for i, (a, b)
                                                                       in enumerate(zip(y, y[1:])))) for y in valid}
    log_z = math.log(sum(math.exp(s) for s in score.values()))
    return probs, valid, score, log_z


def crf_student(length, seed):
    torch.manual_seed(seed)
    allowed, start, end = allowed_transitions(TAGS, "BIO")
    return LinearChainCRF(torch.randn(1, length, len(TAGS), dtype=torch.float64),
                          torch.randn(len(TAGS), len(TAGS), dtype=torch.float64), None, None, None, allowed, start, end)


def teachers(length, seed):
    torch.manual_seed(seed)
    logits = 2 * torch.randn(1, length, len(TAGS), dtype=torch.float64)
    maxent = MaxEnt(logits)
    log_probs = logits[0].log_softmax(-1)
    trans = torch.randn(len(TAGS), len(TAGS), dtype=torch.float64)
    crf = LinearChainCRF(logits, trans)  # unconstrained
    return [(maxent, lambda y: float(sum(log_probs[i, t] for i, t in enumerate(y)))),
            (crf, lambda y: float(sum(logits[0, i, t] for i, t in enumerate(y))
                                  + sum(trans[a, b] for a, b in zip(y, y[1:]))))]


@pytest.mark.parametrize("length,seed", [(1, 0), (3, 1), (4, 2)])
def test_three_rules_against_brute_force(length, seed):
    student = crf_student(length, seed)
    for teacher, score in teachers(length, seed):
        probs, valid, s_score, log_z = brute_chain(score, student, length)
        kept = sum(probs[y] for y in valid)
        # renormalize: the cross-entropy to the teacher restricted to the student's sequences, and the lost mass
        expected = -sum(probs[y] / kept * (s_score[y] - log_z) for y in valid)
        loss = structural_kd_loss(teacher, student, impossible="renormalize")
        assert abs(float(loss[0]) - expected) < 1e-9
        assert abs(float(restriction_lost_mass(teacher, student)[0]) - (1 - kept)) < 1e-12
        restricted = restrict_chain(teacher, student)
        unary = torch.zeros(length, len(TAGS), dtype=torch.float64)
        for y in valid:
            for i, t in enumerate(y):
                unary[i, t] += probs[y] / kept
        torch.testing.assert_close(restricted.marginals[0], unary, rtol=0, atol=1e-12)
        # the same from the teacher's marginals (what the cache holds)
        marginals = project(teacher, LinearChainCRF(torch.zeros_like(student.potentials[0])))
        again, lost = restricted_chain_marginals(marginals, student)
        torch.testing.assert_close(again[0][0], unary, rtol=0, atol=1e-12)
        assert abs(float(lost[0]) - (1 - kept)) < 1e-12
        assert abs(float(structural_kd_loss_from_marginals(marginals, student, "renormalize")[0]) - expected) < 1e-9
        # ignore: the unrestricted marginals with the forbidden parts' mass dropped, E over the student's parts
        u_s, e_s = (p[0] for p in student.potentials)
        dropped = 0.0
        for y, p in probs.items():
            dropped += p * sum(float(u_s[i, t]) for i, t in enumerate(y) if float(u_s[i, t]) > -1e6)
            dropped += p * sum(float(e_s[i, a, b]) for i, (a, b) in enumerate(zip(y, y[1:]))
                               if float(e_s[i, a, b]) > -1e6)
        if 1 - kept > 1e-6:
            ignored = structural_kd_loss(teacher, student, impossible="ignore")
            assert abs(float(ignored[0]) - (log_z - dropped)) < 1e-9
            with pytest.raises(ValueError, match=f"mass {1 - kept:.3g}|forbids"):
                structural_kd_loss(teacher, student, impossible="error")


def test_a_span_teacher_puts_no_mass_on_forbidden_tags():
    torch.manual_seed(0)
    span_labels = ["O", "A", "B"]
    teacher = SemiMarkovCRF(torch.randn(2, 4, 4, 3, dtype=torch.float64), torch.tensor([4, 3]), max_width=3)
    allowed, start, end = allowed_transitions(TAGS, "BIO")
    student = LinearChainCRF(torch.randn(2, 4, len(TAGS), dtype=torch.float64), torch.zeros(5, 5, dtype=torch.float64),
                             torch.tensor([4, 3]), None, None, allowed, start, end)
    options = {"span_labels": span_labels, "tags": TAGS, "scheme": "BIO"}
    strict = structural_kd_loss(teacher, student, impossible="error", **options)  # no mass on forbidden parts
    torch.testing.assert_close(structural_kd_loss(teacher, student, impossible="renormalize", **options), strict)
    assert float(restriction_lost_mass(teacher, student).abs().max()) == 0.0


# ------------------------------------------------------------------------------------------- round trips
ENCODERS = {
    "token classifier base (no pooler)": lambda c: transformers.BertForTokenClassification(c).bert,
    "BertModel (pooler)": transformers.BertModel,
    "T5 encoder": lambda c: transformers.T5EncoderModel(transformers.T5Config(
        vocab_size=len(VOCAB), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=2)),
}


@pytest.mark.parametrize("name", list(ENCODERS))
def test_taggers_on_any_encoder_save_and_reload_offline(tmp_path, name):
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=16)
    encoder = SubwordEncoder(ENCODERS[name](config), tokenizer=tokenizer(), max_length=16)
    tagger = TransformerTagger(encoder, ["O", "B-PER", "I-PER"], "crf", "BIO").eval()
    save_pretrained(tagger, tmp_path / "model")
    document = json.loads((tmp_path / "model" / "config.json").read_text())
    assert document["encoder_model"]["class"] == type(encoder.model).__name__
    loaded = load_pretrained(tmp_path / "model")
    assert type(loaded.encoder.model) is type(encoder.model)
    words = [["john", "unbelievable", "in", "paris"]]
    with torch.no_grad():
        torch.testing.assert_close(loaded(words).log_partition, tagger(words).log_partition, rtol=0, atol=0)
    assert sorted(loaded.state_dict()) == sorted(tagger.state_dict())


def test_hf_teacher_saves_in_its_own_format(hf_dir, tmp_path):
    teacher = NerModel.load(hf_dir)
    teacher.save(tmp_path / "copy")
    again = NerModel.load(tmp_path / "copy")
    words = [Sentence(["john", "lives", "in", "paris"])]
    with torch.no_grad():
        torch.testing.assert_close(again(words).potentials[0], teacher(words).potentials[0], rtol=0, atol=0)
    assert list(itertools.chain(again.tags)) == LABELS


def test_structkd_load_tags_raw_text_with_the_classifier_as_it_is(hf_dir):
    """structkd.load takes a Hugging Face token classifier directory (issue #21 item 1 with #20)."""
    import structkd

    tagger = structkd.load(hf_dir, tokenizer="whitespace")
    doc = tagger("John lives in Paris")
    assert [t.text for t in doc.tokens] == ["John", "lives", "in", "Paris"]
    assert set(doc.tags) <= set(LABELS) and all(0.0 <= e.score <= 1.0 for e in doc.entities)
    assert doc.tags == tagger.model.decode(tagger.model([Sentence(["John", "lives", "in", "Paris"])]))[0]
