"""Helper for ``tests/test_train_accelerate.py`` (not a test module): a teacher cache built by the processes of
``accelerate launch``.  Each process writes ``rank<k>.json`` into the log directory: the sentences it computed
and a digest of the whole cache as it reads it.  With ``FAIL_RANK=k`` process ``k`` fails on its second
batch, once segment 0 is finished (a build cut short with a segment to keep)."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

import torch

from structkd.train import TeacherCache
from structkd.train.distributed import process_role

SENTS = [[f"w{i}"] * (1 + (i * 7) % 5) for i in range(22)]


def outputs(sentence: list[str]) -> dict[str, torch.Tensor]:
    """Deterministic fields of a sentence, with a field shared by all."""
    n, seed = len(sentence), int(sentence[0][1:])
    g = torch.Generator().manual_seed(seed)
    return {"unary": torch.randn(n, 3, generator=g), "pairs": torch.rand(max(n - 1, 0), 3, 3, generator=g),
            "transitions": torch.arange(9.0).view(3, 3)}


def build(directory: str, compute) -> TeacherCache:
    return TeacherCache.build(directory, SENTS, compute, teacher_id="t", batch_size=2, segment_size=4,
                              progress=False, shared_fields=["transitions"])


def digest(cache: TeacherCache) -> str:
    h = hashlib.sha256()
    for i in range(len(cache)):
        for field in cache.fields:
            h.update(cache.get(i, field).numpy().tobytes())
    for name in cache.shared_fields:
        h.update(cache.shared(name).numpy().tobytes())
    return h.hexdigest()


def main(directory: str, log_dir: str) -> None:
    torch.set_num_threads(1)
    rank, world = process_role()
    computed: list[int] = []
    fail = os.environ.get("FAIL_RANK")

    def compute(batch: list[list[str]]) -> list[dict[str, torch.Tensor]]:
        if fail is not None and int(fail) == rank and len(computed) >= 2:
            waited = 0.0
            while not Path(directory, "segments", "000000", "segment.json").is_file() and waited < 60:
                time.sleep(0.05)
                waited += 0.05
            raise RuntimeError(f"process {rank} cut short")
        computed.extend(int(s[0][1:]) for s in batch)
        return [outputs(s) for s in batch]

    cache = build(directory, compute)
    info = {"rank": rank, "world": world, "computed": computed, "digest": digest(cache), "n": len(cache)}
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    Path(log_dir, f"rank{rank}.json").write_text(json.dumps(info), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
