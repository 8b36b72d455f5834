"""Dependency parsers: biaffine tree-CRF parsers, parsing as sequence labeling, tree repair, saving, KD."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import random  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from structkd.data import ParsedSentence  # noqa: E402
from structkd.kd import structural_kd_loss  # noqa: E402
from structkd.models import load_pretrained  # noqa: E402
from structkd.models.parsers import (  # noqa: E402
    BiaffineParser,
    SiblingScorer,
    build_rels,
    build_vocab,
    repair_tree,
    save_parser,
)
from structkd.models.seqlabel_parser import DECODERS, SeqLabelingParser, build_labels  # noqa: E402
from structkd.parse.modeling import ParseModel  # noqa: E402
from structkd.structs import Dependency2oCRF, DependencyCRF, MatrixTree, MaxEnt  # noqa: E402
from structkd.structs.heads import is_tree, projective  # noqa: E402


def sentence(words, heads, rels):
    return ParsedSentence(words.split(), ["X"] * len(heads), heads, rels.split())


SENTENCES = [
    sentence("John Smith lives in New York .", [2, 3, 0, 6, 6, 3, 3], "flat nsubj root case compound obl punct"),
    sentence("Hi", [0], "root"),
    sentence("Paris is nice", [3, 3, 0], "nsubj cop root"),
    sentence("the city is unbelievable .", [2, 4, 4, 0, 4], "det nsubj cop root punct"),
]
RELS = build_rels(SENTENCES)
VOCAB = build_vocab(SENTENCES, RELS)
LABELS = build_labels(SENTENCES, RELS)
SMALL = {"word_dim": 8, "hidden": 8, "char_filters": 4}
TREE_TYPES = {"projective": DependencyCRF, "nonprojective": MatrixTree, "2o": Dependency2oCRF}


def randomize(module, std=0.3, seed=0):
    """Random parameters (the biaffine weights start at zero, which would make every check trivial)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * std)
        for m in module.modules():
            if isinstance(m, torch.nn.Embedding) and m.padding_idx is not None:
                m.weight[m.padding_idx] = 0.0  # padding characters must stay invisible to the CNN
    return module


def biaffine(tree, multiroot=False, seed=0):
    torch.manual_seed(seed)
    model = BiaffineParser("bilstm", RELS, tree, multiroot, vocab=VOCAB, arc_hidden=8, rel_hidden=6, sib_hidden=5,
                           encoder_options=SMALL)
    return randomize(model, seed=seed)


def seqlabeler(seed=0):
    torch.manual_seed(seed)
    return randomize(SeqLabelingParser("bilstm", RELS, LABELS, vocab=VOCAB, encoder_options=SMALL), seed=seed)


def cut(batch, alone, n):
    """``batch`` (one sentence of a padded batch) cut to ``alone``'s shape along every axis of length ``n``."""
    index = tuple(slice(0, size) for size in alone.shape)
    torch.testing.assert_close(batch[index], alone, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------- biaffine
@pytest.mark.parametrize("tree", sorted(TREE_TYPES))
@pytest.mark.parametrize("multiroot", [False, True])
def test_distribution_loss_and_decoding(tree, multiroot):
    model = biaffine(tree, multiroot)
    dist, rel_logits = model(SENTENCES)
    assert type(dist) is TREE_TYPES[tree] and dist.multiroot == multiroot
    size = max(len(s) for s in SENTENCES) + 1
    assert rel_logits.shape == (len(SENTENCES), size, size, len(RELS))
    probs = model.rel_probs(rel_logits)
    torch.testing.assert_close(probs.sum(-1), torch.ones(len(SENTENCES), size, size))
    heads, rels = model.gold(SENTENCES)
    loss = model.loss(dist, rel_logits, heads, rels)
    assert loss.shape == (len(SENTENCES),) and bool(torch.isfinite(loss).all()) and bool((loss > 0).all())
    loss.sum().backward()
    for part in (model.arc.weight, model.rel.weight, model.root, model.encoder.bilstm.words.weight):
        assert part.grad is not None and bool(part.grad.abs().sum() > 0)
    if tree == "2o":
        assert model.sib.mod.linear.weight.grad.abs().sum() > 0
    predicted, predicted_rels = model.decode(dist, rel_logits)
    assert bool(is_tree(predicted, dist.lens, multiroot=False).all())
    if tree != "nonprojective":
        assert bool(projective(predicted, dist.lens).all())
    assert bool(((predicted_rels >= 0) == (predicted >= 0)).all())
    words, names = model.predict(SENTENCES)
    assert [len(w) for w in words] == [len(s) for s in SENTENCES] and set(sum(names, [])) <= set(RELS)


@pytest.mark.parametrize("tree", sorted(TREE_TYPES))
@pytest.mark.parametrize("multiroot", [False, True])
def test_parse_equals_decode_of_forward(tree, multiroot):
    """``parse`` scores relations only at the predicted arcs; it must agree with decoding the full output."""
    model = biaffine(tree, multiroot).eval()
    with torch.no_grad():
        dist, rel_logits = model(SENTENCES)
        heads, rels = model.decode(dist, rel_logits)
        x, _ = model.features(SENTENCES)
        model.rel._BLOCK = 5  # several blocks of words (the instance attribute shadows the class default)
        at = model.rel.at(x, heads)
        expected = rel_logits.gather(2, heads.clamp(min=0).view(*heads.shape, 1, 1).expand(-1, -1, 1, len(RELS)))
        torch.testing.assert_close(at, expected.squeeze(2), atol=1e-5, rtol=1e-5)
    fast_heads, fast_rels = model.parse(SENTENCES)
    assert torch.equal(fast_heads, heads) and torch.equal(fast_rels, rels)
    assert ParseModel(model).parse(SENTENCES)[0].tolist() == heads.tolist()


def test_sibling_scorer_decompositions():
    x = torch.randn(2, 5, 7)
    for rank in (None, 3):
        scorer = randomize(SiblingScorer(7, hidden=4, rank=rank))
        assert scorer(x).shape == (2, 5, 5, 5)
    full = randomize(SiblingScorer(7, hidden=4)).eval()
    mod, head, sib = full.mod(x), full.head(x), full.sib(x)
    one = torch.ones(2, 5, 1)
    expected = torch.einsum("bsi,ijk,bhj,bmk->bmhs", torch.cat([sib, one], -1), full.weight, head,
                            torch.cat([mod, one], -1))
    torch.testing.assert_close(full(x), expected)


@pytest.mark.parametrize("tree", sorted(TREE_TYPES))
def test_padded_batch_equals_single_sentences(tree):
    model = biaffine(tree).eval()
    with torch.no_grad():
        dist, rel_logits = model(SENTENCES)
        heads, rels = model.decode(dist, rel_logits)
        for b, s in enumerate(SENTENCES):
            alone, alone_rels = model([s])
            n = len(s) + 1
            torch.testing.assert_close(dist.log_partition[b:b + 1], alone.log_partition, atol=1e-5, rtol=1e-5)
            cut(dist.marginals[b:b + 1], alone.marginals, n)
            cut(rel_logits[b:b + 1], alone_rels, n)
            one_heads, one_rels = model.decode(alone, alone_rels)
            assert heads[b, :n].tolist() == one_heads[0].tolist() and rels[b, :n].tolist() == one_rels[0].tolist()


def test_gold_errors():
    model = biaffine("projective")
    with pytest.raises(ValueError, match="not in the parser's inventory"):
        model.gold([sentence("a b", [0, 1], "root unknownrel")])
    crossing = sentence("a b c d", [3, 4, 0, 3], "nsubj nsubj root nsubj")
    dist, rel_logits = model([crossing])
    with pytest.raises(ValueError, match="non-projective"):
        model.loss(dist, rel_logits, *model.gold([crossing]))
    nonprojective = biaffine("nonprojective")
    dist, rel_logits = nonprojective([crossing])
    assert torch.isfinite(nonprojective.loss(dist, rel_logits, *nonprojective.gold([crossing]))).all()
    with pytest.raises(ValueError, match="tree must be"):
        BiaffineParser("bilstm", RELS, "3o", vocab=VOCAB)
    with pytest.raises(ValueError, match="vocabulary"):
        BiaffineParser("bilstm", RELS, n_words=10, n_chars=10)(SENTENCES)


# ------------------------------------------------------------------------------------------- sequence labeling
def test_seqlabeling_parser_distribution_loss_and_padding():
    model = seqlabeler().eval()
    assert LABELS == sorted(LABELS) and (-3, RELS.index("root")) in LABELS  # "lives" is word 3 under the root
    dist = model(SENTENCES)
    assert type(dist) is MaxEnt and dist.potentials[0].shape == (len(SENTENCES), 7, len(LABELS))
    gold = model.gold(SENTENCES)
    loss = model.loss(dist, gold)
    assert bool(torch.isfinite(loss).all())
    # the only label of a one-word sentence pointing inside it is offset -1 (to the root)
    allowed = model.label_mask(dist.lens, 7)[1, 0]
    assert {model.labels[k][0] for k in allowed.nonzero().flatten().tolist()} == {-1}
    with torch.no_grad():
        for method in DECODERS:
            heads, rels = model.decode(dist, method)
            assert bool(is_tree(heads, dist.lens, multiroot=False).all())
            for b, s in enumerate(SENTENCES):
                alone = model([s])
                cut(dist.marginals[b:b + 1], alone.marginals, len(s))
                one_heads, one_rels = model.decode(alone, method)
                assert heads[b, :len(s) + 1].tolist() == one_heads[0].tolist()
                assert rels[b, :len(s) + 1].tolist() == one_rels[0].tolist()
    with pytest.raises(ValueError, match="outside the parser's inventory"):
        model.gold([sentence("a b c d e f g h", [8, 1, 2, 3, 4, 5, 6, 0], "nsubj " * 7 + "root")])


def random_tree(n, rng):
    """A random single-root tree over words 1..n (random attachment order)."""
    order = list(range(1, n + 1))
    rng.shuffle(order)
    heads = [0] * n
    for k, d in enumerate(order[1:], start=1):
        heads[d - 1] = rng.choice(order[:k])
    return heads


def test_repair_always_gives_valid_trees_and_keeps_valid_ones():
    rng = random.Random(0)
    np_rng = np.random.default_rng(0)
    for trial in range(400):
        n = rng.randint(1, 12)
        scores = np_rng.normal(size=(n + 1, n + 1)) if trial % 2 else None
        proposed = [rng.randint(-2, n + 2) for _ in range(n)]
        repaired = repair_tree(proposed, scores)
        heads = torch.tensor([[-1] + repaired])
        assert bool(is_tree(heads, torch.tensor([n]), multiroot=False)), (proposed, repaired)
        valid = random_tree(n, rng)
        assert repair_tree(valid, scores) == valid
    # the documented rule on a small case: two roots and a cycle
    assert repair_tree([0, 0, 4, 3]) == [0, 1, 2, 3]
    assert repair_tree([2, 1, 0]) == [3, 1, 0]


def test_seqlabeling_parser_rejects_bad_label_inventories():
    with pytest.raises(ValueError, match="needs its relations and labels"):
        SeqLabelingParser("bilstm", RELS, [], vocab=VOCAB, encoder_options=SMALL)
    for labels in ([(0, 0)], [(1, len(RELS))], [(1, -1)], [(1, 0), (-2, 1), (1, 0)]):
        with pytest.raises(ValueError, match="labels must be distinct"):
            SeqLabelingParser("bilstm", RELS, labels, vocab=VOCAB, encoder_options=SMALL)


def test_seqlabeling_arc_scores_match_a_direct_reading_of_the_labels():
    model = seqlabeler(3).eval()
    with torch.no_grad():
        dist = model(SENTENCES)
        scores, best_rel = model.arc_scores(dist)
    logp = dist.potentials[0].log_softmax(-1)
    for b, s in enumerate(SENTENCES):
        n = len(s)
        expressible = [(d, h) for d in range(1, n + 1) for h in range(n + 1) if h != d]
        for d, h in expressible:
            ks = [k for k, (o, _) in enumerate(model.labels) if o == h - d]
            if ks:
                best = max(ks, key=lambda k: float(logp[b, d - 1, k]))
                assert float(scores[b, d, h]) == pytest.approx(float(logp[b, d - 1, best]), abs=1e-6)
                assert int(best_rel[b, d, h]) == model.labels[best][1]
            else:  # no label expresses the arc: below every expressible arc of the sentence
                lowest = min(float(scores[b, x, y]) for x, y in expressible
                             if any(o == y - x for o, _ in model.labels))
                assert float(scores[b, d, h]) < lowest


def test_seqlabeling_decoding_keeps_valid_label_trees():
    model = seqlabeler()
    index = {label: k for k, label in enumerate(model.labels)}
    torch.manual_seed(1)
    for s in SENTENCES:
        logits = torch.randn(1, len(s), len(LABELS))
        for d, (h, r) in enumerate(zip(s.heads, s.deprels), start=1):
            logits[0, d - 1, index[(h - d, RELS.index(r))]] = 10.0
        dist = MaxEnt(logits, torch.tensor([len(s)]))
        for method in DECODERS:
            heads, rels = model.decode(dist, method)
            assert heads[0, 1:].tolist() == s.heads
            assert [RELS[r] for r in rels[0, 1:].tolist()] == s.deprels
    # random label sequences always decode to valid single-root trees
    for seed in range(20):
        generator = torch.Generator().manual_seed(seed)
        lens = torch.randint(1, 8, (3,), generator=generator)
        dist = MaxEnt(torch.randn(3, int(lens.max()), len(LABELS), generator=generator) * 5, lens)
        _, best_rel = model.arc_scores(dist)
        for method in DECODERS:
            heads, rels = model.decode(dist, method)
            assert bool(is_tree(heads, lens, multiroot=False).all())
            assert bool(((rels >= 0) == (heads >= 0)).all())
            # each arc's relation is the one arc_scores gives that arc (decoding reads it at the chosen heads only)
            at_heads = best_rel.gather(2, heads.clamp(min=0).unsqueeze(-1)).squeeze(-1)
            assert torch.equal(rels, torch.where(heads >= 0, at_heads, -1))
    # a batch of label trees (even sentences) and label sequences that are not trees: the shortcut for the former
    # changes nothing, the decoders get the latter
    lens = torch.tensor([len(s) for s in SENTENCES])
    logits = torch.randn(len(SENTENCES), int(lens.max()), len(LABELS), generator=torch.Generator().manual_seed(7)) * 3
    for b, s in enumerate(SENTENCES):
        if b % 2 == 0:
            for d, (h, r) in enumerate(zip(s.heads, s.deprels), start=1):
                logits[b, d - 1, index[(h - d, RELS.index(r))]] = 20.0
    dist = MaxEnt(logits, lens)
    for method in DECODERS:
        heads, rels = model.decode(dist, method)
        slow_heads, slow_rels = model._decode_trees(dist, method)
        assert torch.equal(heads, slow_heads) and torch.equal(rels, slow_rels)
        assert all(heads[b, 1:len(s) + 1].tolist() == s.heads for b, s in enumerate(SENTENCES) if b % 2 == 0)


def test_seqlabeling_eisner_decoder_gives_the_best_projective_tree():
    model = seqlabeler()
    index = {label: k for k, label in enumerate(model.labels)}
    # a non-projective label tree (arcs 3 -> 1 and 4 -> 2 cross): kept by mst and repair, not by eisner
    crossing = sentence("a b c d", [3, 4, 0, 3], "nsubj nsubj root punct")
    logits = torch.zeros(1, 4, len(LABELS))
    for d, (h, r) in enumerate(zip(crossing.heads, crossing.deprels), start=1):
        logits[0, d - 1, index[(h - d, RELS.index(r))]] = 10.0
    dist = MaxEnt(logits, torch.tensor([4]))
    for method in ("mst", "repair"):
        assert model.decode(dist, method)[0][0, 1:].tolist() == crossing.heads
    heads, _ = model.decode(dist, "eisner")
    assert heads[0, 1:].tolist() != crossing.heads and bool(projective(heads, dist.lens).all())
    # random label scores: a projective single-root tree scoring the projective maximum of the label-derived arcs
    for seed in range(20):
        generator = torch.Generator().manual_seed(seed)
        lens = torch.randint(1, 8, (4,), generator=generator)
        dist = MaxEnt(torch.randn(4, int(lens.max()), len(LABELS), generator=generator) * 4, lens)
        heads, rels = model.decode(dist, "eisner")
        assert bool((is_tree(heads, lens, multiroot=False) & projective(heads, lens)).all())
        scores, _ = model.arc_scores(dist)
        best = DependencyCRF(scores.double(), lens, multiroot=False)
        torch.testing.assert_close(best.score(heads), best.max)


# ------------------------------------------------------------------------------------------- saving
@pytest.mark.parametrize("kind", ["2o", "nonprojective", "seqlabeling"])
def test_save_load_round_trip(tmp_path, kind):
    model = (seqlabeler() if kind == "seqlabeling" else biaffine(kind)).eval()
    save_parser(model, tmp_path / kind)
    loaded = load_pretrained(tmp_path / kind)
    assert type(loaded) is type(model) and loaded.config == model.config
    assert loaded.vocab.words.items == VOCAB.words.items
    with torch.no_grad():
        before, after = model(SENTENCES), loaded(SENTENCES)
        if kind == "seqlabeling":
            assert torch.equal(before.potentials[0], after.potentials[0])
            assert loaded.predict(SENTENCES) == model.predict(SENTENCES)
        else:
            assert torch.equal(before[1], after[1]) and torch.equal(before[0].log_partition, after[0].log_partition)
            assert loaded.predict(SENTENCES) == model.predict(SENTENCES)


# ------------------------------------------------------------------------------------------- distillation
def test_structural_kd_from_second_order_teacher():
    teacher = biaffine("2o", seed=1).eval()
    with torch.no_grad():
        teacher_dist, teacher_rels = teacher(SENTENCES)
    for tree in ("projective", "nonprojective"):
        student = biaffine(tree, seed=2)
        dist, _ = student(SENTENCES)
        loss = structural_kd_loss(teacher_dist, dist)
        assert loss.shape == (len(SENTENCES),) and bool(torch.isfinite(loss).all()) and bool((loss >= -1e-4).all())
        loss.mean().backward()
        assert student.arc.weight.grad.abs().sum() > 0
    student = seqlabeler(seed=3)
    loss = structural_kd_loss(teacher_dist, student(SENTENCES), offsets=student.offsets,
                              rel_probs=teacher.rel_probs(teacher_rels))
    assert bool(torch.isfinite(loss).all()) and bool((loss >= -1e-4).all())
    loss.mean().backward()
    assert student.scorer.weight.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------- transformers
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    pytest.importorskip("transformers")
    from tiny_models import write_tiny_bert

    return write_tiny_bert(tmp_path_factory.mktemp("tiny_bert"), layers=2)


TRANSFORMER_SENTENCES = [
    sentence("john smith lives in new york .", [2, 3, 0, 6, 6, 3, 3], "flat nsubj root case compound obl punct"),
    sentence("hi", [0], "root"),
    sentence("paris is unbelievable", [3, 3, 0], "nsubj cop root"),
]


def test_transformer_parsers(tiny, tmp_path):
    torch.manual_seed(0)
    parser = BiaffineParser(tiny, RELS, "2o", arc_hidden=8, rel_hidden=6, sib_hidden=5, sib_rank=4)
    for module in (parser.arc, parser.rel, parser.sib):
        randomize(module)
    labeler = SeqLabelingParser(tiny, RELS, LABELS, dropout=0.1)
    parser.eval()
    labeler.eval()
    with torch.no_grad():
        dist, rel_logits = parser(TRANSFORMER_SENTENCES)
        labels = labeler(TRANSFORMER_SENTENCES)
        assert type(dist) is Dependency2oCRF and type(labels) is MaxEnt
        heads, _ = parser.decode(dist, rel_logits)
        assert bool(is_tree(heads, dist.lens, multiroot=False).all() and projective(heads, dist.lens).all())
        for b, s in enumerate(TRANSFORMER_SENTENCES):
            alone, alone_rels = parser([s])
            n = len(s) + 1
            torch.testing.assert_close(dist.log_partition[b:b + 1], alone.log_partition, atol=1e-5, rtol=1e-5)
            cut(rel_logits[b:b + 1], alone_rels, n)
            cut(labels.marginals[b:b + 1], labeler([s]).marginals, len(s))
    parser.train()
    dist, rel_logits = parser(TRANSFORMER_SENTENCES)
    loss = parser.loss(dist, rel_logits, *parser.gold(TRANSFORMER_SENTENCES))
    loss.sum().backward()
    assert parser.encoder.transformer.input_embeddings.grad.abs().sum() > 0
    kd = structural_kd_loss(dist, labeler(TRANSFORMER_SENTENCES), offsets=labeler.offsets,
                            rel_probs=parser.rel_probs(rel_logits).detach())
    assert bool(torch.isfinite(kd).all())
    parser.eval()
    for name, model in (("parser", parser), ("labeler", labeler)):
        save_parser(model, tmp_path / name)
        loaded = load_pretrained(tmp_path / name)
        assert loaded.predict(TRANSFORMER_SENTENCES) == model.predict(TRANSFORMER_SENTENCES)
