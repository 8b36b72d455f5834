"""How much of its teacher each student keeps: one row per teacher/student/KD cell of the NER and parsing tables.

Reads the tables the drivers wrote (``ner_wikiann[_BLOCK].json``, ``parse_ewt[_unlabeled].json`` in
``benchmarks/results/``)
and writes ``benchmarks/results/retention.json``, a list of rows::

    {"benchmark", "teacher", "student", "kd", "teacher_score", "student_score", "ratio", "speedup", "seeds",
     "student_scores", "parameters"}

``student_score`` is the mean over the seeds of the test score (WikiANN: entity F1; EWT: LAS), ``ratio`` its
share of the teacher's test score, ``speedup`` the student's CPU tagging or parsing speed over the teacher's (one
thread, measured side by side in the driver's process), ``seeds`` the number of seeds and ``student_scores`` each
seed's score.  A student trained without KD is compared with each teacher of its table.  Also writes
``retention.md``.

    python benchmarks/retention.py
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
NER_BLOCKS = {"": "WikiANN (reduced)", "_hf": "WikiANN (reduced), transformers teacher",
              "_unlabeled": "WikiANN (reduced) + 18,000 unlabeled"}
EWT_BLOCKS = {"": "UD EWT (reduced)", "_unlabeled": "UD EWT (reduced) + rest of train unlabeled"}
NER_TEACHERS = {"crf": "MiniLM-crf", "maxent": "MiniLM-maxent", "span": "MiniLM-span",
                "hf": "MiniLM token classifier (transformers Trainer)"}


def _row(benchmark: str, teacher: str, student: str, kd: str, teacher_score: float, scores: list[float],
         speedup: float, parameters: int | None) -> dict:
    mean = statistics.mean(scores)
    return {"benchmark": benchmark, "teacher": teacher, "student": student, "kd": kd,
            "teacher_score": round(teacher_score, 6), "student_score": round(mean, 6),
            "ratio": round(mean / teacher_score, 6), "speedup": round(speedup, 2), "seeds": len(scores),
            "student_scores": [round(s, 6) for s in scores], "parameters": parameters}


def ner_rows(path: Path, benchmark: str) -> list[dict]:
    """The rows of one WikiANN table (old tables without per-row speed-ups use their models' speeds)."""
    table = json.loads(path.read_text(encoding="utf-8"))
    models, rows = table["models"], []
    for row in table["rows"]:
        teacher = models[_teacher_key(row["teacher"])]
        student = models[_student_key(models, row)]
        speedup = row.get("speedup", student["sentences_per_second"] / teacher["sentences_per_second"])
        embeddings = " (teacher embeddings)" if row.get("block") == "unlabeled" else ""
        rows.append(_row(benchmark, NER_TEACHERS[row["teacher"]], f"BiLSTM-{row['student']}{embeddings}",
                         row["method"], teacher["f1"], row["seeds"], speedup,
                         row.get("parameters", student["parameters"])))
    return rows


def _teacher_key(head: str) -> str:
    return "teacher MiniLM-hf-token-classifier" if head == "hf" else f"teacher MiniLM-{head}"


def _student_key(models: dict, row: dict) -> str:
    block = row.get("block", "base")
    return f"student BiLSTM-{row['student']}" + ("" if block == "base" else f" ({block})")


def ewt_rows(path: Path, benchmark: str = EWT_BLOCKS[""]) -> list[dict]:
    """The rows of one EWT table, test LAS; a student without KD of a table that names no teacher (tables before
    the per-row columns) once per teacher, with its model's speed and parameters."""
    table = json.loads(path.read_text(encoding="utf-8"))
    models, rows = table["models"], []
    teachers = {name.rsplit(" ", 1)[-1]: m for name, m in models.items() if name.startswith("teacher ")}
    for row in table["rows"]:
        unlabeled = row.get("block") == "unlabeled"
        student = models[f"student {row['student']}" + (" (unlabeled)" if unlabeled else "")]
        scores = [seed["test_las"] for seed in row["seeds"]]
        for order in [row["teacher"]] if row["teacher"] else sorted(teachers):
            teacher = teachers[order]
            speedup = row.get("speedup", student["sentences_per_second"] / teacher["sentences_per_second"])
            rows.append(_row(benchmark, f"MiniLM biaffine {order}",
                             row["student"] + (" (teacher embeddings)" if unlabeled else ""), row["method"],
                             teacher["las"], scores, speedup, row.get("parameters", student["parameters"])))
    return rows


def collect(results: Path = RESULTS) -> list[dict]:
    rows = []
    for suffix, benchmark in NER_BLOCKS.items():
        if (results / f"ner_wikiann{suffix}.json").exists():
            rows += ner_rows(results / f"ner_wikiann{suffix}.json", benchmark)
    for suffix, benchmark in EWT_BLOCKS.items():
        if (results / f"parse_ewt{suffix}.json").exists():
            rows += ewt_rows(results / f"parse_ewt{suffix}.json", benchmark)
    return rows


def summarize(rows: list[dict]) -> str:
    lines = ["# How much of its teacher each student keeps", "",
             "Test score (WikiANN: entity F1; EWT: LAS), mean over the seeds, as a share of the teacher's; CPU "
             "speed-up over the teacher on one thread. Written by `benchmarks/retention.py` from the drivers' tables.",
             "",
             "| benchmark | teacher | student | KD | teacher | student | % of teacher | speed-up | seeds |",
             "|---|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['benchmark']} | {r['teacher']} | {r['student']} | {r['kd']} | "
                     f"{100 * r['teacher_score']:.2f} | {100 * r['student_score']:.2f} | {100 * r['ratio']:.1f} | "
                     f"{r['speedup']:.1f}x | {r['seeds']} |")
    return "\n".join(lines) + "\n"


def main() -> list[dict]:
    rows = collect()
    (RESULTS / "retention.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    (RESULTS / "retention.md").write_text(summarize(rows), encoding="utf-8")
    print(summarize(rows))
    return rows


if __name__ == "__main__":
    main()
