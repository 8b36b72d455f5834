"""``model.init_from_teacher`` in the taggers (NER, UPOS): the shared code of :mod:`structkd.models.embeddings`
(the parsers' is tested in test_parse_pipeline)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from test_ner_pipeline import ROWS, write_corpus  # noqa: E402
from tiny_models import write_tiny_bert  # noqa: E402

from structkd.data import Sentence  # noqa: E402
from structkd.models.transformer import TransformerTagger  # noqa: E402
from structkd.ner import NerModel, build_ner_config, distill_command  # noqa: E402
from structkd.ner.config import ModelConfig  # noqa: E402
from structkd.ner.modeling import build_model  # noqa: E402

TAGS = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """An (untrained) tiny transformer CRF tagger, saved."""
    root = tmp_path_factory.mktemp("embeddings")
    model = NerModel(TransformerTagger(write_tiny_bert(root / "bert", layers=1, max_positions=32), TAGS, "crf",
                                       "BIO"))
    model.save(root / "teacher")
    return str(root / "teacher")


def test_tagger_word_embeddings_are_the_teacher_mean_subword_embeddings(teacher):
    model = NerModel.load(teacher)
    encoder = model.tagger.encoder
    table = encoder.input_embeddings.detach()
    sentences = [Sentence("John lives in unbelievable Paris".split())]
    student = build_model(ModelConfig(word_dim=8, hidden=8, char_filters=4, init_from_teacher=True), TAGS, "BIO",
                          sentences, teacher=model)
    words = student.vocab.words.items
    weights = student.tagger.encoder.words.weight
    assert weights.shape == (len(words), encoder.hidden_size) == (7, 32)  # padding, unknown and 5 words
    for n, word in enumerate(words):
        ids = encoder.tokenizer(word, add_special_tokens=False)["input_ids"]
        torch.testing.assert_close(weights[n], table[ids].mean(0), rtol=0, atol=1e-6)
    # without the option: random embeddings of model.word_dim
    plain = build_model(ModelConfig(word_dim=8, hidden=8, char_filters=4, init_from_teacher=False), TAGS, "BIO",
                        sentences, teacher=model)
    assert plain.tagger.encoder.words.weight.shape == (7, 8)


def test_auto_starts_a_bilstm_student_from_a_transformer_teacher_only(teacher):
    """The default, ``auto``: the teacher's embeddings for a BiLSTM student of a transformer teacher; random
    ones of ``model.word_dim`` without a teacher or from a BiLSTM teacher; frozen ones need a transformer
    teacher."""
    sentences = [Sentence("John lives in Paris".split(), ["B-PER", "O", "O", "B-LOC"])]
    auto = ModelConfig(word_dim=8, hidden=8, char_filters=4)
    assert auto.init_from_teacher == "auto"
    model = NerModel.load(teacher)
    from_teacher = build_model(auto, TAGS, "BIO", sentences, teacher=model)
    torch.testing.assert_close(from_teacher.tagger.encoder.words.weight,
                               model.tagger.encoder.embed_words(from_teacher.vocab.words.items), rtol=0, atol=0)
    bilstm_teacher = build_model(auto, TAGS, "BIO", sentences)
    assert bilstm_teacher.tagger.encoder.words.weight.shape == (6, 8)
    assert build_model(auto, TAGS, "BIO", sentences, teacher=bilstm_teacher).tagger.encoder.words.weight.shape[1] == 8
    frozen = ModelConfig(word_dim=8, hidden=8, char_filters=4, freeze_embeddings=True)
    assert not build_model(frozen, TAGS, "BIO", sentences, teacher=model).tagger.encoder.words.weight.requires_grad
    with pytest.raises(ValueError, match="freeze_embeddings .* this run has none"):
        build_model(frozen, TAGS, "BIO", sentences)


@pytest.mark.parametrize("value,expected", [("auto", "auto"), ("true", True), (True, True), ("off", False),
                                            (False, False)])
def test_init_from_teacher_reads_true_false_or_auto(value, expected):
    assert build_ner_config({"model": {"init_from_teacher": value}}).model.init_from_teacher == expected
    assert build_ner_config(None, [f"model.init_from_teacher={value}"]).model.init_from_teacher == expected


def test_an_unknown_init_from_teacher_mode_is_named():
    with pytest.raises(ValueError, match="model.init_from_teacher must be true, false or auto, got 'maybe'"):
        build_ner_config({"model": {"init_from_teacher": "maybe"}})


def test_the_option_is_refused_without_a_transformer_teacher(teacher, tmp_path):
    sentences = [Sentence(["John"], ["B-PER"])]
    bilstm_teacher = build_model(ModelConfig(word_dim=8, hidden=8, char_filters=4), TAGS, "BIO", sentences)
    init = ModelConfig(word_dim=8, hidden=8, char_filters=4, init_from_teacher=True)
    with pytest.raises(ValueError, match="input embeddings .* the teacher is a BiLSTMTagger"):
        build_model(init, TAGS, "BIO", sentences, teacher=bilstm_teacher)
    with pytest.raises(ValueError, match="input embeddings .* the run has no teacher"):
        build_model(init, TAGS, "BIO", sentences)
    with pytest.raises(ValueError, match="model.init_from_teacher .* needs model.kind=bilstm, got 'transformer'"):
        build_ner_config({"model": {"kind": "transformer", "init_from_teacher": True}})


def test_a_distilled_tagger_embeds_unseen_words_and_reloads(teacher, tmp_path):
    """With the teacher's embeddings, the open vocabulary (default) leaves the test words out of the vocabulary
    and embeds them through the saved lexicon; ``open_vocabulary=false`` puts them in the vocabulary; without
    the teacher's embeddings neither."""
    train = write_corpus(tmp_path / "train.conll", ROWS, 1)
    test = write_corpus(tmp_path / "test.conll", [("zorba lives in Paris", "B-PER O O B-LOC")], 1)
    for init, open_vocabulary in ((True, True), (True, False), (False, True)):
        out = tmp_path / f"{init}-{open_vocabulary}"
        model = {"kind": "bilstm", "hidden": 8, "char_filters": 4, "init_from_teacher": init,
                 "open_vocabulary": open_vocabulary}
        config = build_ner_config({"data": {"train": train, "test": test}, "model": model,
                                   "kd": {"method": "structural", "teacher": teacher},
                                   "training": {"epochs": 1, "batch_size": 4, "output_dir": str(out),
                                                "progress": False}})
        distill_command(config)
        saved = NerModel.load(out / "model")
        assert ("zorba" in saved.vocab.words.items) == (init and not open_vocabulary)
        assert (saved.vocab.lexicon is not None) == (init and open_vocabulary)
        assert (out / "model" / "lexicon" / "table.safetensors").is_file() == (init and open_vocabulary)
        assert saved.tagger.encoder.words.weight.shape[1] == (32 if init else 100)


def test_frozen_teacher_embeddings_stay_as_copied_through_distillation(teacher, tmp_path):
    """``model.freeze_embeddings``: the word embeddings after a distillation run are still the teacher's, while
    the rest of the student trains; refused without ``init_from_teacher``."""
    train = write_corpus(tmp_path / "train.conll", ROWS, 1)
    runs = {}
    for freeze in (True, False):
        model = {"kind": "bilstm", "hidden": 8, "char_filters": 4, "init_from_teacher": True,
                 "freeze_embeddings": freeze}
        config = build_ner_config({"data": {"train": train}, "model": model,
                                   "kd": {"method": "structural", "teacher": teacher},
                                   "training": {"epochs": 2, "batch_size": 4, "lr": 1e-2,
                                                "output_dir": str(tmp_path / str(freeze)), "progress": False}})
        distill_command(config)
        runs[freeze] = NerModel.load(tmp_path / str(freeze) / "model")
    encoder = NerModel.load(teacher).tagger.encoder
    start = encoder.embed_words(runs[True].vocab.words.items)
    torch.testing.assert_close(runs[True].tagger.encoder.words.weight, start, rtol=0, atol=0)
    assert not torch.allclose(runs[False].tagger.encoder.words.weight, start)
    built = build_model(ModelConfig(hidden=8, char_filters=4, init_from_teacher=True, freeze_embeddings=True),
                        TAGS, "BIO", [Sentence(s.split()) for s, _ in ROWS], teacher=NerModel.load(teacher))
    trainable = {name for name, p in built.tagger.named_parameters() if p.requires_grad}
    assert "encoder.words.weight" not in trainable and any("lstm" in name for name in trainable)
    with pytest.raises(ValueError, match="model.freeze_embeddings .* needs model.init_from_teacher=true"):
        build_ner_config({"model": {"freeze_embeddings": True, "init_from_teacher": False}})
