"""ONNX export and the torch-free runtime: the exported students tag and parse exactly as the torch models do.

Scores agree with the torch model (float32, mixed lengths), the numpy decoders give the torch decoders' structures
on random float64 scores, the numpy marginals equal brute-force enumeration, inputs are built as the torch models
build them, ``structkd.runtime.load(OUT)`` returns what ``structkd.load(MODEL)`` returns (tokens, offsets, tags,
entities, heads, relations; scores to 1e-5) and ``structkd.runtime`` imports no torch.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from brute import tag_sequences, trees  # noqa: E402
from test_parse_pipeline import write_treebank  # noqa: E402
from tiny_models import write_tiny_bert  # noqa: E402

pytest.importorskip("onnxruntime")

import structkd  # noqa: E402
from structkd import runtime  # noqa: E402
from structkd.data import Sentence, read_columns, read_conllu  # noqa: E402
from structkd.export import export_model  # noqa: E402
from structkd.export.graphs import UnpackedBiLSTM  # noqa: E402
from structkd.inference import Document, Parse, entity_probabilities  # noqa: E402
from structkd.models.parsers import BiaffineParser, build_rels, build_vocab, repair_tree  # noqa: E402
from structkd.models.seqlabel_parser import SeqLabelingParser, build_labels  # noqa: E402
from structkd.models.taggers import BiLSTMEncoder, BiLSTMTagger  # noqa: E402
from structkd.models.transformer import SubwordEncoder, TransformerTagger, window_layout  # noqa: E402
from structkd.models.vocab import TaggerVocab  # noqa: E402
from structkd.ner.modeling import NerModel, predict  # noqa: E402
from structkd.parse.modeling import ParseModel  # noqa: E402
from structkd.parse.modeling import predict as parse_predict  # noqa: E402
from structkd.runtime import decoding, inputs, marginals  # noqa: E402
from structkd.runtime.seqlabel import decode_labels  # noqa: E402
from structkd.schemes import allowed_transitions, spans  # noqa: E402
from structkd.structs.chain import LinearChainCRF  # noqa: E402
from structkd.structs.tree import DependencyCRF, MatrixTree  # noqa: E402
from structkd.text import tokenize  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WNUT_DEV = ROOT / "structkd" / "resources" / "wnut17_sample" / "dev.conll"
EWT_DEV = ROOT.parent / "shared" / "data" / "ud-english-ewt" / "en_ewt-ud-dev.conllu"
SMALL = {"word_dim": 8, "hidden": 6, "char_filters": 5}


def randomize(module: torch.nn.Module, seed: int = 0, std: float = 0.5) -> None:
    """Random weights outside a transformer encoder (large enough for varied predictions); embedding padding
    rows stay 0, as training keeps them."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if ".model." not in name and "encoder.transformer" not in name:
                p.copy_(torch.randn(p.shape, generator=generator) * std)
        for m in module.modules():
            if isinstance(m, torch.nn.Embedding) and m.padding_idx is not None:
                m.weight[m.padding_idx] = 0.0


# ------------------------------------------------------------------------------------------- graphs
@pytest.mark.parametrize("layers", [1, 2])
def test_unpacked_bilstm_equals_the_packed_encoder(layers):
    torch.manual_seed(layers)
    encoder = BiLSTMEncoder(30, 20, word_dim=6, char_dim=5, char_filters=4, hidden=5, layers=layers).double().eval()
    lens = torch.tensor([7, 3, 1, 5, 2])
    words, chars = torch.randint(2, 30, (5, 7)), torch.randint(2, 20, (5, 7, 4))
    for b, n in enumerate(lens.tolist()):
        words[b, n:], chars[b, n:] = 0, 0
    chars[0, 1, 2:] = 0  # a short word
    expected = encoder(words, chars, lens)
    got = UnpackedBiLSTM(encoder)(words, chars, lens)
    assert torch.allclose(got, expected, atol=1e-12, rtol=0)


# ------------------------------------------------------------------------------------------- decoders
@pytest.mark.parametrize("multiroot", [False, True])
def test_numpy_tree_decoders_give_the_torch_trees(multiroot):
    rng = np.random.default_rng(int(multiroot))
    for _ in range(60):
        lens = rng.integers(1, 13, 4)
        scores = rng.normal(size=(4, lens.max() + 1, lens.max() + 1)) * 3
        t, tl = torch.from_numpy(scores), torch.from_numpy(lens)
        assert (decoding.eisner(scores, lens, multiroot) == DependencyCRF(t, tl, multiroot).argmax.numpy()).all()
        assert (decoding.mst(scores, lens, multiroot) == MatrixTree(t, tl, multiroot).argmax.numpy()).all()


@pytest.mark.parametrize("scheme", ["BIO", "BIOES", None])
def test_numpy_viterbi_gives_the_torch_crf_path(scheme):
    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    if scheme == "BIOES":
        tags += ["E-PER", "S-PER", "E-LOC", "S-LOC"]
    masks = [m.numpy() for m in allowed_transitions(tags, scheme)] if scheme else [None] * 3
    rng = np.random.default_rng(3)
    for _ in range(60):
        lens = rng.integers(0, 10, 4)
        emissions = rng.normal(size=(4, max(int(lens.max()), 1), len(tags))) * 2
        trans, start, end = rng.normal(size=(len(tags), len(tags))), rng.normal(size=len(tags)), rng.normal(
            size=len(tags))
        as_torch = [None if m is None else torch.from_numpy(m) for m in masks]
        crf = LinearChainCRF(torch.from_numpy(emissions), torch.from_numpy(trans), torch.from_numpy(lens),
                             torch.from_numpy(start), torch.from_numpy(end), *as_torch)
        assert (decoding.viterbi(emissions, lens, trans, start, end, *masks) == crf.argmax.numpy()).all()


def test_repair_tree_and_tree_checks_match_torch_versions():
    rng = np.random.default_rng(4)
    for _ in range(200):
        n = int(rng.integers(1, 9))
        heads = rng.integers(-1, n + 2, n).tolist()
        scores = rng.normal(size=(n + 1, n + 1))
        assert decoding.repair_tree(heads, scores) == repair_tree(heads, scores)
        fixed = repair_tree(heads, scores)
        assert decoding.is_tree(fixed)


# ------------------------------------------------------------------------------------------- inputs
def test_word_inputs_equal_the_vocabulary_encoding():
    sentences = read_columns(WNUT_DEV)[:20]
    vocab = TaggerVocab.build(sentences[:10])  # words of the later sentences are unknown
    expected = vocab.encode([Sentence(s.tokens) for s in sentences])
    got = inputs.WordVocab(vocab.words.items, vocab.chars.items).encode([s.tokens for s in sentences])
    for key in ("words", "chars", "lens"):
        assert (got[key] == expected[key].numpy()).all(), key


@pytest.mark.parametrize("pooling", ["first", "mean"])
def test_subword_inputs_equal_the_encoder_tokenization(tmp_path, pooling):
    encoder = SubwordEncoder(write_tiny_bert(tmp_path / "bert", layers=1, max_positions=8), pooling=pooling)
    sentences = [["John", "lives", "in", "unbelievable", "New", "York", "city", "."] * 2, ["Hi"], [""], ["Paris"]]
    batch = encoder.tokenize(sentences)
    tokenizer = tmp_path / "tokenizer.json"
    encoder.tokenizer.backend_tokenizer.save(str(tokenizer))
    settings = {"prefix": encoder._prefix, "suffix": encoder._suffix, "unk": encoder._unk, "pad": encoder._pad,
                "window": encoder.window, "stride": encoder.stride, "pooling": pooling}
    got = inputs.SubwordInputs(tokenizer, settings).encode(sentences)
    assert batch.input_ids.shape[0] > len(sentences)  # the long sentence is read in several windows
    assert (got["input_ids"] == batch.input_ids.numpy()).all()
    assert (got["attention_mask"] == batch.attention_mask.numpy()).all()
    real = got["weights"] > 0
    b, i, _ = np.nonzero(real)
    if pooling == "first":
        assert (got["sources"][..., 0] == batch.first.numpy()).all() and real[..., 0].sum() == batch.lens.sum()
    else:
        assert (got["sources"][real] == batch.sources.numpy()).all()
        assert (b * batch.first.shape[1] + i == batch.owners.numpy()).all()
    for sizes in ([1] * 30, [3, 1, 4, 1, 5, 9, 2, 6], [7, 7]):
        assert inputs.window_layout(sizes, 6, 3) == window_layout(sizes, 6, 3)


# ------------------------------------------------------------------------------------------- taggers
def _bilstm_tagger(head: str, sentences) -> NerModel:
    vocab = TaggerVocab.build(sentences)
    tagger = BiLSTMTagger(len(vocab.words), len(vocab.chars), vocab.tags.items, head, "BIO" if head == "crf" else None,
                          **SMALL)
    randomize(tagger)
    return NerModel(tagger, vocab).eval()


def _transformer_tagger(head: str, sentences, bert: str, pooling: str) -> NerModel:
    tags = TaggerVocab.build(sentences).tags.items
    tagger = TransformerTagger(bert, tags, head, "BIO", pooling=pooling)
    randomize(tagger)
    return NerModel(tagger).eval()


@pytest.mark.parametrize("kind", ["bilstm-crf", "bilstm-maxent", "transformer-crf-first", "transformer-maxent-mean"])
def test_exported_tagger_tags_every_dev_sentence_as_torch(tmp_path, kind):
    sentences = read_columns(WNUT_DEV)
    if kind.startswith("bilstm"):
        model = _bilstm_tagger(kind.split("-")[1], sentences)
    else:
        _, head, pooling = kind.split("-")
        model = _transformer_tagger(head, sentences, write_tiny_bert(tmp_path / "bert", 2, 16), pooling)
    model.save(tmp_path / "model")
    tagger = runtime.load(export_model(tmp_path / "model", tmp_path / "onnx"))
    assert isinstance(tagger, runtime.Tagger)
    batch = sentences[:9]  # mixed lengths: the scores of the graph equal the model's
    (emissions,), lens = tagger.scores([s.tokens for s in batch])
    with torch.no_grad():
        expected = model(batch).potentials[0] if model.head_kind == "maxent" else _emissions(model, batch)
    mask = np.arange(emissions.shape[1])[None, :] < lens[:, None]
    assert np.abs(np.where(mask[..., None], emissions - expected.numpy(), 0)).max() < 1e-5
    expected_tags = predict(model, sentences)
    got = tagger([s.tokens for s in sentences])
    assert [r.tags for r in got] == expected_tags
    assert len({t for tags in expected_tags for t in tags}) > 1  # not a constant tagger
    same_results(got, structkd.load(tmp_path / "model", tokenizer="punct")([s.tokens for s in sentences]))
    assert sum(len(r.entities) for r in got) > 5


def same_results(got: list, expected: list, tolerance: float = 1e-5) -> None:
    """The runtime's results are ``structkd.load``'s: every field equal, the scores to ``tolerance`` (float32
    graph scores against the torch model's)."""
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert type(g) is type(e)
        if isinstance(e, Document):
            assert (g.text, g.tokens, g.tags, g.sentences) == (e.text, e.tokens, e.tags, e.sentences)
            items = list(zip(g.entities, e.entities))
            assert len(g.entities) == len(e.entities)
            scores = [("score",)] * len(items)
        else:
            assert g.text == e.text and [len(s) for s in g.sentences] == [len(s) for s in e.sentences]
            items = list(zip(g.words, e.words))
            scores = [("head_score", "deprel_score")] * len(items)
        for (a, b), names in zip(items, scores):
            exact = {k: v for k, v in a.to_dict().items() if k not in names}
            assert exact == {k: v for k, v in b.to_dict().items() if k not in names}
            for name in names:
                assert abs(getattr(a, name) - getattr(b, name)) <= tolerance, (a, b)
                assert 0.0 <= getattr(a, name) <= 1.0 + 1e-9


def _emissions(model: NerModel, batch) -> torch.Tensor:
    tagger = model.tagger
    if isinstance(tagger, TransformerTagger):
        return tagger.head.emissions(tagger.encoder([s.tokens for s in batch]).features)
    encoded = model.vocab.encode(batch)
    return tagger.head.emissions(tagger.encoder(encoded["words"], encoded["chars"], encoded["lens"]))


def test_runtime_call_forms_and_raw_text_as_structkd_load(tmp_path):
    sentences = read_columns(WNUT_DEV)
    model = _bilstm_tagger("crf", sentences)
    model.save(tmp_path / "model")
    (tmp_path / "model" / "inference.json").write_text(json.dumps({"tokenizer": "punct"}))
    tagger = runtime.load(export_model(tmp_path / "model", tmp_path / "onnx"), threads=1, batch_size=3)
    torch_tagger = structkd.load(tmp_path / "model")
    assert tagger.tokenizer == torch_tagger.tokenizer == "punct"  # the model's inference.json, carried at export
    texts = ["  ".join(s.tokens) + "!" for s in sentences[:7]]  # two spaces and a glued "!": offsets matter
    by_text = tagger(texts)
    assert [[t.text for t in r.tokens] for r in by_text] == [[t.text for t in tokenize(x, "punct")] for x in texts]
    assert all(r.text[t.start:t.end] == t.text for r in by_text for t in r.tokens)
    same_results(by_text, torch_tagger(texts))
    single = tagger(texts[0])
    assert isinstance(single, Document) and single == by_text[0]
    mixed = [texts[1], sentences[2].tokens, []]
    same_results(tagger(mixed), torch_tagger(mixed))
    assert tagger([[]]) == [Document("", [], [], [], [])]
    long = " ".join(sentences[0].tokens * 4)  # read in pieces of max_words tokens, as structkd.load does
    pieces = runtime.load(tmp_path / "onnx", max_words=5, tokenizer="whitespace")
    same_results([pieces(long)], [structkd.load(tmp_path / "model", max_words=5, tokenizer="whitespace")(long)])
    with pytest.raises(ValueError, match="input 2: token 1"):
        tagger([["a"], ["", "b"]])
    with pytest.raises(ValueError, match="max_words"):
        runtime.load(tmp_path / "onnx", max_words=0)


# ------------------------------------------------------------------------------------------- parsers
def _parser(kind: str, sentences, encoder: str, rels) -> ParseModel:
    bilstm = encoder == "bilstm"
    vocab = build_vocab(sentences, rels) if bilstm else None
    options = SMALL if bilstm else {}
    name, setting = kind.split("-")
    if name == "seqlabel":
        parser = SeqLabelingParser(encoder, rels, build_labels(sentences, rels), encoder_options=options, vocab=vocab)
        model = ParseModel(parser, setting)
    else:
        parser = BiaffineParser(encoder, rels, setting, arc_hidden=7, rel_hidden=5, encoder_options=options,
                                vocab=vocab)
        model = ParseModel(parser)
    randomize(parser)
    return model.eval()


def _check_parser(model: ParseModel, sentences, tmp_path: Path, name: str) -> None:
    model.save(tmp_path / name)
    parser = runtime.load(export_model(tmp_path / name, tmp_path / f"{name}-onnx"))
    assert isinstance(parser, runtime.Parser)
    heads, rels = parse_predict(model, sentences, 16)
    got = parser([s.words for s in sentences])
    assert [[w.head for w in p.words] for p in got] == heads
    assert [[w.deprel for w in p.words] for p in got] == rels
    same_results(got, structkd.load(tmp_path / name, tokenizer="punct")([s.words for s in sentences]))
    assert isinstance(got[0], Parse) and got[0].to_conllu().count("\n") == len(sentences[0].words) + 2


PARSERS = ["biaffine-projective", "biaffine-nonprojective", "seqlabel-mst", "seqlabel-eisner", "seqlabel-repair"]


@pytest.mark.parametrize("kind", PARSERS)
def test_exported_bilstm_parser_parses_the_tiny_treebank_as_torch(tmp_path, kind):
    sentences = read_conllu(write_treebank(tmp_path / "trees.conllu", 1))
    rels = build_rels(sentences)
    model = _parser(kind, sentences, "bilstm", rels)
    _check_parser(model, sentences, tmp_path, "model")
    if kind.startswith("biaffine"):  # and the graph's arc scores are the model's, for mixed lengths
        exported = runtime.load(tmp_path / "model-onnx")
        (arcs, _, _), lens = exported.scores([s.words for s in sentences])
        with torch.no_grad():
            x, _ = model.parser.features(sentences)
            expected = model.parser.arc(x).numpy()
        mask = decoding.arc_mask(lens, arcs.shape[1])
        assert np.abs(np.where(mask, arcs - expected, 0)).max() < 1e-5 * max(1.0, np.abs(expected).max())


@pytest.mark.parametrize("kind", ["biaffine-nonprojective", "seqlabel-mst"])
def test_exported_transformer_parser_parses_as_torch(tmp_path, kind):
    sentences = read_conllu(write_treebank(tmp_path / "trees.conllu", 1))
    model = _parser(kind, sentences, write_tiny_bert(tmp_path / "bert", 2, 8), build_rels(sentences))
    _check_parser(model, sentences, tmp_path, "model")


@pytest.mark.skipif(not EWT_DEV.is_file(), reason="UD English EWT is not in ../shared/data")
@pytest.mark.parametrize("kind", ["biaffine-projective", "biaffine-nonprojective", "seqlabel-mst"])
def test_exported_parser_parses_an_ewt_slice_as_torch(tmp_path, kind):
    sentences = read_conllu(EWT_DEV, max_sentences=150)
    model = _parser(kind, sentences, "bilstm", build_rels(sentences))
    _check_parser(model, sentences, tmp_path, "model")


def test_seqlabel_decoder_falls_back_to_arc_scores():
    # word 1 -> 0 and word 2 -> 0 are both best: two roots, so the label-derived trees are decoded
    offsets, label_rels = np.array([-1, -2, 1, -1]), np.array([0, 1, 0, 1])
    logits = np.array([[[3.0, -50, 1.0, 0.5], [0.0, 4.0, -50, 0.2]]], dtype=np.float32)
    heads, rels = decode_labels(logits, np.array([2]), offsets, label_rels, 2, "mst")
    assert decoding.is_tree(heads[0, 1:].tolist()) and heads[0, 1:].tolist() in ([0, 1], [2, 0])


# ------------------------------------------------------------------------------------------- marginals
def _brute_arc_marginals(scores: np.ndarray, multiroot: bool, projective: bool) -> np.ndarray:
    n = scores.shape[0] - 1
    structures = trees(n, multiroot, projective)
    values = np.array([sum(scores[d + 1, h] for d, h in enumerate(t)) for t in structures])
    probs = np.exp(values - values.max())
    probs /= probs.sum()
    out = np.zeros_like(scores)
    for p, t in zip(probs, structures):
        out[np.arange(1, n + 1), list(t)] += p
    return out


@pytest.mark.parametrize("multiroot", [False, True])
@pytest.mark.parametrize("projective", [False, True])
def test_numpy_tree_marginals_equal_brute_force(multiroot, projective):
    rng = np.random.default_rng(10 + 2 * multiroot + projective)
    for n in range(1, 6):
        for _ in range(3):
            scores = rng.normal(size=(n + 1, n + 1)) * 2
            scores[0], scores[np.arange(n + 1), np.arange(n + 1)] = np.nan, np.nan  # ignored, as in torch
            expected = _brute_arc_marginals(np.nan_to_num(scores), multiroot, projective)
            got = marginals.tree_marginals(scores, "projective" if projective else "nonprojective", multiroot)
            assert np.abs(got - expected).max() < 1e-12


@pytest.mark.parametrize("multiroot", [False, True])
def test_numpy_tree_marginals_equal_torch_on_longer_sentences(multiroot):
    rng = np.random.default_rng(20 + multiroot)
    scores = rng.normal(size=(3, 15, 15)) * 3
    lens = np.array([14, 9, 1])
    t, tl = torch.from_numpy(scores), torch.from_numpy(lens)
    for cls, tree in ((DependencyCRF, "projective"), (MatrixTree, "nonprojective")):
        expected = cls(t, tl, multiroot).marginals.numpy()
        for b, n in enumerate(lens.tolist()):
            got = marginals.tree_marginals(scores[b, :n + 1, :n + 1], tree, multiroot)
            assert np.abs(got - expected[b, :n + 1, :n + 1]).max() < 1e-10, tree


@pytest.mark.parametrize("multiroot", [False, True])
def test_head_probabilities_of_peaked_trees_equal_brute_force(multiroot):
    """Peaked scores make the Laplacian nearly singular: the fast marginals are refused and the head scores come
    from the log-space elimination, still exact."""
    rng = np.random.default_rng(30 + multiroot)
    refused = 0
    for scale in (1, 30, 100, 1000):
        for _ in range(4):
            scores = rng.normal(size=(7, 7)) * scale
            expected = _brute_arc_marginals(scores, multiroot, False)
            heads = decoding.mst(scores[None], np.array([6]), multiroot)[0, 1:]
            refused += not marginals.trusted(marginals.matrix_tree_marginals(scores, multiroot))
            got = marginals.head_probabilities(scores, heads, "nonprojective", multiroot)
            assert np.abs(got - expected[np.arange(1, 7), heads]).max() < 1e-9
            assert np.abs(marginals.head_probabilities(scores, heads, "projective", multiroot)
                          - _brute_arc_marginals(scores, multiroot, True)[np.arange(1, 7), heads]).max() < 1e-9
    assert refused > 0


def _brute_entity_probabilities(score, length: int, tags: list[str], scheme: str) -> dict:
    """``P(entity in spans(y))`` of every entity any tag sequence has, by enumeration."""
    values = {y: score(y) for y in tag_sequences(length, len(tags))}
    top = max(values.values())
    z = sum(np.exp(v - top) for v in values.values())
    out: dict = {}
    for y, v in values.items():
        for entity in spans([tags[t] for t in y], scheme):
            out[entity] = out.get(entity, 0.0) + np.exp(v - top) / z
    return out


@pytest.mark.parametrize("scheme", ["BIO", "BIOES"])
def test_numpy_entity_probabilities_equal_brute_force(scheme):
    tags = ["O", "B-PER", "I-PER", "B-LOC"] + (["E-PER", "S-PER"] if scheme == "BIOES" else [])
    masks = [m.numpy() for m in allowed_transitions(tags, scheme)]
    rng = np.random.default_rng(5)
    for length in (1, 2, 4):
        emissions = rng.normal(size=(length, len(tags)))
        trans, start, end = rng.normal(size=(len(tags), len(tags))), rng.normal(size=len(tags)), rng.normal(
            size=len(tags))
        for constrained in (False, True):
            unary, edges = decoding.chain_potentials(emissions, trans, start, end, *(masks if constrained else []))

            def score(y, unary=unary, edges=edges):
                return sum(unary[i, t] for i, t in enumerate(y)) + sum(edges[a, b] for a, b in zip(y, y[1:]))

            expected = _brute_entity_probabilities(score, length, tags, scheme)
            entities = sorted(expected)
            got = marginals.entity_probabilities(entities, tags, length, chain=(unary, edges))
            assert np.allclose(got, [expected[e] for e in entities], atol=1e-12, rtol=0)
            torch_chain = (torch.from_numpy(unary), torch.from_numpy(edges).expand(max(length - 1, 0), -1, -1))
            assert np.allclose(got, entity_probabilities(entities, tags, length, chain=torch_chain), atol=1e-12)
        probs = marginals.softmax(emissions)
        expected = _brute_entity_probabilities(lambda y, p=probs: sum(np.log(p[i, t]) for i, t in enumerate(y)), length,
                                               tags, scheme)
        entities = sorted(expected)
        got = marginals.entity_probabilities(entities, tags, length, probs=probs)
        assert np.allclose(got, [expected[e] for e in entities], atol=1e-12, rtol=0)


def test_label_probabilities_sum_the_labels_of_each_head():
    offsets, label_rels = np.array([-1, -1, 1, 2]), np.array([0, 1, 0, 0])
    probs = marginals.softmax(np.random.default_rng(6).normal(size=(3, 4)))
    heads, rels = [2, 0, 2], [0, 0, 0]  # word 2's offset -2 has no label: 0
    head_p = marginals.label_head_probabilities(probs, offsets, heads)
    assert np.allclose(head_p, [probs[0, 2], 0.0, probs[2, 0] + probs[2, 1]])
    rel_p = marginals.label_rel_probabilities(probs, offsets, label_rels, heads, rels, head_p)
    assert np.allclose(rel_p, [1.0, 0.0, probs[2, 0] / head_p[2]])
    assert marginals.label_rel_probabilities(probs, offsets, label_rels, [2], [1], head_p)[0] == 0.0  # no (1, 1)


# ------------------------------------------------------------------------------------------- refusals
def test_export_refuses_what_it_cannot_export(tmp_path):
    sentences = read_conllu(write_treebank(tmp_path / "trees.conllu", 1))
    rels = build_rels(sentences)
    second_order = BiaffineParser("bilstm", rels, "2o", vocab=build_vocab(sentences, rels), encoder_options=SMALL,
                                  arc_hidden=4, rel_hidden=4, sib_hidden=4)
    ParseModel(second_order).save(tmp_path / "2o")
    with pytest.raises(ValueError, match="second-order"):
        export_model(tmp_path / "2o", tmp_path / "out")
    with pytest.raises(ValueError, match="format"):
        export_model(tmp_path / "2o", tmp_path / "out", format="tflite")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="busy"):
        export_model(tmp_path / "2o", tmp_path / "busy")
    (tmp_path / "junk").mkdir()
    with pytest.raises(FileNotFoundError, match="runtime.json"):
        runtime.load(tmp_path / "junk")


def test_inference_json_tokenizer_is_carried(tmp_path):
    sentences = read_columns(WNUT_DEV)
    _bilstm_tagger("maxent", sentences).save(tmp_path / "model")
    (tmp_path / "model" / "inference.json").write_text(json.dumps({"tokenizer": "whitespace"}))
    out = export_model(tmp_path / "model", tmp_path / "onnx")
    assert json.loads((out / "runtime.json").read_text())["tokenizer"] == "whitespace"
    assert (out / "inference.json").is_file()


# ------------------------------------------------------------------------------------------- no torch
_USE_RUNTIME = """
import sys
{setup}
import structkd.runtime as rt
tagger = rt.load(sys.argv[1])
print(tagger(["a b c", "d"])[0].__class__.__name__, tagger([["a", "b"]])[0].tags.__class__.__name__,
      "torch" in sys.modules)
"""
# structkd/__init__.py imports torch eagerly; this stand-in package lets the runtime's own modules be checked
_BARE_PACKAGE = """
import types
package = types.ModuleType("structkd")
package.__path__ = [{path!r}]
sys.modules["structkd"] = package
"""


def _run_runtime(tmp_path: Path, setup: str) -> str:
    sentences = read_columns(WNUT_DEV)
    _bilstm_tagger("crf", sentences).save(tmp_path / "model")
    # spaCy (the default text tokenizer) imports torch through thinc; the punctuation tokenizer does not
    (tmp_path / "model" / "inference.json").write_text(json.dumps({"tokenizer": "punct"}))
    out = export_model(tmp_path / "model", tmp_path / "onnx")
    code = _USE_RUNTIME.format(setup=setup)
    done = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_runtime_modules_import_no_torch(tmp_path):
    setup = _BARE_PACKAGE.format(path=str(ROOT / "structkd"))
    assert _run_runtime(tmp_path, setup) == ["Document", "list", "False"]


def test_import_structkd_runtime_imports_no_torch(tmp_path):
    """The package's names are imported lazily (structkd/__init__.py), so the runtime loads no torch."""
    assert _run_runtime(tmp_path, "") == ["Document", "list", "False"]


def test_the_package_exports_every_structure_lazily():
    import structkd
    import structkd.structs

    assert set(structkd.structs.__all__) <= set(structkd.__all__)
    assert all(getattr(structkd, name) is getattr(structkd.structs, name) for name in structkd.structs.__all__)
