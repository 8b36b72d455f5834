"""One worked example of structural KD per teacher/student case (docs/kd.md walks through them).

Run: ``python examples/kd_cases.py``.  Scores are random here; in a training loop they come from the
teacher's and the student's heads, the teacher under ``torch.no_grad()``.
"""

from __future__ import annotations

import torch

from structkd import Dependency2oCRF, DependencyCRF, LinearChainCRF, MaxEnt, SemiMarkovCRF
from structkd.kd import structural_kd_loss
from structkd.schemes import tag_inventory

torch.manual_seed(0)
batch, seq_len = 2, 6
lens = torch.tensor([6, 4])


def case1_same_factorization() -> torch.Tensor:
    """CRF teacher, CRF student: unary, transition, start and end parts."""
    n_tags = 5
    teacher = LinearChainCRF(torch.randn(batch, seq_len, n_tags), torch.randn(n_tags, n_tags), lens)
    emissions = torch.randn(batch, seq_len, n_tags, requires_grad=True)
    student = LinearChainCRF(emissions, torch.randn(n_tags, n_tags), lens)
    return structural_kd_loss(teacher, student)


def case2_student_finer() -> torch.Tensor:
    """CRF teacher, per-token MaxEnt student (token marginals); a second-order parser teacher, a first-order
    student (arc marginals)."""
    n_tags = 5
    crf = LinearChainCRF(torch.randn(batch, seq_len, n_tags), torch.randn(n_tags, n_tags), lens)
    maxent = MaxEnt(torch.randn(batch, seq_len, n_tags, requires_grad=True), lens)
    tagger_loss = structural_kd_loss(crf, maxent)
    size = seq_len + 1  # the root, then the words
    parser = Dependency2oCRF(torch.randn(batch, size, size), torch.randn(batch, size, size, size), lens)
    student = DependencyCRF(torch.randn(batch, size, size, requires_grad=True), lens)
    return tagger_loss + structural_kd_loss(parser, student)


def case3_teacher_finer() -> torch.Tensor:
    """MaxEnt teacher, CRF student: tag-pair marginals are products of token marginals."""
    n_tags = 5
    teacher = MaxEnt(torch.randn(batch, seq_len, n_tags), lens)
    student = LinearChainCRF(torch.randn(batch, seq_len, n_tags, requires_grad=True), torch.randn(n_tags, n_tags),
                             lens)
    return structural_kd_loss(teacher, student)


def case4_incompatible() -> torch.Tensor:
    """Span teacher (NER as parsing) to a BIOES CRF tagger: exact tag and tag-pair marginals from spans."""
    span_labels = ["O", "PER", "LOC"]
    tags = tag_inventory(["PER", "LOC"], "BIOES")
    scores = torch.randn(batch, seq_len, seq_len, len(span_labels))
    single = torch.eye(seq_len, dtype=torch.bool)
    scores[..., 0] = scores[..., 0].masked_fill(~single, -1e4)  # O labels single tokens only
    teacher = SemiMarkovCRF(scores, lens, max_width=4)
    student = LinearChainCRF(torch.randn(batch, seq_len, len(tags), requires_grad=True),
                             torch.randn(len(tags), len(tags)), lens)
    return structural_kd_loss(teacher, student, span_labels=span_labels, tags=tags, scheme="BIOES")


if __name__ == "__main__":
    for case in (case1_same_factorization, case2_student_finer, case3_teacher_finer, case4_incompatible):
        loss = case()
        loss.sum().backward()
        print(f"{case.__name__:28} loss per sentence {[round(x, 3) for x in loss.tolist()]}")
