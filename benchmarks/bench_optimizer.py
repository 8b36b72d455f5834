"""AdamW's kernels on a student's training step: the plain loop, ``foreach`` and ``fused`` (the default since
:func:`structkd.train.build_optimizer` takes the fused kernel where it can).

The students of the benchmarks, with the teacher's word embeddings (``model.init_from_teacher``: 384-wide rows,
a row per vocabulary word): the BiLSTM-CRF of ``ner_wikiann.py``'s unlabeled block (39,000 words: the WikiANN
vocabulary of 20,000 training sentences) and the BiLSTM biaffine parser of ``parse_ewt.py``'s (20,000 words).
Random batches of 32 sentences of 12 words; a step is forward, backward (gold loss), gradient clipping and the
optimizer step, each timed.  The three kernels take turns step by step in one process, so that a machine that
drifts slows them alike; the table reports the median over ``--steps`` steps and the ratio to the plain loop.
Each kernel starts from the same weights (in eval mode: no dropout draws); their weights after the run differ by
float rounding, which Adam's normalized step can raise to the size of the learning rate on an entry whose
gradient is nearly 0 (the largest difference is reported; ``tests/test_train.py`` checks 1e-6 on a small model).

    python benchmarks/bench_optimizer.py [--steps 30] [--threads 1] [--quick]

Results: ``benchmarks/results/optimizer_cpu.{json,md}`` (``--quick`` writes none).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time
from pathlib import Path

import torch

from structkd.models.parsers import BiaffineParser
from structkd.models.taggers import BiLSTMTagger
from structkd.models.vocab import TaggerVocab, Vocabulary
from structkd.train.optim import param_groups

ROOT = Path(__file__).resolve().parents[1]
KERNELS = {"plain": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}
BATCH, LENGTH, WIDTH = 32, 12, 384
TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]
VALID_TAGS = torch.tensor([0, 1, 3, 5])  # O and B- tags: any sequence of them is valid BIO


def tagger(words: int) -> tuple[torch.nn.Module, callable]:
    model = BiLSTMTagger(words, 300, TAGS, "crf", "BIO", word_dim=WIDTH, hidden=200, char_filters=50)

    def loss(m, batch):
        return -m(batch["words"], batch["chars"], batch["lens"]).log_prob(batch["tags"]).sum()
    return model, loss


def parser(words: int) -> tuple[torch.nn.Module, callable]:
    rels = [f"rel{i}" for i in range(37)]
    vocab = TaggerVocab(Vocabulary([f"w{i}" for i in range(words - 2)]), Vocabulary([chr(97 + i) for i in range(26)]),
                        Vocabulary(["_"], special=False))
    model = BiaffineParser("bilstm", rels, "projective", arc_hidden=256, rel_hidden=100, vocab=vocab,
                           encoder_options={"word_dim": WIDTH, "hidden": 128, "layers": 2, "char_filters": 50})

    def loss(m, batch):
        dist, rel_logits = m(batch)
        return m.loss(dist, rel_logits, batch["heads"], batch["rels"]).sum()
    return model, loss


def batch_of(words: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    # a chain: word i (1-based) attached to word i - 1, the first to the root; -1 at the root position
    heads = torch.cat([torch.full((BATCH, 1), -1), torch.arange(LENGTH).expand(BATCH, -1)], 1)
    rels = torch.cat([torch.full((BATCH, 1), -1), torch.randint(0, 37, (BATCH, LENGTH), generator=g)], 1)
    return {"words": torch.randint(2, words, (BATCH, LENGTH), generator=g),
            "chars": torch.randint(2, 28, (BATCH, LENGTH, 8), generator=g),
            "lens": torch.full((BATCH,), LENGTH), "tags": VALID_TAGS[torch.randint(0, 4, (BATCH, LENGTH), generator=g)],
            "heads": heads, "rels": rels}


def measure(name: str, build, words: int, steps: int) -> dict:
    base, loss = build(words)
    models = {k: copy.deepcopy(base).eval() for k in KERNELS}  # eval: no dropout draws, the same loss for each
    optimizers = {k: torch.optim.AdamW(param_groups(models[k], 0.01), lr=2e-3, **KERNELS[k]) for k in KERNELS}
    times = {k: {"forward_backward": [], "optimizer": []} for k in KERNELS}
    for step in range(steps + 2):  # 2 warm-up steps
        batch = batch_of(words, step)
        for k in KERNELS:
            model, optimizer = models[k], optimizers[k]
            start = time.perf_counter()
            loss(model, batch).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            middle = time.perf_counter()
            optimizer.step()
            optimizer.zero_grad()
            if step >= 2:
                times[k]["forward_backward"].append(middle - start)
                times[k]["optimizer"].append(time.perf_counter() - middle)
    drift = max((a - b).abs().max().item() for a, b in zip(models["fused"].parameters(), models["plain"].parameters()))
    row = {"model": name, "vocabulary": words, "parameters": sum(p.numel() for p in base.parameters()),
           "fused_vs_plain_max_weight_difference": drift}
    check = batch_of(words, -1 % 1000 + steps + 10)  # a batch no step saw
    for k in KERNELS:
        row[k] = {part: statistics.median(values) for part, values in times[k].items()}
        row[k]["step"] = row[k]["forward_backward"] + row[k]["optimizer"]
        with torch.no_grad():
            row[k]["final_loss"] = loss(models[k], check).item()
    return row


def report(rows: list[dict], meta: dict) -> str:
    lines = [f"# AdamW kernels on a student's training step (cpu, {meta['threads']} thread(s))", "",
             f"Median over {meta['steps']} steps (batches of {BATCH} sentences of {LENGTH} words), the kernels taking "
             "turns step by step; optimizer: AdamW's step alone; step: forward, backward, clipping and the "
             "optimizer step. Written by `benchmarks/bench_optimizer.py`.", "",
             "| student | vocabulary | parameters | kernel | optimizer (s) | step (s) | step speed-up over plain |",
             "|---|---:|---:|---|---:|---:|---:|"]
    for row in rows:
        for k in KERNELS:
            lines.append(f"| {row['model']} | {row['vocabulary']:,} | {row['parameters']:,} | {k} | "
                         f"{row[k]['optimizer']:.3f} | {row[k]['step']:.3f} | "
                         f"{row['plain']['step'] / row[k]['step']:.2f}x |")
    lines += ["", "After the run, fused against plain: the largest weight difference and the loss on a batch no "
              "step saw: " + "; ".join(
                  f"{row['model']} {row['fused_vs_plain_max_weight_difference']:.1e}, loss "
                  f"{row['fused']['final_loss']:.4f} against {row['plain']['final_loss']:.4f}" for row in rows) + ".",
              "", json.dumps(meta)]
    return "\n".join(lines) + "\n"


def main(argv=None) -> list[dict]:
    parser_ = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser_.add_argument("--steps", type=int, default=30)
    parser_.add_argument("--threads", type=int, default=1)
    parser_.add_argument("--quick", action="store_true", help="small vocabularies and 3 steps (a smoke test: no files)")
    args = parser_.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    steps = 3 if args.quick else args.steps
    sizes = {"BiLSTM-CRF (WikiANN unlabeled block)": (tagger, 500 if args.quick else 39_000),
             "BiLSTM biaffine parser (EWT unlabeled block)": (parser, 500 if args.quick else 20_000)}
    rows = [measure(name, build, words, steps) for name, (build, words) in sizes.items()]
    meta = {"steps": steps, "threads": args.threads, "torch": torch.__version__, "cores": os.cpu_count()}
    text = report(rows, meta)
    if not args.quick:  # a smoke test writes nothing
        out = ROOT / "benchmarks" / "results"
        (out / "optimizer_cpu.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n",
                                               encoding="utf-8")
        (out / "optimizer_cpu.md").write_text(text, encoding="utf-8")
    print(text)
    return rows


if __name__ == "__main__":
    main()
