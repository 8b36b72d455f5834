"""benchmarks/retention.py: the rows of retention.json from the drivers' tables (synthetic tables here)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import retention  # noqa: E402


def write(path: Path, table: dict) -> None:
    path.write_text(json.dumps(table), encoding="utf-8")


def test_rows_of_an_ner_and_a_parsing_table(tmp_path):
    write(tmp_path / "ner_wikiann_unlabeled.json", {
        "models": {"teacher MiniLM-crf": {"f1": 0.8, "sentences_per_second": 10.0, "parameters": 100},
                   "student BiLSTM-crf (unlabeled)": {"f1": 0.7, "sentences_per_second": 200.0, "parameters": 5}},
        "rows": [{"block": "unlabeled", "teacher": "crf", "student": "crf", "method": "structural",
                  "seeds": [0.78, 0.82], "speedup": 19.5, "parameters": 7}]})
    write(tmp_path / "parse_ewt.json", {  # an older table: no teacher for the student without KD, no speed-up
        "models": {"teacher MiniLM biaffine 1o": {"las": 0.5, "sentences_per_second": 4.0},
                   "teacher MiniLM biaffine 2o": {"las": 0.8, "sentences_per_second": 2.0},
                   "student bilstm-1o": {"las": 0.4, "sentences_per_second": 40.0, "parameters": 9}},
        "rows": [{"teacher": None, "student": "bilstm-1o", "method": "none",
                  "seeds": [{"test_las": 0.4}, {"test_las": 0.6}]}]})
    rows = retention.collect(tmp_path)
    assert [(r["benchmark"], r["teacher"], r["kd"]) for r in rows] == [
        ("WikiANN (reduced) + 18,000 unlabeled", "MiniLM-crf", "structural"),
        ("UD EWT (reduced)", "MiniLM biaffine 1o", "none"), ("UD EWT (reduced)", "MiniLM biaffine 2o", "none")]
    ner, first, second = rows
    assert ner["student"] == "BiLSTM-crf (teacher embeddings)" and ner["ratio"] == pytest.approx(1.0)
    assert (ner["speedup"], ner["parameters"], ner["seeds"]) == (19.5, 7, 2)
    assert first["ratio"] == pytest.approx(1.0) and second["ratio"] == pytest.approx(0.625)
    assert (first["speedup"], second["speedup"], second["parameters"]) == (10.0, 20.0, 9)
    assert set(ner) >= {"benchmark", "teacher", "student", "kd", "teacher_score", "student_score", "ratio",
                        "speedup", "seeds"}
    assert "| UD EWT (reduced) | MiniLM biaffine 2o | bilstm-1o | none | 80.00 | 50.00 | 62.5 | 20.0x | 2 |" \
        in retention.summarize(rows)
