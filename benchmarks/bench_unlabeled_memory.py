"""Peak memory of reading unlabeled text: eagerly (lists of sentence objects, as ``data.unlabeled`` was read before
issue #19) against lazily (:mod:`structkd.data.lazy`: one checking pass that keeps an index of the file).

Synthetic files of ``--sizes`` sentences (seeded): words drawn from a Zipf(1.1) vocabulary of 31,470 made-up
words of 1 to 12 letters (50,000 drawn, duplicates merged; a tenth capitalized), sentence lengths log-normal
(median 15 words, sigma 0.6, 1 to 100), a final period on 85% of sentences and a comma after 5% of words: 19.7
tokens a sentence on average (UD English EWT: 17); written as one sentence per line (``txt``), ``token<TAB>O``
columns (``conll``) and CoNLL-U without trees (``conllu``, HEAD and DEPREL ``_``).

Each measurement runs in a fresh process: the imports, then the reader (the NER task's for ``txt`` and
``conll``, the parser task's for ``conllu``; ``eager``: the readers of before, ``read_text``, ``read_columns``,
``[without_tree(s) for s in read_conllu(...)]``; ``lazy``: the task's ``read_data``).  Figures: peak RSS
(``ru_maxrss``) minus the RSS after the imports, the RSS still held once read, the time; for ``lazy`` also a
streaming pass over the first 10^5 sentences (time per sentence, peak) and random access to 2,000 sentences.
An eager read whose memory, extrapolated from the smaller size, would pass ``--max-eager-gb`` is not run (the
row says so, with the extrapolation).  Finished rows are kept: a run that is cut short goes on where it stopped.

    python benchmarks/bench_unlabeled_memory.py [--sizes 100000 1000000] [--formats txt conll conllu]
                                                [--workdir /tmp/structkd_unlabeled] [--max-eager-gb 6]

Results: ``benchmarks/results/unlabeled_memory.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
FORMATS = {"txt": "raw.txt", "conll": "columns.conll", "conllu": "trees.conllu"}
TASK_OF = {"txt": "ner", "conll": "ner", "conllu": "parse"}
STREAM = 100_000  # sentences of the streaming pass
RANDOM = 2_000  # random accesses
SEED = 0


# ------------------------------------------------------------------------------------------ synthetic text
def vocabulary(rng: np.random.Generator, size: int = 50_000) -> list[str]:
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    lengths = np.clip(rng.geometric(0.2, size), 1, 12)
    words = {"".join(rng.choice(letters, n)) for n in lengths}
    words = sorted(words)
    rng.shuffle(words)
    return [w.capitalize() if rng.random() < 0.1 else w for w in words]


def sentences(n: int, seed: int = SEED, chunk: int = 10_000):
    """``n`` sentences (lists of words), generated ``chunk`` at a time."""
    rng = np.random.default_rng(seed)
    words = np.array(vocabulary(rng), dtype=object)
    for start in range(0, n, chunk):
        size = min(chunk, n - start)
        lengths = np.clip(np.round(rng.lognormal(np.log(15), 0.6, size)), 1, 100).astype(int)
        ranks = np.minimum(rng.zipf(1.1, lengths.sum()), len(words)) - 1
        flat = words[ranks].tolist()
        commas = (rng.random(len(flat)) < 0.05).tolist()
        ends = (rng.random(size) < 0.85).tolist()
        at = 0
        for length, end in zip(lengths.tolist(), ends):
            sentence = []
            for word, comma in zip(flat[at:at + length], commas[at:at + length]):
                sentence += [word, ","] if comma else [word]
            at += length
            yield sentence + ["."] if end else sentence


def write_files(directory: Path, n: int) -> dict[str, Path]:
    """The three files of ``n`` sentences (written once; reused when their ``.done`` marker is there)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {fmt: directory / f"{n}_{name}" for fmt, name in FORMATS.items()}
    done = directory / f"{n}.done"
    if done.is_file() and all(p.is_file() for p in paths.values()):
        return paths
    handles = {fmt: open(p, "w", encoding="utf-8") for fmt, p in paths.items()}
    try:
        for k, words in enumerate(sentences(n)):
            handles["txt"].write(" ".join(words) + "\n")
            handles["conll"].write("".join(f"{w}\tO\n" for w in words) + "\n")
            handles["conllu"].write(f"# sent_id = {k + 1}\n" + "".join(
                f"{i}\t{w}\t_\t_\t_\t_\t_\t_\t_\t_\n" for i, w in enumerate(words, start=1)) + "\n")
    finally:
        for handle in handles.values():
            handle.close()
    done.write_text(json.dumps({"sentences": n, "seed": SEED}) + "\n")
    return paths


# ------------------------------------------------------------------------------------------ one measurement
def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def reader(fmt: str, kind: str):
    """The function that reads a file into ``data.unlabeled`` (``eager``: as before issue #19)."""
    if kind == "eager":
        from structkd.data import read_columns, read_conllu, read_text
        from structkd.parse.modeling import without_tree

        return {"txt": read_text, "conll": lambda p: read_columns(p, labeled=False),
                "conllu": lambda p: [without_tree(s) for s in read_conllu(p, validate=False)]}[fmt]
    if TASK_OF[fmt] == "ner":
        from structkd.ner.config import DataConfig
        from structkd.ner.pipeline import read_data

        return lambda p: read_data(DataConfig(unlabeled=[str(p)])).unlabeled
    from structkd.parse.config import DataConfig
    from structkd.parse.pipeline import read_data

    return lambda p: read_data(DataConfig(unlabeled=[str(p)])).unlabeled


def measure(fmt: str, path: str, kind: str) -> dict:
    """Run in a child process: the figures of one read (and, lazily, a streaming pass and random reads)."""
    import gc

    read = reader(fmt, kind)
    import structkd.ner.pipeline  # noqa: F401  (both tasks' imports in the baseline: torch and all)
    import structkd.parse.pipeline  # noqa: F401

    gc.collect()
    base = rss_mb()
    start = time.perf_counter()
    data = read(path)
    seconds = time.perf_counter() - start
    gc.collect()
    row = {"sentences": len(data), "read_s": seconds, "baseline_mb": base, "peak_mb": peak_mb(),
           "held_mb": rss_mb() - base}
    row["peak_over_baseline_mb"] = row["peak_mb"] - base
    if kind == "lazy":
        start = time.perf_counter()
        count = sum(len(s) for s in data[:STREAM])
        row["stream_us_per_sentence"] = 1e6 * (time.perf_counter() - start) / min(STREAM, len(data))
        row["stream_words"] = count
        positions = np.random.default_rng(1).integers(0, len(data), RANDOM).tolist()
        start = time.perf_counter()
        for i in positions:
            data[i]
        row["random_us_per_sentence"] = 1e6 * (time.perf_counter() - start) / RANDOM
        row["peak_after_use_mb"] = peak_mb() - base
    return row


# ------------------------------------------------------------------------------------------ driver
def run_child(fmt: str, path: Path, kind: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, __file__, "--child", fmt, str(path), kind], capture_output=True,
                         text=True, env=env, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{fmt} {kind} {path}: exit {out.returncode}\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def eager_estimate(rows: list[dict], fmt: str, n: int) -> float | None:
    """The eager peak (MB over the baseline) at ``n`` sentences, scaled from the largest smaller size measured."""
    done = [r for r in rows if r["format"] == fmt and r["reader"] == "eager" and "peak_over_baseline_mb" in r
            and r["size"] < n]
    if not done:
        return None
    best = max(done, key=lambda r: r["size"])
    return best["peak_over_baseline_mb"] * n / best["size"]


def table(rows: list[dict]) -> str:
    lines = ["| format | sentences | file MB | reader | peak - baseline MB | held MB | bytes/sentence held | read s "
             "| stream us/sentence | random us/sentence |", "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: (list(FORMATS).index(r["format"]), r["size"], r["reader"])):
        if "skipped" in r:
            lines.append(f"| {r['format']} | {r['size']:,} | {r['file_mb']:.0f} | {r['reader']} | not run: "
                         f"{r['skipped']} | | | | | |")
            continue
        stream = f"{r['stream_us_per_sentence']:.0f}" if "stream_us_per_sentence" in r else ""
        random = f"{r['random_us_per_sentence']:.0f}" if "random_us_per_sentence" in r else ""
        lines.append(f"| {r['format']} | {r['size']:,} | {r['file_mb']:.0f} | {r['reader']} | "
                     f"{r['peak_over_baseline_mb']:,.0f} | {r['held_mb']:,.0f} | "
                     f"{1e6 * r['held_mb'] / r['size']:,.0f} | {r['read_s']:.1f} | {stream} | {random} |")
    return "\n".join(lines)


def write_results(rows: list[dict], meta: dict, results: Path) -> None:
    results.mkdir(parents=True, exist_ok=True)
    (results / "unlabeled_memory.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    text = ["# Memory of reading unlabeled text: eager lists vs the lazy index\n",
            f"{meta['description']}\n", table(rows), "",
            "*peak - baseline*: the process's peak RSS (`ru_maxrss`) minus its RSS after the imports (torch and "
            "structkd, about " + f"{meta.get('baseline_mb', 0):.0f} MB); *held*: RSS still in use once the "
            "file is read (garbage collected); *stream*: one pass over the first 100,000 sentences of the lazy "
            "sequence (`data.unlabeled[:100000]`, parsed as they come); *random*: `data.unlabeled[i]` at 2,000 "
            "random positions (open, seek, parse).", "",
            f"Machine: {meta['machine']}; one thread; seed {SEED}. The times come from a machine shared with "
            "other jobs (rows measured at different moments): take them as orders of magnitude; the memory "
            "figures do not depend on the load."]
    (results / "unlabeled_memory.md").write_text("\n".join(text) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--formats", nargs="+", choices=list(FORMATS), default=list(FORMATS))
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/structkd_unlabeled"))
    parser.add_argument("--max-eager-gb", type=float, default=6.0)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--child", nargs=3, metavar=("FORMAT", "PATH", "READER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(*args.child)))
        return
    out = args.results / "unlabeled_memory.json"
    rows = json.loads(out.read_text())["rows"] if out.is_file() else []
    meta = {"description": __doc__.split("\n\n")[1].replace("\n", " "), "seed": SEED,
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
                       f"{platform.python_version()}"}
    for n in sorted(args.sizes):
        paths = write_files(args.workdir, n)
        for fmt in args.formats:
            for kind in ("eager", "lazy"):
                if any(r["format"] == fmt and r["size"] == n and r["reader"] == kind for r in rows):
                    continue
                row = {"format": fmt, "size": n, "reader": kind, "file_mb": paths[fmt].stat().st_size / 2 ** 20}
                estimate = eager_estimate(rows, fmt, n) if kind == "eager" else None
                if estimate is not None and estimate > 1024 * args.max_eager_gb:
                    row["skipped"] = f"about {estimate / 1024:.1f} GB expected (scaled from the smaller size)"
                else:
                    print(f"{fmt} {n:,} {kind} ...", flush=True)
                    row.update(run_child(fmt, paths[fmt], kind))
                    meta["baseline_mb"] = row["baseline_mb"]
                rows.append(row)
                write_results(rows, meta, args.results)
    print(table(rows))


if __name__ == "__main__":
    main()
