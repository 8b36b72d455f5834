"""The ``structkd parse train|distill|evaluate|predict`` commands (same conventions as ``structkd ner``)."""

from __future__ import annotations

import argparse

from structkd.cli_common import add_training_commands, config_arguments, device_argument, load_task_config


def _config(args: argparse.Namespace):
    return load_task_config("parse", args)


def _summary(results: dict) -> dict:
    return {split: ({k: v for k, v in r.items() if k != "per_relation"} if isinstance(r, dict) else r)
            for split, r in results.items()}


def _evaluate(args: argparse.Namespace) -> int:
    from structkd.parse.metrics import format_scores
    from structkd.parse.pipeline import evaluate_command

    print(format_scores(evaluate_command(args.model, args.data, _config(args).data, args.device)))
    return 0


def _predict(args: argparse.Namespace) -> int:
    from structkd.parse.pipeline import predict_command

    count = predict_command(args.model, args.input, args.output, _config(args).data, args.device)
    print(f"parsed {count} sentences into {args.output}")
    return 0


def add_parse_commands(tasks) -> None:
    """Add the ``parse`` task and its commands to the ``structkd`` task subparsers."""
    parse = tasks.add_parser("parse", help="dependency parsing").add_subparsers(dest="command", required=True)

    add_training_commands(parse, "parse", _summary, "train a teacher or a baseline parser on gold trees")

    evaluate = parse.add_parser("evaluate", help="UAS/LAS (with and without punctuation), complete match, "
                                                 "per-relation scores and speed of a saved parser")
    evaluate.add_argument("model", help="directory of a saved parser")
    evaluate.add_argument("data", help="a CoNLL-U treebank")
    config_arguments(evaluate)
    device_argument(evaluate)
    evaluate.set_defaults(run=_evaluate)

    pred = parse.add_parser("predict", help="parse CoNLL-U (or .txt, one tokenized sentence per line) into CoNLL-U")
    pred.add_argument("model")
    pred.add_argument("input")
    pred.add_argument("output")
    config_arguments(pred)
    device_argument(pred)
    pred.set_defaults(run=_predict)
