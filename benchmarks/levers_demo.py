"""What it takes for the demo's student to keep more of its teacher: one lever at a time (issue #19 item 2).

The setting of ``structkd ner demo`` and ``ablation_demo.py``, whose teacher this script reuses: the shipped WNUT17
sample, a MiniLM-CRF teacher fine-tuned for 3 epochs, BiLSTM-CRF students with word embeddings from the teacher and
structural KD on the labeled and the 2,594 unlabeled sentences, 8 epochs.  The baseline row is that student (as in
``ablation_demo.py``, trained again here with the levers' code); each other row changes one of its settings, and
the last three add a second lever to frozen embeddings: 16 epochs, more unlabeled text (WNUT17's development
text outside the demo's 250 sentences and its test text, 2,046 sentences without tags, shipped as
``unlabeled_dev_test.txt``), or both.
``--seeds`` seeds, dev entity F1 mean and standard deviation, and the share of the teacher's dev F1.  Runs are
resumable and can be shared between processes (``--worker K --workers N``).

    python benchmarks/levers_demo.py [--out runs/ablation-demo] [--seeds 0 1 2] [--worker 0 --workers 1]
    python benchmarks/levers_demo.py --report

Results: ``benchmarks/results/levers_demo.{json,md}``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
from ablation_demo import (
    report_meta,
    run_arguments,
    run_config,
    score_cells,
    seed_scores,
    train_teacher,
    write_report,
)

from structkd.ner import build_ner_config
from structkd.ner.demo import UNLABELED, sample_path
from structkd.ner.pipeline import distill_command

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
LEVERS = {  # name: {section: {key: value}} changed in the demo's distilled student
    "demo student": {},
    "freeze embeddings": {"model": {"freeze_embeddings": True}},
    "hidden 200": {"model": {"hidden": 200}},
    "char filters 50": {"model": {"char_filters": 50}},
    "16 epochs": {"training": {"epochs": 16}},
    "temperature 2": {"kd": {"temperature": 2.0}},
    "kd_weight 1": {"kd": {"kd_weight": 1.0}},
    "teacher annealing": {"kd": {"annealing": "teacher"}},
    # on top of frozen embeddings, the best lever above
    "freeze + 16 epochs": {"model": {"freeze_embeddings": True}, "training": {"epochs": 16}},
    "freeze + more text": {"model": {"freeze_embeddings": True}, "data": {"unlabeled": "MORE"}},
    "freeze + more text + 16 epochs": {"model": {"freeze_embeddings": True}, "data": {"unlabeled": "MORE"},
                                       "training": {"epochs": 16}},
}
# "more text": the training sentences outside the sample plus WNUT17's development sentences after the demo's 250
# and its test sentences, without their tags (shipped: structkd/resources/wnut17_sample/unlabeled_dev_test.txt)


def lever_config(out: Path, lever: str, seed: int):
    """The demo's distilled student (structural KD, unlabeled text) with ``lever`` applied."""
    values = run_config(out, "structural", True, seed).to_dict()
    for section, changes in LEVERS[lever].items():
        values[section] = {**values[section], **changes}
    if values["data"].get("unlabeled") == "MORE":
        values["data"]["unlabeled"] = [str(sample_path(name)) for name in UNLABELED]
    values["training"]["output_dir"] = str(directory(out, lever, seed))
    return build_ner_config(values)


def directory(out: Path, lever: str, seed: int) -> Path:
    return out / f"lever-{lever.replace(' ', '-')}-s{seed}"


def run_all(out: Path, seeds: list[int], worker: int, workers: int, levers: list[str]) -> None:
    train_teacher(out, 0)
    runs = [(lever, seed) for seed in seeds for lever in levers]
    for k, (lever, seed) in enumerate(runs):
        if k % workers != worker or (directory(out, lever, seed) / "results.json").exists():
            continue
        start = time.perf_counter()
        result = distill_command(lever_config(out, lever, seed), resume=True)
        print(f"{lever} seed {seed}: dev F1 {100 * result['dev']['f1']:.2f} ({time.perf_counter() - start:.0f} s)",
              flush=True)


def report(out: Path, seeds: list[int]) -> None:
    teacher = json.loads((out / "teacher-0" / "results.json").read_text())["dev"]["f1"]
    rows = []
    for lever in LEVERS:
        row = {"lever": lever, "changes": LEVERS[lever], **seed_scores([directory(out, lever, s) for s in seeds])}
        mean = row["dev_f1_mean"]
        rows.append({**row, "share_of_teacher": mean / teacher if mean is not None else None})
    meta = report_meta("hidden 100, char filters 30, 8 epochs, word embeddings from the teacher", seeds,
                       after=", structural KD with the unlabeled text", teacher_dev_f1=teacher)
    lines = ["# One lever at a time: the demo's distilled student", "",
             f"{meta['setting']}; the teacher's dev F1 {100 * teacher:.2f}. Dev entity F1, mean and standard "
             f"deviation over the seeds that finished (of {seeds}).", "",
             "| lever | seeds | dev F1 | % of teacher | per seed |", "|---|---:|---:|---:|---|"]
    for r in rows:
        score, per_seed = score_cells(r)
        share = "-" if r["share_of_teacher"] is None else f"{100 * r['share_of_teacher']:.1f}"
        lines.append(f"| {r['lever']} | {r['seeds']} | {score} | {share} | {per_seed} |")
    write_report("levers_demo", {"meta": meta, "rows": rows}, lines)


def main() -> None:
    parser = run_arguments(__doc__.split("\n")[0])
    parser.add_argument("--levers", nargs="+", choices=list(LEVERS), default=list(LEVERS),
                        help="train only these rows (the report has every row)")
    args = parser.parse_args()
    if not 0 <= args.worker < args.workers:
        sys.exit("--worker must be in [0, --workers)")
    torch.set_num_threads(args.threads)
    if args.report:
        report(args.out, args.seeds)
    else:
        run_all(args.out, args.seeds, args.worker, args.workers, args.levers)


if __name__ == "__main__":
    main()
