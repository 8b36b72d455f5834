"""Pieces shared by the task command lines (``structkd ner ...``, ``structkd parse ...``)."""

from __future__ import annotations

import argparse
import json
import sys


def config_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` and trailing ``section.key=value`` overrides."""
    parser.add_argument("--config", help="YAML config with sections data, model, kd, training")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. kd.method=token")


def device_argument(parser: argparse.ArgumentParser) -> None:
    """``--device`` of the commands that load a saved model, and of the demo (configured runs use
    ``training.device``)."""
    parser.add_argument("--device", default="auto",
                        help="cpu, cuda or cuda:N; auto (default): the first CUDA device if there is one, else cpu")


def load_task_config(task: str, args: argparse.Namespace):
    """The task's config from ``--config`` and overrides (:meth:`structkd.tasks.Task.load_config`)."""
    from structkd.tasks import get_task

    return get_task(task).load_config(args.config, args.overrides)


def run_dir_arguments(parser: argparse.ArgumentParser) -> None:
    """``--resume`` and ``--overwrite``: what a training command does with an output_dir holding a run."""
    parser.add_argument("--resume", action="store_true", help="continue from output_dir/last")
    parser.add_argument("--overwrite", action="store_true",
                        help="remove the earlier run's files from output_dir first (by default a directory holding "
                             "a run is refused)")


def _report(task: str, results: dict) -> int:
    from structkd.tasks import get_task

    if results:  # empty on the non-main processes of a launched run: the main one reports
        print(json.dumps(get_task(task).summary(results), indent=2))
    return 0


def _train(args: argparse.Namespace) -> int:
    from structkd.tasks import get_task, runner

    config = get_task(args.task).load_config(args.config, args.overrides)
    return _report(args.task, runner.train_command(get_task(args.task), config, resume=args.resume,
                                                   overwrite=args.overwrite))


def _distill(args: argparse.Namespace) -> int:
    from structkd.tasks import get_task, runner

    config = get_task(args.task).load_config(args.config, args.overrides)
    return _report(args.task, runner.distill_command(get_task(args.task), config, resume=args.resume,
                                                     rebuild_cache=args.rebuild_cache, overwrite=args.overwrite))


def _evaluate(args: argparse.Namespace) -> int:
    from structkd.tasks import get_task, runner

    task = get_task(args.task)
    result = runner.evaluate_command(task, args.model, args.data, load_task_config(args.task, args).data,
                                     args.device)
    print(task.format_results(result))
    return 0


def _predict(args: argparse.Namespace) -> int:
    from structkd.tasks import get_task, runner

    task = get_task(args.task)
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    count = runner.predict_command(task, args.model, args.input, args.output,
                                   load_task_config(args.task, args).data, args.device, fmt=args.format,
                                   max_words=args.max_words, tokenizer=args.tokenizer,
                                   pretokenized=args.pretokenized, chunk_size=args.chunk_size, progress=progress)
    if args.output != "-":
        print(f"predicted {count} sentences into {args.output}", file=sys.stderr)
    return 0


def predict_arguments(pred: argparse.ArgumentParser) -> None:
    """The options of ``predict``: output format, length policy, tokenizer, streaming, progress."""
    pred.add_argument("input", help="a .txt file of raw text (one input per line), '-' for standard input, or a "
                                    "file in the task's format (column file, CoNLL-U)")
    pred.add_argument("output", help="the output file, or '-' for standard output")
    pred.add_argument("--format", choices=("conll", "conllu", "json", "jsonl"), default=None,
                      help="output format (default: the task's own, conll for taggers, conllu for parsers)")
    pred.add_argument("--max-words", type=int, default=None,
                      help="longest sentence read whole: a tagger reads longer ones in pieces, a parser refuses "
                           "them (default 1000 for taggers, 500 for parsers)")
    pred.add_argument("--tokenizer", default=None, help="tokenizer of raw text (default: the one saved with the "
                                                        "model, else spacy:en): spacy:LANG, punct or whitespace")
    pred.add_argument("--pretokenized", action="store_true", help="raw text lines are split on whitespace")
    pred.add_argument("--chunk-size", type=int, default=256, help="sentences read, predicted and written at a time")
    pred.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                      help="a progress bar with sentences per second (default: when standard error is a terminal)")


def add_task_commands(tasks, name: str, description: str) -> argparse._SubParsersAction:
    """The ``structkd NAME train|distill|evaluate|predict`` commands of a registered task
    (:data:`structkd.tasks.TASKS`), all driven by :mod:`structkd.tasks.runner`; returns the task's subparsers (to
    which a task may add commands of its own, like ``structkd ner demo``).  The task's modules are imported when
    a command runs, not when the command line is built."""
    commands = tasks.add_parser(name, help=description).add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a teacher or a baseline on gold labels")
    config_arguments(train)
    run_dir_arguments(train)
    distill = commands.add_parser("distill", help="distill kd.teacher into a student (kd.method, temperature, ...)")
    config_arguments(distill)
    run_dir_arguments(distill)
    distill.add_argument("--rebuild-cache", action="store_true", help="recompute the teacher cache")
    evaluate = commands.add_parser("evaluate", help="scores, per-label tables, speed and size of a saved model")
    evaluate.add_argument("model", help="directory of a saved model")
    evaluate.add_argument("data", help="a labeled file")
    pred = commands.add_parser("predict", help="predict raw text or a file with a saved model, streaming")
    pred.add_argument("model", help="directory of a saved model")
    predict_arguments(pred)
    for command in (evaluate, pred):
        config_arguments(command)
        device_argument(command)
    for command, run in ((train, _train), (distill, _distill), (evaluate, _evaluate), (pred, _predict)):
        command.set_defaults(run=run, task=name)
    return commands
