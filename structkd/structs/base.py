"""The base class of every structured distribution in structkd.

A structured distribution is a Gibbs distribution over the structures ``y`` of each sentence in a
batch, ``P(y) = exp(score(y)) / Z``, where ``score(y)`` is the sum of the log-potentials of the *parts*
that make up ``y`` (tags, tag pairs, segments, arcs, sibling arcs).  A subclass stores its
log-potentials as a tuple of tensors (:attr:`StructuredDistribution.potentials`, the "part layout")
and writes only

* ``_inside(potentials)``: the dynamic program for ``log Z`` in plain differentiable torch,
* ``_part_masks()``: which entries of each potential tensor are real parts of some sentence,
* ``parts(structure)``: the indicator tensors of a given structure (validating it),
* ``_viterbi()``, ``_topk(k)``, ``_sample(n, generator)``: decoding and sampling,

and may override ``_inside_outside()`` with an explicit outside pass that is faster than autograd.
Everything else (marginals, ``score``, ``log_prob``, ``entropy``, ``cross_entropy``, ``kl``, caching,
the gradient of ``log_partition``) is derived here.

Marginals are the gradient of ``log Z`` with respect to the potentials.  They come in two flavours:

* detached (:attr:`marginals`, ``part_marginals()``): computed without an autograd graph, the cheap
  teacher-side path; ``log_partition`` uses the same computation for its backward pass, so the student
  side never stores a per-step autograd tape either;
* differentiable (``part_marginals(differentiable=True)``): obtained by ``torch.autograd.grad`` with
  ``create_graph=True`` through ``_inside``; needed only when a loss must be differentiated through the
  marginals themselves, and several times more expensive in time and memory (see ``docs/structs.md``).
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
from torch.autograd.function import once_differentiable

from structkd.numerics import LOG_ZERO, compute_dtype, is_impossible

Tensor = torch.Tensor


def check_lens(lens: Tensor | None, batch_size: int, max_len: int, device: torch.device) -> Tensor:
    """Validate sentence lengths and return them as ``LongTensor [batch_size]`` on ``device``.

    Args:
        lens: ``LongTensor [batch_size]`` of lengths, or ``None`` for "every sentence is ``max_len`` long".
        batch_size: the expected number of sentences.
        max_len: the padded length; every length must lie in ``[0, max_len]``.
        device: where the result lives.
    """
    if lens is None:
        return torch.full((batch_size,), max_len, dtype=torch.long, device=device)
    if not isinstance(lens, Tensor):
        lens = torch.as_tensor(lens)
    if lens.dtype.is_floating_point or lens.dtype == torch.bool:
        raise TypeError(f"lens must be an integer tensor, got dtype {lens.dtype}")
    if lens.shape != (batch_size,):
        raise ValueError(f"lens must have shape [batch_size] = [{batch_size}], got {list(lens.shape)}")
    lens = lens.to(device=device, dtype=torch.long)
    if batch_size:
        low, high = torch.stack(torch.aminmax(lens)).tolist()  # one host sync
        if low < 0 or high > max_len:
            raise ValueError(f"lens must lie in [0, {max_len}] (the padded length), got min {low} and max {high}")
    return lens


def length_mask(lens: Tensor, max_len: int) -> Tensor:
    """``BoolTensor [batch_size, max_len]``: True at positions ``i < lens[b]``."""
    return torch.arange(max_len, device=lens.device) < lens.unsqueeze(-1)


def _expand_batch(x: Tensor, like: Tensor) -> Tensor:
    """View a per-sentence ``[batch_size]`` tensor so it broadcasts against ``like``."""
    return x.view(-1, *([1] * (like.dim() - 1)))


class _LogPartition(torch.autograd.Function):
    """``log Z`` whose backward pass is the explicit (no-tape) marginal computation of the distribution."""

    @staticmethod
    def forward(ctx, dist: StructuredDistribution, *potentials: Tensor) -> Tensor:
        ctx.dist = dist
        ctx.needed = tuple(ctx.needs_input_grad[1:])
        log_z, _ = dist._teacher_pass(dist._forward_needs(ctx.needed))
        return log_z.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        return (None, *ctx.dist._log_partition_grads(grad, ctx.needed))


class StructuredDistribution(ABC):
    """A batch of distributions over structures, factorized into parts with log-potentials.

    Args:
        potentials: the log-potentials of all parts, a sequence of tensors each with a leading
            ``batch_size`` axis, in the layout the subclass documents.  Half precision is computed in
            float32; impossible parts hold :data:`structkd.numerics.LOG_ZERO`.
        lens: ``LongTensor [batch_size]``, the number of positions of each sentence, or ``None`` when
            every sentence fills the padded length ``max_len``.
        max_len: the padded length that ``lens`` indexes into.
        lens_checked: ``lens`` is already the output of :func:`check_lens` for this batch (internal).

    Every per-sentence result has shape ``[batch_size]``.  Results are cached: a distribution is
    immutable once built.
    """

    _exact_zero_outside_parts: bool = False
    """Set by a subclass whose ``_inside_outside_parts`` already returns exact zeros outside ``_part_masks()``
    (the detached marginals then skip a masking pass)."""

    def __init__(self, potentials: Sequence[Tensor], lens: Tensor | None, max_len: int, lens_checked: bool = False):
        first = potentials[0]
        self.potentials: tuple[Tensor, ...] = tuple(p.to(compute_dtype(p.dtype)) for p in potentials)
        self.batch_size: int = first.shape[0]
        self.max_len: int = max_len
        # a subclass that already validated ``lens`` with check_lens says so, sparing a second host sync
        self.lens: Tensor = lens if lens_checked else check_lens(lens, self.batch_size, max_len, first.device)
        self._cache: dict = {}

    # ------------------------------------------------------------------ what a subclass writes
    @abstractmethod
    def _inside(self, potentials: Sequence[Tensor]) -> Tensor:
        """``log Z`` ``[batch_size]`` from ``potentials`` (same layout as :attr:`potentials`), written in
        differentiable torch operations (autograd, including double backward, must work through it)."""

    @abstractmethod
    def _part_masks(self) -> tuple[Tensor, ...]:
        """One boolean tensor per potential, broadcastable to it: True where the entry is a part of
        its sentence (inside the sentence's length), False at padding."""

    @abstractmethod
    def parts(self, structure: Tensor) -> tuple[Tensor, ...]:
        """Indicator tensors (0/1, the potentials' layout and dtype) of ``structure``, after checking that
        it is a valid structure of each sentence; raises ``ValueError`` naming the problem otherwise."""

    @abstractmethod
    def _viterbi(self) -> tuple[Tensor, Tensor]:
        """``(max [batch_size], argmax structure)``."""

    @abstractmethod
    def _topk(self, k: int) -> tuple[Tensor, Tensor]:
        """``(scores [k, batch_size], structures [k, batch_size, ...])``, best first.  When a sentence has
        fewer than ``k`` structures, the missing rows score :data:`LOG_ZERO` and are filled with -1."""

    @abstractmethod
    def _sample(self, n: int, generator: torch.Generator | None) -> Tensor:
        """``n`` independent exact samples ``[n, batch_size, ...]``."""

    def _inside_outside(self) -> tuple[Tensor, tuple[Tensor, ...]]:
        """``(log Z, marginals)`` without an autograd graph.  The default differentiates ``_inside`` once;
        subclasses override it with an explicit outside pass where that is faster."""
        with torch.enable_grad():
            leaves = [p.detach().contiguous().requires_grad_() for p in self.potentials]
            log_z = self._inside(leaves)
            grads = torch.autograd.grad(log_z.sum(), leaves, allow_unused=True)
        marginals = tuple(torch.zeros_like(p) if g is None else g for p, g in zip(leaves, grads))
        return log_z.detach(), marginals

    def _inside_outside_parts(self, needed: tuple[bool, ...]) -> tuple[Tensor, tuple[Tensor | None, ...]]:
        """Like :meth:`_inside_outside` but only the part types flagged in ``needed`` must be returned (others
        may be ``None``); override it when some part marginals are expensive and often not needed."""
        return self._inside_outside()

    def _forward_needs(self, needed: tuple[bool, ...]) -> tuple[bool, ...]:
        """Part marginals to compute already in ``log_partition``'s forward pass (default: all it will need)."""
        return needed

    def _log_partition_grads(self, grad: Tensor, needed: tuple[bool, ...]) -> tuple[Tensor | None, ...]:
        """Gradient of ``sum_b grad[b] * log Z[b]`` for each potential: ``grad[b]`` times its marginals."""
        _, marginals = self._teacher_pass(needed)
        return tuple(None if m is None or not need else m * _expand_batch(grad, m)
                     for m, need in zip(marginals, needed))

    # ------------------------------------------------------------------ derived machinery
    @property
    def device(self) -> torch.device:
        return self.potentials[0].device

    @property
    def dtype(self) -> torch.dtype:
        return self.potentials[0].dtype

    def _needs_grad(self) -> bool:
        return torch.is_grad_enabled() and any(p.requires_grad for p in self.potentials)

    def _cached(self, key: str, fn):
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]

    def _mask_marginals(self, marginals: Sequence[Tensor | None]) -> tuple[Tensor | None, ...]:
        return tuple(None if m is None else torch.where(mask, m, torch.zeros((), dtype=m.dtype, device=m.device))
                     for m, mask in zip(marginals, self._part_masks()))

    def _teacher_pass(self, needed: Sequence[bool] | None = None) -> tuple[Tensor, tuple[Tensor | None, ...]]:
        """Cached detached ``(log Z, masked marginals)``; with ``needed``, part types not flagged may be ``None``
        (computed later if asked for)."""
        count = len(self.potentials)
        needed = (True,) * count if needed is None else tuple(bool(x) for x in needed)
        cached = self._cache.get("teacher_pass")
        if cached is not None and all(m is not None for m, need in zip(cached[1], needed) if need):
            return cached
        have = (False,) * count if cached is None else tuple(m is not None for m in cached[1])
        want = tuple(a or b for a, b in zip(needed, have))
        with torch.no_grad():
            log_z, marginals = self._inside_outside_parts(want)
        if not self._exact_zero_outside_parts:
            marginals = self._mask_marginals(marginals)
        result = (log_z.detach(), tuple(None if m is None else m.detach() for m in marginals))
        self._cache["teacher_pass"] = result
        return result

    @property
    def log_partition(self) -> Tensor:
        """``log Z`` per sentence, ``[batch_size]``; differentiable, its gradient being the marginals."""
        if self._needs_grad():
            return _LogPartition.apply(self, *self.potentials)
        return self._cached("log_partition", self._log_partition_nograd)

    def _log_partition_nograd(self) -> Tensor:
        if "teacher_pass" in self._cache:
            return self._cache["teacher_pass"][0]
        with torch.no_grad():
            return self._inside(self.potentials)

    def part_marginals(self, differentiable: bool = False) -> tuple[Tensor, ...]:
        """Marginal probability of every part, one tensor per potential, same shapes, exactly 0 at padding.

        Args:
            differentiable: if True, the result carries an autograd graph back to the potentials
                (``create_graph=True``); otherwise it is detached and computed without a graph.
        """
        if not differentiable:
            return self._teacher_pass()[1]  # every part type: no None
        with torch.enable_grad():
            # contiguous copies: a potential expanded over positions (stride 0) must receive one gradient
            # entry per position, which is the marginal of that part
            leaves = [p.contiguous() if p.requires_grad else p.detach().contiguous().requires_grad_()
                      for p in self.potentials]
            log_z = self._inside(leaves)
            grads = torch.autograd.grad(log_z.sum(), leaves, create_graph=True, allow_unused=True)
        grads = tuple(torch.zeros_like(p) if g is None else g for p, g in zip(leaves, grads))
        return self._mask_marginals(grads)

    @property
    def marginals(self) -> Tensor:
        """Detached marginals of the main part type (the first potential); see :meth:`part_marginals`."""
        return self._teacher_pass((True,) + (False,) * (len(self.potentials) - 1))[1][0]

    def expected_score(self, marginals: Sequence[Tensor]) -> Tensor:
        """``sum_u marginals[u] * potential[u]`` per sentence, ``[batch_size]``.

        Args:
            marginals: one tensor per potential (same shapes), e.g. another distribution's
                :meth:`part_marginals` or a structure's :meth:`parts`.  Entries at padding are ignored.
        """
        if len(marginals) != len(self.potentials):
            raise ValueError(f"expected {len(self.potentials)} marginal tensors, got {len(marginals)}")
        total = torch.zeros(self.batch_size, dtype=self.dtype, device=self.device)
        for m, p, mask in zip(marginals, self.potentials, self._part_masks()):
            if m.shape != p.shape:
                raise ValueError(f"marginals of shape {list(m.shape)} do not match potentials of shape "
                                 f"{list(p.shape)}")
            prod = torch.where(mask, m.to(p.dtype) * p, torch.zeros((), dtype=p.dtype, device=p.device))
            total = total + prod.flatten(1).sum(-1)
        return total

    def score(self, structure: Tensor) -> Tensor:
        """Score of ``structure`` (the layout :meth:`argmax` returns) per sentence, ``[batch_size]``."""
        return self.expected_score(self.parts(structure))

    def log_prob(self, structure: Tensor) -> Tensor:
        """``log P(structure)`` per sentence, ``[batch_size]``."""
        return self.score(structure) - self.log_partition

    @property
    def max(self) -> Tensor:
        """Score of the best structure per sentence, ``[batch_size]`` (differentiable, as ``score``)."""
        if self._needs_grad():
            return self.score(self.argmax)
        return self._cached("viterbi", self._viterbi_nograd)[0]

    @property
    def argmax(self) -> Tensor:
        """The best structure of each sentence (layout documented by the subclass), padding = -1."""
        return self._cached("viterbi", self._viterbi_nograd)[1]

    def _viterbi_nograd(self):
        with torch.no_grad():
            return self._viterbi()

    def kmax(self, k: int) -> Tensor:
        """Scores of the ``k`` best structures, ``[k, batch_size]``, best first (:data:`LOG_ZERO` where a
        sentence has fewer than ``k`` structures)."""
        return self._topk_nograd(k)[0]

    def topk(self, k: int) -> Tensor:
        """The ``k`` best structures, ``[k, batch_size, ...]``, best first (-1 where a sentence has fewer
        than ``k`` structures)."""
        return self._topk_nograd(k)[1]

    def _topk_nograd(self, k: int):
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        with torch.no_grad():
            return self._cached(f"topk{k}", lambda: self._topk(k))

    def sample(self, n: int = 1, generator: torch.Generator | None = None) -> Tensor:
        """``n`` independent exact samples, ``[n, batch_size, ...]`` (padding = -1)."""
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        with torch.no_grad():
            return self._sample(n, generator)

    def _marginals_for_expectation(self) -> tuple[Tensor, ...]:
        return self.part_marginals(differentiable=self._needs_grad())

    @property
    def entropy(self) -> Tensor:
        """Shannon entropy ``H[P]`` per sentence, ``[batch_size]``: ``log Z - E_P[score]``."""
        return self.log_partition - self.expected_score(self._marginals_for_expectation())

    def _check_comparable(self, other: StructuredDistribution) -> None:
        if type(other) is not type(self):
            raise TypeError(f"{type(self).__name__}.cross_entropy needs another {type(self).__name__}, got "
                            f"{type(other).__name__}; use structkd.kd.structural_kd_loss to compare "
                            f"different factorizations")
        shapes = [tuple(p.shape) for p in self.potentials]
        other_shapes = [tuple(p.shape) for p in other.potentials]
        if shapes != other_shapes:
            raise ValueError(f"potential shapes differ: {shapes} vs {other_shapes}")
        if not torch.equal(self.lens, other.lens.to(self.lens.device)):
            raise ValueError("the two distributions have different sentence lengths")

    def cross_entropy(self, other: StructuredDistribution) -> Tensor:
        """``H[P, Q] = -sum_y P(y) log Q(y)`` with ``P = self`` and ``Q = other``, ``[batch_size]``:
        ``log Z_Q - E_P[score_Q]``."""
        self._check_comparable(other)
        return other.log_partition - other.expected_score(self._marginals_for_expectation())

    def kl(self, other: StructuredDistribution) -> Tensor:
        """``KL[P || Q] = H[P, Q] - H[P]`` with ``P = self``, ``[batch_size]``."""
        return self.cross_entropy(other) - self.entropy

    def scaled(self, factor: float) -> StructuredDistribution:
        """The same distribution with every possible log-potential multiplied by ``factor`` (for example
        ``1 / T`` for a global temperature ``T``); impossible parts stay impossible."""
        new = copy.copy(self)
        new.potentials = tuple(torch.where(is_impossible(p), p, p * factor) for p in self.potentials)
        new._cache = {}
        return new

    def __repr__(self) -> str:
        shapes = ", ".join(str(list(p.shape)) for p in self.potentials)
        return f"{type(self).__name__}(potentials=[{shapes}], lens={self.lens.tolist()})"


__all__ = ["StructuredDistribution", "check_lens", "length_mask", "LOG_ZERO"]
