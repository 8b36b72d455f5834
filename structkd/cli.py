"""The ``structkd`` command line: ``structkd ner train|distill|evaluate|predict|demo`` and
``structkd parse train|distill|evaluate|predict`` (:mod:`structkd.parse.cli`)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from structkd.cli_common import add_training_commands, config_arguments, device_argument, load_task_config


def _config(args: argparse.Namespace):
    return load_task_config("ner", args)


def _evaluate(args: argparse.Namespace) -> int:
    from structkd.ner.pipeline import evaluate_command, format_table

    config = _config(args)
    result = evaluate_command(args.model, args.data, config.data, args.device)
    print(f"entity micro F1 {100 * result['f1']:.2f} (precision {100 * result['precision']:.2f}, recall "
          f"{100 * result['recall']:.2f}), {result['sentences_per_second']:.0f} sentences/s")
    print(format_table(result["per_type"]))
    return 0


def _predict(args: argparse.Namespace) -> int:
    from structkd.ner.pipeline import predict_command

    count = predict_command(args.model, args.input, args.output, _config(args).data, args.device)
    print(f"tagged {count} sentences into {args.output}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from structkd.ner.demo import run_ner_demo

    run_ner_demo(args.output_dir, args.teacher_epochs, args.student_epochs, args.max_sentences, args.seed,
                 args.threads, args.device)
    return 0


def _summary(results: dict) -> dict:
    return {split: {k: v for k, v in r.items() if k != "per_type"} for split, r in results.items()}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="structkd", description="Structural knowledge distillation.")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error (may also be given after the command)")
    tasks = parser.add_subparsers(dest="task", required=True)
    ner = tasks.add_parser("ner", help="named entity recognition").add_subparsers(dest="command", required=True)

    add_training_commands(ner, "ner", _summary, "train a teacher or a baseline student on gold labels")

    evaluate = ner.add_parser("evaluate", help="entity F1 and a per-type table of a saved model")
    evaluate.add_argument("model", help="directory of a saved model")
    evaluate.add_argument("data", help="a labeled column file")
    config_arguments(evaluate)
    device_argument(evaluate)
    evaluate.set_defaults(run=_evaluate)

    pred = ner.add_parser("predict", help="tag text (.txt, one sentence per line) or a column file")
    pred.add_argument("model")
    pred.add_argument("input")
    pred.add_argument("output")
    config_arguments(pred)
    device_argument(pred)
    pred.set_defaults(run=_predict)

    demo = ner.add_parser("demo", help="MiniLM teacher to BiLSTM-CRF student on the shipped WNUT17 sample")
    demo.add_argument("--output-dir", default="runs/ner-demo")
    demo.add_argument("--teacher-epochs", type=int, default=3)
    demo.add_argument("--student-epochs", type=int, default=8)
    demo.add_argument("--max-sentences", type=int, default=None, help="use only this many sentences per split")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    device_argument(demo)
    demo.set_defaults(run=_demo)

    from structkd.parse.cli import add_parse_commands

    add_parse_commands(tasks)
    return parser


# a user's mistake (a bad setting, file, path or missing package): one line naming it, exit status 2
USER_ERRORS = (ValueError, KeyError, OSError, ImportError)


def error_line(exc: BaseException) -> str:
    """An exception's message on one line (a ``KeyError``'s without the quotes ``str`` adds)."""
    text = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    return " ".join(str(text).split()) or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    """Run a command.  Errors print ``structkd: error: PROBLEM`` on one line (``FILE:LINE: problem`` for data)
    and exit with status 2 for a user's mistake, 1 for an internal error; ``--debug`` anywhere on the line (or
    ``STRUCTKD_DEBUG=1``) shows the traceback instead."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("STRUCTKD_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("structkd: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug:
            raise
        if isinstance(exc, USER_ERRORS):
            print(f"structkd: error: {error_line(exc)}", file=sys.stderr)
            return 2
        print(f"structkd: error: internal error, {type(exc).__name__}: {error_line(exc)} (rerun with --debug "
              f"for the traceback, and please report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
