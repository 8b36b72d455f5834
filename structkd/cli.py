"""The ``structkd`` command line: ``structkd ner train|distill|evaluate|predict|demo`` and
``structkd parse|upos train|distill|evaluate|predict``, each generated from its task (:mod:`structkd.tasks`)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from structkd.cli_common import add_task_commands, device_argument
from structkd.tasks import TASKS


def _demo(args: argparse.Namespace) -> int:
    from structkd.ner.demo import run_ner_demo

    run_ner_demo(args.output_dir, args.teacher_epochs, args.student_epochs, args.max_sentences, args.seed,
                 args.threads, args.device)
    return 0


def _export(args: argparse.Namespace) -> int:
    try:
        from structkd.export import export_model
    except ImportError as err:
        raise ImportError(f"structkd export needs the export extra: pip install 'structkd[export]' ({err})") from None
    out = export_model(args.model, args.output, format=args.format, opset=args.opset)
    print(f"exported {args.model} to {out} (load it with structkd.runtime.load)", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="structkd", description="Structural knowledge distillation.")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error (may also be given after the command)")
    tasks = parser.add_subparsers(dest="task", required=True)
    commands = {name: add_task_commands(tasks, name, description) for name, (_, description) in TASKS.items()}
    ner = commands["ner"]
    demo = ner.add_parser("demo", help="MiniLM teacher to BiLSTM-CRF student on the shipped WNUT17 sample")
    demo.add_argument("--output-dir", default="runs/ner-demo")
    demo.add_argument("--teacher-epochs", type=int, default=3)
    demo.add_argument("--student-epochs", type=int, default=8)
    demo.add_argument("--max-sentences", type=int, default=None, help="use only this many sentences per split")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    device_argument(demo)
    demo.set_defaults(run=_demo)

    export = tasks.add_parser("export", help="export a saved student for deployment (ONNX graph of its scores; "
                                             "decoding in structkd.runtime, without torch)")
    export.add_argument("model", help="directory of a saved model")
    export.add_argument("output", help="directory to write (must be new or empty)")
    export.add_argument("--format", choices=("onnx",), default="onnx")
    export.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    export.set_defaults(run=_export)

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
