"""Structural knowledge distillation: the exact cross-entropy between structure distributions.

``KD(x) = -sum_y P_T(y|x) log P_S(y|x) = log Z_S(x) - sum_u P_T(u|x) score_S(u, x)``

where ``u`` ranges over the student's parts and ``P_T(u|x)`` is the teacher's marginal of ``u`` (computed by
a projection, :mod:`structkd.kd.projections`).  Wang et al., ACL 2021, "Structural Knowledge Distillation".

Temperature comes in two kinds:

* ``"global"``: every log-potential of teacher *and* student is divided by ``T`` before inference, so both
  are proper distributions at temperature ``T`` and the loss is their exact cross-entropy there;
* ``"local"``: the teacher's marginals of each substructure are tempered and renormalized separately
  (``m^(1/T) / sum m^(1/T)`` over the alternatives of the substructure: the tags of a token, the tag pairs
  of a position, the heads of a word), as the original paper's code did; the student stays at ``T = 1``.
  Sibling marginals are not a distribution over alternatives and are left untempered.

With ``t2_scaling`` the loss is multiplied by ``T^2`` (Hinton et al., 2015) so gradient magnitudes do not
shrink with ``T``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from structkd.kd.projections import (
    IMPOSSIBLE_RULES,
    chain_forbids_parts,
    chain_from_marginals,
    project,
    restrict_chain,
)
from structkd.numerics import forbidden_mass_tolerance, is_impossible
from structkd.structs.base import StructuredDistribution
from structkd.structs.chain import LinearChainCRF, MaxEnt
from structkd.structs.tree import DependencyCRF, MatrixTree
from structkd.structs.tree2o import Dependency2oCRF

Tensor = torch.Tensor
TEMPERATURE_MODES = ("global", "local")


def average_marginals(marginals: Sequence[Sequence[Tensor]], weights: Sequence[float] | None = None
                      ) -> tuple[Tensor, ...]:
    """Weighted average of several teachers' projected marginals: the marginals of their mixture, so the
    factorized loss stays the exact cross-entropy to the mixture distribution.

    Args:
        marginals: one tuple of part marginals per teacher (same layout).
        weights: mixture weights (normalized here); ``None`` for uniform.
    """
    n = len(marginals)
    if n == 0:
        raise ValueError("no teacher marginals to average")
    weights = [1.0 / n] * n if weights is None else [float(w) for w in weights]
    if len(weights) != n or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"need {n} non-negative teacher weights with a positive sum, got {weights}")
    total = sum(weights)
    return tuple(sum(w / total * m[k] for w, m in zip(weights, marginals)) for k in range(len(marginals[0])))


def local_temperature(marginals: Sequence[Tensor], temperature: float, groups: Sequence[int | None]
                      ) -> tuple[Tensor, ...]:
    """Temper each part type's marginals within its substructures.

    Args:
        marginals: part marginals, one tensor per student potential.
        temperature: ``T > 0``.
        groups: for each tensor, how many trailing axes form one substructure's alternatives (1 for tags of
            a token or heads of a word, 2 for tag pairs), or ``None`` to leave it untouched.
    """
    out = []
    for m, g in zip(marginals, groups):
        if g is None or temperature == 1.0:
            out.append(m)
            continue
        dims = tuple(range(-g, 0))
        powered = m.clamp(min=0) ** (1.0 / temperature)
        total = powered.sum(dims, keepdim=True)
        out.append(torch.where(total > 0, powered / total.clamp(min=torch.finfo(m.dtype).tiny), powered))
    return tuple(out)


def _substructure_axes(student: StructuredDistribution) -> list[int | None]:
    """Trailing axes of each student potential that hold the alternatives of one substructure (``None``:
    not a distribution over alternatives, left untempered)."""
    axes = {LinearChainCRF: [1, 2], MaxEnt: [1], DependencyCRF: [1], MatrixTree: [1], Dependency2oCRF: [1, None]}
    for cls in type(student).__mro__:
        if cls in axes:
            return axes[cls]
    return [None] * len(student.potentials)


def _compact(potential: Tensor) -> tuple[Tensor, tuple[int, ...]]:
    """The tensor behind a potential expanded over some axes (stride 0), and those axes."""
    axes = tuple(k for k, stride in enumerate(potential.stride()) if stride == 0 and potential.shape[k] > 1)
    index = tuple(slice(0, 1) if k in axes else slice(None) for k in range(potential.dim()))
    return potential[index], axes


def _check_support(student: StructuredDistribution, marginals: Sequence[Tensor], impossible: str,
                   stored: torch.dtype | None = None) -> tuple:
    """Teacher mass on parts the student forbids makes the exact cross-entropy infinite; mass below the
    rounding of ``stored`` (the marginals' dtype before any cast, :func:`forbidden_mass_tolerance`) is dropped."""
    tolerance = forbidden_mass_tolerance(stored or marginals[0].dtype)
    if impossible not in IMPOSSIBLE_RULES:
        raise ValueError(f"impossible must be one of {IMPOSSIBLE_RULES}, got {impossible!r}")
    out = []
    for m, p in zip(marginals, student.potentials):
        core, axes = _compact(p.detach())
        banned = is_impossible(core)
        if not bool(banned.any()):  # the usual case: nothing is forbidden, nothing to check
            out.append(m)
            continue
        if impossible != "ignore":  # "renormalize" has restricted chain and tree teachers (in project)
            summed = m.sum(tuple(a for a in axes if a > 0), keepdim=True) if any(a > 0 for a in axes) else m
            lost = (summed * banned).flatten(1).sum(-1)
            if bool((lost > tolerance).any()):
                b = int((lost > tolerance).nonzero()[0])
                raise ValueError(f"sentence {b}: the teacher puts mass {float(lost[b]):.3g} on parts the student "
                                 f"forbids (for example BIO transition constraints), so the cross-entropy is "
                                 f"infinite; pass impossible='renormalize' (kd.impossible=renormalize: the "
                                 f"teacher restricted to the student's structures, exact), drop the student's "
                                 f"constraints, or pass impossible='ignore' (kd.impossible=ignore)")
        out.append(m.masked_fill(banned, 0.0))
    return tuple(out)


def structural_kd_loss(teacher: StructuredDistribution | Sequence[StructuredDistribution],
                       student: StructuredDistribution, temperature: float = 1.0, temperature_mode: str = "global",
                       t2_scaling: bool = True, teacher_weights: Sequence[float] | None = None,
                       impossible: str = "error", **projection_options) -> Tensor:
    """Per-sentence structural KD loss ``[batch_size]``: ``log Z_S - sum_u P_T(u) score_S(u)``.

    Args:
        teacher: the teacher distribution, or several (their mixture is distilled, see
            :func:`average_marginals`).  Its marginals are treated as constants (no gradient).
        student: the student distribution; the loss is differentiable in its potentials.
        temperature: ``T > 0``; see the module docstring for the two kinds.
        temperature_mode: ``"global"`` or ``"local"``.
        t2_scaling: multiply the loss by ``T^2``.
        teacher_weights: mixture weights for several teachers.
        impossible: ``"error"`` (default) raises when the teacher has mass on parts the student forbids or on
            trees the student cannot express (non-projective, multiroot); ``"renormalize"`` distills a tree or
            chain teacher restricted to the student's trees or tag sequences (exact,
            :func:`~structkd.kd.projections.restrict_teacher`; forbidden parts of other students still raise);
            ``"ignore"`` drops the mass on forbidden parts and distills an inexpressible tree teacher's
            marginals as they are (an unbounded loss).
        projection_options: extra information a projection needs, passed by keyword (``span_labels``, ``tags``,
            ``scheme`` for a span teacher; ``offsets``, ``rel_probs`` for a head-offset tagger).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if temperature_mode not in TEMPERATURE_MODES:
        raise ValueError(f"temperature_mode must be one of {TEMPERATURE_MODES}, got {temperature_mode!r}")
    teachers = list(teacher) if isinstance(teacher, (list, tuple)) else [teacher]
    if temperature_mode == "global" and temperature != 1.0:
        teachers = [t.scaled(1.0 / temperature) for t in teachers]
        student = student.scaled(1.0 / temperature)
    marginals = average_marginals([project(t, student, impossible, **projection_options) for t in teachers],
                                  teacher_weights)
    if temperature_mode == "local":
        marginals = local_temperature(marginals, temperature, _substructure_axes(student))
    marginals = _check_support(student, marginals, impossible)
    loss = student.log_partition - student.expected_score(marginals)
    return loss * temperature**2 if t2_scaling else loss


def kd_teacher_marginals(teacher: StructuredDistribution, student: StructuredDistribution,
                         **projection_options) -> tuple[Tensor, ...]:
    """The teacher's marginals over the student's parts (for caching them once per dataset)."""
    return project(teacher, student, **projection_options)


def structural_kd_loss_from_marginals(marginals: Sequence[Tensor], student: StructuredDistribution,
                                      impossible: str = "error") -> Tensor:
    """Structural KD with precomputed (for example cached) teacher marginals over the student's parts.

    ``impossible`` as in :func:`structural_kd_loss`; with ``"renormalize"`` the marginals of a CRF student that
    forbids some of their parts are replaced by those of the chain they determine, restricted to the student's
    sequences (:func:`restricted_chain_marginals`)."""
    stored = marginals[0].dtype if len(marginals) else None
    if impossible == "renormalize" and isinstance(student, LinearChainCRF):
        marginals, _ = restricted_chain_marginals(marginals, student)
    marginals = _check_support(student, tuple(m.to(student.dtype) for m in marginals), impossible, stored)
    return student.log_partition - student.expected_score(marginals)


def _forbidden_mass(marginals: Sequence[Tensor], student: StructuredDistribution) -> Tensor:
    """``[B]``: the marginal mass on parts the student forbids, summed over them (an upper bound of the mass on
    forbidden sequences, used to skip the restriction when there is none)."""
    lost = torch.zeros(student.batch_size, dtype=torch.float64, device=marginals[0].device)
    for m, p in zip(marginals, student.potentials):
        banned = is_impossible(p.detach()).to(m.device)
        lost = lost + (m.double() * banned).flatten(1).sum(-1)
    return lost


def restricted_chain_marginals(marginals: Sequence[Tensor], student: LinearChainCRF
                               ) -> tuple[tuple[Tensor, ...], Tensor]:
    """Chain marginals ``(unary [B, L, N], edges [B, L - 1, N, N])`` of a teacher restricted to the sequences
    the CRF ``student`` allows and renormalized, and the teacher mass lost ``[B]`` (``1 - Z_R / Z``).

    A chain is determined by its marginals (:func:`~structkd.kd.projections.chain_from_marginals`), so this is
    :func:`~structkd.kd.projections.restrict_chain` of the teacher that produced them.  Marginals the student
    forbids none of are returned as they are, with zero loss."""
    marginals = tuple(marginals)
    if not chain_forbids_parts(student):
        return marginals, torch.zeros(student.batch_size, dtype=torch.float64, device=marginals[0].device)
    forbidden = _forbidden_mass(marginals, student)
    if not bool((forbidden > forbidden_mass_tolerance(marginals[0].dtype)).any()):
        return marginals, forbidden  # the usual constrained-teacher case: nothing to restrict, no extra pass
    teacher = chain_from_marginals(marginals[0], marginals[1] if len(marginals) > 1 else None, student.lens)
    restricted = restrict_chain(teacher, student)
    lost = (-torch.expm1(restricted.log_partition - teacher.log_partition)).clamp(min=0.0)
    dtype = marginals[0].dtype
    return tuple(m.to(dtype) for m in restricted.part_marginals()), lost
