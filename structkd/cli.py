"""The ``structkd`` command line."""

from __future__ import annotations

import argparse
import sys


def _demo(args: argparse.Namespace) -> int:
    from structkd.demo import run_demo

    run_demo(epochs=args.epochs, seed=args.seed, threads=args.threads)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="structkd", description="Structural knowledge distillation.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="distill a BiLSTM-CRF into a BiLSTM-MaxEnt on the shipped WNUT17 sample")
    demo.add_argument("--epochs", type=int, default=12, help="training epochs per model (default 12)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
