"""The ``structkd parse train|distill|evaluate|predict`` commands (same conventions as ``structkd ner``)."""

from __future__ import annotations

import argparse
import json


def _config(args: argparse.Namespace):
    from structkd.parse.config import load_parse_config

    return load_parse_config(args.config, args.overrides)


def _summary(results: dict) -> dict:
    return {split: ({k: v for k, v in r.items() if k != "per_relation"} if isinstance(r, dict) else r)
            for split, r in results.items()}


def _train(args: argparse.Namespace) -> int:
    from structkd.parse.pipeline import train_command

    print(json.dumps(_summary(train_command(_config(args), resume=args.resume)), indent=2))
    return 0


def _distill(args: argparse.Namespace) -> int:
    from structkd.parse.pipeline import distill_command

    results = distill_command(_config(args), resume=args.resume, rebuild_cache=args.rebuild_cache)
    print(json.dumps(_summary(results), indent=2))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from structkd.parse.metrics import format_scores
    from structkd.parse.pipeline import evaluate_command

    print(format_scores(evaluate_command(args.model, args.data, _config(args).data)))
    return 0


def _predict(args: argparse.Namespace) -> int:
    from structkd.parse.pipeline import predict_command

    count = predict_command(args.model, args.input, args.output, _config(args).data)
    print(f"parsed {count} sentences into {args.output}")
    return 0


def _config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML config with sections data, model, kd, training")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. kd.method=token")


def add_parse_commands(tasks) -> None:
    """Add the ``parse`` task and its commands to the ``structkd`` task subparsers."""
    parse = tasks.add_parser("parse", help="dependency parsing").add_subparsers(dest="command", required=True)

    train = parse.add_parser("train", help="train a teacher or a baseline parser on gold trees")
    _config_arguments(train)
    train.add_argument("--resume", action="store_true", help="continue from output_dir/last")
    train.set_defaults(run=_train)

    distill = parse.add_parser("distill", help="distill kd.teacher into a student (kd.method, temperature, ...)")
    _config_arguments(distill)
    distill.add_argument("--resume", action="store_true", help="continue from output_dir/last")
    distill.add_argument("--rebuild-cache", action="store_true", help="recompute the teacher cache")
    distill.set_defaults(run=_distill)

    evaluate = parse.add_parser("evaluate", help="UAS/LAS (with and without punctuation), complete match, "
                                                 "per-relation scores and speed of a saved parser")
    evaluate.add_argument("model", help="directory of a saved parser")
    evaluate.add_argument("data", help="a CoNLL-U treebank")
    _config_arguments(evaluate)
    evaluate.set_defaults(run=_evaluate)

    pred = parse.add_parser("predict", help="parse CoNLL-U (or .txt, one tokenized sentence per line) into CoNLL-U")
    pred.add_argument("model")
    pred.add_argument("input")
    pred.add_argument("output")
    _config_arguments(pred)
    pred.set_defaults(run=_predict)
