"""``model.open_vocabulary``: a BiLSTM student of a transformer teacher embeds the words outside its vocabulary
through the teacher's subword table (:mod:`structkd.runtime.lexicon`), in torch and in the exported runtime.

The distillation runs with it (NER, parsing) are in test_teacher_embeddings and test_parse_pipeline."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from test_export import SMALL, _check_parser, randomize, same_results  # noqa: E402
from test_parse_pipeline import write_treebank  # noqa: E402
from tiny_models import write_tiny_bert  # noqa: E402

import structkd  # noqa: E402
from structkd import runtime  # noqa: E402
from structkd.data import Sentence, read_conllu  # noqa: E402
from structkd.export import export_model  # noqa: E402
from structkd.models.embeddings import load_teacher_embeddings  # noqa: E402
from structkd.models.parsers import BiaffineParser, build_rels, build_vocab  # noqa: E402
from structkd.models.taggers import BiLSTMTagger  # noqa: E402
from structkd.models.transformer import SubwordEncoder  # noqa: E402
from structkd.models.vocab import TaggerVocab, Vocabulary  # noqa: E402
from structkd.ner.modeling import NerModel  # noqa: E402
from structkd.parse.modeling import ParseModel  # noqa: E402
from structkd.runtime.inputs import WordVocab  # noqa: E402
from structkd.runtime.lexicon import SubwordLexicon, load_lexicon  # noqa: E402
from structkd.train.config import changed_settings  # noqa: E402

TAGS = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
TRAIN = [("John lives in New York", "B-PER O O B-LOC I-LOC"), ("Paris is nice", "B-LOC O O"),
         ("Hi Smith", "O B-PER")]
# words the training sentences lack (several subwords, repeated, cased, a word the tokenizer gives no piece)
UNSEEN = [["Zorba", "lives", "in", "Kathmandu", "."], ["Hi"], ["zorba", "unbelievable", "\u200b", "Paris", "ZORBA"],
          ["Smith", "met", "Zorba"]]


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    return SubwordEncoder(write_tiny_bert(tmp_path_factory.mktemp("lexicon") / "bert", layers=1, max_positions=32))


def student(encoder: SubwordEncoder, seed: int = 0) -> NerModel:
    """A BiLSTM-CRF of the training words, with the teacher's embeddings and lexicon, random elsewhere."""
    torch.manual_seed(seed)
    vocab = TaggerVocab.build([Sentence(s.split(), t.split()) for s, t in TRAIN])
    vocab = TaggerVocab(vocab.words, vocab.chars, Vocabulary(TAGS, special=False), SubwordLexicon.from_encoder(encoder))
    tagger = BiLSTMTagger(len(vocab.words), len(vocab.chars), TAGS, "crf", "BIO", word_dim=encoder.hidden_size,
                          hidden=6, char_filters=5)
    load_teacher_embeddings(tagger.encoder, encoder, vocab.words.items)
    with torch.no_grad():
        for name, p in tagger.named_parameters():
            if not name.startswith("encoder.words"):
                p.copy_(torch.randn(p.shape) * 0.5)
        tagger.encoder.chars.embed.weight[0] = 0.0  # the padding character, as training keeps it
    return NerModel(tagger, vocab).eval()


def emissions(model: NerModel, sentences) -> torch.Tensor:
    batch = model.vocab.encode([Sentence(s) for s in sentences])
    with torch.no_grad():
        tagger = model.tagger
        return tagger.head.emissions(tagger.encoder(batch["words"], batch["chars"], batch["lens"], batch["oov"]))


def test_lexicon_vectors_are_the_teachers_mean_subword_embeddings(encoder, tmp_path):
    lexicon = SubwordLexicon.from_encoder(encoder)
    words = ["john", "unbelievable", "zorba", "kathmandu", "\u200b", "new-york", "paris"]
    expected = encoder.embed_words(words).numpy()
    assert lexicon.width == encoder.hidden_size
    np.testing.assert_allclose(lexicon.vectors(words), expected, rtol=0, atol=1e-6)
    for n, word in enumerate(words):  # a word's vector does not depend on the others of its batch
        np.testing.assert_allclose(lexicon.vectors([word])[0], expected[n], rtol=0, atol=1e-6)
    assert not np.allclose(expected[0], expected[2])
    empty = lexicon.batch_vectors([])
    assert empty.shape == (1, encoder.hidden_size) and not empty.any()
    lexicon.save(tmp_path / "saved" / "lexicon")
    loaded = load_lexicon(tmp_path / "saved")
    assert loaded.unk == lexicon.unk and (loaded.vectors(words) == lexicon.vectors(words)).all()
    assert load_lexicon(tmp_path) is None  # no lexicon/ folder: a closed vocabulary


def test_a_full_word_cache_starts_over_without_losing_the_words_in_use(encoder, monkeypatch):
    import structkd.runtime.lexicon as lexicon_module

    monkeypatch.setattr(lexicon_module, "CACHED_WORDS", 3)
    lexicon = SubwordLexicon.from_encoder(encoder)
    lexicon.vectors(["john", "paris"])
    words = ["john", "zorba", "kathmandu", "paris"]  # two cached, two new: over the limit
    np.testing.assert_allclose(lexicon.vectors(words), encoder.embed_words(words).numpy(), rtol=0, atol=1e-6)


def test_a_damaged_lexicon_is_refused_naming_the_file(encoder, tmp_path):
    SubwordLexicon.from_encoder(encoder).save(tmp_path / "lexicon")
    (tmp_path / "lexicon" / "table.safetensors").write_bytes(b"not a table")
    with pytest.raises(ValueError, match="table.safetensors: not a readable subword table"):
        load_lexicon(tmp_path)
    (tmp_path / "lexicon" / "tokenizer.json").unlink()
    with pytest.raises(ValueError, match="tokenizer.json: missing"):
        load_lexicon(tmp_path)


def test_unseen_words_read_the_lexicon_and_a_padded_batch_equals_each_sentence(encoder):
    model = student(encoder)
    vocab = model.vocab
    batch = vocab.encode([Sentence(s) for s in UNSEEN])
    n_words = len(vocab.words)
    words = batch["words"]
    assert (words[0, 0] == words[2, 0]) and (words[2, 0] == words[2, 4]) and (words[2, 0] == words[3, 2])
    unseen = sorted({w.lower() for s in UNSEEN for w in s if w.lower() not in vocab.words.index})
    assert int(words.max()) == n_words + len(unseen) - 1 and batch["oov"].shape == (len(unseen), encoder.hidden_size)
    vectors = model.tagger.encoder.word_vectors(words, batch["oov"])
    expected = encoder.embed_words(["zorba", "kathmandu"])
    torch.testing.assert_close(vectors[0, 0], expected[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(vectors[0, 3], expected[1], rtol=0, atol=1e-6)
    torch.testing.assert_close(vectors[0, 1], model.tagger.encoder.words.weight[vocab.words["lives"]])
    together = emissions(model, UNSEEN)
    for b, sentence in enumerate(UNSEEN):
        alone = emissions(model, [sentence])[0]
        torch.testing.assert_close(together[b, :len(sentence)], alone, rtol=0, atol=1e-6)
    known = vocab.encode([Sentence(["John", "lives"])])
    assert known["oov"].shape == (1, encoder.hidden_size) and not known["oov"].any()


def test_the_open_vocabulary_equals_the_vocabulary_extended_with_the_teachers_rows(encoder):
    """The open student scores unseen words as a closed student whose vocabulary holds them with the teacher's
    vectors (what ``open_vocabulary=false`` gave an evaluation with frozen embeddings) does."""
    model = student(encoder)
    vocab = model.vocab
    unseen = sorted({w.lower() for s in UNSEEN for w in s if w.lower() not in vocab.words.index})
    closed_vocab = TaggerVocab(Vocabulary(vocab.words.items + unseen), vocab.chars, vocab.tags)
    closed = BiLSTMTagger(len(closed_vocab.words), len(vocab.chars), TAGS, "crf", "BIO",
                          word_dim=encoder.hidden_size, hidden=6, char_filters=5)
    state = dict(model.tagger.state_dict())
    state["encoder.words.weight"] = torch.cat([state["encoder.words.weight"], encoder.embed_words(unseen)])
    closed.load_state_dict(state)
    closed_model = NerModel(closed, closed_vocab).eval()
    with torch.no_grad():
        a, b = model([Sentence(s) for s in UNSEEN]), closed_model([Sentence(s) for s in UNSEEN])
    torch.testing.assert_close(a.potentials[0], b.potentials[0], rtol=0, atol=1e-5)
    assert model.decode(a) == closed_model.decode(b)
    # without the lexicon, the same student reads the unseen words as unknown: other scores
    vocab.lexicon, lexicon = None, vocab.lexicon
    with torch.no_grad():
        assert not torch.allclose(model([Sentence(s) for s in UNSEEN]).potentials[0], a.potentials[0])
    vocab.lexicon = lexicon


def test_a_saved_and_exported_open_student_reads_unseen_words_as_in_torch(encoder, tmp_path):
    model = student(encoder, seed=1)
    model.save(tmp_path / "model")
    loaded = NerModel.load(tmp_path / "model")
    assert loaded.vocab.lexicon is not None
    torch.testing.assert_close(emissions(loaded, UNSEEN), emissions(model, UNSEEN), rtol=0, atol=0)
    tagger = runtime.load(export_model(tmp_path / "model", tmp_path / "onnx"))
    assert (tmp_path / "onnx" / "lexicon" / "table.safetensors").is_file()
    assert isinstance(tagger.inputs, WordVocab) and tagger.inputs.lexicon is not None
    (scores,), lens = tagger.scores(UNSEEN)
    expected = emissions(model, UNSEEN).numpy()
    mask = np.arange(scores.shape[1])[None, :] < lens[:, None]
    assert np.abs(np.where(mask[..., None], scores - expected, 0)).max() < 1e-5
    with torch.no_grad():
        expected_tags = model.decode(model([Sentence(s) for s in UNSEEN]))
    assert [r.tags for r in tagger(UNSEEN)] == expected_tags
    # the torch model loaded for inference reads raw text the same way
    text = "Zorba lives in Kathmandu. Smith met zorba"
    same_results(tagger([text]), structkd.load(tmp_path / "model", tokenizer="punct")([text]))


def test_an_exported_open_parser_parses_unseen_words_as_torch(encoder, tmp_path):
    sentences = read_conllu(write_treebank(tmp_path / "trees.conllu", 1))
    rels = build_rels(sentences)
    vocab = build_vocab(sentences[:4], rels)  # the later sentences have unseen words
    vocab.lexicon = SubwordLexicon.from_encoder(encoder)
    unseen = {w.lower() for s in sentences for w in s.words} - set(vocab.words.items)
    assert len(unseen) >= 3
    parser = BiaffineParser("bilstm", rels, "projective", arc_hidden=7, rel_hidden=5, vocab=vocab,
                            encoder_options={**SMALL, "word_dim": encoder.hidden_size})
    randomize(parser)
    model = ParseModel(parser).eval()
    _check_parser(model, sentences, tmp_path, "parser")
    assert (tmp_path / "parser-onnx" / "lexicon" / "tokenizer.json").is_file()


def test_resuming_a_run_from_before_the_open_vocabulary_is_refused_by_name():
    before = {"model": {"kind": "bilstm", "init_from_teacher": True}, "training": {"epochs": 2}}
    now = {"model": {"kind": "bilstm", "init_from_teacher": True, "open_vocabulary": True}, "training": {"epochs": 2}}
    assert changed_settings(before, now) == ["model.open_vocabulary: False -> True"]
    assert changed_settings(before, {**now, "model": {**now["model"], "open_vocabulary": False}}) == []
    parser = {"kind": "biaffine", "encoder": "bilstm", "init_from_teacher": "auto"}
    assert changed_settings({"model": parser}, {"model": {**parser, "open_vocabulary": True}}) == [
        "model.open_vocabulary: False -> True"]
    # runs the option never changed: random embeddings, a transformer model (a teacher)
    for model in ({"kind": "bilstm", "init_from_teacher": False}, {"kind": "transformer", "encoder": "minilm",
                                                                    "init_from_teacher": "auto"}):
        assert changed_settings({"model": model}, {"model": {**model, "open_vocabulary": True}}) == []
