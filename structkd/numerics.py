"""Numerical conventions shared by every dynamic program in structkd.

There is exactly one spelling of "log zero" in the package: :data:`LOG_ZERO`.  It is a large *finite*
negative number rather than ``-inf`` so that a ``logsumexp`` over impossible entries stays finite and its
gradient stays free of NaN (``-inf - -inf`` is NaN).  It is far below any achievable structure score:
scores of magnitude up to 1e4 summed over thousands of parts stay above -1e8, and ``exp(LOG_ZERO - x)``
underflows to exactly 0 in float32 and float64.
"""

from __future__ import annotations

import contextlib

import torch

LOG_ZERO: float = -1e12
"""Log-potential of an impossible part (``log 0``), used everywhere instead of ``-inf``."""

STORED_LOG_ZERO: float = -1e4
""":data:`LOG_ZERO` as stored in float16 caches (whose range ends at 65504): still exactly 0 after a softmax."""


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The floating type a dynamic program runs in for inputs of ``dtype``.

    Half precision inputs are computed in float32 (their range cannot hold :data:`LOG_ZERO`);
    float32 and float64 are kept.
    """
    if dtype in (torch.float16, torch.bfloat16) or not dtype.is_floating_point:
        return torch.float32
    return dtype


def to_compute(x: torch.Tensor) -> torch.Tensor:
    """``x`` in :func:`compute_dtype` of its dtype: half precision upcast to float32, other floats unchanged.

    Upcast *before* filling :data:`LOG_ZERO` or adding other scores: float16 cannot hold ``-1e12`` and
    bfloat16 rounds the sums of half precision scores.
    """
    return x.to(compute_dtype(x.dtype))


def autocast_off(device: torch.device) -> contextlib.AbstractContextManager:
    """A context in which operations on ``device`` run in their inputs' dtype even inside ``torch.autocast``.

    Autocast runs matrix products (``matmul``, ``bmm``, ``einsum``) of float32 inputs in bfloat16 or float16;
    the dynamic programs and losses wrap theirs in this so that their results do not change under autocast.
    """
    available = getattr(torch.amp, "is_autocast_available", lambda kind: kind in ("cpu", "cuda"))
    if available(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def forbidden_mass_tolerance(dtype: torch.dtype) -> float:
    """The teacher mass on parts a student forbids that counts as rounding, for marginals stored in ``dtype``:
    ``1e-6`` for float32 and float64, one unit of rounding (``eps``) for float16 (about 1e-3) and bfloat16
    (about 8e-3) caches.  The projections keep forbidden parts exactly 0, so only a teacher that really puts
    mass there (a softmax teacher under BIO constraints: 0.1 to 0.5) goes past it."""
    return max(1e-6, float(torch.finfo(dtype).eps)) if dtype.is_floating_point else 1e-6


def is_impossible(x: torch.Tensor) -> torch.Tensor:
    """Boolean mask of entries at (or below) half of :data:`LOG_ZERO`, i.e. log-potentials of zero."""
    return x <= LOG_ZERO / 2


def exp_floor(dtype: torch.dtype) -> float:
    """The exp floor: log of (roughly) the smallest normal number of ``dtype`` (-87 in float32, -700 in float64).

    Below it ``exp`` underflows to a subnormal number, which vectorized ``exp`` computes on a slow path on CPU
    (tens of times a normal call), and the result is negligible next to 1 (below 2e-38, or 1e-304), beneath
    the rounding of any sum it enters.  Every dynamic program clamps (or, :func:`exp_nonpositive`, zeroes) the
    arguments below it; this is its one spelling."""
    return -700.0 if dtype == torch.float64 else -87.0


def exp_nonpositive(x: torch.Tensor) -> torch.Tensor:
    """``exp(x)`` for ``x <= 0`` (log-probabilities, scores minus their maximum), with results below the
    smallest normal number set to exactly 0.

    On CPU, ``exp`` of arguments whose result underflows takes a slow path (20 to 70 times slower); peaked
    distributions late in training produce many such arguments.  The values dropped are below 1e-38 (float32)
    or 1e-304 (float64) of the maximum, beneath the precision of any sum they enter.
    """
    floor = exp_floor(x.dtype)
    return x.clamp(min=floor).exp().masked_fill_(x < floor, 0.0)


def stored_log_potentials(scores: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Log-potentials as a float16 teacher cache keeps them: less their maximum over ``dims`` (a shift that
    leaves the distribution unchanged where every structure has one part in each slice over ``dims``, such as a
    word's tags or its heads; the likely parts, near 0, get float16's finest steps), impossible ones
    :data:`STORED_LOG_ZERO`, possible ones at least half of it (never read back as impossible)."""
    scores = scores.detach().float()
    impossible = is_impossible(scores)
    top = scores.masked_fill(impossible, float("-inf")).amax(dims, keepdim=True)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    shifted = (scores - top).clamp(min=STORED_LOG_ZERO / 2)
    return shifted.masked_fill(impossible, STORED_LOG_ZERO)


def read_log_potentials(stored: torch.Tensor, temperature: float, dtype: torch.dtype) -> torch.Tensor:
    """:func:`stored_log_potentials` back: :data:`STORED_LOG_ZERO` as :data:`LOG_ZERO`, the others divided by
    the temperature ``T``."""
    stored = stored.to(dtype)
    impossible = stored <= STORED_LOG_ZERO
    scores = stored / temperature if temperature != 1.0 else stored
    return scores.masked_fill(impossible, LOG_ZERO)
