"""Saving and loading models: safetensors + JSON round trips for every model kind, and clear loading errors."""

import json
import os
import shutil

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from tiny_models import write_tiny_bert  # noqa: E402
from torch import nn  # noqa: E402

from structkd.data import Sentence  # noqa: E402
from structkd.models import (  # noqa: E402
    BiLSTMTagger,
    TaggerVocab,
    TransformerTagger,
    load_pretrained,
    load_vocab,
    register_model,
    save_pretrained,
    student_from_teacher,
)
from structkd.models.serialization import MODEL_REGISTRY  # noqa: E402

SENTENCES = [
    Sentence(["John", "Smith", "lives", "in", "New", "York"], ["B-PER", "I-PER", "O", "O", "B-LOC", "I-LOC"]),
    Sentence(["Hi"], ["O"]),
    Sentence(["Paris", "is", "unbelievable"], ["B-LOC", "O", "O"]),
]
WORDS = [s.tokens for s in SENTENCES]
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_bert(tmp_path_factory.mktemp("tiny_bert"), layers=4)


def assert_same_distributions(a, b):
    assert type(a) is type(b)
    torch.testing.assert_close(a.log_partition, b.log_partition, atol=1e-6, rtol=0)
    torch.testing.assert_close(a.marginals, b.marginals, atol=1e-6, rtol=0)
    assert torch.equal(a.argmax, b.argmax)


def bilstm(vocab, head):
    torch.manual_seed(0)
    return BiLSTMTagger(len(vocab.words), len(vocab.chars), vocab.tags.items, head, "BIO", word_dim=8, hidden=8,
                        char_filters=4)


def assert_no_pickles(directory):
    for path in directory.rglob("*"):
        assert path.suffix not in (".bin", ".pt", ".pth", ".pkl", ".pickle"), path


@pytest.mark.parametrize("head", ["crf", "maxent"])
def test_bilstm_round_trip(tmp_path, head):
    vocab = TaggerVocab.build(SENTENCES)
    model = bilstm(vocab, head).eval()
    save_pretrained(model, tmp_path / "model", vocab=vocab)
    assert_no_pickles(tmp_path / "model")
    loaded = load_pretrained(tmp_path / "model")
    assert not loaded.training and loaded.config == model.config
    assert loaded.vocab.to_json() == vocab.to_json() == load_vocab(tmp_path / "model").to_json()
    with torch.no_grad():
        assert_same_distributions(model(**vocab.encode(SENTENCES)), loaded(**loaded.vocab.encode(SENTENCES)))


@pytest.mark.parametrize("head", ["crf", "maxent", "span"])
def test_transformer_round_trip_is_offline_and_exact(tmp_path, head):
    source = write_tiny_bert(tmp_path / "bert", layers=2)
    torch.manual_seed(1)
    model = TransformerTagger(source, ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"], head, "BIO", pooling="mean",
                              max_width=4).eval()
    save_pretrained(model, tmp_path / "model")
    shutil.rmtree(source)  # the saved model carries its encoder config and tokenizer
    assert_no_pickles(tmp_path / "model")
    loaded = load_pretrained(tmp_path / "model")
    assert loaded.config["encoder"]["pooling"] == "mean" and loaded.head.__class__ is model.head.__class__
    with torch.no_grad():
        assert_same_distributions(model(WORDS), loaded(WORDS))
    assert loaded.decode(loaded(WORDS)) == model.decode(model(WORDS))


def test_shrunk_student_round_trip(tmp_path, tiny):
    teacher = TransformerTagger(tiny, ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"], "crf", "BIO")
    student = student_from_teacher(teacher, keep_every=2, head="maxent").eval()
    save_pretrained(student, tmp_path / "student")
    loaded = load_pretrained(tmp_path / "student")
    assert loaded.encoder.num_layers == 2 and loaded.head_kind == "maxent"
    with torch.no_grad():
        assert_same_distributions(student(WORDS), loaded(WORDS))


class Scorer(nn.Module):
    """A tiny registered model with shared (tied) weights."""

    def __init__(self, dim):
        super().__init__()
        self.config = {"dim": dim}
        self.a = nn.Linear(dim, dim)
        self.b = nn.Linear(dim, dim)
        self.b.weight = self.a.weight


def test_registered_model_with_shared_tensors(tmp_path):
    register_model(Scorer)
    try:
        model = Scorer(4)
        save_pretrained(model, tmp_path / "m")
        loaded = load_pretrained(tmp_path / "m")
        assert torch.equal(loaded.a.weight, model.a.weight) and loaded.b.weight is loaded.a.weight
    finally:
        MODEL_REGISTRY.pop("Scorer")


# ------------------------------------------------------------------------------------------- errors
@pytest.fixture
def saved(tmp_path):
    vocab = TaggerVocab.build(SENTENCES)
    return save_pretrained(bilstm(vocab, "crf"), tmp_path / "model", vocab=vocab)


def edit_json(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_missing_files_are_named(saved, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such model directory"):
        load_pretrained(tmp_path / "nowhere")
    (saved / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_pretrained(saved)
    (saved / "vocab.json").unlink()
    with pytest.raises(FileNotFoundError, match="vocab.json"):
        load_pretrained(saved)
    (saved / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_pretrained(saved)


def test_bad_config_unknown_class_and_label_mismatch(saved):
    config = saved / "config.json"
    good = config.read_text()
    config.write_text("{not json")
    with pytest.raises(ValueError, match="config.json.*not valid JSON"):
        load_pretrained(saved)
    config.write_text(good)
    edit_json(config, lambda d: d.update({"class": "Pickled"}))
    with pytest.raises(ValueError, match="config.json.*unknown model class 'Pickled'.*BiLSTMTagger"):
        load_pretrained(saved)
    config.write_text(good)
    with pytest.raises(ValueError, match="config.json.*label set"):
        load_pretrained(saved, tags=["O", "B-ORG", "I-ORG"])
    edit_json(saved / "vocab.json", lambda d: d.update({"tags": ["O", "B-ORG", "I-ORG"]}))
    with pytest.raises(ValueError, match="vocab.json.*label set"):
        load_pretrained(saved)
    edit_json(saved / "vocab.json", lambda d: d.update({"tags": json.loads(good)["args"]["tags"]}))
    edit_json(saved / "vocab.json", lambda d: d.update({"words": d["words"][:-1]}))
    with pytest.raises(ValueError, match="vocab.json.*n_words"):
        load_pretrained(saved)


def test_weights_that_do_not_match_the_config_are_named(saved):
    edit_json(saved / "config.json", lambda d: d["args"].update({"tags": d["args"]["tags"] + ["B-ORG", "I-ORG"]}))
    edit_json(saved / "vocab.json", lambda d: d.update({"tags": d["tags"] + ["B-ORG", "I-ORG"]}))
    with pytest.raises(ValueError, match="model.safetensors.*head.emissions.*label set"):
        load_pretrained(saved)


def test_unbuildable_and_unregistered_models(saved, tmp_path):
    edit_json(saved / "config.json", lambda d: d["args"].update({"layers_of_cake": 3}))
    with pytest.raises(ValueError, match="config.json.*cannot build BiLSTMTagger"):
        load_pretrained(saved)
    with pytest.raises(TypeError, match="not a registered model class"):
        save_pretrained(nn.Linear(2, 2), tmp_path / "linear", config={})
    vocab = TaggerVocab.build(SENTENCES + [Sentence(["IBM"], ["B-ORG"])])
    with pytest.raises(ValueError, match="tags"):
        save_pretrained(bilstm(TaggerVocab.build(SENTENCES), "crf"), tmp_path / "x", vocab=vocab)


def test_transformer_without_encoder_files(tmp_path, tiny):
    model = TransformerTagger(tiny, ["O", "B-PER", "I-PER"], "maxent")
    save_pretrained(model, tmp_path / "model")
    shutil.rmtree(tmp_path / "model" / "encoder")
    with pytest.raises(FileNotFoundError, match="encoder"):
        load_pretrained(tmp_path / "model")


def test_json_files_of_a_saved_model_are_named_when_missing_or_damaged(tmp_path):
    """structkd.runtime.files.read_json_in: the one reader of saved models' JSON files (torch-free)."""
    from structkd.runtime.files import read_json_in

    with pytest.raises(FileNotFoundError, match="no such exported model directory"):
        read_json_in(tmp_path / "nowhere", "runtime.json", "structkd export", "exported model")
    with pytest.raises(FileNotFoundError, match="config.json: missing; not a directory written by save_pretrained"):
        read_json_in(tmp_path, "config.json", "save_pretrained")
    (tmp_path / "config.json").write_bytes(b"\xff{")
    with pytest.raises(ValueError, match="config.json: not valid JSON"):
        read_json_in(tmp_path, "config.json", "save_pretrained")
    (tmp_path / "config.json").write_text('{"a": [1]}', encoding="utf-8")
    assert read_json_in(tmp_path, "config.json", "save_pretrained") == {"a": [1]}
