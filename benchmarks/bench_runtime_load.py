"""Sentences per second of ``structkd.load(MODEL)`` (torch) vs ``structkd.runtime.load(OUT)`` (ONNX + numpy), the
same results on both sides: Documents / Parses with exact marginal scores.

One CPU thread each, batch sizes 1 and 64, token lists as input (no tokenizer time).  Each (student, batch size)
pair is timed in interleaved rounds, the two sides alternating, and keeps each side's fastest pass; the table
reports both speeds and their ratio, and the largest score difference between the sides.  The BiLSTM students of
``bench_export.py`` (random weights, default sizes) over the shipped WNUT sample dev set and UD English EWT dev
(``../shared/data``, else the tests' tiny treebank).

    python benchmarks/bench_runtime_load.py [--rounds 3] [--sentences 100]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_export import EWT_DEV, WNUT_DEV, students  # noqa: E402

import structkd  # noqa: E402
from structkd import runtime  # noqa: E402
from structkd.data import read_columns, read_conllu  # noqa: E402
from structkd.export import export_model  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def _scores(results: list) -> list[float]:
    if hasattr(results[0], "entities"):
        return [e.score for r in results for e in r.entities]
    return [x for r in results for w in r.words for x in (w.head_score, w.deprel_score)]


def measure(torch_side, onnx_side, inputs: list[list[str]], rounds: int) -> dict:
    """Fastest pass of each side over ``inputs``, the sides alternating."""
    best = {"torch": float("inf"), "onnx": float("inf")}
    outputs = {}
    for round_ in range(rounds):
        for side in (("torch", "onnx") if round_ % 2 == 0 else ("onnx", "torch")):
            start = time.perf_counter()
            outputs[side] = (torch_side if side == "torch" else onnx_side)(inputs)
            best[side] = min(best[side], time.perf_counter() - start)
    gap = max((abs(a - b) for a, b in zip(_scores(outputs["torch"]), _scores(outputs["onnx"]))), default=0.0)
    n = len(inputs)
    return {"torch": n / best["torch"], "onnx": n / best["onnx"], "ratio": best["torch"] / best["onnx"],
            "max_score_difference": gap}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sentences", type=int, default=100, help="sentences per pass")
    args = parser.parse_args()
    torch.set_num_threads(1)
    ner = read_columns(WNUT_DEV)[:args.sentences]
    if EWT_DEV.is_file():
        trees, source = read_conllu(EWT_DEV, max_sentences=args.sentences), "UD English EWT dev"
    else:
        sys.path.insert(0, str(ROOT / "tests"))
        from test_parse_pipeline import write_treebank

        trees = read_conllu(write_treebank(Path(tempfile.mkdtemp()) / "t.conllu", 10))[:args.sentences]
        source = "the tests' tiny treebank"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n, (name, (task, model)) in enumerate(students(ner, trees).items()):
            if "MiniLM" in name:
                continue
            model.save(Path(tmp) / f"m{n}")
            out = export_model(Path(tmp) / f"m{n}", Path(tmp) / f"e{n}")
            inputs = [s.tokens for s in ner] if task == "ner" else [s.words for s in trees]
            for batch_size in (1, 64):
                torch_side = structkd.load(Path(tmp) / f"m{n}", batch_size=batch_size, tokenizer="whitespace")
                onnx_side = runtime.load(out, threads=1, batch_size=batch_size, tokenizer="whitespace")
                result = measure(torch_side, onnx_side, inputs, args.rounds)
                rows.append({"student": name, "batch_size": batch_size, **result})
                print(f"{name:32s} batch {batch_size:3d}: torch {result['torch']:8.1f}  onnx {result['onnx']:8.1f} "
                      f"sent/s  x{result['ratio']:.2f}  max score diff {result['max_score_difference']:.1e}",
                      flush=True)
    write(rows, args, f"{len(ner)} of the WNUT sample dev set", f"{len(trees)} of {source}")


def write(rows: list[dict], args, ner_source: str, tree_source: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {"threads": 1, "rounds": args.rounds, "ner_sentences": ner_source, "parse_sentences": tree_source,
            "torch": torch.__version__}
    (RESULTS / "runtime_load_cpu.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    lines = ["# structkd.load (torch) vs structkd.runtime.load (ONNX + numpy), one CPU thread", "",
             f"{ner_source} (taggers), {tree_source} (parsers); token lists in, Documents / Parses with exact "
             f"marginal scores out on both sides; fastest of {args.rounds} interleaved passes.", "",
             "| student | batch | structkd.load sent/s | runtime.load sent/s | runtime / torch | max score diff |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['student']} | {r['batch_size']} | {r['torch']:.1f} | {r['onnx']:.1f} | {r['ratio']:.2f}x | "
              f"{r['max_score_difference']:.1e} |" for r in rows]
    (RESULTS / "runtime_load_cpu.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
