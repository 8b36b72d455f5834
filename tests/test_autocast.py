"""Mixed precision: the structures and KD losses are unchanged under autocast, and the Trainer trains under
CPU autocast: bfloat16, and float16 with loss scaling (the GradScaler code path CUDA runs too: skipped steps
on overflow, unscaling before clipping, the scaler's state in checkpoints)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from structkd.kd import structural_kd_loss, supported_pairs
from structkd.structs import (
    Dependency2oCRF,
    DependencyCRF,
    LinearChainCRF,
    MatrixTree,
    MaxEnt,
    SemiMarkovCRF,
)
from structkd.train import TrainConfig, Trainer

B, L, T = 3, 9, 5
LENS = torch.tensor([9, 6, 2])


def _inputs(seed: int):
    g = torch.Generator().manual_seed(seed)
    return {"em": torch.randn(B, L, T, generator=g), "tr": torch.randn(T, T, generator=g),
            "arcs": torch.randn(B, L + 1, L + 1, generator=g) * 3,
            "sib": torch.randn(B, L + 1, L + 1, L + 1, generator=g),
            "spans": torch.randn(B, L, L, T, generator=g)}


BUILDERS = {
    "LinearChainCRF": lambda x, s: LinearChainCRF(s["em"] if x is None else x, s["tr"], LENS),
    "MaxEnt": lambda x, s: MaxEnt(s["em"] if x is None else x, LENS),
    "SemiMarkovCRF": lambda x, s: SemiMarkovCRF(s["spans"] if x is None else x, LENS),
    "DependencyCRF": lambda x, s: DependencyCRF(s["arcs"] if x is None else x, LENS),
    "MatrixTree": lambda x, s: MatrixTree(s["arcs"] if x is None else x, LENS),
    "Dependency2oCRF": lambda x, s: Dependency2oCRF(s["arcs"] if x is None else x, s["sib"], LENS),
}
FIRST = {"LinearChainCRF": "em", "MaxEnt": "em", "SemiMarkovCRF": "spans", "DependencyCRF": "arcs",
         "MatrixTree": "arcs", "Dependency2oCRF": "arcs"}


def _results(name: str, s: dict) -> dict:
    dist = BUILDERS[name](None, s)
    leaf = s[FIRST[name]].clone().requires_grad_()
    (grad,) = torch.autograd.grad(BUILDERS[name](leaf, s).log_partition.sum(), leaf)
    return {"log_z": dist.log_partition, "marginals": dist.marginals, "grad": grad, "argmax": dist.argmax}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_structures_are_unchanged_under_bfloat16_autocast(name):
    s = _inputs(0)
    plain = _results(name, s)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = _results(name, s)
    for key, value in plain.items():
        assert mixed[key].dtype == value.dtype, key
        assert torch.equal(mixed[key], value), key


def test_structural_kd_loss_is_unchanged_under_bfloat16_autocast():
    teacher, student = _inputs(1), _inputs(2)
    t = Dependency2oCRF(teacher["arcs"], teacher["sib"], LENS)

    def loss():
        leaf = student["arcs"].clone().requires_grad_()
        value = structural_kd_loss(t, DependencyCRF(leaf, LENS)).sum()
        return value, torch.autograd.grad(value, leaf)[0]

    plain = loss()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = loss()
    assert torch.equal(plain[0], mixed[0]) and torch.equal(plain[1], mixed[1])


class _Tagger(nn.Module):
    """A linear CRF tagger that records the autocast state its forward pass ran under."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.proj = nn.Linear(4, T)
        self.transitions = nn.Parameter(torch.zeros(T, T))
        self.seen: list[tuple[bool, torch.dtype]] = []

    def forward(self, x):
        emissions = self.proj(x)
        self.seen.append((torch.is_autocast_enabled("cpu"), emissions.dtype))
        return LinearChainCRF(emissions, self.transitions)


def _data(n: int) -> list[dict]:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n, L, 4, generator=g)
    y = torch.randint(0, T, (n, L), generator=g)
    return [{"x": x[i], "y": y[i]} for i in range(n)]


def _nll(model, batch) -> torch.Tensor:
    dist = model(batch["x"])
    return -dist.log_prob(batch["y"]).mean()


@pytest.mark.parametrize("amp,dtype,expected", [(True, "bfloat16", torch.bfloat16), (True, "float16", torch.float16),
                                                (False, "bfloat16", torch.float32)])
def test_trainer_autocast_on_cpu(tmp_path, amp, dtype, expected):
    model = _Tagger()
    cfg = TrainConfig(epochs=2, batch_size=4, lr=0.05, output_dir=str(tmp_path), progress=False, amp=amp,
                      amp_dtype=dtype)
    trainer = Trainer(model, cfg, _data(16), None, _nll, None, device="cpu")
    everything = {"x": torch.stack([d["x"] for d in _data(16)]), "y": torch.stack([d["y"] for d in _data(16)])}
    before = _nll(model, everything).detach()
    model.seen.clear()
    trainer.train()
    assert {d for _, d in model.seen[:8]} == {expected}
    assert all(enabled == amp for enabled, _ in model.seen[:8])
    assert (trainer.scaler is not None) == (amp and dtype == "float16")
    after = _nll(model, everything).detach()
    assert math.isfinite(float(after)) and float(after) < float(before)
    assert model.proj.weight.dtype == torch.float32  # weights stay float32: autocast casts per operation


def test_float16_loss_scaling_skips_overflowing_steps_and_resumes(tmp_path):
    model = _Tagger()
    cfg = TrainConfig(epochs=2, batch_size=4, lr=0.05, output_dir=str(tmp_path), progress=False, amp=True,
                      amp_dtype="float16", max_grad_norm=1.0, seed=0)
    overflow = {"steps": {1}, "count": 0}

    def loss_fn(m, batch):
        value = _nll(m, batch)
        overflow["count"] += 1
        if overflow["count"] in overflow["steps"]:  # the gradient of this step is inf
            value = value * torch.tensor(float("inf"))
        return value

    trainer = Trainer(model, cfg, _data(16), None, loss_fn, None, device="cpu")
    start_scale = trainer.scaler.get_scale()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer.train_step({"x": torch.stack([d["x"] for d in _data(4)]), "y": torch.stack([d["y"] for d in _data(4)])})
    # the overflowing step changed nothing but the scale: weights and learning rate stay
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert trainer.scaler.get_scale() == start_scale / 2
    assert trainer.scheduler.last_epoch == 0
    trainer.train()
    assert not all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    scale = trainer.scaler.get_scale()
    # a resumed trainer gets the scaler's state back from the checkpoint
    again = Trainer(_Tagger(), cfg, _data(16), None, loss_fn, None, device="cpu")
    assert again.scaler.get_scale() == start_scale
    again.resume()
    assert again.scaler.get_scale() == scale
    for key, value in again.unwrapped_model.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key


# ------------------------------------------------------------------------ every KD pair under autocast
SPAN_LABELS = ["O", "PER", "LOC"]
TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]  # BIO over SPAN_LABELS, T tags
OFFSETS = [-2, -1, 1, 2, 3]  # head offsets of a MaxEnt student of a tree teacher, T labels


def _leaves(name: str, seed: int) -> tuple[torch.Tensor, ...]:
    """Float32 potentials of a distribution of type ``name`` (scaled so the dynamic programs are not trivial)."""
    s = _inputs(seed)
    if name in ("LinearChainCRF",):
        return s["em"] * 4, s["tr"] * 4
    if name == "MaxEnt":
        return (s["em"] * 4,)
    if name == "SemiMarkovCRF":
        spans = s["spans"][..., :len(SPAN_LABELS)] * 4
        wide = ~torch.eye(L, dtype=torch.bool).unsqueeze(-1)
        return (spans.masked_fill(wide & (torch.arange(len(SPAN_LABELS)) == 0), -1e12),)
    if name == "Dependency2oCRF":
        return s["arcs"], s["sib"]
    return (s["arcs"],)


def _build(name: str, leaves) -> object:
    if name == "LinearChainCRF":
        return LinearChainCRF(leaves[0], leaves[1], LENS)
    if name == "Dependency2oCRF":
        return Dependency2oCRF(leaves[0], leaves[1], LENS)
    return {"MaxEnt": MaxEnt, "SemiMarkovCRF": SemiMarkovCRF, "DependencyCRF": DependencyCRF,
            "MatrixTree": MatrixTree}[name](leaves[0], LENS)


def _options(teacher: str, student: str) -> dict:
    if teacher == "SemiMarkovCRF":
        return {"span_labels": SPAN_LABELS, "tags": TAGS, "scheme": "BIO"}
    if student == "MaxEnt" and teacher not in ("LinearChainCRF", "MaxEnt"):
        return {"offsets": OFFSETS}
    if teacher == "MatrixTree" and student != "MatrixTree":  # non-projective mass a projective student lacks
        return {"impossible": "ignore"}
    return {}


def _kd(teacher: str, student: str) -> list[torch.Tensor]:
    """KD loss per sentence, its gradient in every student potential, the student's entropy and marginals."""
    t = _build(teacher, _leaves(teacher, 1))
    leaves = [x.clone().requires_grad_() for x in _leaves(student, 2)]
    s = _build(student, leaves)
    loss = structural_kd_loss(t, s, **_options(teacher, student))
    grads = torch.autograd.grad(loss.sum(), leaves)
    return [loss.detach(), *grads, s.entropy.detach(), *s.part_marginals()]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
@pytest.mark.parametrize("pair", supported_pairs(), ids="->".join)
def test_every_kd_pair_is_unchanged_under_autocast(pair, dtype):
    plain = _kd(*pair)
    with torch.autocast("cpu", dtype=dtype):
        mixed = _kd(*pair)
    for k, (a, b) in enumerate(zip(plain, mixed)):
        assert b.dtype == a.dtype, k
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5 * float(a.abs().max().clamp(min=1)), msg=f"{k}")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
def test_span_head_under_autocast_gives_float32_scores(dtype):
    from structkd.models.span import SpanHead
    from structkd.numerics import LOG_ZERO

    torch.manual_seed(0)
    head = SpanHead(4, ["O", "PER", "LOC"], max_width=3, hidden=8)
    features = torch.randn(2, 5, 4)
    with torch.autocast("cpu", dtype=dtype):
        scores = head.scores(features)
        dist = head(features, torch.tensor([5, 3]))
        loss = dist.log_partition.sum()
    loss.backward()
    assert scores.dtype == torch.float32 and scores[0, 0, 1, 0] == LOG_ZERO
    assert torch.isfinite(dist.marginals).all() and torch.isfinite(head.biaffine.grad).all()
