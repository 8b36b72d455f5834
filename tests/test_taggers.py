"""BiLSTM taggers: a padded batch predicts what each sentence predicts alone; vocabularies round-trip."""

import pytest
import torch

from structkd.data import Sentence
from structkd.models.taggers import BiLSTMTagger
from structkd.models.vocab import TaggerVocab
from structkd.schemes import first_invalid

SENTENCES = [
    Sentence(["John", "Smith", "lives", "in", "New", "York"], ["B-PER", "I-PER", "O", "O", "B-LOC", "I-LOC"]),
    Sentence(["Hi"], ["O"]),
    Sentence(["Paris", "is", "nice"], ["B-LOC", "O", "O"]),
]


@pytest.mark.parametrize("head", ["crf", "maxent"])
def test_padded_batch_predicts_like_single_sentences(head):
    vocab = TaggerVocab.build(SENTENCES)
    torch.manual_seed(0)
    model = BiLSTMTagger(len(vocab.words), len(vocab.chars), vocab.tags.items, head, "BIO", word_dim=8, hidden=8,
                         char_filters=4).eval()
    with torch.no_grad():
        batch = model(**vocab.encode(SENTENCES))
        for b, sentence in enumerate(SENTENCES):
            alone = model(**vocab.encode([sentence]))
            n = len(sentence)
            torch.testing.assert_close(batch.log_partition[b:b + 1], alone.log_partition, atol=1e-5, rtol=1e-5)
            assert batch.argmax[b, :n].tolist() == alone.argmax[0].tolist()
            torch.testing.assert_close(batch.marginals[b:b + 1, :n], alone.marginals, atol=1e-5, rtol=1e-5)


def test_crf_constraints_and_gold_loss():
    vocab = TaggerVocab.build(SENTENCES)
    model = BiLSTMTagger(len(vocab.words), len(vocab.chars), vocab.tags.items, "crf", "BIO", word_dim=8, hidden=8,
                         char_filters=4)
    inputs = vocab.encode(SENTENCES)
    dist = model(**inputs)
    loss = model.gold_loss(dist, inputs["tags"])
    assert loss.shape == (3,) and torch.isfinite(loss).all() and (loss > 0).all()
    loss.sum().backward()
    with torch.no_grad():
        model.head.transitions.normal_(0, 5)
        for row, s in zip(model(**inputs).argmax.tolist(), SENTENCES):
            tags = [vocab.tags.items[t] for t in row[:len(s)]]
            assert first_invalid(tags, "BIO") is None


def test_vocab_round_trip(tmp_path):
    vocab = TaggerVocab.build(SENTENCES)
    path = tmp_path / "vocab.json"
    vocab.save(path)
    loaded = TaggerVocab.load(path)
    assert loaded.to_json() == vocab.to_json()
    assert loaded.words["zzz-unknown"] == 1
    with pytest.raises(KeyError, match="label vocabulary"):
        loaded.tags["B-ORG"]
