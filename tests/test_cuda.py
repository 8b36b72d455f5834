"""The same numbers on a CUDA device as on the CPU: every dynamic program, the structural KD loss and its
gradient, and the parsing and NER commands with ``training.device=cuda`` / ``--device cuda``.

Skipped on machines without CUDA (the CPU suite covers the code); ``tests/test_devices.py`` checks the device
options themselves everywhere."""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

from test_ner_pipeline import ROWS, write_corpus  # noqa: E402
from test_parse_pipeline import bilstm, write_treebank  # noqa: E402

from structkd.kd import structural_kd_loss  # noqa: E402
from structkd.ner import build_ner_config  # noqa: E402
from structkd.ner import distill_command as ner_distill  # noqa: E402
from structkd.ner import train_command as ner_train  # noqa: E402
from structkd.ner.pipeline import evaluate_command as ner_evaluate  # noqa: E402
from structkd.parse import ParseModel, build_parse_config, distill_command, train_command  # noqa: E402
from structkd.parse.pipeline import evaluate_command, predict_command  # noqa: E402
from structkd.structs import (  # noqa: E402
    Dependency2oCRF,
    DependencyCRF,
    LinearChainCRF,
    MatrixTree,
    SemiMarkovCRF,
)

CUDA = torch.device("cuda")
LENS = [5, 1, 3, 6]  # words (or tokens) per sentence of the batch, padding in all but one


def _chain(g):
    B, L, n = len(LENS), max(LENS), 4
    return LinearChainCRF, (torch.randn(B, L, n, generator=g, dtype=torch.float64),
                            torch.randn(n, n, generator=g, dtype=torch.float64), torch.tensor(LENS),
                            torch.randn(n, generator=g, dtype=torch.float64),
                            torch.randn(n, generator=g, dtype=torch.float64)), {}


def _arcs(cls, multiroot):
    def make(g):
        L = max(LENS) + 1
        return cls, (torch.randn(len(LENS), L, L, generator=g, dtype=torch.float64), torch.tensor(LENS)), \
            {"multiroot": multiroot}
    return make


def _sibs(g):
    B, L = len(LENS), max(LENS) + 1
    return Dependency2oCRF, (torch.randn(B, L, L, generator=g, dtype=torch.float64),
                             torch.randn(B, L, L, L, generator=g, dtype=torch.float64), torch.tensor(LENS)), {}


def _spans(g):
    B, L = len(LENS), max(LENS)
    return SemiMarkovCRF, (torch.randn(B, L, L, 3, generator=g, dtype=torch.float64), torch.tensor(LENS)), \
        {"max_width": 3}


CASES = {"chain": _chain, "projective": _arcs(DependencyCRF, False), "projective-multiroot": _arcs(DependencyCRF, True),
         "nonprojective": _arcs(MatrixTree, False), "nonprojective-multiroot": _arcs(MatrixTree, True),
         "second-order": _sibs, "semi-markov": _spans}


@pytest.mark.parametrize("case", list(CASES))
def test_dynamic_programs_give_the_cpu_numbers_on_cuda(case):
    cls, args, options = CASES[case](torch.Generator().manual_seed(7))
    cpu, gpu = cls(*args, **options), cls(*(a.to(CUDA) for a in args), **options)
    assert gpu.log_partition.device.type == "cuda"
    torch.testing.assert_close(gpu.log_partition.cpu(), cpu.log_partition, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(gpu.marginals.cpu(), cpu.marginals, rtol=1e-7, atol=1e-9)
    assert torch.equal(gpu.argmax.cpu(), cpu.argmax)
    torch.testing.assert_close(gpu.kmax(3).cpu(), cpu.kmax(3), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("case", ["chain", "projective", "nonprojective", "second-order"])
def test_structural_kd_loss_and_gradient_on_cuda(case):
    g = torch.Generator().manual_seed(11)
    cls, teacher_args, options = CASES[case](g)
    _, student_args, _ = CASES[case](g)
    results = []
    for device in (torch.device("cpu"), CUDA):
        student = [a.detach().clone().to(device).requires_grad_(a.is_floating_point()) for a in student_args]
        loss = structural_kd_loss(cls(*(a.to(device) for a in teacher_args), **options), cls(*student, **options),
                                  temperature=2.0)
        loss.sum().backward()
        results.append((loss.detach().cpu(), student[0].grad.cpu()))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-8, atol=1e-9)
    torch.testing.assert_close(results[1][1], results[0][1], rtol=1e-7, atol=1e-9)


def _training(out, epochs=2):
    return {"epochs": epochs, "batch_size": 8, "lr": 5e-3, "output_dir": str(out), "progress": False,
            "device": "cuda"}


def test_parser_commands_on_cuda(tmp_path):
    data = {"train": write_treebank(tmp_path / "train.conllu", 2), "dev": write_treebank(tmp_path / "dev.conllu", 1)}
    teacher = train_command(build_parse_config({"data": data, "model": bilstm(tree="2o"),
                                                "training": _training(tmp_path / "2o")}))
    assert 0.0 <= teacher["dev"]["las"] <= teacher["dev"]["uas"] <= 1.0
    for kind in ("biaffine", "seqlabel"):
        config = build_parse_config({"data": data, "model": bilstm(kind=kind),
                                     "kd": {"method": "structural", "teacher": str(tmp_path / "2o" / "model")},
                                     "training": _training(tmp_path / kind)})
        student = distill_command(config)
        saved = json.loads((tmp_path / kind / "parse_config.json").read_text())
        assert saved["training"]["device"] == "cuda"
        on_gpu = evaluate_command(str(tmp_path / kind / "model"), data["dev"], config.data, device="cuda")
        on_cpu = evaluate_command(str(tmp_path / kind / "model"), data["dev"], config.data, device="cpu")
        for metric in ("uas", "las"):  # float32 scores: a near-tie may go the other way on one word or two
            assert on_gpu[metric] == pytest.approx(student["dev"][metric], abs=0.04)
            assert on_cpu[metric] == pytest.approx(on_gpu[metric], abs=0.04)
    out = tmp_path / "pred.conllu"
    assert predict_command(str(tmp_path / "2o" / "model"), data["dev"], str(out), config.data, device="cuda") > 0
    assert ParseModel.load(tmp_path / "2o" / "model", device="cuda").device.type == "cuda"


def test_ner_commands_on_cuda(tmp_path):
    data = {"train": write_corpus(tmp_path / "train.conll", ROWS), "dev": write_corpus(tmp_path / "dev.conll", ROWS, 1)}
    model = {"kind": "bilstm", "head": "crf", "word_dim": 16, "hidden": 16, "char_filters": 8}
    ner_train(build_ner_config({"data": data, "model": model, "training": _training(tmp_path / "crf")}))
    config = build_ner_config({"data": data, "model": {**model, "head": "maxent"},
                               "kd": {"method": "structural", "teacher": str(tmp_path / "crf" / "model")},
                               "training": _training(tmp_path / "student")})
    student = ner_distill(config)
    for device in ("cuda", "cpu"):  # float32 scores: a near-tie may go the other way
        f1 = ner_evaluate(str(tmp_path / "student" / "model"), data["dev"], config.data, device)["f1"]
        assert f1 == pytest.approx(student["dev"]["f1"], abs=0.1)
