"""Micro-benchmark: the structural KD loss against the student's own gold NLL (forward + backward).

For chains (LinearChainCRF student, batch 32, lengths in [30, 50], 9 and 37 tags) and trees (DependencyCRF
student, batch 32, 30 words), time

* ``nll``: ``-student.log_prob(gold).sum().backward()``;
* ``kd``: ``structural_kd_loss(teacher, student).sum().backward()`` with the teacher's marginals already
  computed (as with the teacher cache of the training engine);
* ``kd+teacher``: the same including the teacher's inference (log Z and marginals).

Ratios ``kd / nll`` are the figure of merit (target: at most 1.3).  Results go to
``benchmarks/results/kd_<device>.json`` and ``.md``.

    python benchmarks/bench_kd.py [--device cpu] [--repeats 10] [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from structkd.kd import project, structural_kd_loss, structural_kd_loss_from_marginals
from structkd.structs.chain import LinearChainCRF
from structkd.structs.tree import DependencyCRF

RESULTS = Path(__file__).resolve().parent / "results"


def _time(fn, repeats: int, device: str) -> float:
    fn()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def chain_case(n_tags: int, batch: int, device: str, g: torch.Generator):
    lens = torch.randint(30, 51, (batch,), generator=g).to(device)
    seq_len = int(lens.max())
    t_em = torch.randn(batch, seq_len, n_tags, generator=g).to(device)
    t_tr = torch.randn(n_tags, n_tags, generator=g).to(device)
    s_em = torch.randn(batch, seq_len, n_tags, generator=g).to(device).requires_grad_()
    s_tr = torch.randn(n_tags, n_tags, generator=g).to(device).requires_grad_()
    gold = torch.randint(0, n_tags, (batch, seq_len), generator=g).to(device)
    teacher = lambda: LinearChainCRF(t_em, t_tr, lens)  # noqa: E731
    student = lambda: LinearChainCRF(s_em, s_tr, lens)  # noqa: E731
    return teacher, student, gold


def tree_case(words: int, batch: int, device: str, g: torch.Generator):
    lens = torch.full((batch,), words).to(device)
    t_s = torch.randn(batch, words + 1, words + 1, generator=g).to(device)
    s_s = torch.randn(batch, words + 1, words + 1, generator=g).to(device).requires_grad_()
    gold = DependencyCRF(torch.randn(batch, words + 1, words + 1, generator=g).to(device), lens).argmax
    return (lambda: DependencyCRF(t_s, lens)), (lambda: DependencyCRF(s_s, lens)), gold


def measure(name: str, teacher, student, gold, repeats: int, device: str) -> dict:
    cached = project(teacher(), student())

    def nll():
        (-student().log_prob(gold)).sum().backward()

    def kd():
        structural_kd_loss_from_marginals(cached, student()).sum().backward()

    def kd_teacher():
        structural_kd_loss(teacher(), student()).sum().backward()

    row = {"case": name, "nll_ms": _time(nll, repeats, device), "kd_ms": _time(kd, repeats, device),
           "kd_teacher_ms": _time(kd_teacher, repeats, device)}
    row["kd_over_nll"] = row["kd_ms"] / row["nll_ms"]
    row["kd_teacher_over_nll"] = row["kd_teacher_ms"] / row["nll_ms"]
    return row


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat (smoke test)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    g = torch.Generator().manual_seed(0)
    batch, repeats = (4, 1) if args.quick else (32, args.repeats)
    cases = [(f"chain, {n} tags", *chain_case(n, batch, args.device, g)) for n in (9, 37)]
    cases.append(("tree, 30 words (DependencyCRF)", *tree_case(8 if args.quick else 30, batch, args.device, g)))
    rows = [measure(name, t, s, gold, repeats, args.device) for name, t, s, gold in cases]
    lines = ["| student | NLL ms | KD ms | KD / NLL | KD + teacher ms | (KD + teacher) / NLL |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['nll_ms']:.2f} | {r['kd_ms']:.2f} | {r['kd_over_nll']:.2f} | "
                     f"{r['kd_teacher_ms']:.2f} | {r['kd_teacher_over_nll']:.2f} |")
    table = "\n".join(lines)
    print(table)
    if not args.quick:
        args.out.mkdir(parents=True, exist_ok=True)
        meta = {"device": args.device, "threads": torch.get_num_threads(), "torch": torch.__version__, "batch": batch}
        (args.out / f"kd_{args.device}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
        (args.out / f"kd_{args.device}.md").write_text(f"{table}\n\n{json.dumps(meta)}\n")
    return rows


if __name__ == "__main__":
    main()
