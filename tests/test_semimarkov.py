"""SemiMarkovCRF against brute-force enumeration of segmentations, invariants and torch-struct."""

import brute
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from structkd import LOG_ZERO
from structkd.structs.semimarkov import SemiMarkovCRF, chart_to_segments, segments_to_chart

SEQ_LEN = 5
N_LABELS = 2


def random_scores(seed, batch=4, seq_len=SEQ_LEN, n_labels=N_LABELS, scale=1.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(batch, seq_len, seq_len, n_labels, generator=g, dtype=dtype) * scale
    lens = torch.randint(0, seq_len + 1, (batch,), generator=g)
    lens[0] = seq_len
    return scores, lens


def scorer(scores, b):
    return lambda y: sum(float(scores[b, i, j, label]) for i, j, label in y)


@pytest.mark.parametrize("max_width", [None, 1, 2, 3])
@pytest.mark.parametrize("seed", range(2))
def test_matches_brute_force(seed, max_width):
    scores, lens = random_scores(seed)
    dist = SemiMarkovCRF(scores, lens, max_width)
    samples = dist.sample(3000, torch.Generator().manual_seed(seed))
    topk = dist.topk(4)
    for b in range(scores.shape[0]):
        n = int(lens[b])
        segs = brute.segmentations(n, N_LABELS, max_width)
        score = scorer(scores, b)
        marg = torch.zeros(SEQ_LEN, SEQ_LEN, N_LABELS, dtype=torch.float64)
        for p, y in zip(brute.probabilities(segs, score), segs):
            for i, j, label in y:
                marg[i, j, label] += p
        assert dist.log_partition[b].item() == pytest.approx(brute.log_partition(segs, score), abs=1e-10)
        torch.testing.assert_close(dist.marginals[b], marg)
        assert dist.entropy[b].item() == pytest.approx(brute.entropy(segs, score), abs=1e-10)
        ranked = sorted((score(y) for y in segs), reverse=True)
        assert dist.max[b].item() == pytest.approx(ranked[0], abs=1e-10)
        expected = ranked[:4] + [LOG_ZERO] * (4 - len(ranked[:4]))
        assert dist.kmax(4)[:, b].tolist() == pytest.approx(expected, abs=1e-9)
        for r in range(min(4, len(segs))):
            assert score(chart_to_segments(topk[r, b:b + 1])[0]) == pytest.approx(ranked[r], abs=1e-9)
        freq = (torch.nn.functional.one_hot(samples[:, b].clamp(min=0), N_LABELS).double()
                * (samples[:, b] >= 0).unsqueeze(-1)).mean(0)
        assert (freq - marg).abs().max() < 0.04
    torch.testing.assert_close(dist.score(dist.argmax), dist.max)


def test_padding_invariance_and_gradients():
    scores, lens = random_scores(5, batch=4, seq_len=6)
    batch = SemiMarkovCRF(scores, lens, 3)
    for b in range(4):
        n = int(lens[b])
        alone = SemiMarkovCRF(scores[b:b + 1, :n, :n], lens[b:b + 1], 3)
        torch.testing.assert_close(batch.log_partition[b:b + 1], alone.log_partition)
        torch.testing.assert_close(batch.marginals[b:b + 1, :n, :n], alone.marginals)
        assert torch.equal(batch.argmax[b:b + 1, :n, :n], alone.argmax)
    x = scores[:, :4, :4].clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda s: SemiMarkovCRF(s, lens.clamp(max=4), 2).log_partition, (x,))
    dist = SemiMarkovCRF(x, lens.clamp(max=4), 2)
    dist.log_partition.sum().backward()
    torch.testing.assert_close(x.grad, dist.marginals)
    torch.testing.assert_close(dist.part_marginals(differentiable=True)[0].detach(), dist.marginals)


def test_extreme_scores_are_finite():
    scores, lens = random_scores(1, dtype=torch.float32, scale=1e4)
    lens[1] = 0
    lens[2] = 1
    x = scores.requires_grad_()
    dist = SemiMarkovCRF(x, lens, 3)
    (dist.log_partition.sum() + dist.entropy.sum()).backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(dist.marginals).all()


def test_chart_validation():
    scores, _ = random_scores(0, batch=1, seq_len=3)
    dist = SemiMarkovCRF(scores)
    good = segments_to_chart([[(0, 1, 1), (2, 2, 0)]], 3)
    assert dist.score(good).item() == pytest.approx(float(scores[0, 0, 1, 1] + scores[0, 2, 2, 0]))
    with pytest.raises(ValueError, match="covered by 0"):
        dist.score(segments_to_chart([[(0, 1, 1)]], 3))
    with pytest.raises(ValueError, match="covered by 2"):
        dist.score(segments_to_chart([[(0, 1, 1), (1, 2, 0)]], 3))
    with pytest.raises(ValueError, match="max_width"):
        SemiMarkovCRF(scores, max_width=1).score(good)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), seq_len=st.integers(1, 5), width=st.integers(1, 5))
def test_invariants_property(seed, seq_len, width):
    scores, lens = random_scores(seed, batch=3, seq_len=seq_len)
    dist = SemiMarkovCRF(scores, lens, width)
    # every token is covered by exactly one segment: coverage marginals sum to one
    cover = torch.zeros(3, seq_len, dtype=torch.float64)
    marg = dist.marginals.sum(-1)
    for i in range(seq_len):
        for j in range(i, seq_len):
            cover[:, i:j + 1] += marg[:, i, j].unsqueeze(-1)
    torch.testing.assert_close(cover, (torch.arange(seq_len) < lens.unsqueeze(-1)).double())
    assert (dist.max <= dist.log_partition + 1e-9).all()
    torch.testing.assert_close(dist.score(dist.argmax), dist.max)


def test_against_torch_struct_full_length():
    """torch-struct's SemiMarkovCRF is correct only without padding (its issue #110): compare there."""
    torch_struct = pytest.importorskip("torch_struct")
    seq_len, width, n_labels = 5, 3, 2
    scores, _ = random_scores(3, batch=2, seq_len=seq_len, n_labels=n_labels)
    ours = SemiMarkovCRF(scores, max_width=width)
    # torch-struct: pot[b, i, w, c, c_prev] scores the segment of width w starting at i labeled c (after a
    # segment labeled c_prev); width index 0 is unused and the sequence is N + 1 boundaries long
    pot = torch.full((2, seq_len, width + 1, n_labels, n_labels), -1e9, dtype=torch.float64)
    for i in range(seq_len):
        for w in range(1, width + 1):
            if i + w - 1 < seq_len:
                pot[:, i, w] = scores[:, i, i + w - 1].unsqueeze(-1).expand(-1, -1, n_labels)
    theirs = torch_struct.SemiMarkovCRF(pot.requires_grad_(), lengths=torch.full((2,), seq_len + 1))
    # their initial (dummy) previous label is summed over, adding log n_labels
    expected = ours.log_partition + torch.log(torch.tensor(float(n_labels), dtype=torch.float64))
    torch.testing.assert_close(theirs.partition.detach(), expected)
    their_marg = theirs.marginals.detach().sum(-1)  # [B, i, w, c]
    for i in range(seq_len):
        for w in range(1, width + 1):
            if i + w - 1 < seq_len:
                torch.testing.assert_close(their_marg[:, i, w], ours.marginals[:, i, i + w - 1])


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_half_precision_scores_are_computed_in_float32(half):
    """Padding and width limits (LOG_ZERO) are filled after the upcast: the float32 distribution of the same
    rounded scores, bit for bit."""
    scores, lens = random_scores(4, dtype=torch.float32, scale=3.0)
    low = scores.to(half)
    mixed, plain = SemiMarkovCRF(low, lens, max_width=3), SemiMarkovCRF(low.float(), lens, max_width=3)
    assert mixed.dtype == torch.float32 and mixed.potentials[0][0, 0, 4, 0] == LOG_ZERO
    for a, b in zip([mixed.potentials[0], mixed.log_partition, mixed.marginals],
                    [plain.potentials[0], plain.log_partition, plain.marginals]):
        assert torch.equal(a, b)


@pytest.mark.parametrize("batch_size,seq_len", [(0, 3), (2, 0), (0, 0)])
def test_degenerate_shapes_give_the_empty_segmentation(batch_size, seq_len):
    """No sentences, or only empty ones: log Z = max = entropy = 0, one (empty) best segmentation, no parts."""
    scores = torch.randn(batch_size, seq_len, seq_len, N_LABELS, dtype=torch.float64, requires_grad=True)
    lens = torch.zeros(batch_size, dtype=torch.long) if seq_len == 0 else None
    dist = SemiMarkovCRF(scores, lens)
    zeros = torch.zeros(batch_size, dtype=torch.float64)
    (grad,) = torch.autograd.grad(dist.log_partition.sum() + dist.entropy.sum(), scores)
    assert (grad == 0).all()
    for value in (dist.log_partition, dist.max, dist.entropy, dist.score(dist.argmax), dist.kl(SemiMarkovCRF(scores))):
        assert torch.equal(value.detach(), zeros)
    assert torch.equal(dist.kmax(2), torch.tensor([[0.0] * batch_size, [LOG_ZERO] * batch_size], dtype=torch.float64))
    assert dist.topk(2).shape == (2, batch_size, seq_len, seq_len) and (dist.topk(2) == -1).all()
    assert dist.sample(3).shape == (3, batch_size, seq_len, seq_len) and (dist.sample(3) == -1).all()
    for m in (dist.marginals, dist.part_marginals(differentiable=True)[0]):
        assert m.shape == scores.shape and (m == 0).all()
    assert dist.boundary_marginals().shape == (batch_size, max(seq_len - 1, 0), 2, N_LABELS, 2, N_LABELS)


@pytest.mark.parametrize("scale", [1.0, 1e4])
def test_float32_marginals_match_float64_at_large_scores(scale):
    """Segment marginals of float32 scores are the float64 ones to float32 precision, also at scores of 1e4."""
    scores, lens = random_scores(6, batch=3, seq_len=8, n_labels=3, dtype=torch.float32, scale=scale)
    single, double = SemiMarkovCRF(scores, lens, max_width=5), SemiMarkovCRF(scores.double(), lens, max_width=5)
    assert single.marginals.dtype == torch.float32
    torch.testing.assert_close(single.marginals.double(), double.marginals, rtol=0, atol=1e-6)
    torch.testing.assert_close(single.boundary_marginals().double(), double.boundary_marginals(), rtol=0, atol=1e-6)
    covered = single.marginals.sum(-1)  # [B, i, j]: each token of sentence 0 is covered once
    per_token = torch.stack([covered[0, :t + 1, t:].sum() for t in range(8)])
    torch.testing.assert_close(per_token, torch.ones(8), rtol=0, atol=1e-6)
