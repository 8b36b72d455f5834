"""Cost of detached (teacher-side) versus differentiable marginals.

``dist.marginals`` / ``part_marginals()`` run the explicit inside-outside pass without an autograd graph;
``part_marginals(differentiable=True)`` differentiates ``log Z`` with ``create_graph=True`` so that a loss
can be differentiated through the marginals (posterior KD, entropy gradients).  For each structure, batch
32, this script times both and measures the peak resident memory of each in a fresh process
(``resource.getrusage`` maxrss growth over a baseline taken after building the inputs).

    python benchmarks/bench_marginals.py [--repeats 5] [--threads 2]

Results: ``benchmarks/results/marginals_cpu.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from structkd import Dependency2oCRF, DependencyCRF, LinearChainCRF

RESULTS = Path(__file__).resolve().parent / "results"
CASES = {
    "LinearChainCRF, L=100, 37 tags": lambda g: LinearChainCRF(
        torch.randn(32, 100, 37, generator=g, requires_grad=True), torch.randn(37, 37, generator=g)),
    "DependencyCRF, 60 words": lambda g: DependencyCRF(torch.randn(32, 61, 61, generator=g, requires_grad=True)),
    "Dependency2oCRF, 60 words": lambda g: Dependency2oCRF(torch.randn(32, 61, 61, generator=g, requires_grad=True),
                                                           torch.randn(32, 61, 61, 61, generator=g)),
}


def run(case: str, mode: str) -> None:
    """Compute the marginals once (``detached``), or compute and backpropagate through them
    (``differentiable``)."""
    dist = CASES[case](torch.Generator().manual_seed(0))
    if mode == "detached":
        dist.part_marginals()
    else:
        sum(m.pow(2).sum() for m in dist.part_marginals(differentiable=True)).backward()


def peak_mb(case: str, mode: str) -> float:
    code = (f"import sys, resource; sys.path.insert(0, {str(Path(__file__).parent)!r}); import bench_marginals as b; "
            f"import torch; g = torch.Generator().manual_seed(0); b.CASES[{case!r}](g); "
            f"base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; b.run({case!r}, {mode!r}); "
            f"print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def time_ms(case: str, mode: str, repeats: int) -> float:
    run(case, mode)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(case, mode)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for case in CASES:
        row = {"case": case}
        for mode in ("detached", "differentiable"):
            row[f"{mode}_ms"] = time_ms(case, mode, args.repeats)
            row[f"{mode}_mb"] = peak_mb(case, mode)
        rows.append(row)
    lines = ["| structure (batch 32) | detached ms | detached MB | differentiable ms | differentiable MB |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['case']} | {r['detached_ms']:.1f} | {r['detached_mb']:.0f} | {r['differentiable_ms']:.1f} | "
              f"{r['differentiable_mb']:.0f} |" for r in rows]
    table = "\n".join(lines)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"threads": torch.get_num_threads(), "torch": torch.__version__,
            "note": "differentiable = marginals with create_graph=True plus a backward pass through them"}
    (args.out / "marginals_cpu.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    (args.out / "marginals_cpu.md").write_text(f"{table}\n\n{json.dumps(meta)}\n")
    return rows


if __name__ == "__main__":
    resource.getrusage(resource.RUSAGE_SELF)
    main()
