"""Structural KD between tree distributions (and to head-offset taggers) against brute force."""

import brute
import pytest
import torch

from structkd.kd import head_offset_marginals, project, restrict_teacher, structural_kd_loss
from structkd.structs.chain import MaxEnt
from structkd.structs.tree import DependencyCRF, MatrixTree
from structkd.structs.tree2o import Dependency2oCRF

WORDS = 4
LENS = torch.tensor([4, 3, 1])


def arc_scores(seed, batch=3, words=WORDS):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, words + 1, words + 1, generator=g, dtype=torch.float64)


def sib_scores(seed, batch=3, words=WORDS):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, words + 1, words + 1, words + 1, generator=g, dtype=torch.float64)


def tree_score(arcs, sibs, b, heads):
    """Differentiable score of a heads tuple for sentence b."""
    total = sum(arcs[b, d + 1, h] for d, h in enumerate(heads))
    if sibs is not None:
        total = total + sum(sibs[b, m, h, s] for m, h, s in brute.siblings(heads))
    return total


def build(kind, arcs, sibs, multiroot):
    if kind == "dep":
        return DependencyCRF(arcs, LENS, multiroot)
    if kind == "mtt":
        return MatrixTree(arcs, LENS, multiroot)
    return Dependency2oCRF(arcs, sibs, LENS, multiroot)


PAIRS = [("dep", "dep"), ("mtt", "mtt"), ("dep", "mtt"), ("2o", "2o"), ("2o", "dep"), ("2o", "mtt"), ("dep", "2o")]


@pytest.mark.parametrize("multiroot", [False, True])
@pytest.mark.parametrize("teacher_kind,student_kind", PAIRS)
def test_tree_pairs_equal_brute_force_cross_entropy(teacher_kind, student_kind, multiroot):
    t_arcs, t_sibs = arc_scores(0), sib_scores(1)
    s_arcs, s_sibs = arc_scores(2).requires_grad_(), sib_scores(3).requires_grad_()
    teacher = build(teacher_kind, t_arcs, t_sibs, multiroot)
    student = build(student_kind, s_arcs, s_sibs, multiroot)
    loss = structural_kd_loss(teacher, student)
    grad = torch.autograd.grad(loss.sum(), s_arcs)[0]
    for b in range(3):
        n = int(LENS[b])
        t_support = brute.trees(n, multiroot, projective=teacher_kind != "mtt")
        s_support = brute.trees(n, multiroot, projective=student_kind != "mtt")
        t_sib = t_sibs if teacher_kind == "2o" else None
        s_sib = s_sibs if student_kind == "2o" else None
        t_logits = torch.stack([tree_score(t_arcs, t_sib, b, y) for y in t_support])
        p_t = t_logits.softmax(0)
        s_log_z = torch.logsumexp(torch.stack([tree_score(s_arcs, s_sib, b, y) for y in s_support]), 0)
        expected = -(p_t * (torch.stack([tree_score(s_arcs, s_sib, b, y) for y in t_support]) - s_log_z)).sum()
        assert loss[b].item() == pytest.approx(expected.item(), abs=1e-9)
        torch.testing.assert_close(grad[b], torch.autograd.grad(expected, s_arcs)[0][b])


@pytest.mark.parametrize("kind", ["dep", "mtt", "2o"])
def test_same_factorization_minimum_is_teacher_entropy(kind):
    arcs, sibs = arc_scores(4), sib_scores(5)
    teacher = build(kind, arcs, sibs, False)
    student = build(kind, arcs.clone().requires_grad_(), sibs.clone().requires_grad_(), False)
    loss = structural_kd_loss(teacher, student)
    torch.testing.assert_close(loss.detach(), teacher.entropy)


@pytest.mark.parametrize("multiroot", [False, True])
@pytest.mark.parametrize("kind", ["dep", "mtt"])
def test_token_kd_optimum_is_a_structural_kd_optimum_for_first_order_trees(kind, multiroot):
    """Same first-order factorization (case 1): token KD on head-selection rows is zero exactly when the student's
    arc scores are the teacher's plus a constant per dependent, and such a student has the teacher's tree
    distribution (each tree has one head per word), so structural KD is at its minimum too.  Not conversely:
    with a single root, a constant added to every root arc leaves the trees' distribution alone (one root arc
    per tree) but changes the head-selection rows."""
    from structkd.kd import token_kd_loss
    from structkd.structs.heads import word_mask
    from structkd.structs.tree import arc_mask

    arcs = arc_scores(8)
    size = arcs.shape[1]
    teacher = build(kind, arcs, None, multiroot)
    mask, heads = word_mask(LENS, size), arc_mask(LENS, size)

    def both_losses(student_arcs):
        token = token_kd_loss(arcs, student_arcs, mask, class_mask=heads)
        return token, structural_kd_loss(teacher, build(kind, student_arcs, None, multiroot)) - teacher.entropy

    shifted = arcs + torch.randn(3, size, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    token, structural = both_losses(shifted)
    torch.testing.assert_close(token, torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(structural, torch.zeros(3, dtype=torch.float64))
    several = LENS > 1  # a one-word sentence has one possible head, one tree: every student is exact there
    token, structural = both_losses(arcs + 0.5 * arc_scores(10))  # any other student: both above their minimum
    assert (token[several] > 1e-3).all() and (structural[several] > 1e-3).all()
    root_shift = arcs.clone()
    root_shift[:, :, 0] += 2.0
    token, structural = both_losses(root_shift)
    assert (token[several] > 1e-3).all()
    if not multiroot:
        torch.testing.assert_close(structural, torch.zeros(3, dtype=torch.float64))


def test_padding_invariance_trees():
    arcs, sibs = arc_scores(6, words=5), sib_scores(7, words=5)
    lens = torch.tensor([5, 2, 3])
    batch = structural_kd_loss(Dependency2oCRF(arcs, sibs, lens), DependencyCRF(arcs * 0.3, lens))
    for b in range(3):
        n = int(lens[b]) + 1
        alone = structural_kd_loss(Dependency2oCRF(arcs[b:b + 1, :n, :n], sibs[b:b + 1, :n, :n, :n], lens[b:b + 1]),
                                   DependencyCRF(arcs[b:b + 1, :n, :n] * 0.3, lens[b:b + 1]))
        torch.testing.assert_close(batch[b:b + 1], alone)


def test_head_offset_tagger_equals_brute_force():
    """Second-order teacher to a parsing-as-sequence-labeling student (offset and relation per word)."""
    n_rels = 2
    arcs, sibs = arc_scores(8), sib_scores(9)
    g = torch.Generator().manual_seed(10)
    rel_probs = torch.randn(3, WORDS + 1, WORDS + 1, n_rels, generator=g, dtype=torch.float64).softmax(-1)
    offsets = [(o, r) for o in range(-WORDS, WORDS + 1) if o for r in range(n_rels)]
    teacher = Dependency2oCRF(arcs, sibs, LENS)
    logits = torch.randn(3, WORDS, len(offsets), generator=g, dtype=torch.float64).requires_grad_()
    student = MaxEnt(logits, LENS)
    loss = structural_kd_loss(teacher, student, offsets=offsets, rel_probs=rel_probs)
    for b in range(3):
        n = int(LENS[b])
        support = brute.trees(n, False, projective=True)
        probs = torch.stack([tree_score(arcs, sibs, b, y) for y in support]).softmax(0)
        log_q = logits[b].log_softmax(-1)
        expected = 0.0
        for p, heads in zip(probs, support):
            for d, h in enumerate(heads, start=1):
                for r in range(n_rels):
                    label = offsets.index((h - d, r))
                    expected = expected - p * rel_probs[b, d, h, r] * log_q[d - 1, label]
        assert loss[b].item() == pytest.approx(float(expected.detach()), abs=1e-9)


def test_head_offset_marginals_renormalize_and_errors():
    arcs = arc_scores(11)
    teacher = DependencyCRF(arcs, LENS)
    partial = head_offset_marginals(teacher.marginals, LENS, [-1, 1], renormalize=True)
    mask = torch.arange(WORDS) < LENS.unsqueeze(-1)
    covered = partial.sum(-1)
    assert torch.allclose(covered[mask], torch.ones_like(covered[mask]))
    assert (partial[~mask] == 0).all()
    with pytest.raises(ValueError, match="offsets were given"):
        project(teacher, MaxEnt(torch.zeros(3, WORDS, 3), LENS), offsets=[-1, 1])
    with pytest.raises(ValueError, match="rel_probs"):
        project(teacher, MaxEnt(torch.zeros(3, WORDS, 2), LENS), offsets=[(-1, 0), (1, 0)])


def test_tree_lengths_must_match():
    teacher = DependencyCRF(arc_scores(0), LENS)
    with pytest.raises(ValueError, match="lengths in words"):
        structural_kd_loss(teacher, DependencyCRF(arc_scores(1), torch.tensor([4, 2, 1])))


# (teacher kind, teacher multiroot, student kind, student multiroot): the student cannot express some teacher trees
INEXPRESSIBLE = [("mtt", False, "dep", False), ("mtt", True, "dep", True), ("mtt", True, "dep", False),
                 ("dep", True, "dep", False), ("mtt", True, "mtt", False), ("dep", True, "mtt", False),
                 ("2o", True, "2o", False), ("2o", True, "dep", False), ("2o", True, "mtt", False),
                 ("mtt", False, "2o", False)]


@pytest.mark.parametrize("t_kind,t_multi,s_kind,s_multi", INEXPRESSIBLE)
def test_inexpressible_teacher_trees_are_refused_by_default(t_kind, t_multi, s_kind, s_multi):
    """Issue #23.5: a teacher with trees the student cannot express (non-projective, multiroot) makes the
    factorized loss unbounded below; the default refuses it and names the way out."""
    teacher = build(t_kind, arc_scores(0), sib_scores(1), t_multi)
    student = build(s_kind, arc_scores(2), sib_scores(3), s_multi)
    with pytest.raises(ValueError, match="impossible='renormalize'"):
        structural_kd_loss(teacher, student)
    with pytest.raises(ValueError, match="restrict_teacher"):
        project(teacher, student)


@pytest.mark.parametrize("t_kind,t_multi,s_kind,s_multi", INEXPRESSIBLE)
def test_renormalized_teacher_equals_brute_force_restricted_cross_entropy(t_kind, t_multi, s_kind, s_multi):
    """``impossible='renormalize'``: the exact cross-entropy to the teacher restricted to the student's trees and
    renormalized (brute force, with gradients), bounded below by that teacher's entropy however sharp the student."""
    t_arcs, t_sibs = arc_scores(0), sib_scores(1)
    s_arcs, s_sibs = arc_scores(2).requires_grad_(), sib_scores(3).requires_grad_()
    teacher = build(t_kind, t_arcs, t_sibs, t_multi)
    student = build(s_kind, s_arcs, s_sibs, s_multi)
    loss = structural_kd_loss(teacher, student, impossible="renormalize")
    grad = torch.autograd.grad(loss.sum(), s_arcs)[0]
    restricted = restrict_teacher(teacher, student)
    for b in range(3):
        n = int(LENS[b])
        s_support = brute.trees(n, s_multi, projective=s_kind != "mtt")
        t_support = set(brute.trees(n, t_multi, projective=t_kind != "mtt"))
        support = [y for y in s_support if y in t_support]
        t_sib = t_sibs if t_kind == "2o" else None
        s_sib = s_sibs if s_kind == "2o" else None
        p_t = torch.stack([tree_score(t_arcs, t_sib, b, y) for y in support]).softmax(0)
        s_log_z = torch.logsumexp(torch.stack([tree_score(s_arcs, s_sib, b, y) for y in s_support]), 0)
        expected = -(p_t * (torch.stack([tree_score(s_arcs, s_sib, b, y) for y in support]) - s_log_z)).sum()
        assert loss[b].item() == pytest.approx(expected.item(), abs=1e-9)
        torch.testing.assert_close(grad[b], torch.autograd.grad(expected, s_arcs)[0][b])
        entropy = -(p_t * p_t.log()).sum()
        assert restricted.entropy[b].item() == pytest.approx(entropy.item(), abs=1e-9)
    sharp = build(s_kind, arc_scores(2) * 1e3, sib_scores(3) * 1e3, s_multi)
    assert (structural_kd_loss(teacher, sharp, impossible="renormalize") >= restricted.entropy - 1e-9).all()


def test_ignoring_inexpressible_trees_keeps_the_unbounded_surrogate():
    """``impossible='ignore'`` is the documented risk: the unrestricted arc marginals, whose loss falls without
    end as the student sharpens (a non-projective teacher, a projective student)."""
    crossing = torch.zeros(3, WORDS + 1, WORDS + 1, dtype=torch.float64)
    crossing[0, [1, 2, 3, 4], [3, 0, 4, 2]] = 1.0  # 2 -> 4 crosses 3 -> 1: a non-projective tree
    teacher = MatrixTree(arc_scores(0) + 10 * crossing, LENS)
    torch.testing.assert_close(project(teacher, DependencyCRF(arc_scores(2), LENS), impossible="ignore")[0],
                               teacher.marginals)
    losses = [structural_kd_loss(teacher, DependencyCRF(crossing * scale, LENS), impossible="ignore")[0].item()
              for scale in (1.0, 1e2, 1e3)]
    assert losses[2] < losses[1] < losses[0] and losses[2] < -500
    bounded = structural_kd_loss(teacher, DependencyCRF(crossing * 1e3, LENS), impossible="renormalize")
    assert bounded[0] > 0


def test_head_offset_student_without_renormalizing_is_refused_by_default():
    """Issue #23.5: dropping the teacher's mass outside the offset inventory leaves an unbounded loss (all logits of
    a word falling lowers it without end); it needs ``impossible='ignore'``."""
    teacher = DependencyCRF(arc_scores(11), LENS)
    logits = torch.zeros(3, WORDS, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="renormalize=True"):
        structural_kd_loss(teacher, MaxEnt(logits, LENS), offsets=[-1, 1], renormalize=False)
    dropped = [structural_kd_loss(teacher, MaxEnt(logits - shift, LENS), offsets=[-1, 1], renormalize=False,
                                  impossible="ignore")[0].item() for shift in (0.0, 1e3)]
    assert dropped[1] < dropped[0] - 100
    kept = [structural_kd_loss(teacher, MaxEnt(logits - shift, LENS), offsets=[-1, 1])[0].item()
            for shift in (0.0, 1e3)]
    assert kept[1] == pytest.approx(kept[0])


STUDENT_SPECS = [("biaffine", "projective", False), ("biaffine", "nonprojective", False),
                 ("biaffine", "nonprojective", True), ("seqlabel", None, False)]


@pytest.mark.parametrize("kind,tree,multiroot", STUDENT_SPECS)
def test_parse_pipeline_caches_the_teacher_restricted_to_the_student(kind, tree, multiroot):
    """The parser pipeline's cached arcs: a multiroot non-projective teacher restricted to the trees the student
    can express (projective, single root), untouched for a sequence-labeling student (any heads)."""
    from structkd.parse.distillation import StudentSpec, _probe

    teacher = MatrixTree(arc_scores(12), LENS, multiroot=True)
    spec = StudentSpec(kind, tree, multiroot, ((-1, 0), (1, 0)) if kind == "seqlabel" else None)
    cached = project(teacher, _probe(spec, LENS, WORDS + 1, torch.float64), impossible="renormalize")[0]
    if kind == "seqlabel":
        expected = teacher.marginals
    else:
        expected = (DependencyCRF if tree == "projective" else MatrixTree)(arc_scores(12), LENS, multiroot).marginals
    torch.testing.assert_close(cached, expected)


@pytest.mark.parametrize("multiroot", [False, True])
@pytest.mark.parametrize("temperature,mode", [(1.0, "global"), (2.5, "global"), (2.5, "local")])
def test_a_first_order_teachers_stored_scores_give_its_second_order_marginals(multiroot, temperature, mode):
    """The parser cache's factored form for a first-order projective teacher and a second-order student
    (:func:`structkd.parse.distillation.first_order_marginals`): the arc and sibling marginals recomputed from
    its stored arc scores are the brute-force marginals of its tree distribution (at ``T`` under a global
    temperature), to float32 precision; from float16 scores, to float16 precision."""
    from structkd.numerics import stored_log_potentials
    from structkd.parse.config import KdConfig
    from structkd.parse.distillation import first_order_marginals

    t_arcs = arc_scores(5) * 3
    teacher = DependencyCRF(t_arcs, LENS, multiroot)
    student = Dependency2oCRF(arc_scores(6), sib_scores(7), LENS, multiroot)
    kd = KdConfig(method="structural", temperature=temperature, temperature_mode=mode)
    stored = stored_log_potentials(teacher.potentials[0], (-1,))
    arcs, sibs = first_order_marginals(kd, stored, student)
    scale = temperature if mode == "global" else 1.0
    for b in range(3):
        n = int(LENS[b])
        support = brute.trees(n, multiroot, projective=True)
        probs = brute.probabilities(support, lambda y, b=b: tree_score(t_arcs, None, b, y) / scale)
        want_arcs, want_sibs = torch.zeros(WORDS + 1, WORDS + 1), torch.zeros(WORDS + 1, WORDS + 1, WORDS + 1)
        for heads, p in zip(support, probs):
            for d, h in enumerate(heads):
                want_arcs[d + 1, h] += p
            for m, h, s in brute.siblings(heads):
                want_sibs[m, h, s] += p
        torch.testing.assert_close(arcs[b].float(), want_arcs, atol=2e-5, rtol=0)
        torch.testing.assert_close(sibs[b].float(), want_sibs, atol=2e-5, rtol=0)
    half = first_order_marginals(kd, stored.half(), student)
    for got, want in zip(half, (arcs, sibs)):
        torch.testing.assert_close(got, want, atol=5e-3, rtol=0)
