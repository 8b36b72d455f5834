"""Tests of the first-order dependency tree distributions against brute force and peer libraries."""

from __future__ import annotations

import math
import random
import warnings

import brute
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from structkd import LOG_ZERO
from structkd.structs.tree import DependencyCRF, MatrixTree

CLASSES = [DependencyCRF, MatrixTree]
MODES = [(cls, multiroot) for cls in CLASSES for multiroot in (False, True)]
MODE_IDS = [f"{cls.__name__}-{'multi' if mr else 'single'}" for cls, mr in MODES]
LENS = torch.tensor([5, 3, 0, 1, 4, 2])


def make_scores(lens: torch.Tensor, seed: int = 0, scale: float = 1.0, dtype=torch.float64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    seq_len = int(lens.max()) + 1
    return (torch.randn(len(lens), seq_len, seq_len, generator=gen, dtype=torch.float64) * scale).to(dtype)


def all_trees(cls, n: int, multiroot: bool) -> list[tuple[int, ...]]:
    """Every tree of ``n`` words (the empty tree for ``n = 0``)."""
    return brute.trees(n, multiroot, cls is DependencyCRF) if n else [()]


def tree_score(scores: torch.Tensor, b: int, tree) -> float:
    return sum(float(scores[b, d + 1, h]) for d, h in enumerate(tree))


def heads_tensor(tree, seq_len: int) -> torch.Tensor:
    heads = torch.full((seq_len,), -1, dtype=torch.long)
    heads[1:len(tree) + 1] = torch.tensor(tree, dtype=torch.long)
    return heads


def brute_marginals(scores, b, trees, seq_len) -> torch.Tensor:
    probs = brute.probabilities(trees, lambda t: tree_score(scores, b, t))
    out = torch.zeros(seq_len, seq_len, dtype=torch.float64)
    for p, tree in zip(probs, trees):
        for d, h in enumerate(tree):
            out[d + 1, h] += p
    return out


@pytest.mark.parametrize("cls,multiroot", MODES, ids=MODE_IDS)
def test_log_partition_marginals_entropy_vs_brute(cls, multiroot):
    scores, other = make_scores(LENS, 1), make_scores(LENS, 2)
    dist, dist_q = cls(scores, LENS, multiroot), cls(other, LENS, multiroot)
    log_z, marginals = dist.log_partition, dist.marginals
    entropy, cross, kl = dist.entropy, dist.cross_entropy(dist_q), dist.kl(dist_q)
    seq_len = scores.shape[1]
    for b, n in enumerate(LENS.tolist()):
        trees = all_trees(cls, n, multiroot)
        score_p = lambda t, b=b: tree_score(scores, b, t)  # noqa: E731
        score_q = lambda t, b=b: tree_score(other, b, t)  # noqa: E731
        assert log_z[b].item() == pytest.approx(brute.log_partition(trees, score_p), abs=1e-9)
        torch.testing.assert_close(marginals[b], brute_marginals(scores, b, trees, seq_len), atol=1e-9, rtol=0)
        assert entropy[b].item() == pytest.approx(brute.entropy(trees, score_p), abs=1e-9)
        assert cross[b].item() == pytest.approx(brute.cross_entropy(trees, score_p, score_q), abs=1e-9)
        assert kl[b].item() == pytest.approx(brute.cross_entropy(trees, score_p, score_q)
                                             - brute.entropy(trees, score_p), abs=1e-9)
    assert marginals[LENS == 0].abs().sum() == 0
    assert marginals[:, 0].abs().sum() == 0
    assert marginals.diagonal(dim1=1, dim2=2).abs().sum() == 0
    rows = marginals.sum(-1)[:, 1:]
    words = torch.arange(1, seq_len) <= LENS.unsqueeze(1)
    torch.testing.assert_close(rows[words], torch.ones(int(words.sum()), dtype=torch.float64))
    assert rows[~words].abs().sum() == 0


@pytest.mark.parametrize("cls,multiroot", MODES, ids=MODE_IDS)
def test_log_prob_sums_to_one(cls, multiroot):
    lens = torch.tensor([4, 2, 1])
    scores = make_scores(lens, 3)
    dist = cls(scores, lens, multiroot)
    for b, n in enumerate(lens.tolist()):
        trees = all_trees(cls, n, multiroot)
        heads = torch.full((len(trees), len(lens), scores.shape[1]), -1, dtype=torch.long)
        for i, tree in enumerate(trees):
            heads[i] = dist.argmax  # valid trees for the other sentences
            heads[i, b] = heads_tensor(tree, scores.shape[1])
        total = sum(math.exp(dist.log_prob(h)[b].item()) for h in heads)
        assert total == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("cls", CLASSES, ids=[c.__name__ for c in CLASSES])
def test_single_root_argmax_vs_brute_many_seeds(cls):
    """Both decoders' single-root paths (Chu-Liu-Edmonds: the greedy shortcut when the best heads already form a
    single-root tree, else the root penalty; Eisner: the host backtrack) on many random and peaked batches."""
    greedy_trees = 0
    for seed in range(40):
        lens = torch.randint(1, 6, (4,), generator=torch.Generator().manual_seed(seed))
        scores = make_scores(lens, seed, scale=1.0 if seed % 2 else 4.0)
        dist = cls(scores, lens)
        for b, n in enumerate(lens.tolist()):
            trees = all_trees(cls, n, False)
            best = max(trees, key=lambda t: tree_score(scores, b, t))
            assert tuple(dist.argmax[b, 1:n + 1].tolist()) == best
            greedy = scores[b, 1:n + 1, :n + 1].argmax(-1)
            greedy_trees += tuple(greedy.tolist()) in trees
    assert greedy_trees > 10  # the shortcut was taken (and the fallback, by the other sentences)


def test_matrix_tree_single_root_argmax_next_to_a_huge_negative_arc():
    """Issue #23.7: one possible arc scored -4e11 (above the impossible threshold) must not set the single-root
    penalty, or root arcs lose every digit below 5e-4; small, nearly tied scores make that visible.  Brute force
    over 200 sentences (before the fix: 11 decoded a non-optimal tree)."""
    lens = torch.tensor([5, 4])
    supports = [brute.trees(n, False, False) for n in lens.tolist()]
    non_optimal = 0
    for trial in range(100):
        gen = torch.Generator().manual_seed(trial)
        scores = make_scores(lens, trial, scale=1e-3)
        dep = int(torch.randint(2, 5, (1,), generator=gen))
        scores[:, dep, 1 if dep != 1 else 2] = -4e11
        if trial % 2:  # root arcs preferred: the penalty must grow past its first value in some trials
            scores[:, 1:, 0] += 6.0
        heads = MatrixTree(scores, lens).argmax
        for b, (n, support) in enumerate(zip(lens.tolist(), supports)):
            got = tuple(heads[b, 1:n + 1].tolist())
            assert got in support
            best = max(tree_score(scores, b, t) for t in support)
            non_optimal += tree_score(scores, b, got) < best - 1e-12
    assert non_optimal == 0


@pytest.mark.parametrize("cls,multiroot", MODES, ids=MODE_IDS)
def test_argmax_and_topk_vs_brute(cls, multiroot):
    scores = make_scores(LENS, 4)
    dist = cls(scores, LENS, multiroot)
    k = 6
    kmax, topk = dist.kmax(k), dist.topk(k)
    assert topk.shape == (k, len(LENS), scores.shape[1])
    torch.testing.assert_close(dist.score(dist.argmax), dist.max)
    for b, n in enumerate(LENS.tolist()):
        trees = all_trees(cls, n, multiroot)
        best = sorted((tree_score(scores, b, t) for t in trees), reverse=True)
        assert dist.max[b].item() == pytest.approx(best[0], abs=1e-9)
        # argmax has its own backtrack (Eisner: a host walk of the 1-best choices): same tree as topk's first
        assert tuple(dist.argmax[b, 1:n + 1].tolist()) in trees
        assert torch.equal(dist.argmax[b], topk[0, b])
        for rank in range(k):
            if rank < len(best):
                assert kmax[rank, b].item() == pytest.approx(best[rank], abs=1e-9)
                tree = tuple(topk[rank, b, 1:n + 1].tolist())
                assert tree in trees
                assert tree_score(scores, b, tree) == pytest.approx(best[rank], abs=1e-9)
            else:
                assert kmax[rank, b].item() == LOG_ZERO
                assert (topk[rank, b] == -1).all()
        assert (topk[:, b, 0] == -1).all() and (topk[:, b, n + 1:] == -1).all()
    ranked = [tuple(topk[r, 0].tolist()) for r in range(k)]
    assert len(set(ranked)) == k


@pytest.mark.parametrize("cls,multiroot", MODES, ids=MODE_IDS)
def test_sample_frequencies_match_marginals(cls, multiroot):
    lens = torch.tensor([4, 2, 0])
    scores = make_scores(lens, 5)
    dist = cls(scores, lens, multiroot)
    n = 3000
    samples = dist.sample(n, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (n, 3, 5)
    assert (samples[:, 2] == -1).all() and (samples[:, :, 0] == -1).all()
    freq = torch.zeros_like(dist.marginals)
    for b, size in enumerate(lens.tolist()):
        trees = set(all_trees(cls, size, multiroot))
        for sample in samples[:, b]:
            assert tuple(sample[1:size + 1].tolist()) in trees
        words = torch.arange(1, size + 1).unsqueeze(0).expand(n, -1)
        index = (torch.full_like(words, b), words, samples[:, b, 1:size + 1])
        freq.index_put_(index, torch.full(words.shape, 1.0 / n, dtype=freq.dtype), accumulate=True)
    torch.testing.assert_close(freq, dist.marginals, atol=0.04, rtol=0)


@pytest.mark.parametrize("cls,multiroot", MODES, ids=MODE_IDS)
def test_padding_invariance(cls, multiroot):
    scores = make_scores(LENS, 6)
    dist = cls(scores, LENS, multiroot)
    for b, n in enumerate(LENS.tolist()):
        alone = cls(scores[b:b + 1, :n + 1, :n + 1], torch.tensor([n]), multiroot)
        torch.testing.assert_close(alone.log_partition[0], dist.log_partition[b])
        torch.testing.assert_close(alone.marginals[0], dist.marginals[b, :n + 1, :n + 1])
        assert torch.equal(alone.argmax[0], dist.argmax[b, :n + 1])
    garbage = scores.clone()
    pad = ~torch.ones(scores.shape, dtype=torch.bool)
    for b, n in enumerate(LENS.tolist()):
        pad[b, n + 1:] = True
        pad[b, :, n + 1:] = True
    garbage[pad] = float("nan")
    noisy = cls(garbage, LENS, multiroot)
    torch.testing.assert_close(noisy.log_partition, dist.log_partition)
    torch.testing.assert_close(noisy.marginals, dist.marginals)


@pytest.mark.parametrize("cls,multiroot", MODES, ids=MODE_IDS)
def test_gradcheck_log_partition(cls, multiroot):
    lens = torch.tensor([3, 1, 0, 2])
    scores = make_scores(lens, 7).requires_grad_()
    assert torch.autograd.gradcheck(lambda s: cls(s, lens, multiroot).log_partition, (scores,))
    marginals = torch.autograd.grad(cls(scores, lens, multiroot).log_partition.sum(), scores)[0]
    torch.testing.assert_close(marginals, cls(scores.detach(), lens, multiroot).marginals)


@pytest.mark.parametrize("cls,multiroot", MODES, ids=MODE_IDS)
def test_differentiable_marginals(cls, multiroot):
    lens = torch.tensor([3, 2, 0])
    scores = make_scores(lens, 8).requires_grad_()
    dist = cls(scores, lens, multiroot)
    diff = dist.part_marginals(differentiable=True)[0]
    assert diff.requires_grad
    torch.testing.assert_close(diff.detach(), dist.marginals)
    weights = torch.randn(scores.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert torch.autograd.gradcheck(
        lambda s: (cls(s, lens, multiroot).part_marginals(differentiable=True)[0] * weights).sum(), (scores,))
    entropy_grad = torch.autograd.grad(dist.entropy.sum(), scores)[0]
    assert torch.isfinite(entropy_grad).all()


@pytest.mark.parametrize("cls,multiroot", MODES, ids=MODE_IDS)
def test_scaled_matches_multiplied_scores(cls, multiroot):
    scores = make_scores(LENS, 9)
    dist = cls(scores, LENS, multiroot).scaled(0.5)
    torch.testing.assert_close(dist.log_partition, cls(scores * 0.5, LENS, multiroot).log_partition)
    torch.testing.assert_close(dist.marginals, cls(scores * 0.5, LENS, multiroot).marginals)


@pytest.mark.parametrize("multiroot", [False, True])
@pytest.mark.parametrize("scale", [1.0, 10.0, 50.0])
def test_matrix_tree_peaked_scores(scale, multiroot):
    small = make_scores(LENS, 10, scale)
    dist = MatrixTree(small, LENS, multiroot)
    for b, n in enumerate(LENS.tolist()):
        trees = all_trees(MatrixTree, n, multiroot)
        score = lambda t, b=b: tree_score(small, b, t)  # noqa: E731
        assert dist.log_partition[b].item() == pytest.approx(brute.log_partition(trees, score), rel=1e-12, abs=1e-9)
        torch.testing.assert_close(dist.marginals[b], brute_marginals(small, b, trees, small.shape[1]),
                                   atol=1e-8, rtol=0)
    lens = torch.tensor([40, 25, 1, 0, 33])
    for dtype in (torch.float64, torch.float32):
        scores = make_scores(lens, 11, scale, dtype).requires_grad_()
        dist = MatrixTree(scores, lens, multiroot)
        log_z = dist.log_partition
        (grad,) = torch.autograd.grad(log_z.sum(), scores)
        rows = dist.marginals.sum(-1)[:, 1:]
        words = torch.arange(1, scores.shape[1]) <= lens.unsqueeze(1)
        assert torch.isfinite(log_z).all() and torch.isfinite(grad).all()
        assert (dist.marginals >= -1e-6).all()
        torch.testing.assert_close(rows[words], torch.ones_like(rows[words]), atol=1e-5, rtol=0)
        assert (log_z >= dist.max - 1e-3 * dist.max.abs().clamp(min=1)).all()


@pytest.mark.parametrize("cls,multiroot", MODES, ids=MODE_IDS)
def test_float32_huge_scores_no_nan(cls, multiroot):
    lens = torch.tensor([12, 1, 0, 7])
    scores = (make_scores(lens, 12) * 1e4).float().requires_grad_()
    dist = cls(scores, lens, multiroot)
    values = [dist.log_partition, dist.marginals, dist.entropy, dist.max, dist.kl(cls(scores * 0.5, lens, multiroot))]
    (grad,) = torch.autograd.grad(dist.log_partition.sum(), scores)
    for value in [*values, grad, dist.part_marginals(differentiable=True)[0]]:
        assert torch.isfinite(value).all()
    assert (dist.log_partition >= dist.max - 1e-3 * dist.max.abs()).all()
    assert dist.log_partition[2] == 0 and (dist.argmax[2] == -1).all()
    samples = dist.sample(3)
    assert ((samples == dist.argmax) | (samples == -1)).float().mean() > 0.9


@pytest.mark.parametrize("cls,multiroot", MODES, ids=MODE_IDS)
def test_empty_and_single_word(cls, multiroot):
    scores = make_scores(torch.tensor([1, 0]), 13).requires_grad_()
    dist = cls(scores, torch.tensor([1, 0]), multiroot)
    assert dist.log_partition[1].item() == 0
    assert dist.log_partition[0].item() == pytest.approx(scores[0, 1, 0].item())
    (grad,) = torch.autograd.grad(dist.log_partition.sum(), scores)
    assert torch.isfinite(grad).all() and grad[1].abs().sum() == 0
    assert dist.argmax.tolist() == [[-1, 0], [-1, -1]]
    assert dist.sample(2).tolist() == [[[-1, 0], [-1, -1]]] * 2
    assert dist.entropy.abs().max() < 1e-12
    zero = cls(torch.zeros(2, 1, 1), torch.tensor([0, 0]), multiroot)
    assert zero.log_partition.tolist() == [0.0, 0.0] and zero.argmax.tolist() == [[-1], [-1]]


def test_parts_validation():
    scores = make_scores(torch.tensor([4]), 14)
    non_projective = torch.tensor([[-1, 3, 0, 2, 1]])  # arcs 3->1 and 0->2 cross
    with pytest.raises(ValueError, match="non-projective"):
        DependencyCRF(scores).score(non_projective)
    assert torch.isfinite(MatrixTree(scores).score(non_projective)).all()
    for cls in CLASSES:
        with pytest.raises(ValueError, match="cycle"):
            cls(scores).score(torch.tensor([[-1, 2, 1, 0, 3]]))
        with pytest.raises(ValueError, match="several words"):
            cls(scores).score(torch.tensor([[-1, 0, 1, 0, 3]]))
        assert torch.isfinite(cls(scores, multiroot=True).score(torch.tensor([[-1, 0, 1, 0, 3]]))).all()
        with pytest.raises(ValueError):
            cls(scores).score(torch.tensor([[-1, 5, 1, 0, 3]]))
        with pytest.raises(ValueError):
            cls(torch.zeros(2, 3, 4))


@settings(max_examples=15, deadline=None)
@given(lens=st.lists(st.integers(0, 5), min_size=1, max_size=3), seed=st.integers(0, 2 ** 16),
       scale=st.sampled_from([0.1, 1.0, 5.0]), multiroot=st.booleans(), projective=st.booleans())
def test_property_consistency(lens, seed, scale, multiroot, projective):
    cls = DependencyCRF if projective else MatrixTree
    lens = torch.tensor(lens)
    scores = make_scores(lens, seed, scale)
    dist = cls(scores, lens, multiroot)
    rows = dist.marginals.sum(-1)[:, 1:]
    words = torch.arange(1, scores.shape[1]) <= lens.unsqueeze(1)
    torch.testing.assert_close(rows, words.double())
    assert (dist.log_partition >= dist.max - 1e-9).all()
    torch.testing.assert_close(dist.score(dist.argmax), dist.max)
    assert (dist.entropy >= -1e-9).all()
    assert (dist.kmax(3)[:-1] >= dist.kmax(3)[1:]).all()
    torch.testing.assert_close(dist.kmax(3)[0], dist.max)


# ---------------------------------------------------------------------------------------------- peers
@pytest.mark.parametrize("cls_name,multiroot", [(c.__name__, m) for c, m in MODES], ids=MODE_IDS)
def test_against_supar(cls_name, multiroot):
    supar = pytest.importorskip("supar.structs")
    lens = torch.tensor([7, 3, 5, 1])
    scores = make_scores(lens, 15)
    ours = {"DependencyCRF": DependencyCRF, "MatrixTree": MatrixTree}[cls_name](scores, lens, multiroot)
    x = scores.clone().requires_grad_()
    theirs = getattr(supar, cls_name)(x, lens, multiroot=multiroot)
    torch.testing.assert_close(theirs.log_partition.double(), ours.log_partition, atol=1e-5, rtol=1e-6)
    (grad,) = torch.autograd.grad(theirs.log_partition.sum(), x)
    torch.testing.assert_close(grad, ours.marginals, atol=1e-6, rtol=0)
    mask = ours.argmax >= 0
    torch.testing.assert_close(theirs.score(ours.argmax.clamp(min=0)).double(), ours.max, atol=1e-6, rtol=0)
    assert torch.equal(theirs.argmax[mask], ours.argmax[mask]) or cls_name == "MatrixTree"


def to_torch_struct(scores: torch.Tensor) -> torch.Tensor:
    """Our ``[B, S, S]`` (dependent, head) scores to torch-struct's ``[B, N, N]`` (head, dependent), root arcs on
    the diagonal."""
    words = scores[:, 1:, 1:].transpose(1, 2).clone()
    words.diagonal(dim1=1, dim2=2).copy_(scores[:, 1:, 0])
    return words


@pytest.mark.parametrize("multiroot", [False, True])
def test_against_torch_struct(multiroot):
    torch_struct = pytest.importorskip("torch_struct")
    lens = torch.tensor([6, 4, 2, 1])
    scores = make_scores(lens, 16)
    ours = DependencyCRF(scores, lens, multiroot)
    x = to_torch_struct(scores).requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = torch_struct.DependencyCRF(x, lens, multiroot=multiroot)
        log_z = theirs.partition
    torch.testing.assert_close(log_z, ours.log_partition, atol=1e-6, rtol=1e-6)
    (grad,) = torch.autograd.grad(log_z.sum(), x)
    torch.testing.assert_close(grad, to_torch_struct(ours.marginals), atol=1e-6, rtol=0)


@pytest.mark.parametrize("multiroot", [False, True])
def test_matrix_tree_fast_and_robust_paths_agree(multiroot):
    from structkd.structs import matrix_tree
    from structkd.structs.tree import arc_mask

    lens = torch.tensor([30, 17, 1, 0, 24])
    for scale in (1.0, 3.0, 10.0):
        scores = make_scores(lens, 17, scale)
        dist = MatrixTree(scores, lens, multiroot)
        masked, mask = dist.potentials[0], arc_mask(lens, scores.shape[1])
        log_z, marginals, trusted = matrix_tree._matrix_tree_fast(masked, mask, multiroot)
        assert torch.equal(marginals[~mask], torch.zeros_like(marginals[~mask]))
        robust = matrix_tree._matrix_tree_robust(masked, lens, multiroot)
        torch.testing.assert_close(log_z[trusted], robust[trusted], rtol=1e-10, atol=1e-9)
        torch.testing.assert_close(dist.log_partition, robust, rtol=1e-10, atol=1e-9)


def test_arc_mask_matches_its_definition_for_every_length():
    from structkd.structs import tree

    for seq_len in (1, 2, 5, 8, 5):  # the cached ends of each length, asked for again
        lens = torch.arange(seq_len)
        mask = tree.arc_mask(lens, seq_len)
        expected = [[[1 <= d <= n and 0 <= h <= n and h != d for h in range(seq_len)] for d in range(seq_len)]
                    for n in lens.tolist()]
        assert mask.tolist() == expected


def test_iter_cycles_finds_every_cycle_once():
    import numpy as np

    from structkd.structs.heads import iter_cycles

    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(1, 9))
        heads = [-1] + rng.integers(-1, n + 1, size=n).tolist()  # -1: detached; may point at itself
        found = list(iter_cycles(heads))
        # a node is on a cycle when following heads from it comes back to it
        on_cycle = set()
        for d in range(1, n + 1):
            node = heads[d]
            for _ in range(n + 1):
                if node < 0 or node == d:
                    break
                node = heads[node]
            if node == d:
                on_cycle.add(d)
        assert sorted(x for c in found for x in c) == sorted(on_cycle)
        for cycle in found:  # each in head order, closing on itself
            assert [heads[x] for x in cycle] == cycle[1:] + cycle[:1]
        assert next(iter_cycles(heads), None) == (found[0] if found else None)


@pytest.mark.parametrize("multiroot", [False, True])
def test_nearest_projective_keeps_the_most_arcs_then_lifts_to_the_nearest_ancestors(multiroot):
    from brute import is_projective, trees

    from structkd.structs.tree import nearest_projective

    def ancestors(heads, d):  # [head, its head, ..., 0] of word d
        out = [heads[d - 1]]
        while out[-1] != 0:
            out.append(heads[out[-1] - 1])
        return out

    def objective(candidate, gold):  # what the function maximizes, in exact fractions
        from fractions import Fraction

        seq_len = len(gold) + 1
        total = Fraction(0)
        for d, h in enumerate(candidate, start=1):
            up = ancestors(gold, d)
            if h == up[0]:
                total += 1
            elif h in up:
                total += Fraction(1, 2 * seq_len * (up.index(h) + 1))
        return total

    rng = random.Random(0)
    changed = 0
    for n in (1, 2, 3, 4, 5, 6):
        every, projective_trees = trees(n, multiroot, False), trees(n, multiroot, True)
        golds = rng.sample(every, min(len(every), 12))
        changed += sum(not is_projective(g) for g in golds)
        batch = torch.full((len(golds), 8), -1, dtype=torch.long)
        for b, gold in enumerate(golds):
            batch[b, 1:n + 1] = torch.tensor(gold)
        lens = torch.full((len(golds),), n)
        got = nearest_projective(batch, lens, multiroot)
        for b, gold in enumerate(golds):
            mine = tuple(got[b, 1:n + 1].tolist())
            assert got[b, n + 1:].eq(-1).all() and got[b, 0] == -1
            assert mine in projective_trees
            best = max(objective(t, gold) for t in projective_trees)
            assert objective(mine, gold) == best, (gold, mine)
            if is_projective(gold):
                assert mine == gold
            kept = sum(a == g for a, g in zip(mine, gold))
            assert kept == max(sum(a == g for a, g in zip(t, gold)) for t in projective_trees)
    assert changed >= 10  # non-projective trees were among them
