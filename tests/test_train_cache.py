"""Tests of ``structkd.train.TeacherCache``: round trip, fingerprint checks, padded batches, atomic writes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from structkd.train import CacheMismatchError, TeacherCache

SENTS = [["a", "b", "c"], ["d"], ["e", "f", "g", "h", "i"], ["j", "k"], ["l", "m", "n", "o"]]
N_TAGS = 3


class Teacher:
    """Fake teacher: per-sentence marginals ``unary [n, N_TAGS]``, ``pairs [n - 1, N_TAGS, N_TAGS]``,
    ``arcs [n + 1, n + 1]``, deterministic in the sentence; counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    @staticmethod
    def outputs(sent: list[str]) -> dict[str, torch.Tensor]:
        n = len(sent)
        g = torch.Generator().manual_seed(sum(map(ord, "".join(sent))))
        return {
            "unary": torch.rand(n, N_TAGS, generator=g).softmax(-1),
            "pairs": torch.rand(n - 1, N_TAGS, N_TAGS, generator=g),
            "arcs": torch.randn(n + 1, n + 1, generator=g) * 10,
        }

    def __call__(self, batch: list[list[str]]) -> list[dict[str, torch.Tensor]]:
        self.calls += 1
        return [self.outputs(s) for s in batch]


def build(tmp_path, teacher, **kw):
    args = dict(teacher_id="teacher-sha:abc", options={"temperature": 1.0}, batch_size=2, progress=False)
    args.update(kw)
    return TeacherCache.build(tmp_path / "cache", SENTS, teacher, **args)


def test_round_trip_within_float16_precision(tmp_path):
    teacher = Teacher()
    cache = build(tmp_path, teacher)
    assert teacher.calls == 3 and len(cache) == len(SENTS) and sorted(cache.fields) == ["arcs", "pairs", "unary"]
    for i, sent in enumerate(SENTS):
        for field, value in Teacher.outputs(sent).items():
            got = cache.get(i, field)
            assert got.dtype == torch.float32 and got.shape == value.shape
            torch.testing.assert_close(got, value, rtol=1e-3, atol=1e-3)
            assert torch.equal(got, value.half().float())  # exactly the float16 rounding
    files = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert files == ["arcs.npy", "index.json", "pairs.npy", "unary.npy"]
    arr = np.load(tmp_path / "cache" / "unary.npy", mmap_mode="r")
    assert arr.dtype == np.float16 and arr.shape == (sum(map(len, SENTS)) * N_TAGS,)
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temporary directory left

    again = build(tmp_path, teacher)  # same fingerprint: reused, not recomputed
    assert teacher.calls == 3 and torch.equal(again.get(2, "arcs"), cache.get(2, "arcs"))


def test_fingerprint_mismatch_names_what_differs(tmp_path):
    teacher = Teacher()
    build(tmp_path, teacher)
    with pytest.raises(CacheMismatchError, match="teacher differs.*teacher-sha:abc.*other"):
        build(tmp_path, teacher, teacher_id="other")
    with pytest.raises(CacheMismatchError, match="projection options differ.*temperature: cached 1.0, expected 2.0"):
        build(tmp_path, teacher, options={"temperature": 2.0})
    with pytest.raises(CacheMismatchError, match="dataset tokens differ"):
        TeacherCache.load(tmp_path / "cache", tokens=SENTS[:-1] + [["x"]], teacher_id="teacher-sha:abc",
                          options={"temperature": 1.0})
    assert teacher.calls == 3
    rebuilt = build(tmp_path, teacher, teacher_id="other", rebuild=True)
    assert teacher.calls == 6 and rebuilt.fingerprint["teacher"] == "other"


def test_padded_batch_layout(tmp_path):
    cache = build(tmp_path, Teacher())
    idx = [2, 1, 3]
    out = cache.batch(idx, "unary", pad_value=-1.0)
    assert out.shape == (3, 5, N_TAGS) and out.dtype == torch.float32
    for b, i in enumerate(idx):
        n = len(SENTS[i])
        assert torch.equal(out[b, :n], cache.get(i, "unary"))
        assert (out[b, n:] == -1.0).all()
    pairs = cache.batch(idx, "pairs", pad_shape=(6, None, None))
    assert pairs.shape == (3, 6, N_TAGS, N_TAGS)
    assert pairs[1].abs().sum() == 0  # the one-word sentence has no tag pair
    assert torch.equal(pairs[0, :4], cache.get(2, "pairs")) and (pairs[0, 4:] == 0).all()
    arcs = cache.batch([1, 0], "arcs")
    assert arcs.shape == (2, 4, 4) and torch.equal(arcs[0, :2, :2], cache.get(1, "arcs"))
    assert (arcs[0, 2:] == 0).all() and (arcs[0, :, 2:] == 0).all()
    with pytest.raises(ValueError, match="does not fit"):
        cache.batch([2], "unary", pad_shape=(3, N_TAGS))
    with pytest.raises(KeyError, match="no field 'heads'"):
        cache.batch([0], "heads")


def test_failed_build_leaves_no_cache(tmp_path):
    def failing(batch):
        raise RuntimeError("teacher crashed")

    with pytest.raises(RuntimeError, match="teacher crashed"):
        build(tmp_path, failing)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(FileNotFoundError):
        TeacherCache.load(tmp_path / "cache")
