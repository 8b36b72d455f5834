"""Time structkd's structured distributions side by side with peer libraries, in one process.

Usage::

    python benchmarks/bench_structs.py [--device cpu|cuda] [--repeats N] [--quick] [--only GROUP ...]
                                       [--memory auto|on|off] [--out DIR]

Writes ``<out>/structs_<device>.json`` and ``<out>/structs_<device>.md`` (``structs_<device>_quick.*`` with
``--quick``; ``<out>`` defaults to ``benchmarks/results``).

How it is organised
-------------------
* :data:`CASES` is a registry of :class:`Case` objects, one per input size (``group/name``).  A case builds
  its inputs (fixed seed) and lists the :class:`Impl` s to compare; the first one, ``structkd``, is the
  reference every ratio is taken against.
* An ``Impl.make(inputs, mode)`` returns ``{variant: thunk}``.  A thunk does the whole computation of one
  mode, from raw inputs (building the distribution is timed), and returns ``log Z [batch]`` (detached), which
  is compared with structkd's as a cross-check of the input conversions.  Where a peer has several ways to
  get the teacher quantities (its ``marginals`` property, which uses ``create_graph=True``, or a plain
  ``torch.autograd.grad`` of its log partition) every variant is timed and the fastest is reported.
* Modes: ``teacher`` = log Z and detached marginals from inputs that do not require grad;
  ``student`` = ``log Z``, summed, ``.backward()`` to all score tensors.
* Timing: ``torch.set_num_threads(available cores)`` (or ``--threads``), a warm-up run of every thunk of a
  case, then the median of up to ``--repeats`` ``time.perf_counter`` measurements (fewer when they would
  exceed ``--max-seconds``; none beyond the warm-up run when that alone takes longer; the count is recorded),
  ``torch.cuda.synchronize()`` around each on CUDA.  The measurements of a case are interleaved: round after
  round, every implementation and mode runs once, so that a machine whose speed drifts during the case
  (a shared machine does) shifts all of them alike and the ratios stay fair.
* Peak memory: on CPU each (case, implementation, mode) runs once in a fresh subprocess (``--probe``) that
  reports the growth of its peak RSS (``VmHWM``, else ``ru_maxrss``) over a baseline taken after imports,
  input creation and a tiny autograd warm-up, the high-water mark being reset first
  (``/proc/self/clear_refs``); on CUDA
  ``torch.cuda.max_memory_allocated`` minus the memory allocated before the run.

Groups: ``chain``, ``scaling``, ``tree``, ``nonproj``, ``tree2o``, ``semimarkov`` (see ``_register``).
Peers (the ``bench`` extra: torch-struct, SuPar, pytorch-crf) are optional; a missing one gives rows that
say "not installed".  A structkd module that cannot be imported skips its cases ("not available").
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch

warnings.filterwarnings("ignore", message=".*does not define `arg_constraints`.*")  # torch-struct

Tensor = torch.Tensor
Thunk = Callable[[], Tensor]
Maker = Callable[[dict, str], dict[str, Thunk]]
MODES = ("teacher", "student")
GROUPS = ("chain", "scaling", "tree", "nonproj", "tree2o", "semimarkov")
BATCH = 32
TS_ZERO = -1e9  # "log 0" handed to torch-struct


class Unavailable(Exception):
    """An implementation cannot run here (a module is missing or not written yet)."""


@dataclass
class Impl:
    name: str
    module: str  # must be importable, else the rows say "not installed" / "not available"
    make: Maker
    logz_offset: Callable[[dict], float] = lambda inputs: 0.0  # peer log Z - structkd log Z, by construction


@dataclass
class Case:
    group: str
    name: str
    inputs: Callable[[torch.device], dict]
    impls: list[Impl]
    tokens: int = 0  # real tokens in the batch (for time per token)

    @property
    def key(self) -> str:
        return f"{self.group}/{self.name}"


# ============================================================================================ helpers
def _require(module: str):
    if importlib.util.find_spec(module.split(".")[0]) is None:
        raise Unavailable("not installed")
    try:
        return importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - a module being written may fail in any way
        raise Unavailable(f"not available ({type(exc).__name__}: {exc})") from exc


def _leaves(tensors: list, grad: set[int]) -> list:
    """Fresh leaf copies; those at the indices in ``grad`` require grad (non-tensors pass through)."""
    return [t.detach().clone().requires_grad_(i in grad) if isinstance(t, Tensor) and t.is_floating_point()
            else t for i, t in enumerate(tensors)]


def _student(fn: Callable[..., Tensor], tensors: list, grad: set[int]) -> Thunk:
    """``fn(*leaves).sum().backward()`` with the ``grad`` inputs as leaves."""
    leaves = _leaves(tensors, grad)

    def run():
        for i in grad:
            leaves[i].grad = None
        log_z = fn(*leaves)
        log_z.sum().backward()
        return log_z.detach()
    return run


def _autograd_teacher(fn: Callable[..., Tensor], tensors: list, wrt: set[int]) -> Thunk:
    """log Z and ``torch.autograd.grad`` of it w.r.t. the ``wrt`` inputs (no ``create_graph``)."""
    leaves = _leaves(tensors, wrt)

    def run():
        log_z = fn(*leaves)
        torch.autograd.grad(log_z.sum(), [leaves[i] for i in sorted(wrt)])
        return log_z.detach()
    return run


def _structkd(ctor: Callable[..., object], tensors: list, mode: str, grad: set[int]) -> dict[str, Thunk]:
    """structkd's two modes: ``marginals`` then the (cached) ``log_partition``; or ``log_partition`` backward."""
    if mode == "student":
        return {"api": _student(lambda *xs: ctor(*xs).log_partition, tensors, grad)}
    inputs = _leaves(tensors, set())

    def run():
        dist = ctor(*inputs)
        dist.marginals  # noqa: B018 - computes (and caches) log Z and every marginal
        return dist.log_partition
    return {"api": run}


def _lengths(batch: int, lo: int, hi: int, seed: int) -> Tensor:
    return torch.randint(lo, hi + 1, (batch,), generator=torch.Generator().manual_seed(seed))


def _randn(*shape: int, seed: int, device: torch.device) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(device)


# ============================================================================================ chain
def chain_inputs(n_tags: int, lo: int, hi: int, batch: int = BATCH, fixed: bool = False) -> Callable:
    def build(device):
        lens = torch.full((batch,), hi) if fixed else _lengths(batch, lo, hi, seed=1)
        seq_len = int(lens.max())
        return {"emissions": _randn(batch, seq_len, n_tags, seed=2, device=device),
                "transitions": _randn(n_tags, n_tags, seed=3, device=device),
                "start": _randn(n_tags, seed=4, device=device), "end": _randn(n_tags, seed=5, device=device),
                "lens": lens.to(device)}
    return build


def _chain_args(inp: dict) -> list:
    return [inp["emissions"], inp["transitions"], inp["start"], inp["end"], inp["lens"]]


def sk_chain(inp, mode):
    chain = _require("structkd.structs.chain")
    return _structkd(lambda e, t, s, n, lens: chain.LinearChainCRF(e, t, lens, start=s, end=n),
                     _chain_args(inp), mode, {0, 1, 2, 3})


def _ts_chain_potentials(em, tr, st, en, lens):
    """torch-struct's ``[batch, N-1, C(next), C(prev)]`` from emissions, transitions, start and end scores."""
    pos = torch.arange(em.shape[1], device=em.device)
    last = (pos.view(1, -1) == lens.view(-1, 1) - 1).unsqueeze(-1)
    unary = em + (pos == 0).view(1, -1, 1) * st + last * en
    edges = unary[:, 1:].unsqueeze(-1) + tr.t()
    return torch.cat([edges[:, :1] + unary[:, :1].unsqueeze(-2), edges[:, 1:]], 1)


def ts_chain(inp, mode):
    ts = _require("torch_struct")

    def log_z(*args):
        return ts.LinearChainCRF(_ts_chain_potentials(*args), lengths=args[-1]).partition
    if mode == "student":
        return {"api": _student(log_z, _chain_args(inp), {0, 1, 2, 3})}
    args = _leaves(_chain_args(inp), set())

    def marginals():
        dist = ts.LinearChainCRF(_ts_chain_potentials(*args), lengths=args[-1])
        dist.marginals  # noqa: B018 - edge marginals, create_graph=True
        return dist.partition.detach()
    return {"marginals": marginals, "autograd": _autograd_teacher(log_z, _chain_args(inp), {0})}


def _supar_trans(tr, st, en):
    """SuPar's ``[n_tags + 1, n_tags + 1]`` transitions: last row = start, last column = end."""
    return torch.cat([torch.cat([tr, en.unsqueeze(1)], 1), torch.cat([st, st.new_zeros(1)]).unsqueeze(0)], 0)


def supar_chain(inp, mode):
    structs = _require("supar.structs")

    def log_z(em, tr, st, en, lens):
        return structs.LinearChainCRF(em, _supar_trans(tr, st, en), lens).log_partition
    if mode == "student":
        return {"api": _student(log_z, _chain_args(inp), {0, 1, 2, 3})}
    em, tr, st, en, lens = _leaves(_chain_args(inp), set())

    def marginals():
        dist = structs.LinearChainCRF(em.detach(), _supar_trans(tr, st, en), lens)
        dist.marginals  # noqa: B018 - create_graph=True
        return dist.log_partition.detach()
    return {"marginals": marginals, "autograd": _autograd_teacher(log_z, _chain_args(inp), {0})}


def torchcrf_chain(inp, mode):
    torchcrf = _require("torchcrf")
    em, tr, st, en, lens = _chain_args(inp)
    crf = torchcrf.CRF(em.shape[-1], batch_first=True).to(em.device)
    with torch.no_grad():
        crf.transitions.copy_(tr)
        crf.start_transitions.copy_(st)
        crf.end_transitions.copy_(en)
    mask = (torch.arange(em.shape[1], device=em.device) < lens.unsqueeze(-1)).t().contiguous()

    def log_z(em):
        return crf._compute_normalizer(em.transpose(0, 1), mask)
    if mode == "student":
        thunk = _student(log_z, [em], {0})

        def run():
            crf.zero_grad(set_to_none=True)
            return thunk()
        return {"api": run}
    crf.requires_grad_(False)
    return {"autograd": _autograd_teacher(log_z, [em], {0})}


# ============================================================================================ trees
def tree_inputs(length: int, second_order: bool = False, batch: int = BATCH) -> Callable:
    def build(device):
        inp = {"scores": _randn(batch, length + 1, length + 1, seed=6, device=device),
               "lens": torch.full((batch,), length, device=device)}
        if second_order:
            inp["sib"] = _randn(batch, length + 1, length + 1, length + 1, seed=7, device=device)
        return inp
    return build


def sk_tree(inp, mode):
    tree = _require("structkd.structs.tree")
    return _structkd(lambda s, lens: tree.DependencyCRF(s, lens, multiroot=False),
                     [inp["scores"], inp["lens"]], mode, {0})


def sk_matrix_tree(inp, mode):
    tree = _require("structkd.structs.tree")
    return _structkd(lambda s, lens: tree.MatrixTree(s, lens, multiroot=False),
                     [inp["scores"], inp["lens"]], mode, {0})


def sk_tree2o(inp, mode):
    tree2o = _require("structkd.structs.tree2o")
    return _structkd(lambda s, sib, lens: tree2o.Dependency2oCRF(s, sib, lens, multiroot=False),
                     [inp["scores"], inp["sib"], inp["lens"]], mode, {0, 1})


def _supar_tree(cls_name: str, second_order: bool = False) -> Maker:
    """SuPar's trees share structkd's layout (``scores[b, dependent, head]``, row/column 0 = root, ``lens``
    counts words).  Teacher: its ``marginals`` property (``create_graph=True``) or plain autograd."""
    def make(inp, mode):
        structs = _require("supar.structs")
        cls = getattr(structs, cls_name)
        names = ["scores", "sib", "lens"] if second_order else ["scores", "lens"]
        tensors = [inp[n] for n in names]

        def dist(*xs):
            return cls((xs[0], xs[1]) if second_order else xs[0], xs[-1], multiroot=False)

        def log_z(*xs):
            return dist(*xs).log_partition
        if mode == "student":
            return {"api": _student(log_z, tensors, set(range(len(tensors) - 1)))}
        args = _leaves(tensors, set())

        def marginals():
            d = dist(*[x.detach() if x.is_floating_point() else x for x in args])
            d.marginals  # noqa: B018 - arc marginals, create_graph=True
            return d.log_partition.detach()
        return {"marginals": marginals, "autograd": _autograd_teacher(log_z, tensors, {0})}
    return make


def _to_torch_struct(scores: Tensor) -> Tensor:
    """structkd/SuPar ``[B, n+1, n+1]`` (``[b, dependent, head]``, 0 = root) to torch-struct's ``[B, n, n]``
    (``[b, head, dependent]`` over words, root arcs on the diagonal)."""
    return torch.diagonal_scatter(scores[:, 1:, 1:].transpose(1, 2), scores[:, 1:, 0], 0, 1, 2)


def _ts_tree(cls_name: str) -> Maker:
    def make(inp, mode):
        ts = _require("torch_struct")
        cls = getattr(ts, cls_name)

        def log_z(scores, lens):
            return cls(_to_torch_struct(scores), lengths=lens, multiroot=False).partition
        tensors = [inp["scores"], inp["lens"]]
        if mode == "student":
            return {"api": _student(log_z, tensors, {0})}
        scores, lens = _leaves(tensors, set())

        def marginals():
            # its working path: potentials that are a leaf requiring grad
            dist = cls(_to_torch_struct(scores).clone().requires_grad_(), lengths=lens, multiroot=False)
            dist.marginals  # noqa: B018
            return dist.partition.detach()
        return {"marginals": marginals, "autograd": _autograd_teacher(log_z, tensors, {0})}
    return make


# ============================================================================================ semi-Markov
def semimarkov_inputs(length: int, n_labels: int, width: int, batch: int = BATCH) -> Callable:
    def build(device):
        return {"scores": _randn(batch, length, length, n_labels, seed=8, device=device),
                "lens": torch.full((batch,), length, device=device), "width": width}
    return build


def sk_semimarkov(inp, mode):
    semimarkov = _require("structkd.structs.semimarkov")
    return _structkd(lambda s, lens: semimarkov.SemiMarkovCRF(s, lens, max_width=inp["width"]),
                     [inp["scores"], inp["lens"]], mode, {0})


def _ts_semimarkov_potentials(scores: Tensor, width: int) -> Tensor:
    """torch-struct's ``[B, N, K = width + 1, C(label), C(previous label)]`` from segment scores
    ``[B, N, N, C]`` (``[b, start, end inclusive, label]``): a zeroth-order model ignores the previous label."""
    batch, seq_len, _, n_labels = scores.shape
    cols = [scores.new_full((batch, seq_len, n_labels), TS_ZERO)]  # width 0 is never used
    for k in range(1, width + 1):
        diag = scores.diagonal(k - 1, 1, 2).transpose(1, 2)  # [B, N - k + 1, C]: segment n..n+k-1
        cols.append(torch.nn.functional.pad(diag, (0, 0, 0, k - 1), value=TS_ZERO))
    return torch.stack(cols, 2).unsqueeze(-1).expand(-1, -1, -1, -1, n_labels)


def ts_semimarkov(inp, mode):
    ts = _require("torch_struct")
    width = inp["width"]

    def log_z(scores, lens):
        return ts.SemiMarkovCRF(_ts_semimarkov_potentials(scores, width), lengths=lens + 1).partition
    tensors = [inp["scores"], inp["lens"]]
    if mode == "student":
        return {"api": _student(log_z, tensors, {0})}
    scores, lens = _leaves(tensors, set())

    def marginals():
        dist = ts.SemiMarkovCRF(_ts_semimarkov_potentials(scores, width).clone(), lengths=lens + 1)
        dist.marginals  # noqa: B018
        return dist.partition.detach()
    return {"marginals": marginals, "autograd": _autograd_teacher(log_z, tensors, {0})}


# ============================================================================================ registry
STRUCTKD = "structkd"
CASES: list[Case] = []


def _register(quick: bool) -> list[Case]:
    """Fill :data:`CASES`: the full sizes, or tiny ones with ``quick``."""
    CASES.clear()
    b = 4 if quick else BATCH
    sk_impl = {"chain": Impl(STRUCTKD, "structkd.structs.chain", sk_chain)}
    chain_peers = [Impl("torch-struct", "torch_struct", ts_chain), Impl("supar", "supar", supar_chain),
                   Impl("pytorch-crf", "torchcrf", torchcrf_chain)]
    lo, hi = (5, 8) if quick else (30, 50)
    for n_tags in ((5,) if quick else (9, 37)):
        CASES.append(Case("chain", f"n_tags={n_tags} len=U[{lo},{hi}]", chain_inputs(n_tags, lo, hi, b),
                          [sk_impl["chain"], *chain_peers]))
    for length in ((4, 8) if quick else (25, 50, 100, 200)):
        CASES.append(Case("scaling", f"n_tags=9 len={length}", chain_inputs(9, length, length, b, fixed=True),
                          [sk_impl["chain"]], tokens=b * length))
    nonproj_peers = [Impl("supar", "supar", _supar_tree("MatrixTree")),
                     Impl("torch-struct", "torch_struct", _ts_tree("NonProjectiveDependencyCRF"))]
    for length in ((5,) if quick else (30, 60)):
        name = f"len={length} (all sentences)"
        CASES.append(Case("tree", name, tree_inputs(length, batch=b), [
            Impl(STRUCTKD, "structkd.structs.tree", sk_tree),
            Impl("supar", "supar", _supar_tree("DependencyCRF")),
            Impl("torch-struct", "torch_struct", _ts_tree("DependencyCRF"))]))
        CASES.append(Case("nonproj", name, tree_inputs(length, batch=b),
                          [Impl(STRUCTKD, "structkd.structs.tree", sk_matrix_tree), *nonproj_peers]))
        CASES.append(Case("tree2o", name, tree_inputs(length, second_order=True, batch=b), [
            Impl(STRUCTKD, "structkd.structs.tree2o", sk_tree2o),
            Impl("supar", "supar", _supar_tree("Dependency2oCRF", second_order=True))]))
    length, labels, width = (6, 3, 3) if quick else (30, 4, 8)
    CASES.append(Case("semimarkov", f"len={length} labels={labels} max_width={width}",
                      semimarkov_inputs(length, labels, width, b), [
                          Impl(STRUCTKD, "structkd.structs.semimarkov", sk_semimarkov),
                          Impl("torch-struct", "torch_struct", ts_semimarkov,
                               logz_offset=lambda inp: math.log(inp["scores"].shape[-1]))]))
    return CASES


# ============================================================================================ measuring
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class _Timer:
    """One thunk under measurement: its warm-up, its budgeted number of timed runs and their times."""
    thunk: Thunk
    runs: int = 0
    times: list = field(default_factory=list)
    log_z: Tensor | None = None

    def warm_up(self, device: torch.device, repeats: int, max_seconds: float) -> None:
        """A warm-up run (the measurement itself when it takes ``max_seconds`` or more; it also keeps log Z),
        a second one when cheap, and the number of timed runs that fit ``max_seconds``."""
        first, log_z = self._run(device)
        self.log_z = log_z.detach().float().cpu()
        if first >= max_seconds:  # too slow to repeat: the first run is the measurement
            self.times, self.runs = [first], 0
            return
        self.times = []
        if first * 2 < max_seconds / repeats:
            self._run(device)
        self.runs = max(1, min(repeats, int(max_seconds / max(first, 1e-9))))

    def once(self, device: torch.device) -> float:
        """Seconds of one run."""
        return self._run(device)[0]

    def _run(self, device: torch.device) -> tuple[float, Tensor]:
        _sync(device)
        start = time.perf_counter()
        result = self.thunk()
        _sync(device)
        return time.perf_counter() - start, result

    @property
    def ms(self) -> float:
        return 1e3 * statistics.median(self.times)


def time_interleaved(timers: list[_Timer], device: torch.device) -> None:
    """Time warmed-up timers in rounds, each round running every timer that still has runs left once,
    starting one further along each round: a machine that slows down or speeds up during a case affects
    every implementation alike, so the ratios between them hold."""
    for round_ in range(max((t.runs for t in timers), default=0)):
        shift = round_ % max(len(timers), 1)
        for timer in timers[shift:] + timers[:shift]:
            if round_ < timer.runs:
                timer.times.append(timer.once(device))


def cuda_peak_mb(thunk: Thunk, device: torch.device) -> float:
    _sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    thunk()
    _sync(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


def _maxrss_mb() -> float:
    """Peak resident size of this process: ``VmHWM`` where Linux gives it, else ``ru_maxrss``.  (A child's
    ``ru_maxrss`` starts at its parent's peak, inherited through fork, and is not lowered by resetting the
    high-water mark; ``VmHWM`` is the same mark without that inheritance.)"""
    try:
        status = Path("/proc/self/status").read_text()
        return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM")) / 1024
    except (OSError, StopIteration, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def probe(case_key: str, impl_name: str, mode: str, variant: str, quick: bool) -> dict:
    """Run in a fresh process: peak RSS growth of one run of one thunk."""
    case = next(c for c in _register(quick) if c.key == case_key)
    impl = next(i for i in case.impls if i.name == impl_name)
    _require(impl.module)
    x = torch.randn(8, 16, requires_grad=True)  # warm up the autograd engine and thread pools
    torch.logsumexp(x @ x.t(), -1).sum().backward()
    thunk = impl.make(case.inputs(torch.device("cpu")), mode)[variant]
    # ru_maxrss is a high-water mark, and importing (SuPar, say) peaks above the resident size the run
    # starts from; resetting the mark makes the baseline the current resident size (Linux >= 4.0)
    try:
        Path("/proc/self/clear_refs").write_text("5")
        reset = True
    except OSError:
        reset = False
    base = _maxrss_mb()
    thunk()
    return {"peak_mb": _maxrss_mb() - base, "hwm_reset": reset}


def cpu_peak_mb(case: Case, impl: str, mode: str, variant: str, args) -> float | str:
    cmd = [sys.executable, __file__, "--probe", case.key, impl, mode, variant, "--threads", str(args.threads)]
    if args.quick:
        cmd.append("--quick")
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if res.returncode != 0:
        return f"probe failed: {res.stderr.strip().splitlines()[-1] if res.stderr.strip() else res.returncode}"
    out = json.loads(res.stdout.strip().splitlines()[-1])
    return out["peak_mb"] if out["hwm_reset"] else f">= {out['peak_mb']:.1f}"


@dataclass
class Row:
    group: str
    case: str
    impl: str
    mode: str
    status: str = "ok"
    variant: str = ""
    ms: float | None = None
    variants_ms: dict = field(default_factory=dict)
    repeats: int = 0
    ratio: float | None = None  # this implementation's time / structkd's (>1: structkd is faster)
    peak_mb: float | str | None = None
    logz_maxdiff: float | None = None
    us_per_token: float | None = None


def run_case(case: Case, device: torch.device, args) -> list[Row]:
    """Time every implementation and mode of one case, interleaved (:func:`time_interleaved`); peak memory
    comes later, see :func:`add_memory`."""
    inputs = case.inputs(device)
    rows, timers = [], {}  # timers: {(row index, variant): _Timer}
    for impl in case.impls:
        for mode in MODES:
            row = Row(case.group, case.name, impl.name, mode)
            rows.append(row)
            try:
                _require(impl.module)
                for variant, thunk in impl.make(inputs, mode).items():
                    timer = _Timer(thunk)
                    timer.warm_up(device, args.repeats, args.max_seconds)  # fails here rather than mid-round
                    timers[len(rows) - 1, variant] = timer
            except Unavailable as exc:
                row.status = str(exc)
            except Exception as exc:  # noqa: BLE001 - report, keep benchmarking the others
                row.status = f"error: {type(exc).__name__}: {exc}"[:200]
    time_interleaved(list(timers.values()), device)
    best = {}
    for (index, variant), timer in timers.items():
        row = rows[index]
        row.variants_ms[variant] = round(timer.ms, 3)
        if row.ms is None or timer.ms < row.ms:
            row.ms, row.variant, row.repeats = timer.ms, variant, len(timer.times)
            best[index] = timer.log_z
    reference = {r.mode: (r, best.get(i)) for i, r in enumerate(rows) if r.impl == STRUCTKD}
    if any(r.ms is None for r, _ in reference.values()):
        failed = next(r for r, _ in reference.values() if r.ms is None)
        return [r if r.impl == STRUCTKD else Row(case.group, case.name, r.impl, r.mode,
                                                 status=f"skipped: structkd {failed.status}") for r in rows]
    for index, row in enumerate(rows):
        if row.ms is None:
            continue
        if row.impl != STRUCTKD:
            ref_row, ref_logz = reference[row.mode]
            row.ratio = row.ms / ref_row.ms
            impl = next(i for i in case.impls if i.name == row.impl)
            row.logz_maxdiff = float((best[index] - impl.logz_offset(inputs) - ref_logz).abs().max())
        if case.tokens:
            row.us_per_token = 1e3 * row.ms / case.tokens
        print(f"  {case.key:40s} {row.impl:13s} {row.mode:8s} {row.variant:10s} {row.ms:10.2f} ms"
              + (f"  x{row.ratio:.2f}" if row.ratio else ""), flush=True)
    return rows


def add_memory(rows: list[Row], cases: dict[str, Case], device: torch.device, args) -> None:
    """Peak memory of every timed row: subprocess probes on CPU (two at a time), in process on CUDA."""
    todo = [r for r in rows if r.ms is not None]
    if device.type == "cuda":
        for r in todo:
            case = cases[f"{r.group}/{r.case}"]
            impl = next(i for i in case.impls if i.name == r.impl)
            r.peak_mb = cuda_peak_mb(impl.make(case.inputs(device), r.mode)[r.variant], device)
        return

    def one(r: Row):
        r.peak_mb = cpu_peak_mb(cases[f"{r.group}/{r.case}"], r.impl, r.mode, r.variant, args)
        print(f"  memory {r.group}/{r.case} {r.impl} {r.mode}: {r.peak_mb}", flush=True)
    with ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
        list(pool.map(one, todo))


# ============================================================================================ reporting
def _meta(device: torch.device, args, threads: int) -> dict:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        try:
            name = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                        if line.startswith("model name"))
        except (OSError, StopIteration):  # no /proc/cpuinfo (not Linux) or no model name in it
            name = platform.processor() or platform.machine()
    versions = {}
    for dist in ("torch", "torch-struct", "supar", "pytorch-crf", "structkd"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return {"device": device.type, "device_name": name, "threads": threads, "repeats": args.repeats,
            "max_seconds": args.max_seconds, "quick": args.quick, "dtype": "float32",
            "date": time.strftime("%Y-%m-%d %H:%M:%S"), "loadavg_start": args.loadavg_start,
            "loadavg_end": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(), "versions": versions}


def _fmt(x, spec: str) -> str:
    return format(x, spec) if isinstance(x, (int, float)) else ("" if x is None else str(x))


GROUP_NOTES = {
    "chain": "Linear-chain CRF with start/end scores, batch 32, lengths uniform in [30, 50] (seed 1, padded to the "
             "longest). Teacher: log Z + token marginals (torch-struct: `marginals` gives edge marginals; "
             "`autograd` differentiates log Z w.r.t. the emissions). pytorch-crf: `_compute_normalizer`.",
    "scaling": "structkd LinearChainCRF alone, batch 32, 9 tags, every sentence of the given length.",
    "tree": "First-order projective trees (Eisner), single root, batch 32, every sentence of the given length. "
            "torch-struct gets the scores converted to its layout (head x dependent, root arcs on the diagonal).",
    "nonproj": "Non-projective trees (matrix-tree theorem), single root, batch 32, every sentence of the given length. "
               "torch-struct adds eps = 1e-5 to the Laplacian, hence its small log Z difference.",
    "tree2o": "Second-order (sibling) projective trees, single root, batch 32, every sentence of the given length.",
    "semimarkov": "Zeroth-order semi-Markov CRF, batch 32. torch-struct gets `[B, N, K, C, C]` potentials that "
                  "ignore the previous label; it sums over a label before the first segment, so its log Z is "
                  "structkd's + log(labels) (subtracted before comparing). All sentences full length: torch-struct "
                  "0.5 gives a wrong log Z for a sentence batched with shorter ones.",
}


def to_markdown(meta: dict, rows: list[Row]) -> str:
    out = [f"# structkd structured distributions: {meta['device']} ({meta['device_name']})", "",
           f"{meta['date']}, torch {meta['versions']['torch']}, {meta['threads']} threads, float32, "
           f"median of up to {meta['repeats']} runs interleaved across implementations, "
           f"load average {meta['loadavg_start'][0]} at the start and "
           f"{meta['loadavg_end'][0]} at the end. Versions: "
           + ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if k != "torch") + ".", "",
           *(["**--quick smoke test: tiny sizes, batch 4; the numbers mean nothing.**", ""] if meta["quick"] else []),
           "`ms`: median wall time of one full computation (building the distribution included). "
           "`x structkd`: this implementation's time / structkd's in the same mode (> 1: structkd is faster). "
           "`variant`: the fastest way found to get the teacher quantities (`marginals` property, plain "
           "`autograd` of log Z; `api` where there is one way). `n`: timed runs behind the median. "
           "`peak MB`: peak memory growth of one run. "
           "`dlogZ`: largest absolute difference from structkd's log Z (a check of the input conversions).", ""]
    earlier = meta.get("groups_from_earlier_runs", {})
    for group in GROUPS:
        grows = [r for r in rows if r.group == group and not (r.status.startswith("skipped") and r.impl != STRUCTKD)]
        if not grows:
            continue
        per_token = group == "scaling"
        when = (f" (from an earlier run: {earlier[group]['date']}, load average {earlier[group]['loadavg_start'][0]} "
                f"at its start)" if group in earlier else "")
        out += [f"## {group}", "", GROUP_NOTES[group] + when, "",
                "| case | mode | impl | variant | ms | n | x structkd | peak MB | "
                + ("us/token |" if per_token else "dlogZ |"),
                "|---|---|---|---|---:|---:|---:|---:|---:|"]
        for r in grows:
            ms = _fmt(r.ms, ".2f") if r.ms is not None else r.status
            last = _fmt(r.us_per_token, ".2f") if per_token else _fmt(r.logz_maxdiff, ".1e")
            out.append(f"| {r.case} | {r.mode} | {r.impl} | {r.variant} | {ms} | {r.repeats or ''} | "
                       f"{_fmt(r.ratio, '.2f')} | "
                       f"{_fmt(r.peak_mb, '.1f')} | {last} |")
        out.append("")
    return "\n".join(out)


# ============================================================================================ main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: the available cores)")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per measurement (default 7; 1 quick)")
    p.add_argument("--max-seconds", type=float, default=6.0, help="time budget of the timed runs of one row")
    p.add_argument("--quick", action="store_true", help="tiny sizes, 1 repeat, no memory probes: a smoke test")
    p.add_argument("--only", nargs="+", choices=GROUPS, metavar="GROUP", help=f"groups to run: {', '.join(GROUPS)}")
    p.add_argument("--memory", default="auto", choices=["auto", "on", "off"], help="auto: on unless --quick")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    p.add_argument("--probe", nargs=4, metavar=("CASE", "IMPL", "MODE", "VARIANT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 7
    return args


def main(argv=None) -> list[Row]:
    args = parse_args(argv)
    threads = args.threads = args.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    if args.probe:  # subprocess of cpu_peak_mb
        print(json.dumps(probe(*args.probe, quick=args.quick)))
        return []
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: CUDA is not available")
    cases = [c for c in _register(args.quick) if not args.only or c.group in args.only]
    args.loadavg_start = [round(x, 2) for x in os.getloadavg()]
    if args.loadavg_start[0] > 0.5 * threads and device.type == "cpu":
        print(f"warning: load average {args.loadavg_start[0]} on {threads} cores: other processes will distort "
              "the timings", file=sys.stderr)
    rows: list[Row] = []
    for case in cases:
        rows += run_case(case, device, args)
    if args.memory == "on" or (args.memory == "auto" and not args.quick):
        add_memory(rows, {c.key: c for c in cases}, device, args)
    meta = _meta(device, args, threads)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"structs_{device.type}" + ("_quick" if args.quick else "")
    path = args.out / f"{stem}.json"
    all_rows = rows
    if args.only and path.exists():  # update the groups run, keep the others (their run's meta is kept too)
        old = json.loads(path.read_text())
        kept = [Row(**r) for r in old["rows"] if r["group"] not in args.only]
        all_rows = sorted(kept + rows, key=lambda r: GROUPS.index(r.group))
        meta["groups_from_earlier_runs"] = {g: old["meta"].get("groups_from_earlier_runs", {}).get(g, old["meta"])
                                            for g in {r.group for r in kept}}
    path.write_text(json.dumps({"meta": meta, "rows": [vars(r) for r in all_rows]}, indent=1))
    (args.out / f"{stem}.md").write_text(to_markdown(meta, all_rows))
    print(f"wrote {args.out / stem}.json and .md")
    return rows


if __name__ == "__main__":
    main()
