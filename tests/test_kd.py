"""Structural KD for chains and spans against brute-force cross-entropies; the KD toolbox."""

import itertools
import math
from types import SimpleNamespace

import brute
import numpy as np
import pytest
import torch

from structkd.kd import (
    AnnealingKD,
    HiddenStateKD,
    attention_kd_loss,
    build_span_tag_map,
    interpolate,
    kd_teacher_marginals,
    local_temperature,
    mix_embeddings,
    posterior_kd_loss,
    project,
    register_projection,
    sample_mixup,
    seqlevel_kd_loss,
    span_tag_marginals,
    structural_kd_loss,
    structural_kd_loss_from_marginals,
    supported_pairs,
    teacher_annealing,
    token_kd_loss,
    topk_kd_loss,
    uniform_layer_map,
)
from structkd.numerics import forbidden_mass_tolerance, is_impossible
from structkd.schemes import allowed_transitions, tag_inventory, tags_from_spans
from structkd.structs.chain import LinearChainCRF, MaxEnt
from structkd.structs.semimarkov import SemiMarkovCRF

SEQ_LEN = 4


def chain_params(seed, n_tags, batch=3, seq_len=SEQ_LEN):
    g = torch.Generator().manual_seed(seed)
    em = torch.randn(batch, seq_len, n_tags, generator=g, dtype=torch.float64)
    tr = torch.randn(n_tags, n_tags, generator=g, dtype=torch.float64)
    start = torch.randn(n_tags, generator=g, dtype=torch.float64)
    end = torch.randn(n_tags, generator=g, dtype=torch.float64)
    return em, tr, start, end


LENS = torch.tensor([4, 2, 0])


def make(kind, params, lens=LENS):
    em, tr, start, end = params
    if kind == "crf":
        return LinearChainCRF(em, tr, lens, start, end)
    return MaxEnt(em, lens)


def all_tags(n, n_tags, seq_len=SEQ_LEN):
    ys = list(brute.tag_sequences(n, n_tags))
    out = torch.zeros(len(ys), seq_len, dtype=torch.long)
    for r, y in enumerate(ys):
        out[r, :n] = torch.tensor(y, dtype=torch.long)
    return ys, out


def student_log_probs(kind, params, b, tags):
    """log P_S(y) for every row of ``tags`` for sentence ``b`` (differentiable in params)."""
    em, tr, start, end = params
    k = tags.shape[0]
    one = tuple(x for x in (em[b:b + 1].expand(k, -1, -1), tr, start, end))
    return make(kind, one, LENS[b:b + 1].expand(k)).log_prob(tags)


def brute_ce(teacher_probs, kind, params, b, tags):
    return -(teacher_probs * student_log_probs(kind, params, b, tags)).sum()


@pytest.mark.parametrize("teacher_kind,student_kind", [("crf", "crf"), ("crf", "maxent"), ("maxent", "crf"),
                                                       ("maxent", "maxent")])
def test_chain_pairs_equal_brute_force_with_gradients(teacher_kind, student_kind):
    n_tags = 3
    t_params = chain_params(0, n_tags)
    s_params = tuple(p.clone().requires_grad_() for p in chain_params(1, n_tags))
    teacher = make(teacher_kind, t_params)
    student = make(student_kind, s_params)
    loss = structural_kd_loss(teacher, student)
    grads = torch.autograd.grad(loss.sum(), s_params[0])[0]
    for b in range(3):
        n = int(LENS[b])
        _, tags = all_tags(n, n_tags)
        t_probs = make(teacher_kind, tuple(x for x in (t_params[0][b:b + 1].expand(len(tags), -1, -1),
                                                      *t_params[1:])), LENS[b:b + 1].expand(len(tags))) \
            .log_prob(tags).exp().detach()
        expected = brute_ce(t_probs, student_kind, s_params, b, tags)
        assert loss[b].item() == pytest.approx(expected.item(), abs=1e-10)
        expected_grad = torch.autograd.grad(expected, s_params[0])[0]
        torch.testing.assert_close(grads[b], expected_grad[b])


def test_case1_minimum_is_teacher_entropy():
    params = chain_params(2, 3)
    teacher = make("crf", params)
    student_params = tuple(p.clone().requires_grad_() for p in params)
    student = make("crf", student_params)
    loss = structural_kd_loss(teacher, student)
    torch.testing.assert_close(loss.detach(), teacher.entropy)
    grads = torch.autograd.grad(loss.sum(), student_params)
    for g in grads:
        assert g.abs().max() < 1e-10  # a stationary point: the minimum of the cross-entropy
    other = make("crf", chain_params(3, 3))
    assert (structural_kd_loss(teacher, other) >= teacher.entropy - 1e-10).all()


@pytest.mark.parametrize("pair", [("crf", "crf"), ("maxent", "crf")])
def test_padding_invariance(pair):
    t_params, s_params = chain_params(4, 3, batch=3, seq_len=6), chain_params(5, 3, batch=3, seq_len=6)
    lens = torch.tensor([6, 3, 1])
    batch = structural_kd_loss(make(pair[0], t_params, lens), make(pair[1], s_params, lens))
    for b in range(3):
        n = int(lens[b])
        def cut(p, b=b, n=n):
            return (p[0][b:b + 1, :n], *p[1:])
        alone = structural_kd_loss(make(pair[0], cut(t_params), lens[b:b + 1]),
                                   make(pair[1], cut(s_params), lens[b:b + 1]))
        torch.testing.assert_close(batch[b:b + 1], alone)


# ------------------------------------------------------------------------------------------ case 4
SPAN_LABELS = ["O", "PER", "LOC"]


def span_teacher(seed, lens, seq_len=SEQ_LEN):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(len(lens), seq_len, seq_len, 3, generator=g, dtype=torch.float64)
    wide = ~torch.eye(seq_len, dtype=torch.bool)
    scores[..., 0] = scores[..., 0].masked_fill(wide, -1e12)  # O covers single tokens only
    return scores, SemiMarkovCRF(scores, lens)


@pytest.mark.parametrize("scheme", ["BIO", "BIOES"])
@pytest.mark.parametrize("student_kind", ["crf", "maxent"])
def test_span_teacher_to_tagger_equals_brute_force(scheme, student_kind):
    tags = tag_inventory(["PER", "LOC"], scheme)
    index = {t: i for i, t in enumerate(tags)}
    scores, teacher = span_teacher(6, LENS)
    s_params = tuple(p.clone().requires_grad_() for p in chain_params(7, len(tags)))
    student = make(student_kind, s_params)
    options = dict(span_labels=SPAN_LABELS, tags=tags, scheme=scheme)
    loss = structural_kd_loss(teacher, student, **options)
    grads = torch.autograd.grad(loss.sum(), s_params[0])[0]
    for b in range(3):
        n = int(LENS[b])
        segs = [y for y in brute.segmentations(n, 3) if all(label or i == j for i, j, label in y)]
        probs = brute.probabilities(segs, lambda y, b=b: sum(float(scores[b, i, j, c]) for i, j, c in y))
        seq = torch.zeros(len(segs), SEQ_LEN, dtype=torch.long)
        for r, y in enumerate(segs):
            names = tags_from_spans([(i, j, SPAN_LABELS[c]) for i, j, c in y if c], n, scheme)
            seq[r, :n] = torch.tensor([index[t] for t in names], dtype=torch.long)
        expected = brute_ce(torch.tensor(probs, dtype=torch.float64), student_kind, s_params, b, seq)
        assert loss[b].item() == pytest.approx(expected.item(), abs=1e-9)
        torch.testing.assert_close(grads[b], torch.autograd.grad(expected, s_params[0])[0][b])


@pytest.mark.parametrize("cached", [False, True])
def test_float32_span_teacher_keeps_zeros_for_a_constrained_bioes_student(cached):
    """Issue #23.3: the tags and tag pairs a span teacher cannot produce (I-X or B-X last, I-X or E-X first,
    O -> I-X, ...) get exactly 0 in float32 and no marginal is negative, so a constrained BIOES student (the NER
    default) trains without tripping the forbidden-mass check, also from float16 cached marginals."""
    labels = ["O", "PER", "LOC", "ORG"]
    tags = tag_inventory(labels[1:], "BIOES")
    allowed, allowed_start, allowed_end = allowed_transitions(tags, "BIOES")
    seq_len = 60
    for seed in range(4):
        g = torch.Generator().manual_seed(seed)
        scores = 3 * torch.randn(4, seq_len, seq_len, len(labels), generator=g)
        scores[..., 0] = scores[..., 0].masked_fill(~torch.eye(seq_len, dtype=torch.bool), -1e12)
        lens = torch.randint(2, seq_len + 1, (4,), generator=g)
        lens[0] = seq_len
        teacher = SemiMarkovCRF(scores, lens)
        em = torch.randn(4, seq_len, len(tags), generator=g, requires_grad=True)
        student = LinearChainCRF(em, torch.zeros(len(tags), len(tags)), lens, allowed=allowed,
                                 allowed_start=allowed_start, allowed_end=allowed_end)
        options = dict(span_labels=labels, tags=tags, scheme="BIOES")
        unary, edges = project(teacher, student, **options)
        assert unary.min() >= 0 and edges.min() >= 0
        assert not edges[:, :, ~allowed].any()
        assert not unary[:, 0, ~allowed_start].any()
        assert not unary[torch.arange(4), lens - 1][:, ~allowed_end].any()
        same_marginals = SimpleNamespace(marginals=teacher.marginals.double())  # the projection's own rounding
        exact, _ = span_tag_marginals(same_marginals, build_span_tag_map(labels, tags, "BIOES"), pairs=False)
        torch.testing.assert_close(unary.double(), exact, atol=1e-7, rtol=1e-5)
        if cached:
            loss = structural_kd_loss_from_marginals((unary.half(), edges.half()), student)
        else:
            loss = structural_kd_loss(teacher, student, **options)
        assert torch.isfinite(loss).all()


def test_span_projection_errors_are_clear():
    _, teacher = span_teacher(1, LENS)
    student = MaxEnt(torch.zeros(3, SEQ_LEN, 5), LENS)
    with pytest.raises(ValueError, match="label sets differ"):
        project(teacher, student, span_labels=SPAN_LABELS, tags=tag_inventory(["PER", "ORG"], "BIO"), scheme="BIO")
    with pytest.raises(ValueError, match="IOB1"):
        project(teacher, student, span_labels=SPAN_LABELS, tags=tag_inventory(["PER", "LOC"], "BIO"), scheme="IOB1")
    with pytest.raises(ValueError, match="lengths"):
        project(teacher, MaxEnt(torch.zeros(3, SEQ_LEN, 5)), span_labels=SPAN_LABELS,
                tags=tag_inventory(["PER", "LOC"], "BIO"), scheme="BIO")


# ------------------------------------------------------------------------------------------ registry and errors
def test_unsupported_pair_lists_supported_ones():
    _, teacher = span_teacher(1, LENS)
    other = SemiMarkovCRF(torch.zeros(3, SEQ_LEN, SEQ_LEN, 3), LENS)
    with pytest.raises(TypeError, match="LinearChainCRF -> LinearChainCRF"):
        structural_kd_loss(teacher, other)
    assert ("SemiMarkovCRF", "MaxEnt") in supported_pairs()


def test_registry_is_extensible():
    class MySpans(SemiMarkovCRF):
        """A user-defined structure type."""

    @register_projection(MySpans, MySpans)
    def same(teacher, student):
        return teacher.part_marginals()

    scores, _ = span_teacher(2, LENS)
    teacher, student = MySpans(scores, LENS), MySpans(scores * 0.5, LENS)
    torch.testing.assert_close(structural_kd_loss(teacher, student), teacher.cross_entropy(student))


def test_mismatched_labels_and_lengths_raise():
    teacher = make("crf", chain_params(0, 3))
    with pytest.raises(ValueError, match="3 tags but student has 4"):
        structural_kd_loss(teacher, make("crf", chain_params(0, 4)))
    with pytest.raises(ValueError, match="lengths"):
        structural_kd_loss(teacher, make("crf", chain_params(0, 3), torch.tensor([4, 3, 0])))


def test_student_constraints_forbidding_teacher_mass_raise_or_are_dropped():
    labels = ["O", "B-PER", "I-PER"]
    allowed, allowed_start, _ = allowed_transitions(labels, "BIO")
    teacher = make("maxent", chain_params(0, 3))
    em, tr, start, end = chain_params(1, 3)
    student = LinearChainCRF(em, tr, LENS, start, end, allowed=allowed, allowed_start=allowed_start)
    with pytest.raises(ValueError, match="forbids"):
        structural_kd_loss(teacher, student)
    loss = structural_kd_loss(teacher, student, impossible="ignore")
    assert torch.isfinite(loss).all() and loss.abs().max() < 1e3


# ------------------------------------------------------------------------------------------ temperature, teachers
def test_global_temperature_is_cross_entropy_at_t():
    t_params, s_params = chain_params(8, 3), chain_params(9, 3)
    temp = 2.5
    loss = structural_kd_loss(make("crf", t_params), make("crf", s_params), temperature=temp)
    cooled = lambda p: tuple(x / temp for x in p)  # noqa: E731
    expected = make("crf", cooled(t_params)).cross_entropy(make("crf", cooled(s_params))) * temp**2
    torch.testing.assert_close(loss, expected)
    no_scaling = structural_kd_loss(make("crf", t_params), make("crf", s_params), temperature=temp, t2_scaling=False)
    torch.testing.assert_close(no_scaling * temp**2, loss)


def test_local_temperature_hand_computed():
    m = torch.tensor([[[0.8, 0.2, 0.0]]], dtype=torch.float64)
    (out,) = local_temperature((m,), 2.0, [1])
    a, b = math.sqrt(0.8), math.sqrt(0.2)
    torch.testing.assert_close(out, torch.tensor([[[a / (a + b), b / (a + b), 0.0]]], dtype=torch.float64))
    teacher, student = make("maxent", chain_params(0, 3)), make("maxent", chain_params(1, 3))
    loss = structural_kd_loss(teacher, student, temperature=2.0, temperature_mode="local", t2_scaling=False)
    (tempered,) = local_temperature((teacher.marginals,), 2.0, [1])
    expected = -(tempered * student.potentials[0].log_softmax(-1)).sum((-1, -2))
    torch.testing.assert_close(loss, expected)


def test_multiple_teachers_distill_their_mixture():
    t1, t2 = make("crf", chain_params(10, 3)), make("crf", chain_params(11, 3))
    s_params = chain_params(12, 3)
    student = make("crf", s_params)
    loss = structural_kd_loss([t1, t2], student, teacher_weights=[3, 1])
    for b in range(3):
        n = int(LENS[b])
        _, tags = all_tags(n, 3)
        p1 = torch.stack([t1.log_prob(torch.where(torch.arange(3).view(3, 1) == b, row, t1.argmax))[b]
                          for row in tags]).exp()
        p2 = torch.stack([t2.log_prob(torch.where(torch.arange(3).view(3, 1) == b, row, t2.argmax))[b]
                          for row in tags]).exp()
        expected = brute_ce(0.75 * p1 + 0.25 * p2, "crf", s_params, b, tags)
        assert loss[b].item() == pytest.approx(expected.item(), abs=1e-10)


def test_loss_from_cached_marginals_matches():
    teacher, student = make("crf", chain_params(0, 3)), make("crf", chain_params(1, 3))
    cached = tuple(m.to(torch.float16) for m in project(teacher, student))
    torch.testing.assert_close(structural_kd_loss_from_marginals(cached, student),
                               structural_kd_loss(teacher, student), atol=5e-3, rtol=1e-3)


# ------------------------------------------------------------------------------------------ schedules
def test_interpolation_and_teacher_annealing_values():
    kd, gold = torch.tensor([2.0]), torch.tensor([10.0])
    assert interpolate(kd, gold, 0.25).item() == pytest.approx(0.25 * 2 + 0.75 * 10)
    assert teacher_annealing(0, 100) == 1.0
    assert teacher_annealing(25, 100) == pytest.approx(0.75)
    assert teacher_annealing(100, 100) == 0.0
    assert teacher_annealing(50, 100, start=0.9, end=0.1) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        interpolate(kd, gold, 1.5)


def test_annealing_kd_schedule_and_loss():
    sched = AnnealingKD(tau_max=4, phase1_steps=100)
    assert [sched.temperature(s) for s in (0, 24, 25, 50, 75, 99)] == [4, 4, 3, 2, 1, 1]
    assert sched.scale(0) == pytest.approx(1 - 3 / 4) and sched.scale(99) == 1.0
    assert sched.phase(99) == 1 and sched.phase(100) == 2
    student = torch.tensor([[[1.0, 2.0], [0.0, 0.0]]])
    teacher = torch.tensor([[[4.0, 4.0], [9.0, 9.0]]])
    mask = torch.tensor([[True, False]])
    # step 0: phi = 0.25, target (1, 1): (1-1)^2 + (2-1)^2 = 1
    assert sched.loss(student, teacher, mask, 0).item() == pytest.approx(1.0)


# ------------------------------------------------------------------------------------------ baselines
def test_token_kd_matches_kl_div():
    g = torch.Generator().manual_seed(0)
    t, s = torch.randn(2, 3, 4, generator=g), torch.randn(2, 3, 4, generator=g)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    loss = token_kd_loss(t, s, mask, temperature=2.0)
    kl = torch.nn.functional.kl_div((s / 2).log_softmax(-1), (t / 2).log_softmax(-1), log_target=True,
                                    reduction="none").sum(-1)
    torch.testing.assert_close(loss, (kl * mask).sum(-1) * 4)


def test_posterior_kd_matches_brute_force():
    teacher, student_params = make("crf", chain_params(0, 3)), tuple(p.requires_grad_() for p in chain_params(1, 3))
    student = make("crf", student_params)
    loss = posterior_kd_loss(teacher, student)
    t, s = teacher.marginals, student.marginals
    expected = (t * (t.clamp(min=1e-300).log() - s.clamp(min=1e-300).log())).sum((-1, -2))
    torch.testing.assert_close(loss.detach(), expected)
    loss.sum().backward()
    assert torch.isfinite(student_params[0].grad).all() and student_params[0].grad.abs().sum() > 0


@pytest.mark.parametrize("weighted", [False, True])
def test_topk_and_seqlevel_match_brute_force(weighted):
    teacher, student = make("crf", chain_params(0, 2)), make("maxent", chain_params(1, 2))
    k = 3
    loss = topk_kd_loss(teacher, student, k, weighted=weighted)
    for b in range(3):
        n = int(LENS[b])
        ys = list(itertools.product(range(2), repeat=n))
        em, tr, start, end = chain_params(0, 2)

        def score(y, b=b, em=em, tr=tr, start=start, end=end):
            if not y:
                return 0.0
            return float(sum(em[b, i, t] for i, t in enumerate(y)) + sum(tr[a, c] for a, c in zip(y, y[1:]))
                         + start[y[0]] + end[y[-1]])
        best = sorted(ys, key=score, reverse=True)[:k]
        w = np.array([math.exp(score(y)) for y in best]) if weighted else np.ones(len(best))
        w = w / w.sum()
        s_em = chain_params(1, 2)[0]
        nll = [-sum(float(s_em[b, i].log_softmax(-1)[t]) for i, t in enumerate(y)) for y in best]
        assert loss[b].item() == pytest.approx(float(np.dot(w, nll)), abs=1e-9)
    seq = seqlevel_kd_loss(teacher, student)
    torch.testing.assert_close(seq, -student.log_prob(teacher.argmax))


# ------------------------------------------------------------------------------------------ representations, mixup
def test_hidden_state_kd():
    layer_map = uniform_layer_map(2, 6)
    assert layer_map == [(0, 0), (1, 3), (2, 6)]
    kd = HiddenStateKD(4, 4, layer_map)
    for proj in kd.projections:
        with torch.no_grad():
            proj.weight.copy_(torch.eye(4))
            proj.bias.zero_()
    hidden = [torch.randn(2, 3, 4) for _ in range(7)]
    student = [hidden[0], hidden[3], hidden[6]]
    mask = torch.tensor([[True, True, False], [True, False, False]])
    torch.testing.assert_close(kd(student, hidden, mask), torch.zeros(2))
    shifted = [h + 1.0 for h in student]
    torch.testing.assert_close(kd(shifted, hidden, mask), torch.full((2,), 3.0))


def test_attention_kd_hand_computed():
    t = torch.tensor([[[[0.5, 0.5], [1.0, 0.0]]]])
    s = torch.tensor([[[[0.25, 0.75], [1.0, 0.0]]]])
    mask = torch.tensor([[True, True]])
    expected = (0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)) / 2
    assert attention_kd_loss([s], [t], mask, [(0, 0)]).item() == pytest.approx(expected, abs=1e-6)


def test_mixup_embeddings():
    emb = torch.arange(2 * 3 * 1, dtype=torch.float32).view(2, 3, 1)
    lens = torch.tensor([3, 1])
    mixed, mixed_lens = mix_embeddings(emb, lens, 0.75, torch.tensor([1, 0]))
    assert mixed_lens.tolist() == [3, 3]
    torch.testing.assert_close(mixed[0, :, 0], torch.tensor([0.75 * 0 + 0.25 * 3, 0.75 * 1, 0.75 * 2]))
    lam, perm = sample_mixup(8, 0.4, np.random.default_rng(0))
    assert lam.shape == (8,) and ((lam >= 0) & (lam <= 1)).all() and sorted(perm.tolist()) == list(range(8))


def test_forbidden_mass_tolerance_follows_the_stored_dtype():
    """Cached float16 marginals carry rounding on the order of 1e-3: that much mass on forbidden parts is
    rounding, refused in float32 (issue #23 item 3); a real violation is refused in any dtype."""
    labels = ["O", "B-PER", "I-PER"]
    allowed, allowed_start, _ = allowed_transitions(labels, "BIO")
    em, tr, start, end = chain_params(1, 3)
    student = LinearChainCRF(em, tr, LENS, start, end, allowed=allowed, allowed_start=allowed_start)
    t_em, t_tr, _, _ = chain_params(0, 3)
    teacher = LinearChainCRF(t_em, t_tr, LENS, allowed=allowed, allowed_start=allowed_start)
    marginals = kd_teacher_marginals(teacher, student)
    banned = [is_impossible(p.detach()) for p in student.potentials]

    def noisy(amount, dtype):
        return tuple((m + amount * b.to(m.dtype) / b.flatten(1).sum(-1).clamp(min=1).view(-1, *[1] * (b.dim() - 1)))
                     .to(dtype) for m, b in zip(marginals, banned))

    exact = structural_kd_loss_from_marginals(noisy(0.0, torch.float16), student)
    torch.testing.assert_close(structural_kd_loss_from_marginals(noisy(5e-4, torch.float16), student), exact)
    with pytest.raises(ValueError, match="forbids"):
        structural_kd_loss_from_marginals(noisy(5e-4, torch.float32), student)
    with pytest.raises(ValueError, match="forbids"):
        structural_kd_loss_from_marginals(noisy(0.05, torch.float16), student)
    assert forbidden_mass_tolerance(torch.float64) == forbidden_mass_tolerance(torch.float32) == 1e-6


def test_token_kd_from_the_cache_applies_the_temperature_once():
    """A teacher distilled into itself has zero token-KD loss at any temperature: the cache holds its own
    scores and the loss divides both sides by T (they were divided twice, a teacher at T^2)."""
    from structkd.data import Sentence
    from structkd.kd.config import KdConfig
    from structkd.ner.config import ModelConfig
    from structkd.ner.distillation import compute_teacher_outputs, kd_loss
    from structkd.ner.modeling import build_model

    torch.manual_seed(0)
    sentences = [Sentence("John lives in Paris".split(), ["B-PER", "O", "O", "B-LOC"]), Sentence(["Hi"], ["O"])]
    tags = ["O", "B-LOC", "B-PER", "I-LOC", "I-PER"]
    model = build_model(ModelConfig(word_dim=8, hidden=8, char_filters=4), tags, "BIO", sentences).eval()
    for temperature in (1.0, 2.0):
        kd = KdConfig(method="token", temperature=temperature)
        rows = compute_teacher_outputs(model, sentences, kd, "crf", tags, "BIO")
        cached = {"logits": torch.nn.utils.rnn.pad_sequence([r["logits"] for r in rows], batch_first=True)}
        with torch.no_grad():
            loss = kd_loss(kd, model(sentences), cached)
        assert float(loss.abs().max()) < 1e-4, temperature
