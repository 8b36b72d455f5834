"""LinearChainCRF and MaxEnt against brute-force enumeration, invariants and the peers."""

import math

import brute
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from structkd import LOG_ZERO
from structkd.schemes import allowed_transitions
from structkd.structs.chain import LinearChainCRF, MaxEnt

N_TAGS = 3
SEQ_LEN = 4


def random_chain(seed, batch=4, seq_len=SEQ_LEN, n_tags=N_TAGS, per_position=False, dtype=torch.float64, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    em = torch.randn(batch, seq_len, n_tags, generator=g, dtype=dtype) * scale
    if per_position:
        tr = torch.randn(batch, max(seq_len - 1, 0), n_tags, n_tags, generator=g, dtype=dtype) * scale
    else:
        tr = torch.randn(n_tags, n_tags, generator=g, dtype=dtype) * scale
    start = torch.randn(n_tags, generator=g, dtype=dtype) * scale
    end = torch.randn(n_tags, generator=g, dtype=dtype) * scale
    lens = torch.randint(0, seq_len + 1, (batch,), generator=g)
    lens[0] = seq_len
    return em, tr, start, end, lens


def chain_scorer(em, tr, start, end, b, n, allowed=None, allowed_start=None, allowed_end=None):
    def score(y):
        if n == 0:
            return 0.0
        total = sum(float(em[b, i, y[i]]) for i in range(n)) + float(start[y[0]]) + float(end[y[-1]])
        for i in range(1, n):
            t = tr[y[i - 1], y[i]] if tr.dim() == 2 else tr[b, i - 1, y[i - 1], y[i]]
            total += float(t)
            if allowed is not None and not allowed[y[i - 1], y[i]]:
                total += LOG_ZERO
        if allowed_start is not None and not allowed_start[y[0]]:
            total += LOG_ZERO
        if allowed_end is not None and not allowed_end[y[-1]]:
            total += LOG_ZERO
        return total
    return score


def brute_chain(score, n, n_tags, seq_len):
    ys = [y for y in brute.tag_sequences(n, n_tags) if score(y) > LOG_ZERO / 2]
    probs = brute.probabilities(ys, score)
    unary = torch.zeros(seq_len, n_tags, dtype=torch.float64)
    edges = torch.zeros(max(seq_len - 1, 0), n_tags, n_tags, dtype=torch.float64)
    for p, y in zip(probs, ys):
        for i, t in enumerate(y):
            unary[i, t] += p
            if i:
                edges[i - 1, y[i - 1], t] += p
    return ys, unary, edges


@pytest.mark.parametrize("per_position", [False, True])
@pytest.mark.parametrize("seed", range(3))
def test_chain_matches_brute_force(seed, per_position):
    em, tr, start, end, lens = random_chain(seed, per_position=per_position)
    dist = LinearChainCRF(em, tr, lens, start, end)
    samples = dist.sample(4000, torch.Generator().manual_seed(seed))
    topk = dist.topk(5)
    for b in range(em.shape[0]):
        n = int(lens[b])
        score = chain_scorer(em, tr, start, end, b, n)
        ys, unary, edges = brute_chain(score, n, N_TAGS, SEQ_LEN)
        assert dist.log_partition[b].item() == pytest.approx(brute.log_partition(ys, score), abs=1e-10)
        torch.testing.assert_close(dist.marginals[b], unary)
        torch.testing.assert_close(dist.edge_marginals[b], edges)
        assert dist.entropy[b].item() == pytest.approx(brute.entropy(ys, score), abs=1e-10)
        ranked = sorted((score(y) for y in ys), reverse=True)
        assert dist.max[b].item() == pytest.approx(ranked[0], abs=1e-10)
        expected_k = ranked[:5] + [LOG_ZERO] * (5 - len(ranked[:5]))
        assert dist.kmax(5)[:, b].tolist() == pytest.approx(expected_k, abs=1e-9)
        for r in range(min(5, len(ys))):
            y = tuple(topk[r, b, :n].tolist())
            assert score(y) == pytest.approx(ranked[r], abs=1e-9)
            assert (topk[r, b, n:] == -1).all()
        if n:
            freq = torch.nn.functional.one_hot(samples[:, b, :n], N_TAGS).double().mean(0)
            assert (freq - unary[:n]).abs().max() < 0.04
        assert (samples[:, b, n:] == -1).all()
    assert torch.allclose(dist.score(dist.argmax), dist.max)


def test_probabilities_sum_to_one_and_log_prob():
    em, tr, start, end, lens = random_chain(7)
    dist = LinearChainCRF(em, tr, lens, start, end)
    for b in range(em.shape[0]):
        n = int(lens[b])
        ys = list(brute.tag_sequences(n, N_TAGS))
        tags = torch.full((len(ys), em.shape[0], SEQ_LEN), 0, dtype=torch.long)
        for r, y in enumerate(ys):
            tags[r, b, :n] = torch.tensor(y, dtype=torch.long)
        total = sum(math.exp(dist.log_prob(tags[r])[b].item()) for r in range(len(ys)))
        assert total == pytest.approx(1.0, abs=1e-10)


def test_cross_entropy_and_kl_match_brute_force():
    em, tr, start, end, lens = random_chain(3)
    em2, tr2, start2, end2, _ = random_chain(4)
    p = LinearChainCRF(em, tr, lens, start, end)
    q = LinearChainCRF(em2, tr2, lens, start2, end2)
    for b in range(em.shape[0]):
        n = int(lens[b])
        sp = chain_scorer(em, tr, start, end, b, n)
        sq = chain_scorer(em2, tr2, start2, end2, b, n)
        ys = list(brute.tag_sequences(n, N_TAGS))
        ce = brute.cross_entropy(ys, sp, sq)
        assert p.cross_entropy(q)[b].item() == pytest.approx(ce, abs=1e-10)
        assert p.kl(q)[b].item() == pytest.approx(ce - brute.entropy(ys, sp), abs=1e-10)
    assert torch.allclose(p.kl(p), torch.zeros_like(p.kl(p)), atol=1e-10)


def test_constraints_match_brute_force():
    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    allowed, allowed_start, allowed_end = allowed_transitions(labels, "BIOES" if False else "BIO")
    em, tr, start, end, lens = random_chain(5, n_tags=len(labels))
    dist = LinearChainCRF(em, tr, lens, start, end, allowed=allowed, allowed_start=allowed_start,
                          allowed_end=allowed_end)
    for b in range(em.shape[0]):
        n = int(lens[b])
        score = chain_scorer(em, tr, start, end, b, n, allowed, allowed_start, allowed_end)
        ys, unary, edges = brute_chain(score, n, len(labels), SEQ_LEN)
        assert dist.log_partition[b].item() == pytest.approx(brute.log_partition(ys, score), abs=1e-10)
        torch.testing.assert_close(dist.marginals[b], unary)
        torch.testing.assert_close(dist.edge_marginals[b], edges)
    # no illegal transition is ever decoded or sampled
    for tags in [dist.argmax, *dist.topk(4), *dist.sample(50)]:
        for b in range(em.shape[0]):
            seq = [labels[t] for t in tags[b].tolist() if t >= 0]
            assert all(not (cur.startswith("I-") and prev[2:] != cur[2:]) for prev, cur in zip(["O"] + seq, seq))


@pytest.mark.parametrize("cls", ["crf", "maxent"])
def test_padding_invariance(cls):
    em, tr, start, end, lens = random_chain(11, batch=5, seq_len=6)
    build = (lambda e, n: LinearChainCRF(e, tr, n, start, end)) if cls == "crf" else (lambda e, n: MaxEnt(e, n))
    batch = build(em, lens)
    for b in range(em.shape[0]):
        n = int(lens[b])
        alone = build(em[b:b + 1, :n], lens[b:b + 1])
        torch.testing.assert_close(batch.log_partition[b:b + 1], alone.log_partition)
        torch.testing.assert_close(batch.marginals[b:b + 1, :n], alone.marginals)
        assert (batch.marginals[b, n:] == 0).all()
        assert torch.equal(batch.argmax[b:b + 1, :n], alone.argmax)
        torch.testing.assert_close(batch.kmax(3)[:, b:b + 1], alone.kmax(3))


def test_gradients_match_finite_differences_and_marginals():
    em, tr, start, end, lens = random_chain(2, batch=3)
    em.requires_grad_()
    tr.requires_grad_()
    assert torch.autograd.gradcheck(lambda e, t: LinearChainCRF(e, t, lens, start, end).log_partition, (em, tr))
    dist = LinearChainCRF(em, tr, lens, start, end)
    dist.log_partition.sum().backward()
    torch.testing.assert_close(em.grad, dist.marginals)
    torch.testing.assert_close(tr.grad, dist.edge_marginals.sum((0, 1)))


def test_differentiable_marginals():
    em, tr, start, end, lens = random_chain(8, batch=3)
    em.requires_grad_()
    dist = LinearChainCRF(em, tr, lens, start, end)
    unary, edges = dist.part_marginals(differentiable=True)
    assert unary.requires_grad
    torch.testing.assert_close(unary.detach(), dist.marginals)
    torch.testing.assert_close(edges.detach(), dist.edge_marginals)
    assert torch.autograd.gradcheck(lambda e: LinearChainCRF(e, tr, lens, start, end).part_marginals(True)[0], (em,))
    # the entropy gradient goes through the marginals: compare with finite differences
    assert torch.autograd.gradcheck(lambda e: LinearChainCRF(e, tr, lens, start, end).entropy, (em,))


def test_detached_marginals_build_no_graph():
    em, tr, start, end, lens = random_chain(8, batch=3)
    em.requires_grad_()
    dist = LinearChainCRF(em, tr, lens, start, end)
    assert not dist.marginals.requires_grad
    assert dist.log_partition.requires_grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_no_nan_for_extreme_scores_and_degenerate_lengths(dtype):
    g = torch.Generator().manual_seed(0)
    em = (torch.randn(4, 7, 5, generator=g) * 1e4).to(dtype)
    tr = torch.randn(5, 5, generator=g) * 1e4
    lens = torch.tensor([7, 1, 0, 3])
    em.requires_grad_()
    tr.requires_grad_()
    dist = LinearChainCRF(em, tr, lens)
    loss = (dist.log_partition - dist.score(dist.argmax)).sum() + dist.entropy.sum()
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(em.grad).all() and torch.isfinite(tr.grad).all()
    assert torch.isfinite(dist.marginals).all()
    sums = dist.marginals.sum(-1)
    assert torch.allclose(sums[0], torch.ones(7), atol=1e-3)
    assert (sums[2] == 0).all()
    assert dist.log_prob(dist.argmax)[2].item() == 0


def test_errors_are_clear():
    em = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match="lens must lie"):
        LinearChainCRF(em, lens=torch.tensor([4, 1]))
    with pytest.raises(ValueError, match="transitions must be"):
        LinearChainCRF(em, torch.randn(3, 3))
    with pytest.raises(ValueError, match="tag index 7"):
        LinearChainCRF(em).score(torch.tensor([[0, 1, 7], [0, 0, 0]]))
    with pytest.raises(TypeError, match="structural_kd_loss"):
        LinearChainCRF(em).cross_entropy(MaxEnt(em))


def test_maxent_matches_brute_force():
    em, _, _, _, lens = random_chain(4)
    dist = MaxEnt(em, lens)
    samples = dist.sample(3000, torch.Generator().manual_seed(1))
    for b in range(em.shape[0]):
        n = int(lens[b])

        def score(y, b=b):
            return sum(float(em[b, i, t]) for i, t in enumerate(y))
        ys, unary, _ = brute_chain(score, n, N_TAGS, SEQ_LEN)
        assert dist.log_partition[b].item() == pytest.approx(brute.log_partition(ys, score), abs=1e-10)
        torch.testing.assert_close(dist.marginals[b], unary)
        assert dist.entropy[b].item() == pytest.approx(brute.entropy(ys, score), abs=1e-10)
        ranked = sorted((score(y) for y in ys), reverse=True)[:4]
        assert dist.kmax(4)[: len(ranked), b].tolist() == pytest.approx(ranked, abs=1e-10)
        if n:
            freq = torch.nn.functional.one_hot(samples[:, b, :n], N_TAGS).double().mean(0)
            assert (freq - unary[:n]).abs().max() < 0.04
    assert torch.allclose(dist.score(dist.argmax), dist.max)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n_tags=st.integers(1, 4), seq_len=st.integers(1, 4),
       scale=st.sampled_from([0.1, 1.0, 10.0]))
def test_chain_invariants_property(seed, n_tags, seq_len, scale):
    em, tr, start, end, lens = random_chain(seed, batch=3, seq_len=seq_len, n_tags=n_tags, scale=scale)
    dist = LinearChainCRF(em, tr, lens, start, end)
    mask = torch.arange(seq_len) < lens.unsqueeze(-1)
    torch.testing.assert_close(dist.marginals.sum(-1), mask.double())
    assert (dist.max <= dist.log_partition + 1e-9).all()
    torch.testing.assert_close(dist.score(dist.argmax), dist.max)
    torch.testing.assert_close(dist.edge_marginals.sum(-1), dist.marginals[:, :-1] * mask[:, 1:, None])
    assert (dist.entropy >= -1e-9).all()
    kmax = dist.kmax(3)
    assert (kmax[:-1] >= kmax[1:]).all()


def test_scaled_is_global_temperature():
    em, tr, start, end, lens = random_chain(9)
    hot = LinearChainCRF(em, tr, lens, start, end).scaled(0.5)
    direct = LinearChainCRF(em * 0.5, tr * 0.5, lens, start * 0.5, end * 0.5)
    torch.testing.assert_close(hot.log_partition, direct.log_partition)
    torch.testing.assert_close(hot.marginals, direct.marginals)


# ------------------------------------------------------------------------------------------ peers
def test_against_torch_struct():
    torch_struct = pytest.importorskip("torch_struct")
    em, tr, start, end, lens = random_chain(12, batch=4, seq_len=6, n_tags=4)
    lens = lens.clamp(min=2)
    ours = LinearChainCRF(em, tr, lens)
    # torch-struct: log_potentials [B, N - 1, C_next, C_prev], first emission folded into edge 0
    pot = tr.t().unsqueeze(0).unsqueeze(0) + em[:, 1:].unsqueeze(-1)
    pot = pot.clone()
    pot[:, 0] += em[:, 0].unsqueeze(1)
    theirs = torch_struct.LinearChainCRF(pot.clone().requires_grad_(), lengths=lens)
    torch.testing.assert_close(ours.log_partition, theirs.partition.detach())
    their_edges = theirs.marginals.detach().transpose(-1, -2)  # [B, N - 1, prev, next]
    mask = (torch.arange(5) < (lens - 1).unsqueeze(-1)).view(4, 5, 1, 1)
    torch.testing.assert_close(ours.edge_marginals, their_edges * mask)
    torch.testing.assert_close(ours.entropy, theirs.entropy.detach())
    torch.testing.assert_close(ours.max, theirs.max.detach())


def test_against_pytorch_crf():
    torchcrf = pytest.importorskip("torchcrf")
    em, tr, start, end, lens = random_chain(13, batch=4, seq_len=6, n_tags=4, dtype=torch.float32)
    lens = lens.clamp(min=1)
    crf = torchcrf.CRF(4, batch_first=True)
    with torch.no_grad():
        crf.transitions.copy_(tr)
        crf.start_transitions.copy_(start)
        crf.end_transitions.copy_(end)
    ours = LinearChainCRF(em, tr, lens, start, end)
    tags = ours.sample(1, torch.Generator().manual_seed(0))[0]
    mask = torch.arange(6) < lens.unsqueeze(-1)
    theirs = crf(em, tags.clamp(min=0), mask=mask, reduction="none")
    torch.testing.assert_close(ours.log_prob(tags), theirs.detach(), rtol=1e-5, atol=1e-5)
    decoded = crf.decode(em, mask=mask)
    for b in range(4):
        assert ours.argmax[b, : int(lens[b])].tolist() == decoded[b]


@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_shared_transition_gradient_equals_summed_edge_marginals(scale):
    """The backward pass sums edge marginals over positions without building them (or falls back to them
    when constraints make the rescaling unsafe): both must equal the explicit edge marginals."""
    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    allowed, allowed_start, allowed_end = allowed_transitions(labels, "BIO")
    em, tr, start, end, lens = random_chain(21, batch=5, seq_len=7, n_tags=5, scale=scale)
    for constraints in ({}, {"allowed": allowed, "allowed_start": allowed_start, "allowed_end": allowed_end}):
        tr_leaf = tr.clone().requires_grad_()
        weights = torch.rand(5, dtype=torch.float64)
        dist = LinearChainCRF(em, tr_leaf, lens, start, end, **constraints)
        (dist.log_partition * weights).sum().backward()
        expected = (dist.edge_marginals * weights.view(-1, 1, 1, 1)).sum((0, 1))
        torch.testing.assert_close(tr_leaf.grad, expected)


def test_tag_without_successor_and_padding_stay_finite():
    """A tag that no tag may follow (an all-zero row of exp(transitions)) forces the log-space fallback at
    real positions and must not poison padded ones."""
    em, tr, start, end, lens = random_chain(31, batch=4, seq_len=6, n_tags=3, dtype=torch.float32)
    allowed = torch.ones(3, 3, dtype=torch.bool)
    allowed[2] = False  # tag 2 can only end a sentence
    dist = LinearChainCRF(em, tr, lens, start, end, allowed=allowed)
    assert torch.isfinite(dist.log_partition).all() and torch.isfinite(dist.marginals).all()
    for b in range(4):
        n = int(lens[b])
        score = chain_scorer(em.double(), tr.double(), start.double(), end.double(), b, n, allowed)
        ys, unary, _ = brute_chain(score, n, 3, 6)
        assert dist.log_partition[b].item() == pytest.approx(brute.log_partition(ys, score), abs=1e-4)
        torch.testing.assert_close(dist.marginals[b], unary.float(), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("scale", [1.0, 20.0])
def test_exp_space_scans_stay_exact_on_peaked_constrained_scores(scale):
    """A tagger late in training has peaked emissions and BIO constraints: the exp-space scans (float64 inside)
    must stay on their fast path there and agree with the log-space scans, and so must the summed edge
    marginals of the shared-transition gradient."""
    from structkd.structs import chain

    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]
    allowed, allowed_start, allowed_end = allowed_transitions(labels, "BIO")
    generator = torch.Generator().manual_seed(5)
    lens = torch.randint(1, 41, (16,), generator=generator)
    em = torch.randn(16, 40, 7, generator=generator) * scale
    tr = torch.randn(7, 7, generator=generator)
    dist = LinearChainCRF(em, tr, lens, allowed=allowed, allowed_start=allowed_start, allowed_end=allowed_end)
    unary, edges = dist.potentials
    with torch.no_grad():
        fast_alpha = chain._exp_scan_forward(unary, edges, dist.lens)
        fast_beta = chain._exp_scan_backward(unary, edges, dist.lens)
    assert fast_alpha is not None and fast_beta is not None
    with torch.enable_grad():  # the log-space scans
        alpha = chain.forward_scan(unary.double(), edges.double())
        beta = chain.backward_scan(unary.double(), edges.double(), dist.lens)
    inside = torch.arange(40) < lens.unsqueeze(-1)
    real = inside.unsqueeze(-1) & (alpha > LOG_ZERO / 2) & (beta > LOG_ZERO / 2)
    torch.testing.assert_close(fast_alpha.double()[real], alpha[real], rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(fast_beta.double()[real], beta[real], rtol=1e-5, atol=1e-3)
    summed = dist._summed_edge_marginals(torch.ones(16))
    assert summed is not None
    torch.testing.assert_close(summed, dist.edge_marginals.sum((0, 1)), rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------ half precision inputs
@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_half_precision_inputs_are_computed_in_float32(half):
    """Constraints (LOG_ZERO) and start/end scores are applied after the upcast: the result is the float32
    distribution of the same (rounded) scores, bit for bit."""
    em, tr, start, end, lens = random_chain(3, seq_len=6, n_tags=3, dtype=torch.float32, scale=3.0)
    allowed = torch.ones(3, 3, dtype=torch.bool)
    allowed[0, 1] = False
    options = dict(allowed=allowed, allowed_start=torch.tensor([True, True, False]),
                   allowed_end=torch.tensor([False, True, True]))
    low = [x.to(half) for x in (em, tr, start, end)]
    mixed = LinearChainCRF(low[0], low[1], lens, low[2], low[3], **options)
    plain = LinearChainCRF(*(x.float() for x in low[:2]), lens, *(x.float() for x in low[2:]), **options)
    assert mixed.dtype == torch.float32
    for a, b in zip([*mixed.potentials, mixed.log_partition, *mixed.part_marginals()],
                    [*plain.potentials, plain.log_partition, *plain.part_marginals()]):
        assert torch.equal(a, b)
    assert mixed.potentials[0][0, 0, 2] == LOG_ZERO and mixed.potentials[1][0, 0, 0, 1] == LOG_ZERO


# ------------------------------------------------------------------------------------ degenerate shapes
def _empty_checks(make, leaves, batch_size):
    """Every public result of a batch of ``batch_size`` empty sentences (or of no sentences): the empty
    structure has score 0 and log Z 0, and nothing else exists."""
    dist = make(*leaves)
    grads = torch.autograd.grad(dist.log_partition.sum(), leaves, allow_unused=True)
    assert all(g is None or (g == 0).all() for g in grads)
    zeros = torch.zeros(batch_size, dtype=torch.float64)
    for value in (dist.log_partition, dist.max, dist.entropy, dist.score(dist.argmax), dist.log_prob(dist.argmax),
                  dist.cross_entropy(make(*leaves)), dist.kl(make(*leaves))):
        assert torch.equal(value.detach(), zeros)
    expected_kmax = torch.tensor([[0.0] * batch_size, [LOG_ZERO] * batch_size], dtype=torch.float64)
    assert torch.equal(dist.kmax(2), expected_kmax)
    assert (dist.topk(2) == -1).all() and (dist.sample(3) == -1).all() and (dist.argmax == -1).all()
    for m, p in zip(dist.part_marginals(), dist.potentials):
        assert m.shape == p.shape and (m == 0).all()
    differentiable = make(*leaves).part_marginals(differentiable=True)
    assert all((m == 0).all() for m in differentiable)


@pytest.mark.parametrize("batch_size,seq_len", [(0, 4), (2, 0), (0, 0)])
@pytest.mark.parametrize("kind", ["crf", "crf_per_position", "crf_constrained", "maxent"])
def test_degenerate_shapes_give_the_empty_structure(kind, batch_size, seq_len):
    em = torch.randn(batch_size, seq_len, N_TAGS, dtype=torch.float64, requires_grad=True)
    lens = torch.zeros(batch_size, dtype=torch.long) if seq_len == 0 else None
    if kind == "maxent":
        _empty_checks(lambda e: MaxEnt(e, lens), [em], batch_size)
        return
    if kind == "crf_per_position":
        tr = torch.randn(batch_size, max(seq_len - 1, 0), N_TAGS, N_TAGS, dtype=torch.float64, requires_grad=True)
    else:
        tr = torch.randn(N_TAGS, N_TAGS, dtype=torch.float64, requires_grad=True)
    options = {}
    if kind == "crf_constrained":
        options = dict(start=torch.randn(N_TAGS, dtype=torch.float64), allowed=torch.eye(N_TAGS, dtype=torch.bool),
                       allowed_end=torch.tensor([True] + [False] * (N_TAGS - 1)))
    if batch_size == 0:
        dist = LinearChainCRF(em, tr, lens, **options)
        assert dist.log_partition.shape == (0,) and dist.edge_marginals.shape == (0, max(seq_len - 1, 0), 3, 3)
        assert dist.kmax(2).shape == (2, 0) and dist.sample(2).shape == (2, 0, seq_len)
        (grad,) = torch.autograd.grad(dist.entropy.sum() + dist.log_partition.sum(), tr, allow_unused=True)
        assert grad is None or (grad == 0).all()
        return
    _empty_checks(lambda e, t: LinearChainCRF(e, t, lens, **options), [em, tr], batch_size)


# ------------------------------------------------------------------------- float32 at large scores
@pytest.mark.parametrize("per_position", [False, True], ids=["shared", "per_position"])
@pytest.mark.parametrize("scale,seq_len", [(1e4, 20), (30.0, 500), (1.0, 50)])
def test_float32_marginals_match_float64_at_large_scores(scale, seq_len, per_position):
    """Marginals and the gradient of log Z of float32 scores are the float64 ones (of the same scores) to float32
    precision, also when the charts' entries reach 1e5 (scores of 1e4) or sentences are long."""
    em, tr, start, end, lens = random_chain(5, batch=3, seq_len=seq_len, n_tags=5, per_position=per_position,
                                            dtype=torch.float32, scale=scale)
    lens[1] = seq_len - 3
    leaves32 = [em.clone().requires_grad_(), tr.clone().requires_grad_()]
    leaves64 = [x.detach().double().requires_grad_() for x in leaves32]
    single, double = LinearChainCRF(*leaves32, lens, start, end), LinearChainCRF(*leaves64, lens, start, end)
    for m32, m64 in zip(single.part_marginals(), double.part_marginals()):
        assert m32.dtype == torch.float32
        torch.testing.assert_close(m32.double(), m64, rtol=0, atol=1e-6)
    edge_sums = single.edge_marginals.sum((-1, -2))[0]
    torch.testing.assert_close(edge_sums, torch.ones_like(edge_sums), rtol=0, atol=1e-6)
    grads32 = torch.autograd.grad(single.log_partition.sum(), leaves32)
    grads64 = torch.autograd.grad(double.log_partition.sum(), leaves64)
    for g32, g64 in zip(grads32, grads64):
        torch.testing.assert_close(g32.double(), g64, rtol=1e-5, atol=1e-5)
