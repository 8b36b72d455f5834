"""Random batches against batches grouped by length (``training.group_by_length``) on UD English EWT.

Two measurements on the first ``--sentences`` training sentences, batches of 32:

* padding: the work of the padded batches over the work without padding, for costs that grow with the
  sentence length to the power 1 (embeddings, LSTM), 2 (arc and relation scores, attention) and 3 (inside
  algorithms); averaged over 5 epochs of each batch order.
* training speed: gold-loss training steps (forward, backward, Adam) of the EWT benchmark's models (BiLSTM
  biaffine student, MiniLM first- and second-order teachers), the two batch orders alternating epoch by epoch
  in one process so that a machine that drifts slows both alike. A teacher trains on every
  ``--teacher-every``-th batch of each epoch (both orders alike) to keep the run short.

    python benchmarks/bench_batching.py [--data ../shared/data/ud-english-ewt] [--models student 1o 2o]
                                        [--rounds 2] [--device cpu] [--quick]

Results: ``benchmarks/results/batching_<device>[_quick].{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from structkd.parse import build_parse_config
from structkd.parse.modeling import build_model
from structkd.parse.pipeline import read_data, training_trees
from structkd.train.batching import LENGTH_WINDOW, epoch_batches

ROOT = Path(__file__).resolve().parents[1]
BATCH_SIZE = 32
ORDERS = ("random", "grouped")
# the models of benchmarks/parse_ewt.py (reduced setting)
MODELS = {
    "student": ({"kind": "biaffine", "tree": "projective", "encoder": "bilstm", "word_dim": 100, "hidden": 128,
                 "layers": 2, "arc_hidden": 256, "rel_hidden": 100}, 2e-3),
    "1o": ({"kind": "biaffine", "tree": "projective", "encoder": "minilm", "arc_hidden": 300, "rel_hidden": 100,
            "dropout": 0.2}, 5e-5),
    "2o": ({"kind": "biaffine", "tree": "2o", "encoder": "minilm", "arc_hidden": 300, "rel_hidden": 100,
            "sib_hidden": 100, "dropout": 0.2}, 5e-5),
}
NAMES = {"student": "BiLSTM biaffine student", "1o": "MiniLM first-order teacher",
         "2o": "MiniLM second-order teacher"}


def padded_work(lengths: list[int], epochs: int = 5) -> dict[str, dict[int, float]]:
    """``{order: {power: padded work / padding-free work}}`` over ``epochs`` epochs (length + 1: the root)."""
    ideal = {p: sum((n + 1) ** p for n in lengths) for p in (1, 2, 3)}
    out = {}
    for order in ORDERS:
        totals = dict.fromkeys(ideal, 0.0)
        for epoch in range(epochs):
            for batch in epoch_batches(len(lengths), BATCH_SIZE, 0, epoch,
                                       lengths=lengths if order == "grouped" else None):
                longest = max(lengths[i] for i in batch) + 1
                for p in totals:
                    totals[p] += len(batch) * longest ** p
        out[order] = {p: totals[p] / (epochs * ideal[p]) for p in totals}
    return out


def time_training(name: str, sentences, data_config, device: torch.device, rounds: int, every: int) -> dict:
    """Seconds of ``rounds`` epochs of each batch order (every ``every``-th batch), alternating."""
    options, lr = MODELS[name]
    torch.manual_seed(0)
    rels = sorted({r for s in sentences for r in s.deprels})
    model = build_model(build_parse_config({"model": options}).model, rels, sentences).to(device)
    train = training_trees(sentences, data_config, model.needs_projective)
    lengths = [len(s.words) for s in train]
    optimizer = torch.optim.Adam(model.parameters(), lr)
    model.train()

    def epoch(order: str, index: int) -> float:
        batches = epoch_batches(len(train), BATCH_SIZE, 0, index,
                                lengths=lengths if order == "grouped" else None)[::every]
        start = time.perf_counter()
        for batch in batches:
            sentences = [train[i] for i in batch]
            loss = model.gold_loss(model(sentences), sentences).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    epoch("random", rounds)  # warm-up (an epoch index the timed rounds do not use)
    seconds = dict.fromkeys(ORDERS, 0.0)
    for index in range(rounds):
        for order in (ORDERS if index % 2 == 0 else ORDERS[::-1]):
            seconds[order] += epoch(order, index)
    return {"sentences": len(train), "every": every, "rounds": rounds,
            "seconds": {o: round(s, 2) for o, s in seconds.items()},
            "speedup": seconds["random"] / seconds["grouped"]}


def summarize(result: dict) -> str:
    meta = result["meta"]
    lines = [f"# Random batches vs batches grouped by length ({meta['device']}, {meta['threads']} thread(s))", "",
             f"First {meta['sentences']} UD English EWT training sentences, batches of {BATCH_SIZE}, windows of "
             f"{LENGTH_WINDOW} batches. Padding: padded work / work without padding, for a cost growing with the "
             f"length to the power 1, 2, 3.", "",
             "| batch order | length | length^2 | length^3 |", "|---|---:|---:|---:|"]
    for order, ratios in result["padding"].items():
        lines.append(f"| {order} | " + " | ".join(f"{ratios[p]:.2f}" for p in (1, 2, 3)) + " |")
    lines += ["", "Gold-loss training (forward, backward, Adam), the two orders alternating epoch by epoch:", "",
              "| model | training sentences | batches timed | random (s) | grouped (s) | speedup |",
              "|---|---:|---:|---:|---:|---:|"]
    for name, r in result["training"].items():
        timed = ("all" if r["every"] == 1 else f"1 in {r['every']}") + f", {r['rounds']} epoch(s) each"
        lines.append(f"| {NAMES[name]} | {r['sentences']} | {timed} | "
                     f"{r['seconds']['random']:.1f} | {r['seconds']['grouped']:.1f} | {r['speedup']:.2f}x |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "ud-english-ewt")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--sentences", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2, help="timed epochs of each batch order")
    parser.add_argument("--teacher-every", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="a smoke test: 96 sentences, the student, 1 round")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    if not (args.data / "en_ewt-ud-train.conllu").exists():
        raise SystemExit(f"{args.data}: UD English EWT not found (expected en_ewt-ud-train.conllu)")
    if args.quick:
        args.sentences, args.models, args.rounds = 96, ["student"], 1
    device = torch.device(args.device)
    config = build_parse_config({"data": {"train": str(args.data / "en_ewt-ud-train.conllu"),
                                          "max_sentences": args.sentences}})
    data = read_data(config.data)
    result = {"meta": {"device": device.type, "threads": torch.get_num_threads(), "sentences": len(data.train),
                       "torch": torch.__version__},
              "padding": {o: {p: round(v, 3) for p, v in r.items()}
                          for o, r in padded_work([len(s.words) for s in data.train]).items()},
              "training": {}}
    for name in args.models:
        every = 1 if name == "student" else args.teacher_every
        result["training"][name] = time_training(name, data.train, config.data, device, args.rounds, every)
        print(name, result["training"][name], flush=True)
    suffix = f"_{device.type}" + ("_quick" if args.quick else "")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"batching{suffix}.json").write_text(json.dumps(result, indent=2) + "\n")
    table = summarize(result)
    (args.out / f"batching{suffix}.md").write_text(table + "\n")
    print(table)
    return result


if __name__ == "__main__":
    main()
