"""Pieces shared by the task command lines (``structkd ner ...``, ``structkd parse ...``)."""

from __future__ import annotations

import argparse
import importlib
import json
from collections.abc import Callable


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
    """The task's config (``structkd.<task>.config.load_<task>_config``) from ``--config`` and overrides."""
    module = importlib.import_module(f"structkd.{task}.config")
    return getattr(module, f"load_{task}_config")(args.config, args.overrides)


def run_dir_arguments(parser: argparse.ArgumentParser) -> None:
    """``--resume`` and ``--overwrite``: what a training command does with an output_dir holding a run."""
    parser.add_argument("--resume", action="store_true", help="continue from output_dir/last")
    parser.add_argument("--overwrite", action="store_true",
                        help="remove the earlier run's files from output_dir first (by default a directory holding "
                             "a run is refused)")


def add_training_commands(commands, task: str, summary: Callable[[dict], dict], train_help: str) -> None:
    """``train`` and ``distill`` for a task whose pipeline module (``structkd.<task>.pipeline``) has
    ``train_command(config, resume, overwrite)`` and ``distill_command(config, resume, rebuild_cache, overwrite)``;
    each prints the ``summary`` of the returned dev/test results as JSON.  Both take ``--resume`` (continue the
    run in output_dir) and ``--overwrite`` (replace an earlier run there); without either an output_dir holding
    a run is refused (:func:`structkd.train.prepare_output_dir`)."""

    def report(results: dict) -> int:
        if results:  # empty on the non-main processes of a launched run: the main one reports
            print(json.dumps(summary(results), indent=2))
        return 0

    def run_train(args: argparse.Namespace) -> int:
        pipeline = importlib.import_module(f"structkd.{task}.pipeline")
        return report(pipeline.train_command(load_task_config(task, args), resume=args.resume,
                                             overwrite=args.overwrite))

    def run_distill(args: argparse.Namespace) -> int:
        pipeline = importlib.import_module(f"structkd.{task}.pipeline")
        return report(pipeline.distill_command(load_task_config(task, args), resume=args.resume,
                                               rebuild_cache=args.rebuild_cache, overwrite=args.overwrite))

    train = commands.add_parser("train", help=train_help)
    config_arguments(train)
    run_dir_arguments(train)
    train.set_defaults(run=run_train)

    distill = commands.add_parser("distill", help="distill kd.teacher into a student (kd.method, temperature, ...)")
    config_arguments(distill)
    run_dir_arguments(distill)
    distill.add_argument("--rebuild-cache", action="store_true", help="recompute the teacher cache")
    distill.set_defaults(run=run_distill)
