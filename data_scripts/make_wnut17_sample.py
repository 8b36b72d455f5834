"""Rebuild the WNUT17 sample shipped in ``structkd/resources/wnut17_sample`` from the full corpus.

    python data_scripts/make_wnut17_sample.py --source ../shared/data/wnut17 [--train 800 --dev 250]

Takes the first sentences of the training and development splits unchanged, and writes the remaining
training sentences without their tags as ``unlabeled.txt`` (one sentence per line) for distillation on
unlabeled text, and the development sentences after the sample's and the test sentences, without their tags,
as ``unlabeled_dev_test.txt`` (more unlabeled text; the demo's development sample is not in it).  The files
are read and checked with :func:`structkd.data.read_columns` first, so a malformed corpus fails with file and
line.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from structkd.data import read_columns, write_columns

TARGET = Path(__file__).resolve().parents[1] / "structkd" / "resources" / "wnut17_sample"


def make_sample(source: Path, target: Path, n_train: int, n_dev: int) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for split, name, count in (("train", "train.conll", n_train), ("dev", "dev.conll", n_dev)):
        sentences = read_columns(source / name, layout="token-tag")[:count]
        write_columns(target / name, sentences)
        print(f"{split}: {len(sentences)} sentences -> {target / name}")
    rest = read_columns(source / "train.conll", layout="token-tag")[n_train:]
    more = (read_columns(source / "dev.conll", layout="token-tag")[n_dev:]
            + read_columns(source / "test.conll", layout="token-tag"))
    for name, sentences in (("unlabeled.txt", rest), ("unlabeled_dev_test.txt", more)):
        (target / name).write_text("".join(" ".join(s.tokens) + "\n" for s in sentences), encoding="utf-8")
        print(f"unlabeled: {len(sentences)} sentences -> {target / name}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True,
                        help="folder with WNUT17 train.conll, dev.conll and test.conll")
    parser.add_argument("--target", type=Path, default=TARGET)
    parser.add_argument("--train", type=int, default=800)
    parser.add_argument("--dev", type=int, default=250)
    args = parser.parse_args(argv)
    make_sample(args.source, args.target, args.train, args.dev)


if __name__ == "__main__":
    main()
