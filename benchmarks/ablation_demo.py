"""Each KD toolbox option on top of structural KD, on the demo's data and models (issue #22 item 4, first part).

The setting of ``structkd ner demo``: the shipped WNUT17 sample (800 training and 250 development sentences, and
2,594 training sentences without tags as unlabeled text), a MiniLM-CRF teacher fine-tuned for 3 epochs, BiLSTM-CRF
students whose word embeddings start from the teacher's (and train: the demo keeps them frozen since
``levers_demo.py`` measured that), 8 epochs.  Rows (each with and without the unlabeled
text, ``--seeds`` seeds, dev entity F1 mean and standard deviation):

* ``none``: gold labels only (it leaves unlabeled text out, so it has one row);
* ``structural``: structural KD (``kd_weight`` 0.5), the demo's distilled student;
* ``+ anneal``: annealing KD, ``kd.temperature`` 2 lowered to 1 over training (teacher online);
* ``+ hidden``: hidden-state matching, ``kd.hidden_weight`` 1 (the BiLSTM output to the teacher's top layer);
* ``+ mixup``: MixKD, ``kd.mixup_weight`` 0.5, ``kd.mixup_alpha`` 0.4;
* ``+ adversarial``: word-replacement augmentation, ``kd.augment_weight`` 0.5, 2 candidates;
* ``+ 2 teachers``: the mixture of the teacher and a second one fine-tuned with another seed.

Attention matching needs a transformer student and is not in this table.  Runs are resumable (a finished run is
read back, a cut one continues from its checkpoint) and can be shared between processes (``--worker K --workers
N`` takes every N-th run), seed 0 of every row first.

    python benchmarks/ablation_demo.py [--out runs/ablation-demo] [--seeds 0 1 2] [--worker 0 --workers 1]
    python benchmarks/ablation_demo.py --report     # the table from the finished runs

Results: ``benchmarks/results/ablation_demo.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from structkd.ner import build_ner_config
from structkd.ner.demo import demo_configs, sample_path
from structkd.ner.pipeline import distill_command, train_command

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
OPTIONS = {
    "none": {"method": "none"},
    "structural": {},
    "+ anneal": {"temperature": 2.0, "temperature_schedule": "anneal"},
    "+ hidden": {"hidden_weight": 1.0},
    "+ mixup": {"mixup_weight": 0.5, "mixup_alpha": 0.4},
    "+ adversarial": {"augment": "adversarial", "augment_weight": 0.5, "augment_candidates": 2},
    "+ 2 teachers": {"teachers": "both"},
}


def option_kd(option: str, teachers: list[str]) -> dict:
    """The ``kd`` keys of ``option`` (a key of :data:`OPTIONS`) given the run's teachers (model directories, the
    run's own first): ``+ 2 teachers`` distils the equal mixture of them in place of ``kd.teacher``; every other
    option keeps ``kd.teacher``, the first."""
    values = dict(OPTIONS[option])
    if values.pop("teachers", None) == "both":
        return {**values, "teacher": None, "teachers": list(teachers)}
    return {**values, "teacher": teachers[0]}


def teacher_dirs(out: Path) -> list[Path]:
    return [out / f"teacher-{seed}" for seed in (0, 1)]


def train_teacher(out: Path, seed: int) -> None:
    """The demo's teacher (3 epochs), with ``seed``; skipped when it is done."""
    directory = out / f"teacher-{seed}"
    if (directory / "results.json").exists():
        return
    teacher, _, _ = demo_configs(str(out / f"demo-{seed}"), 3, 8, None, seed, "cpu")
    teacher.training.output_dir = str(directory)
    train_command(teacher, resume=True)


def run_config(out: Path, option: str, unlabeled: bool, seed: int):
    """The distilled student's config of the demo with the option on top."""
    _, _, distilled = demo_configs(str(out / "demo"), 3, 8, None, seed, "cpu")
    values = distilled.to_dict()
    # the demo's student as this table measured it, before the demo froze its embeddings (levers_demo.py) and took
    # WNUT17's dev and test text as more unlabeled text: the training sentences outside the sample only
    values["model"]["freeze_embeddings"] = False
    values["model"]["open_vocabulary"] = False  # measured with the dev words in the vocabulary (no lexicon)
    values["data"]["unlabeled"] = [str(sample_path("unlabeled.txt"))] if unlabeled else []
    values["kd"] = {**values["kd"], **option_kd(option, [str(d / "model") for d in teacher_dirs(out)])}
    values["training"]["output_dir"] = str(out / run_name(option, unlabeled, seed))
    values["training"]["progress"] = False
    return build_ner_config(values)


def run_name(option: str, unlabeled: bool, seed: int) -> str:
    slug = option.replace("+ ", "").replace(" ", "-")
    return f"{slug}-{'unlabeled' if unlabeled else 'labeled'}-s{seed}"


def grid(seeds: list[int]) -> list[tuple[str, bool, int]]:
    """Every run, seed by seed (the first seed of every row first)."""
    return [(option, unlabeled, seed) for seed in seeds for option in OPTIONS for unlabeled in (False, True)
            if not (option == "none" and unlabeled)]


def run_all(out: Path, seeds: list[int], worker: int, workers: int) -> None:
    train_teacher(out, worker % 2)
    while not all((d / "results.json").exists() for d in teacher_dirs(out)):
        if workers == 1:
            train_teacher(out, 1 - worker % 2)
        time.sleep(10)
    for k, (option, unlabeled, seed) in enumerate(grid(seeds)):
        if k % workers != worker:
            continue
        directory = out / run_name(option, unlabeled, seed)
        if (directory / "results.json").exists():
            continue
        start = time.perf_counter()
        result = distill_command(run_config(out, option, unlabeled, seed), resume=True)
        print(f"{run_name(option, unlabeled, seed)}: dev F1 {100 * result['dev']['f1']:.2f} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)


def seed_scores(directories: list[Path]) -> dict:
    """Dev F1 of the runs in ``directories`` that finished: ``seeds`` (how many), ``dev_f1`` (each),
    ``dev_f1_mean`` and ``dev_f1_std`` (sample standard deviation; ``None`` where undefined)."""
    scores = [json.loads((d / "results.json").read_text())["dev"]["f1"] for d in directories
              if (d / "results.json").exists()]
    return {"seeds": len(scores), "dev_f1": scores, "dev_f1_mean": statistics.mean(scores) if scores else None,
            "dev_f1_std": statistics.stdev(scores) if len(scores) > 1 else None}


def score_cells(row: dict) -> tuple[str, str]:
    """``(mean ± std, per seed)`` of a row of :func:`seed_scores`, in F1 points."""
    mean = "-" if row["dev_f1_mean"] is None else f"{100 * row['dev_f1_mean']:.2f}"
    std = "" if row["dev_f1_std"] is None else f" ± {100 * row['dev_f1_std']:.2f}"
    return mean + std, ", ".join(f"{100 * x:.2f}" for x in row["dev_f1"])


def report_meta(students: str, seeds: list[int], after: str = "", **extra) -> dict:
    """The ``meta`` of a demo-setting table: the setting (``students``: what the BiLSTM-CRF students are;
    ``after``: what follows), the seeds, the torch build and threads, and ``extra``."""
    return {"setting": "structkd ner demo: WNUT17 sample, MiniLM-CRF teacher (3 epochs), BiLSTM-CRF students "
                       f"({students}){after}", "seeds": seeds, **extra,
            "torch": torch.__version__, "threads": torch.get_num_threads()}


def write_report(stem: str, payload: dict, lines: list[str]) -> None:
    """``benchmarks/results/<stem>.json`` and ``.md``, and the table printed."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def run_arguments(description: str) -> argparse.ArgumentParser:
    """The options of the demo-setting scripts: ``--out``, ``--seeds``, ``--worker``/``--workers``, ``--threads``,
    ``--report``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, default=Path("runs/ablation-demo"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--worker", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads of this process")
    parser.add_argument("--report", action="store_true", help="write the table from the finished runs")
    return parser


def report(out: Path, seeds: list[int]) -> None:
    rows = []
    for option in OPTIONS:
        for unlabeled in (False, True):
            if option == "none" and unlabeled:
                continue
            rows.append({"option": option, "unlabeled": unlabeled,
                         **seed_scores([out / run_name(option, unlabeled, seed) for seed in seeds])})
    teachers = [json.loads((d / "results.json").read_text())["dev"]["f1"] for d in teacher_dirs(out)
                if (d / "results.json").exists()]
    meta = report_meta("8 epochs, word embeddings from the teacher", seeds, teachers_dev_f1=teachers)
    lines = ["# KD toolbox options on top of structural KD (the demo's setting)", "",
             f"{meta['setting']}; teachers' dev F1 {', '.join(f'{100 * t:.2f}' for t in teachers)}. Dev entity F1, "
             f"mean and standard deviation over the seeds that finished (of {seeds}).", "",
             "| option | unlabeled text | seeds | dev F1 | per seed |", "|---|---|---:|---:|---|"]
    for r in rows:
        score, per_seed = score_cells(r)
        lines.append(f"| {r['option']} | {'yes' if r['unlabeled'] else 'no'} | {r['seeds']} | {score} | {per_seed} |")
    write_report("ablation_demo", {"meta": meta, "rows": rows}, lines)


def main() -> None:
    args = run_arguments(__doc__.split("\n")[0]).parse_args()
    if not 0 <= args.worker < args.workers:
        sys.exit("--worker must be in [0, --workers)")
    torch.set_num_threads(args.threads)
    if args.report:
        report(args.out, args.seeds)
    else:
        run_all(args.out, args.seeds, args.worker, args.workers)


if __name__ == "__main__":
    main()
