"""Tests of the second-order (sibling) projective dependency CRF against brute-force enumeration and SuPar."""

from __future__ import annotations

import functools
import math

import brute
import pytest
import torch

from structkd.numerics import LOG_ZERO
from structkd.structs import Dependency2oCRF
from structkd.structs.tree2o import sibling_indicators

LENS = [5, 3, 1, 0, 4]


@functools.cache
def projective_trees(n: int, multiroot: bool) -> list[tuple[int, ...]]:
    """Every projective tree of ``n`` words (the empty tree for ``n = 0``, whose log Z is 0)."""
    return brute.trees(n, multiroot, projective=True) if n else [()]


def random_scores(lens, seq_len=None, scale=1.0, dtype=torch.float64, seed=0):
    """``(arc [B, L, L], sib [B, L, L, L], lens [B])`` of standard normal scores times ``scale``."""
    g = torch.Generator().manual_seed(seed)
    L = (max(lens) + 1) if seq_len is None else seq_len
    B = len(lens)
    arc = torch.randn(B, L, L, generator=g, dtype=dtype) * scale
    sib = torch.randn(B, L, L, L, generator=g, dtype=dtype) * scale
    return arc, sib, torch.tensor(lens)


def tree_score(arc, sib, b, heads):
    """Brute-force score of the tree ``heads`` (tuple, word ``d`` at ``d - 1``) of sentence ``b``."""
    score = sum(float(arc[b, d + 1, h]) for d, h in enumerate(heads))
    return score + sum(float(sib[b, m, h, s]) for m, h, s in brute.siblings(heads))


def heads_tensor(heads, seq_len):
    """``LongTensor [seq_len]`` head vector with -1 at the root and padding."""
    out = torch.full((seq_len,), -1, dtype=torch.long)
    out[1:len(heads) + 1] = torch.tensor(heads, dtype=torch.long)
    return out


def brute_marginals(arc, sib, b, n, multiroot):
    """Exact ``(log Z, arc marginals [L, L], sibling marginals [L, L, L])`` of sentence ``b``."""
    L = arc.shape[1]
    trees = projective_trees(n, multiroot)
    score = functools.partial(tree_score, arc, sib, b)
    arcs, sibs = torch.zeros(L, L, dtype=torch.float64), torch.zeros(L, L, L, dtype=torch.float64)
    for p, heads in zip(brute.probabilities(trees, score), trees):
        for d, h in enumerate(heads):
            arcs[d + 1, h] += p
        for m, h, s in brute.siblings(heads):
            sibs[m, h, s] += p
    return brute.log_partition(trees, score), arcs, sibs


@pytest.mark.parametrize("multiroot", [False, True])
def test_log_partition_and_marginals_match_brute_force(multiroot):
    arc, sib, lens = random_scores(LENS, seq_len=7)
    dist = Dependency2oCRF(arc, sib, lens, multiroot)
    arcs, sibs = dist.part_marginals()
    assert torch.equal(dist.marginals, arcs) and torch.equal(dist.sibling_marginals, sibs)
    for b, n in enumerate(LENS):
        log_z, ref_arcs, ref_sibs = brute_marginals(arc, sib, b, n, multiroot)
        assert dist.log_partition[b].item() == pytest.approx(log_z, abs=1e-10)
        torch.testing.assert_close(arcs[b], ref_arcs, atol=1e-10, rtol=0)
        torch.testing.assert_close(sibs[b], ref_sibs, atol=1e-10, rtol=0)
        if n:
            torch.testing.assert_close(arcs[b, 1:n + 1].sum(-1), torch.ones(n, dtype=torch.float64))


@pytest.mark.parametrize("multiroot", [False, True])
def test_argmax_and_max_match_brute_force(multiroot):
    arc, sib, lens = random_scores(LENS, seed=1)
    dist = Dependency2oCRF(arc, sib, lens, multiroot)
    for b, n in enumerate(LENS):
        trees = projective_trees(n, multiroot)
        best = max(trees, key=functools.partial(tree_score, arc, sib, b))
        assert torch.equal(dist.argmax[b], heads_tensor(best, arc.shape[1]))
        assert dist.max[b].item() == pytest.approx(tree_score(arc, sib, b, best), abs=1e-10)
    torch.testing.assert_close(dist.score(dist.argmax), dist.max)


@pytest.mark.parametrize("multiroot", [False, True])
def test_topk_matches_brute_force(multiroot):
    k = 6
    lens = [4, 2, 1, 0]
    arc, sib, lens_t = random_scores(lens, seed=2)
    dist = Dependency2oCRF(arc, sib, lens_t, multiroot)
    kmax, topk = dist.kmax(k), dist.topk(k)
    assert kmax.shape == (k, len(lens)) and topk.shape == (k, len(lens), arc.shape[1])
    for b, n in enumerate(lens):
        trees = projective_trees(n, multiroot)
        scores = sorted((tree_score(arc, sib, b, t) for t in trees), reverse=True)[:k]
        found = len(scores)
        torch.testing.assert_close(kmax[:found, b], torch.tensor(scores, dtype=torch.float64))
        assert (kmax[found:, b] == LOG_ZERO).all() and (topk[found:, b] == -1).all()
        # the structures are distinct valid trees whose scores are the reported ones
        assert len({tuple(t.tolist()) for t in topk[:found, b]}) == found
        for rank in range(found):
            heads = tuple(topk[rank, b, 1:n + 1].tolist())
            assert heads in trees
            assert tree_score(arc, sib, b, heads) == pytest.approx(float(kmax[rank, b]), abs=1e-10)
    torch.testing.assert_close(kmax[0], dist.max)
    for rank in range(k):  # the reported structures score what kmax says (padding rows aside)
        ok = kmax[rank] > LOG_ZERO / 2
        if ok.all():
            torch.testing.assert_close(dist.score(topk[rank]), kmax[rank])


@pytest.mark.parametrize("multiroot", [False, True])
def test_topk_enumerates_every_tree(multiroot):
    arc, sib, lens = random_scores([3, 3], seed=14)
    sib[1] = 0  # ties between trees
    arc[1] = arc[1].round()
    trees = projective_trees(3, multiroot)
    k = len(trees) + 2
    dist = Dependency2oCRF(arc, sib, lens, multiroot)
    kmax, topk = dist.kmax(k), dist.topk(k)
    for b in range(2):
        found = {tuple(t[1:].tolist()) for t in topk[:len(trees), b]}
        assert found == set(trees)
        scores = sorted((tree_score(arc, sib, b, t) for t in trees), reverse=True)
        torch.testing.assert_close(kmax[:len(trees), b], torch.tensor(scores, dtype=torch.float64))
        assert (kmax[len(trees):, b] == LOG_ZERO).all() and (topk[len(trees):, b] == -1).all()


def test_sample_frequencies_match_marginals():
    arc, sib, lens = random_scores([4, 3, 0], seed=3)
    dist = Dependency2oCRF(arc, sib, lens)
    n = 4000
    samples = dist.sample(n, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (n, 3, arc.shape[1])
    freq = torch.zeros_like(dist.marginals)
    for b, length in enumerate(lens.tolist()):
        for d in range(1, length + 1):
            freq[b, d] = torch.bincount(samples[:, b, d], minlength=arc.shape[1]).double() / n
        assert (samples[:, b, length + 1:] == -1).all() and (samples[:, b, 0] == -1).all()
    assert (freq - dist.marginals).abs().max() < 0.04
    # every sample is a projective single-root tree
    flat = samples.reshape(-1, arc.shape[1])
    Dependency2oCRF(arc.repeat(n, 1, 1), sib.repeat(n, 1, 1, 1), lens.repeat(n)).parts(flat)


@pytest.mark.parametrize("multiroot", [False, True])
def test_entropy_cross_entropy_kl_and_probabilities(multiroot):
    lens = [4, 2, 1, 0]
    arc_p, sib_p, lens_t = random_scores(lens, seed=4)
    arc_q, sib_q, _ = random_scores(lens, seed=5)
    p = Dependency2oCRF(arc_p, sib_p, lens_t, multiroot)
    q = Dependency2oCRF(arc_q, sib_q, lens_t, multiroot)
    L = arc_p.shape[1]
    for b, n in enumerate(lens):
        trees = projective_trees(n, multiroot)
        score_p = functools.partial(tree_score, arc_p, sib_p, b)
        score_q = functools.partial(tree_score, arc_q, sib_q, b)
        h, ce = brute.entropy(trees, score_p), brute.cross_entropy(trees, score_p, score_q)
        assert p.entropy[b].item() == pytest.approx(h, abs=1e-9)
        assert p.cross_entropy(q)[b].item() == pytest.approx(ce, abs=1e-9)
        assert p.kl(q)[b].item() == pytest.approx(ce - h, abs=1e-9)
        heads = torch.stack([heads_tensor(t, L) for t in trees])
        batch = Dependency2oCRF(arc_p[b].expand(len(trees), L, L), sib_p[b].expand(len(trees), L, L, L),
                                torch.full((len(trees),), n), multiroot)
        assert batch.log_prob(heads).exp().sum().item() == pytest.approx(1.0, abs=1e-10)


def test_parts_match_brute_force_siblings():
    trees = projective_trees(5, True)
    L = 6
    heads = torch.stack([heads_tensor(t, L) for t in trees])
    arcs = torch.zeros(len(trees), L, L)
    arcs[torch.arange(len(trees)).unsqueeze(-1), torch.arange(1, L), heads[:, 1:]] = 1
    sibs = sibling_indicators(heads, arcs)
    expected = torch.zeros_like(sibs)
    for r, t in enumerate(trees):
        for m, h, s in brute.siblings(t):
            expected[r, m, h, s] = 1
    assert torch.equal(sibs, expected)
    dist = Dependency2oCRF(torch.zeros(len(trees), L, L), torch.zeros(len(trees), L, L, L), multiroot=True)
    parts = dist.parts(heads)
    assert torch.equal(parts[0], arcs) and torch.equal(parts[1], expected)


def test_padding_invariance():
    arc, sib, lens = random_scores(LENS, seed=6)
    dist = Dependency2oCRF(arc, sib, lens)
    arcs, sibs = dist.part_marginals()
    for b, n in enumerate(LENS):
        one = Dependency2oCRF(arc[b:b + 1, :n + 1, :n + 1], sib[b:b + 1, :n + 1, :n + 1, :n + 1])
        torch.testing.assert_close(one.log_partition[0], dist.log_partition[b])
        torch.testing.assert_close(one.marginals[0], arcs[b, :n + 1, :n + 1])
        torch.testing.assert_close(one.sibling_marginals[0], sibs[b, :n + 1, :n + 1, :n + 1])
        assert torch.equal(one.argmax[0], dist.argmax[b, :n + 1])
        assert (arcs[b, n + 1:] == 0).all() and (sibs[b, n + 1:] == 0).all() and (sibs[b, :, n + 1:] == 0).all()


def test_gradcheck_log_partition():
    arc, sib, lens = random_scores([3, 2], seed=7)
    arc.requires_grad_()
    sib.requires_grad_()
    assert torch.autograd.gradcheck(lambda a, s: Dependency2oCRF(a, s, lens).log_partition, (arc, sib))
    assert torch.autograd.gradcheck(lambda a, s: Dependency2oCRF(a, s, lens, True).log_partition, (arc, sib))


def test_differentiable_marginals_equal_detached_and_have_correct_gradients():
    arc, sib, lens = random_scores([3, 2], seed=8)
    dist = Dependency2oCRF(arc, sib, lens, multiroot=True)
    detached = dist.part_marginals()
    differentiable = dist.part_marginals(differentiable=True)
    for d, m in zip(detached, differentiable):
        torch.testing.assert_close(m, d)
        assert m.grad_fn is not None

    def marginals(a, s):  # second derivatives of log Z, through the differentiable inside pass
        return Dependency2oCRF(a, s, lens[1:], multiroot=True).part_marginals(differentiable=True)

    assert torch.autograd.gradcheck(marginals, (arc[1:].clone().requires_grad_(), sib[1:].clone().requires_grad_()))


@pytest.mark.parametrize("multiroot", [False, True])
def test_zero_sibling_scores_give_first_order_projective_crf(multiroot):
    arc, sib, lens = random_scores(LENS, seed=9)
    dist = Dependency2oCRF(arc, torch.zeros_like(sib), lens, multiroot)
    for b, n in enumerate(LENS):
        trees = projective_trees(n, multiroot)
        log_z = brute.log_partition(trees, lambda t, b=b: sum(float(arc[b, d + 1, h]) for d, h in enumerate(t)))
        assert dist.log_partition[b].item() == pytest.approx(log_z, abs=1e-10)


@pytest.mark.parametrize("multiroot", [False, True])
def test_matches_supar(multiroot):
    supar = pytest.importorskip("supar.structs")
    lens = [9, 5, 1, 7]
    arc, sib, lens_t = random_scores(lens, seed=10)
    ours = Dependency2oCRF(arc, sib, lens_t, multiroot)
    # SuPar's sib_scores layout [b, m, h, s] is the same as ours (checked against brute force above)
    theirs = supar.Dependency2oCRF((arc.clone(), sib.clone()), lens_t, multiroot=multiroot)
    torch.testing.assert_close(ours.log_partition, theirs.log_partition.detach())
    torch.testing.assert_close(ours.marginals, theirs.marginals.detach())
    torch.testing.assert_close(ours.max, theirs.max.detach())
    mask = ours.argmax >= 0
    assert torch.equal(ours.argmax[mask], theirs.argmax[mask])


def test_invalid_gold_trees_raise():
    arc, sib, lens = random_scores([4], seed=11)
    dist = Dependency2oCRF(arc, sib, lens, multiroot=True)
    non_projective = torch.tensor([[-1, 3, 4, 0, 1]])
    with pytest.raises(ValueError, match="non-projective"):
        dist.parts(non_projective)
    with pytest.raises(ValueError, match="cycle"):
        dist.parts(torch.tensor([[-1, 2, 1, 0, 3]]))
    single = Dependency2oCRF(arc, sib, lens)
    with pytest.raises(ValueError, match="root"):
        single.parts(torch.tensor([[-1, 0, 1, 0, 3]]))


def test_degenerate_lengths_and_large_scores_stay_finite():
    lens = [0, 1, 0, 6]
    arc, sib, lens_t = random_scores(lens, seq_len=8, scale=1e4, dtype=torch.float32, seed=12)
    arc.requires_grad_()
    sib.requires_grad_()
    dist = Dependency2oCRF(arc, sib, lens_t)
    log_z = dist.log_partition
    log_z.sum().backward()
    assert torch.isfinite(log_z).all() and log_z[0] == 0 and log_z[2] == 0
    assert torch.isfinite(arc.grad).all() and torch.isfinite(sib.grad).all()
    assert torch.isfinite(dist.marginals).all() and torch.isfinite(dist.sibling_marginals).all()
    assert torch.isfinite(dist.part_marginals(differentiable=True)[1]).all()
    assert torch.isfinite(dist.entropy).all()
    reference = Dependency2oCRF(arc.detach().double(), sib.detach().double(), lens_t)
    torch.testing.assert_close(log_z.double(), reference.log_partition, rtol=1e-5, atol=1e-2)
    assert torch.equal(dist.argmax[1], torch.tensor([-1, 0, -1, -1, -1, -1, -1, -1]))
    assert (dist.sample(3)[:, 0] == -1).all()
    # a batch of empty sentences only
    empty = Dependency2oCRF(torch.zeros(2, 1, 1, requires_grad=True), torch.zeros(2, 1, 1, 1))
    assert torch.equal(empty.log_partition, torch.zeros(2))
    assert empty.argmax.shape == (2, 1) and empty.topk(2).shape == (2, 2, 1) and empty.sample(2).shape == (2, 2, 1)


def test_scaled_equals_scaling_the_scores():
    arc, sib, lens = random_scores([4, 2], seed=13)
    dist = Dependency2oCRF(arc, sib, lens)
    assert dist.marginals.shape == arc.shape  # fills the cache of the original
    half = dist.scaled(0.5)
    direct = Dependency2oCRF(arc * 0.5, sib * 0.5, lens)
    torch.testing.assert_close(half.log_partition, direct.log_partition)
    torch.testing.assert_close(half.sibling_marginals, direct.sibling_marginals)
    assert not math.isclose(float(half.log_partition[0]), float(dist.log_partition[0]))
