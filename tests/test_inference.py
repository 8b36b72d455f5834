"""structkd.load: raw text to entities and trees, exact confidences, tokenization, streaming, writers."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gc  # noqa: E402
import io  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import tracemalloc  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from brute import trees  # noqa: E402
from tiny_models import write_tiny_bert  # noqa: E402

import structkd  # noqa: E402
from structkd import text as textmod  # noqa: E402
from structkd.data import ParsedSentence, Sentence  # noqa: E402
from structkd.inference import (  # noqa: E402
    Document,
    Parse,
    entity_probabilities,
    predict_stream,
    saved_tokenizer,
    set_tokenizer,
    write_results,
)
from structkd.models import BiLSTMTagger, TaggerVocab, TransformerTagger, Vocabulary  # noqa: E402
from structkd.models.parsers import BiaffineParser, build_rels, build_vocab  # noqa: E402
from structkd.models.seqlabel_parser import SeqLabelingParser, build_labels  # noqa: E402
from structkd.ner.modeling import NerModel  # noqa: E402
from structkd.parse.modeling import ParseModel  # noqa: E402
from structkd.schemes import allowed_transitions, spans, tag_inventory  # noqa: E402
from structkd.structs.chain import LinearChainCRF  # noqa: E402

TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
TEXTS = ["Barack Obama visited Paris, then New York!", "John Smith lives in Paris .", "Hi", "",
         "the city is nice and John Smith is in New York too ."]


def randomize(module, std=0.5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * std)
        for m in module.modules():
            if isinstance(m, torch.nn.Embedding) and m.padding_idx is not None:
                m.weight[m.padding_idx] = 0.0
    return module


def vocab_sentences():
    words = " ".join(TEXTS).replace(",", " ,").replace("!", " !").split()
    return [Sentence(words, ["O"] * len(words))]


def save_bilstm(directory, head, seed=0):
    built = TaggerVocab.build(vocab_sentences())
    vocab = TaggerVocab(built.words, built.chars, Vocabulary(TAGS, special=False))
    torch.manual_seed(seed)
    tagger = BiLSTMTagger(len(vocab.words), len(vocab.chars), TAGS, head, "BIO" if head == "crf" else None,
                          word_dim=8, hidden=8, char_filters=4, dropout=0.0)
    NerModel(randomize(tagger, seed=seed), vocab).save(directory)
    return directory


PARSE_SENTENCES = [
    ParsedSentence("John Smith lives in New York .".split(), ["X"] * 7, [2, 3, 0, 6, 6, 3, 3],
                   "flat nsubj root case compound obl punct".split()),
    ParsedSentence("Paris is nice".split(), ["X"] * 3, [3, 3, 0], "nsubj cop root".split()),
]


def save_parser(directory, kind, tree="projective", seed=0):
    rels = build_rels(PARSE_SENTENCES)
    vocab = build_vocab(PARSE_SENTENCES, rels)
    small = {"word_dim": 8, "hidden": 8, "char_filters": 4}
    torch.manual_seed(seed)
    if kind == "biaffine":
        parser = BiaffineParser("bilstm", rels, tree, vocab=vocab, arc_hidden=8, rel_hidden=6, encoder_options=small)
    else:
        parser = SeqLabelingParser("bilstm", rels, build_labels(PARSE_SENTENCES, rels), vocab=vocab,
                                   encoder_options=small)
    ParseModel(randomize(parser, std=0.3, seed=seed)).save(directory)
    return directory


@pytest.fixture(scope="module")
def crf_dir(tmp_path_factory):
    return save_bilstm(tmp_path_factory.mktemp("crf"), "crf")


@pytest.fixture(scope="module")
def maxent_dir(tmp_path_factory):
    return save_bilstm(tmp_path_factory.mktemp("maxent"), "maxent", seed=1)


# ------------------------------------------------------------------------------------------- tokenization
def test_spacy_tokenizer_splits_punctuation_and_keeps_offsets():
    text = "Barack Obama visited Paris, New York! U.S. officials don't  care."
    tokens = textmod.tokenize(text, "spacy:en")
    assert [t.text for t in tokens] == ["Barack", "Obama", "visited", "Paris", ",", "New", "York", "!", "U.S.",
                                        "officials", "do", "n't", "care", "."]
    assert all(text[t.start:t.end] == t.text for t in tokens)


@pytest.mark.parametrize("name", ["punct", "whitespace", "spacy:en"])
def test_every_tokenizer_keeps_offsets(name):
    text = "Zürich, 😀ok  $5.00\tdon't\nU.S."
    tokens = textmod.tokenize(text, name)
    assert tokens and all(text[t.start:t.end] == t.text and not t.text.isspace() for t in tokens)
    assert [t.text for t in textmod.tokenize("Paris, York!", "punct")] == ["Paris", ",", "York", "!"]
    assert [t.text for t in textmod.tokenize("Paris, York!", "whitespace")] == ["Paris,", "York!"]


def test_sentence_splitting_and_bad_names():
    text = "Hello there. How are you?  I am fine!\n"
    assert [text[a:b] for a, b in textmod.split_sentences(text)] == ["Hello there.", "How are you?", "I am fine!"]
    assert textmod.split_sentences("   ") == []
    with pytest.raises(ValueError, match="unknown tokenizer 'bert'"):
        textmod.tokenize("a", "bert")
    with pytest.raises(TypeError):
        textmod.tokenize(["a"], "punct")
    with pytest.raises(ValueError, match="'spacy:qq': spaCy has no language 'qq'"):
        textmod.tokenize("a", "spacy:qq")


def test_default_tokenizer_falls_back_without_spacy(monkeypatch, caplog):
    assert textmod.default_tokenizer() == "spacy:en"
    monkeypatch.setattr(textmod, "spacy_available", lambda: False)
    caplog.clear()
    assert textmod.default_tokenizer(warn=False) == "punct" and "spaCy is not installed" not in caplog.text
    assert textmod.default_tokenizer() == "punct"
    assert "spaCy is not installed" in caplog.text
    textmod._spacy_pipeline.cache_clear()
    textmod._tokenizer.cache_clear()
    with pytest.raises(ImportError, match=r"structkd\[text\]"):
        textmod.tokenize("a", "spacy:en")
    monkeypatch.undo()
    textmod._spacy_pipeline.cache_clear()
    textmod._tokenizer.cache_clear()


def test_text_module_does_not_import_torch():
    import subprocess
    import sys
    code = (f"import importlib.util, sys; spec = importlib.util.spec_from_file_location('t', {textmod.__file__!r}); "
            "m = importlib.util.module_from_spec(spec); sys.modules['t'] = m; spec.loader.exec_module(m); "
            "print([t.text for t in m.tokenize('a, b', 'punct')], 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "['a', ',', 'b'] False"


# ------------------------------------------------------------------------------------------- exact entity scores
def brute_entity_probabilities(unary, edges, tags, scheme, probs=None):
    """P(spans(y) holds (i, j, X)) by enumerating every tag sequence (float64): a chain's ``unary [L, N]`` and
    ``edges [L - 1, N, N]``, or independent tokens with marginals ``probs [L, N]``."""
    length, n_tags = unary.shape
    sequences = list(itertools.product(range(n_tags), repeat=length))
    if probs is not None:
        p = [float(torch.prod(probs[torch.arange(length), torch.tensor(y)])) for y in sequences]
    else:
        zero = torch.zeros((), dtype=unary.dtype)
        scores = torch.stack([sum(unary[k, y[k]] for k in range(length))
                              + sum((edges[k, y[k], y[k + 1]] for k in range(length - 1)), zero) for y in sequences])
        p = (scores - torch.logsumexp(scores, 0)).exp().tolist()
    out: dict = {}
    for y, q in zip(sequences, p):
        for entity in spans([tags[t] for t in y], scheme):
            out[entity] = out.get(entity, 0.0) + q
    return out


@pytest.mark.parametrize("scheme,types,length", [("BIO", ["PER", "LOC"], 4), ("IOB1", ["PER", "LOC"], 4),
                                                 ("BIOES", ["PER"], 5), ("BIOES", ["PER", "LOC"], 3)])
@pytest.mark.parametrize("constrained", [False, True])
def test_entity_probabilities_equal_brute_force(scheme, types, length, constrained):
    """Every possible labelled span, not just predicted ones, on random chains (float64), and MaxEnt products."""
    tags = tag_inventory(types, scheme)
    n = len(tags)
    generator = torch.Generator().manual_seed(len(tags) * 10 + length + constrained)
    masks = allowed_transitions(tags, scheme) if constrained else (None, None, None)
    rand = lambda *shape: torch.randn(*shape, generator=generator, dtype=torch.float64)  # noqa: E731
    crf = LinearChainCRF(rand(1, length, n) * 1.5, rand(n, n), None, rand(n), rand(n), *masks)
    unary, edges = (p[0] for p in crf.potentials)
    every = [(i, j, kind) for i in range(length) for j in range(i, length) for kind in types]
    brute = brute_entity_probabilities(unary, edges, tags, scheme)
    exact = entity_probabilities(every, tags, length, chain=(unary, edges))
    for entity, p in zip(every, exact):
        assert p == pytest.approx(brute.get(entity, 0.0), abs=1e-12), entity
    probs = unary.softmax(-1)
    brute = brute_entity_probabilities(unary, edges, tags, scheme, probs=probs)
    exact = entity_probabilities(every, tags, length, probs=probs)
    for entity, p in zip(every, exact):
        assert p == pytest.approx(brute.get(entity, 0.0), abs=1e-12), entity


@pytest.mark.parametrize("head", ["crf", "maxent"])
def test_loaded_tagger_scores_are_the_exact_span_marginals(head, crf_dir, maxent_dir):
    tagger = structkd.load(crf_dir if head == "crf" else maxent_dir, tokenizer="punct")
    tagger.model.double()
    words = "John Smith lives in Paris".split()
    with torch.no_grad():
        dist = tagger.model([Sentence(words)])
    unary = dist.potentials[0][0].double()
    edges = dist.potentials[1][0].double() if head == "crf" else None
    probs = dist.potentials[0][0].double().softmax(-1) if head == "maxent" else None
    brute = brute_entity_probabilities(unary, edges, TAGS, "BIO", probs=probs)
    doc = tagger([words])[0]
    assert doc.entities, "random weights should predict some entity"
    for entity in doc.entities:
        key = (entity.token_start, entity.token_end - 1, entity.label)
        assert entity.score == pytest.approx(brute[key], abs=1e-12)
    assert [(e.token_start, e.token_end - 1, e.label) for e in doc.entities] == spans(doc.tags, "BIO")


def test_span_head_scores_are_segment_marginals(tmp_path):
    bert = write_tiny_bert(tmp_path / "bert", max_positions=16)
    torch.manual_seed(0)
    model = TransformerTagger(bert, TAGS, "span", "BIO", max_width=3, span_hidden=8, dropout=0.0)
    NerModel(randomize(model, std=0.3)).save(tmp_path / "span")
    tagger = structkd.load(tmp_path / "span", tokenizer="whitespace")
    words = "john smith lives in new york".split()
    doc = tagger(" ".join(words))
    dist = tagger.model([Sentence(words)])
    labels = model.span_labels
    assert doc.tags == tagger.model.decode(dist)[0]
    for entity in doc.entities:
        expected = dist.marginals[0, entity.token_start, entity.token_end - 1, labels.index(entity.label)]
        assert entity.score == pytest.approx(float(expected), abs=1e-6)
        assert entity.text == " ".join(words[entity.token_start:entity.token_end])


# ------------------------------------------------------------------------------------------- the tagger API
def test_documents_offsets_order_and_json(crf_dir):
    tagger = structkd.load(crf_dir)
    assert tagger.tokenizer == "spacy:en"
    docs = tagger(TEXTS)
    assert [d.text for d in docs] == TEXTS
    first = docs[0]
    assert [t.text for t in first.tokens][:5] == ["Barack", "Obama", "visited", "Paris", ","]
    for doc in docs:
        assert len(doc.tags) == len(doc.tokens)
        for e in doc.entities:
            assert doc.text[e.start:e.end] == e.text and 0.0 <= e.score <= 1.0 + 1e-9
            assert e.start == doc.tokens[e.token_start].start and e.end == doc.tokens[e.token_end - 1].end
    assert docs[3].tokens == [] and docs[3].entities == []
    assert isinstance(tagger(TEXTS[0]), Document)
    json.loads(json.dumps([d.to_dict() for d in docs]))


def test_padded_batches_predict_what_each_sentence_alone_predicts(crf_dir):
    together = structkd.load(crf_dir, batch_size=8)(TEXTS)
    alone = structkd.load(crf_dir, batch_size=1)
    for text, doc in zip(TEXTS, together):
        single = alone(text)
        assert single.tags == doc.tags
        assert [(e.start, e.end, e.label) for e in single.entities] == [(e.start, e.end, e.label) for e in doc.entities]
        for a, b in zip(single.entities, doc.entities):
            assert a.score == pytest.approx(b.score, abs=1e-6)


def test_pretokenized_input_skips_the_tokenizer(crf_dir):
    tagger = structkd.load(crf_dir)
    doc = tagger([["Paris,", "York!"]])[0]
    assert [t.text for t in doc.tokens] == ["Paris,", "York!"] and doc.text == "Paris, York!"
    with pytest.raises(ValueError, match="input 2: token 1"):
        tagger([["a"], ["", "b"]])
    with pytest.raises(TypeError, match="input 1: expected a string"):
        tagger([3])


def test_saved_tokenizer_is_used_and_can_be_overridden(tmp_path, crf_dir):
    import shutil
    directory = tmp_path / "model"
    shutil.copytree(crf_dir, directory)
    assert saved_tokenizer(directory) is None
    set_tokenizer(directory, "whitespace")
    assert saved_tokenizer(directory) == "whitespace"
    assert [t.text for t in structkd.load(directory)("Paris, York!").tokens] == ["Paris,", "York!"]
    assert [t.text for t in structkd.load(directory, tokenizer="punct")("Paris, York!").tokens] == \
        ["Paris", ",", "York", "!"]
    with pytest.raises(ValueError, match="unknown tokenizer"):
        set_tokenizer(directory, "nltk")
    (directory / "inference.json").write_text('{"tokenizer": "nltk"}')
    with pytest.raises(ValueError, match="inference.json: unknown tokenizer"):
        structkd.load(directory)


def test_load_refuses_what_it_cannot_read(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such model directory"):
        structkd.load(tmp_path / "missing")
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ValueError, match="a Hugging Face model that is not a token classifier"):
        structkd.load(tmp_path / "hf")


def test_sentence_splitting_keeps_offsets_into_the_input(crf_dir):
    text = "John Smith lives in Paris. Hi!  Then New York."
    doc = structkd.load(crf_dir, sentences=True)(text)
    assert [" ".join(t.text for t in doc.tokens[a:b]) for a, b in doc.sentences] == \
        ["John Smith lives in Paris .", "Hi !", "Then New York ."]
    assert all(text[t.start:t.end] == t.text for t in doc.tokens)
    out = io.StringIO()
    write_results([doc], out, "conll")
    assert out.getvalue().count("\n\n") == 3


# ------------------------------------------------------------------------------------------- streaming, writers
def test_predict_stream_reads_lazily_and_keeps_order(crf_dir):
    tagger = structkd.load(crf_dir, tokenizer="punct")
    pulled = []

    def inputs():
        for n in range(25):
            pulled.append(n)
            yield f"John Smith {'lives in ' * (n % 4)}Paris {n}"

    stream = predict_stream(tagger, inputs(), chunk_size=4)
    first = next(stream)
    assert len(pulled) == 4 and first.text.endswith(" 0")
    rest = list(stream)
    assert [d.text.rsplit(" ", 1)[1] for d in [first, *rest]] == [str(n) for n in range(25)]


def test_streaming_memory_does_not_grow_with_the_stream(crf_dir):
    tagger = structkd.load(crf_dir, tokenizer="punct")

    def peak(n):
        gc.collect()
        tracemalloc.start()
        sink = io.StringIO()
        results = predict_stream(tagger, (f"John Smith lives in Paris {k}" for k in range(n)), chunk_size=16)
        for result in results:
            write_results([result], sink, "jsonl")
            sink.seek(0)
            sink.truncate()
        size = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return size

    peak(32)  # warm caches
    small, large = peak(64), peak(640)
    assert large < 1.5 * small + 200_000, (small, large)


@pytest.mark.parametrize("fmt", ["conll", "conllu", "json", "jsonl"])
def test_writers(fmt, crf_dir, tmp_path):
    docs = structkd.load(crf_dir)(TEXTS[:2])
    parser = structkd.load(save_parser(tmp_path / "p", "biaffine"))
    parses = parser(["John lives in Paris.", "Paris is nice"])
    for results in (docs, parses):
        out = io.StringIO()
        assert write_results(iter(results), out, fmt) == len(results)
        value = out.getvalue()
        if fmt == "json":
            assert len(json.loads(value)) == len(results)
        elif fmt == "jsonl":
            assert [json.loads(line)["text"] for line in value.splitlines()] == [r.text for r in results]
        else:
            import conllu
            if fmt == "conllu":
                parsed = conllu.parse(value)
                assert [len(s) for s in parsed] == [len(r.tokens) if isinstance(r, Document) else len(r.words)
                                                    for r in results]
            assert value.count("\n\n") == len(results)
    parse = parses[0]
    assert "SpaceAfter=No" in parse.to_conllu()  # "Paris." is two tokens with no space between
    with pytest.raises(ValueError, match="unknown output format"):
        write_results(docs, io.StringIO(), "xml")


# ------------------------------------------------------------------------------------------- long inputs
def test_a_20000_word_line_is_tagged_in_pieces(crf_dir):
    tagger = structkd.load(crf_dir, tokenizer="whitespace", max_words=1000)
    lengths = []
    forward = tagger.model.forward
    tagger.model.forward = lambda sentences: (lengths.append(max(len(s) for s in sentences)), forward(sentences))[1]
    doc = tagger(" ".join(["John", "Smith", "lives", "in", "Paris"] * 4000))
    assert len(doc.tokens) == len(doc.tags) == 20000
    assert max(lengths) == 1000 and sum(1 for _ in lengths) >= 5
    assert all(e.token_end - e.token_start <= 1000 for e in doc.entities)


def test_a_20000_word_line_is_refused_by_a_parser_before_any_model_work(tmp_path):
    parser = structkd.load(save_parser(tmp_path / "p", "biaffine"), tokenizer="whitespace")
    parser.model.forward = lambda *a: pytest.fail("the model ran")
    with pytest.raises(ValueError, match=r"data.txt:3: a sentence of 20000 words .* max_words=500"):
        list(predict_stream(parser, ["a b", "c", " ".join(["w"] * 20000)], source="data.txt"))


# ------------------------------------------------------------------------------------------- parsers
@pytest.mark.parametrize("kind,tree", [("biaffine", "projective"), ("biaffine", "nonprojective"),
                                       ("biaffine", "2o"), ("seqlabel", None)])
def test_parser_head_scores(kind, tree, tmp_path, monkeypatch):
    parser = structkd.load(save_parser(tmp_path / "p", kind, tree or "projective"), tokenizer="punct")
    assert isinstance(parser, structkd.Parser)
    result = parser(["John lives in Paris.", "Paris is nice"])
    if tree == "2o":  # a batch above the cost budget goes in pieces (here one sentence each): the same parses
        from structkd.inference import predictors

        monkeypatch.setattr(predictors, "DEFAULT_MAX_BATCH_COST", 1.0)
        calls, whole = [], parser._parse
        monkeypatch.setattr(parser, "_parse", lambda batch: calls.append(len(batch)) or whole(batch))
        pieces = parser(["John lives in Paris.", "Paris is nice"])
        assert calls == [1, 1]
        for alone, together in zip(pieces, result):
            assert [(w.head, w.deprel) for w in alone.words] == [(w.head, w.deprel) for w in together.words]
            assert [w.head_score for w in alone.words] == pytest.approx([w.head_score for w in together.words],
                                                                         abs=1e-6)
        monkeypatch.undo()
    assert isinstance(result[0], Parse) and [w.text for w in result[0].words] == ["John", "lives", "in", "Paris", "."]
    words = "Paris is nice".split()
    with torch.no_grad():
        out = parser.model([words])
    heads, rels = parser.model.decode(out)
    parse = result[1]
    assert [w.head for w in parse.words] == heads[0, 1:].tolist()
    assert [w.deprel for w in parse.words] == [parser.model.rels[r] for r in rels[0, 1:].tolist()]
    if kind == "biaffine" and tree != "2o":
        arcs = out.dist.potentials[0][0].double()
        every = trees(3, multiroot=False, projective=tree == "projective")
        scores = torch.stack([sum(arcs[d + 1, h] for d, h in enumerate(t)) for t in every])
        p = (scores - torch.logsumexp(scores, 0)).exp()
        for w in parse.words:
            brute = sum(float(q) for t, q in zip(every, p) if t[w.id - 1] == w.head)
            assert w.head_score == pytest.approx(brute, abs=1e-5)
    elif kind == "biaffine":
        for w in parse.words:
            assert w.head_score == pytest.approx(float(out.dist.marginals[0, w.id, w.head]), abs=1e-6)
    else:
        probs = out.dist.potentials[0][0].softmax(-1)
        labels = parser.model.parser.labels
        for w in parse.words:
            expected = sum(float(probs[w.id - 1, k]) for k, (o, _) in enumerate(labels) if w.id + o == w.head)
            assert w.head_score == pytest.approx(expected, abs=1e-6)
    assert all(0.0 <= w.deprel_score <= 1.0 + 1e-6 for w in parse.words)
