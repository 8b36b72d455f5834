"""BiLSTM taggers: a padded batch predicts what each sentence predicts alone; vocabularies round-trip."""

import pytest
import torch

from structkd.data import Sentence
from structkd.models.taggers import BiLSTMTagger, CharCNN
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


def test_char_cnn_computes_each_distinct_word_once_with_the_same_result():
    from structkd.models.taggers import CharCNN

    torch.manual_seed(0)
    cnn = CharCNN(n_chars=12, char_dim=5, n_filters=4).double()
    chars = torch.randint(1, 12, (3, 6, 5))
    chars[:, :, 3:] = 0            # words of three characters
    chars[0, 1] = chars[2, 4]      # repeated words
    chars[1, 2, 1:] = 0            # a one-character word
    chars[2, 5:] = 0               # padding words
    seen = []
    hook = cnn.conv.register_forward_hook(lambda module, args, output: seen.append(args[0].shape[0]))
    out = cnn(chars)
    hook.remove()
    assert seen == [len(torch.unique(chars.view(-1, 5), dim=0))] and seen[0] < 18

    def reference(c):  # every row on its own, as the unbatched definition
        rows = []
        for word in c.view(-1, c.shape[-1]):
            real = word[word > 0]
            if real.numel() == 0:
                rows.append(torch.zeros(4, dtype=torch.float64))
                continue
            conv = cnn.conv(cnn.embed(word).t().unsqueeze(0))[0]      # [filters, W]
            rows.append(conv[:, word > 0].max(-1).values)
        return torch.stack(rows).view(*c.shape[:2], -1)

    expected = reference(chars)
    torch.testing.assert_close(out, expected)
    assert torch.equal(out[2, 5], torch.zeros(4, dtype=torch.float64))
    weights = torch.randn_like(out)
    grads = torch.autograd.grad((out * weights).sum(), [cnn.embed.weight, cnn.conv.weight])
    expected_grads = torch.autograd.grad((expected * weights).sum(), [cnn.embed.weight, cnn.conv.weight])
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want)


def test_char_cnn_gradients_do_not_depend_on_thread_timing():
    """Repeated words share one CharCNN row; their gradients are summed in a fixed order, so that two runs with
    one seed train the same model on several CPU threads (with ``pooled[index]`` every run below differed)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(0)
        cnn = CharCNN(60, 30, 50)
        words = torch.randint(1, 60, (150, 10))                    # 150 distinct words of 10 characters
        chars = words[torch.randint(0, 150, (64, 30))]             # [64, 30, 10]: most words repeat
        upstream = torch.randn(64, 30, 50)

        def grads():
            cnn.zero_grad()
            (cnn(chars) * upstream).sum().backward()
            return [p.grad.clone() for p in cnn.parameters()]

        first = grads()
        for _ in range(10):
            assert all(torch.equal(a, b) for a, b in zip(grads(), first))
    finally:
        torch.set_num_threads(threads)
