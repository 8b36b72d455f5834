"""Tests of ``structkd.train.TeacherCache`` (round trip, fingerprint checks, padded batches, the compact index,
streaming, resumable and sharded builds, earlier formats refused by name) and of the NER cache's potentials
form (its loss equals the marginals' and the brute-force cross-entropy)."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from structkd.train import CacheCorruptError, CacheMismatchError, TeacherCache
from structkd.train import cache as cache_module

SENTS = [["a", "b", "c"], ["d"], ["e", "f", "g", "h", "i"], ["j", "k"], ["l", "m", "n", "o"]]
N_TAGS = 3


class Teacher:
    """Fake teacher: per-sentence marginals ``unary [n, N_TAGS]``, ``pairs [n - 1, N_TAGS, N_TAGS]``,
    ``arcs [n + 1, n + 1]``, deterministic in the sentence; counts its calls (and fails on call ``fail_at``)."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.calls = 0
        self.fail_at = fail_at

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
        if self.calls == self.fail_at:
            raise KeyboardInterrupt("cut short")
        return [self.outputs(s) for s in batch]


def build(tmp_path, teacher, name="cache", data=SENTS, **kw):
    args = dict(teacher_id="teacher-sha:abc", options={"temperature": 1.0}, batch_size=2, progress=False)
    args.update(kw)
    return TeacherCache.build(tmp_path / name, data, teacher, **args)


def same_cache(a: TeacherCache, b: TeacherCache) -> None:
    assert len(a) == len(b) and a.fields == b.fields and a.shared_fields == b.shared_fields
    for i in range(len(a)):
        for field in a.fields:
            assert torch.equal(a.get(i, field), b.get(i, field))
    for name in a.shared_fields:
        assert torch.equal(a.shared(name), b.shared(name))


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
    root = tmp_path / "cache"
    files = sorted(p.name for p in root.iterdir())
    assert files == ["arcs.offsets.npy", "arcs.shapes.npy", "build.json", "index.json", "pairs.offsets.npy",
                     "pairs.shapes.npy", "segments", "unary.offsets.npy", "unary.shapes.npy"]
    values = np.fromfile(root / "segments" / "000000" / "unary.f16", dtype=np.float16)
    assert values.shape == (sum(map(len, SENTS)) * N_TAGS,)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == [".cache.lock"]  # no temporary directory left: only the build's lock file, beside it
    assert not any(p.name.startswith(".") for p in (root / "segments").iterdir())

    again = build(tmp_path, teacher)  # same fingerprint: reused, not recomputed
    assert teacher.calls == 3 and torch.equal(again.get(2, "arcs"), cache.get(2, "arcs"))


def test_the_index_is_arrays_whatever_the_number_of_sentences(tmp_path):
    sents = [[str(i)] * (1 + i % 7) for i in range(3000)]

    def outputs(batch):
        return [{"unary": torch.full((len(s), 2), float(len(s)))} for s in batch]

    cache = TeacherCache.build(tmp_path / "big", sents, outputs, teacher_id="t", batch_size=50, segment_size=500,
                               progress=False)
    index = (tmp_path / "big" / "index.json").read_text()
    assert len(index) < 2000 and json.loads(index)["n_segments"] == 6  # no per-sentence entries in JSON
    shapes = np.load(tmp_path / "big" / "unary.shapes.npy")
    offsets = np.load(tmp_path / "big" / "unary.offsets.npy")
    assert shapes.dtype == np.int32 and shapes.shape == (3000, 2) and offsets.dtype == np.int64
    assert [tuple(shapes[i]) for i in (0, 6, 2999)] == [(1, 2), (7, 2), (4, 2)]
    for i in (0, 499, 500, 1234, 2999):
        assert torch.equal(cache.get(i, "unary"), torch.full((len(sents[i]), 2), float(len(sents[i]))))
    with pytest.raises(IndexError, match="sentence 3000 is not in the teacher cache of 3000"):
        cache.get(3000, "unary")


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


def test_a_build_cut_short_resumes_from_its_last_finished_segment(tmp_path):
    """Chunks of 1 sentence, segments of 2: the third teacher call fails inside segment 1."""
    cut = Teacher(fail_at=3)
    with pytest.raises(KeyboardInterrupt):
        build(tmp_path, cut, batch_size=1, segment_size=2)
    root = tmp_path / "cache"
    assert not (root / "index.json").exists()
    assert sorted(p.name for p in (root / "segments").iterdir()) == ["000000"]  # the unfinished one is gone
    with pytest.raises(FileNotFoundError, match="unfinished teacher cache \\(1 segments done.*resume"):
        TeacherCache.load(root)
    resumed = Teacher()
    cache = build(tmp_path, resumed, batch_size=1, segment_size=2)
    assert resumed.calls == len(SENTS) - 2  # segment 0 (two sentences) was kept
    same_cache(cache, build(tmp_path, Teacher(), name="whole", batch_size=1, segment_size=2))
    same_cache(cache, build(tmp_path, Teacher(), name="one-segment", batch_size=1, segment_size=8))


def test_an_unfinished_build_of_other_settings_starts_over(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        build(tmp_path, Teacher(fail_at=3), batch_size=1, segment_size=2)
    other = Teacher()
    cache = build(tmp_path, other, teacher_id="another teacher", batch_size=1, segment_size=2)
    assert other.calls == len(SENTS) and cache.fingerprint["teacher"] == "another teacher"
    again = Teacher()
    build(tmp_path, again, teacher_id="another teacher", batch_size=1, segment_size=4)  # complete: reused
    assert again.calls == 0
    with pytest.raises(ValueError, match="segment_size must be a positive multiple of batch_size \\(2\\), got 3"):
        build(tmp_path, Teacher(), name="odd", segment_size=3)


def test_streamed_data_equals_a_list(tmp_path):
    teacher = Teacher()
    streamed = build(tmp_path, teacher, name="streamed", data=(s for s in SENTS), tokens=iter(SENTS))
    same_cache(streamed, build(tmp_path, Teacher(), name="listed"))
    with pytest.raises(ValueError, match="data has 4 sentences, but tokens has 5"):
        build(tmp_path, Teacher(), name="short", data=iter(SENTS[:4]), tokens=iter(SENTS))
    with pytest.raises(ValueError, match="data has more than the 4 sentences"):
        build(tmp_path, Teacher(), name="long", data=iter(SENTS), tokens=iter(SENTS[:4]))
    with pytest.raises(ValueError, match="tokens has 4 sentences but data has 5"):
        build(tmp_path, Teacher(), name="long2", tokens=iter(SENTS[:4]))


def test_the_progress_bar_counts_sentences_per_second(tmp_path, capsys):
    build(tmp_path, Teacher(), progress=True)
    assert "sent/s" in capsys.readouterr().err


def test_shared_fields_are_stored_once_and_must_agree(tmp_path):
    matrix = torch.arange(4.0).view(2, 2)

    def outputs(batch):  # a batch of one-word sentences has no transitions to give
        rows = [{"emissions": torch.ones(len(s), 2)} for s in batch]
        return rows if all(len(s) == 1 for s in batch) else [{**r, "transitions": matrix} for r in rows]

    cache = TeacherCache.build(tmp_path / "c", SENTS, outputs, teacher_id="t", batch_size=1, segment_size=2,
                               progress=False, shared_fields=["transitions"])
    assert cache.fields == ["emissions"] and cache.shared_fields == ["transitions"]
    assert torch.equal(cache.shared("transitions"), matrix)
    assert not list((tmp_path / "c" / "segments").glob("*/transitions*"))  # never stored per sentence

    def disagreeing(batch):  # segment 0 (sentences "a b c", "d") differs from the others
        return [{"emissions": torch.ones(len(s), 2), "transitions": matrix * (1 + (s[0] > "d"))} for s in batch]

    with pytest.raises(ValueError, match="'transitions' differs from an earlier segment's"):
        TeacherCache.build(tmp_path / "d", SENTS, disagreeing, teacher_id="t", batch_size=1, segment_size=2,
                           progress=False, shared_fields=["transitions"])
    with pytest.raises(ValueError, match="sentence 2: field 'transitions' is stored once .* differs here"):
        TeacherCache.build(tmp_path / "e", SENTS, disagreeing, teacher_id="t", batch_size=2, progress=False,
                           shared_fields=["transitions"])


def test_sharded_segments_merge_into_the_single_process_cache(tmp_path):
    """What two processes do (process 1 of 2, then process 0 and the merge), one after the other here; the
    launched run is in tests/test_train_accelerate.py."""
    single = build(tmp_path, Teacher(), name="single", batch_size=1, segment_size=2)
    fingerprint = cache_module.cache_fingerprint(SENTS, "teacher-sha:abc", {"temperature": 1.0})
    plan = cache_module._Plan(tmp_path / "sharded", fingerprint, 1, 2, ())
    cache_module._prepare(plan)
    teachers = [Teacher(), Teacher()]
    for rank in (1, 0):
        cache_module._compute_segments(plan, SENTS, teachers[rank], rank, 2, progress=False)
    assert [t.calls for t in teachers] == [3, 2]  # segments 0 and 2 (2 + 1 sentences), segment 1 (2)
    cache_module._finalize(plan)
    same_cache(TeacherCache.load(tmp_path / "sharded", fingerprint=fingerprint), single)
    with pytest.raises(CacheCorruptError, match="000001: missing, so the cache is not whole"):
        plan2 = cache_module._Plan(tmp_path / "half", fingerprint, 1, 2, ())
        cache_module._prepare(plan2)
        cache_module._compute_segments(plan2, SENTS, Teacher(), 0, 2, progress=False)
        cache_module._finalize(plan2)


_CONCURRENT_BUILD = """
import sys, time, torch
from structkd.train import TeacherCache
root, log = sys.argv[1], sys.argv[2]
def teacher(batch):
    with open(log, "a") as fh:
        fh.write("call\\n")
    time.sleep(0.2)
    return [{"unary": torch.full((len(s), 2), 0.5)} for s in batch]
sents = [[str(i)] * (1 + i % 3) for i in range(6)]
cache = TeacherCache.build(root, sents, teacher, teacher_id="t", batch_size=2, progress=False)
print(len(cache))
"""


def test_two_jobs_building_one_cache_compute_it_once(tmp_path):
    """Two processes start the same build at once: the second waits for the first's lock, then loads its cache."""
    log = tmp_path / "calls.log"
    jobs = [subprocess.Popen([sys.executable, "-c", _CONCURRENT_BUILD, str(tmp_path / "cache"), str(log)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [job.communicate(timeout=120) for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0], outputs
    assert [out.strip() for out, _ in outputs] == ["6", "6"]
    assert log.read_text().count("call") == 3  # 6 sentences in batches of 2, computed by one job only
    assert (tmp_path / ".cache.lock").exists() and (tmp_path / "cache" / "index.json").is_file()


def test_a_cache_of_the_earlier_format_is_refused_by_name(tmp_path):
    root = tmp_path / "cache"
    root.mkdir()
    (root / "index.json").write_text(json.dumps({"format": "structkd-teacher-cache-1", "fingerprint": {},
                                                 "fields": {}}))
    with pytest.raises(CacheCorruptError, match="earlier structkd \\(format structkd-teacher-cache-1.*--rebuild"):
        build(tmp_path, Teacher())
    teacher = Teacher()
    cache = build(tmp_path, teacher, rebuild=True)
    assert teacher.calls == 3 and len(cache) == len(SENTS)


def test_a_damaged_segment_is_named(tmp_path):
    build(tmp_path, Teacher())
    path = tmp_path / "cache" / "segments" / "000000" / "pairs.f16"
    path.write_bytes(path.read_bytes()[:-2])
    with pytest.raises(CacheCorruptError, match="pairs.f16: .* bytes, but the index records"):
        TeacherCache.load(tmp_path / "cache")


# -- the NER cache's potentials form ------------------------------------------------------------------------
TAGS = ["O", "B-X", "I-X", "B-Y", "I-Y"]


def _student(scores, lens, temperature=1.0):
    from structkd.schemes import allowed_transitions
    from structkd.structs.chain import LinearChainCRF

    g = torch.Generator().manual_seed(7)
    n = len(TAGS)
    allowed, start, end = allowed_transitions(TAGS, "BIO")
    return LinearChainCRF(scores, torch.randn(n, n, generator=g, dtype=scores.dtype), lens,
                          torch.randn(n, generator=g, dtype=scores.dtype), None, allowed, start, None)


def _teacher(kind, lens, seq_len):
    """A CRF teacher under the BIO constraints, an unconstrained one, or a MaxEnt teacher (float64)."""
    from structkd.schemes import allowed_transitions
    from structkd.structs.chain import LinearChainCRF, MaxEnt

    g = torch.Generator().manual_seed(3)
    n = len(TAGS)
    emissions = torch.randn(len(lens), seq_len, n, generator=g, dtype=torch.float64) * 2
    if kind == "maxent":
        return MaxEnt(emissions, lens)
    masks = allowed_transitions(TAGS, "BIO") if kind == "constrained" else (None, None, None)
    return LinearChainCRF(emissions, torch.randn(n, n, generator=g, dtype=torch.float64), lens,
                          torch.randn(n, generator=g, dtype=torch.float64), torch.randn(n, generator=g,
                          dtype=torch.float64), *masks)


def _padded_rows(rows, lens):
    """The batch the cache gives for these rows: float16-rounded emissions, padded; the transitions (stored once,
    in float32)."""
    out = {"emissions": torch.zeros(len(lens), int(lens.max()), len(TAGS))}
    for b, row in enumerate(rows):
        out["emissions"][b, :row["emissions"].shape[0]] = row["emissions"].half().float()
    if "transitions" in rows[0]:
        out["transitions"] = rows[0]["transitions"]
    return out


def _brute_force(teacher_scores, student, lens, temperature, restrict):
    """``T^2 sum_y P_T(y) (-log P_S(y))`` at ``T`` by enumeration (``P_T`` restricted to the student's
    sequences when ``restrict``), float64, per sentence."""
    from structkd.numerics import is_impossible

    unary, edges = teacher_scores
    s_unary, s_edges = (p / temperature for p in student.potentials)
    out = []
    for b, n in enumerate(lens.tolist()):
        seqs = list(itertools.product(range(len(TAGS)), repeat=n))
        t = torch.stack([sum(unary[b, i, y[i]] for i in range(n)) + sum(edges[y[i], y[i + 1]] for i in range(n - 1))
                         for y in seqs]) / temperature
        s = torch.stack([sum(s_unary[b, i, y[i]] for i in range(n)) + sum(s_edges[b, i, y[i], y[i + 1]]
                                                                           for i in range(n - 1)) for y in seqs])
        if restrict:
            t = t.masked_fill(is_impossible(s * temperature), float("-inf"))
        p_t = t.softmax(0)
        log_p_s = s - s.logsumexp(0)
        out.append(-(p_t * torch.where(p_t > 0, log_p_s, torch.zeros_like(log_p_s))).sum() * temperature**2)
    return torch.stack(out)


@pytest.mark.parametrize("kind", ["constrained", "unconstrained", "maxent"])
@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_potentials_give_the_loss_of_the_marginals_and_of_brute_force(kind, temperature):
    from structkd.kd import project
    from structkd.ner.config import KdConfig
    from structkd.ner.distillation import _probe, kd_loss, potential_rows, teacher_chain
    from structkd.numerics import LOG_ZERO

    lens = torch.tensor([4, 1, 3])
    teacher = _teacher(kind, lens, 4)
    cached = _padded_rows(potential_rows(teacher), lens)
    student = _student(torch.randn(3, 4, len(TAGS), generator=torch.Generator().manual_seed(5),
                                   dtype=torch.float64), lens)
    kd = KdConfig(method="structural", temperature=temperature, impossible="renormalize")
    compact = kd_loss(kd, student, cached)
    # the marginals the old cache held, of the same stored (float16) scores, exactly as the cache computed them
    stored = teacher_chain(cached, lens, 1.0, torch.float64)
    marginals = project(stored.scaled(1.0 / temperature), _probe("crf", lens, len(TAGS), torch.float64))
    torch.testing.assert_close(compact, kd_loss(kd, student, dict(zip(("unary", "edges"), marginals))),
                               rtol=1e-9, atol=1e-9)
    # brute force: the stored chain restricted to the student's sequences, at T
    unary, edges = stored.potentials
    transitions = edges[0, 0] if edges.shape[1] else torch.zeros(len(TAGS), len(TAGS), dtype=torch.float64)
    if kind == "maxent":
        assert "transitions" not in cached and (transitions == 0).all()
    expected = _brute_force((unary, transitions), student, lens, temperature, restrict=True)
    torch.testing.assert_close(compact, expected, rtol=1e-9, atol=1e-9)
    if kind != "constrained":  # the teacher puts mass on forbidden sequences: the restriction matters
        loose = KdConfig(method="structural", temperature=temperature, impossible="ignore")
        assert not torch.allclose(kd_loss(loose, student, cached), expected, atol=1e-3)
    assert (cached["emissions"].amax(-1)[0] == 0).all() and cached["emissions"].min() > LOG_ZERO
    local = KdConfig(method="structural", temperature=temperature, temperature_mode="local")
    plain = dict(zip(("unary", "edges"), project(stored, _probe("crf", lens, len(TAGS), torch.float64))))
    torch.testing.assert_close(kd_loss(local, student, cached), kd_loss(local, student, plain), rtol=1e-9, atol=1e-9)


def test_potentials_through_the_cache_equal_the_online_teacher(tmp_path):
    """Real cache files and the runner's read of them: the loss matches the online teacher's within the float16
    rounding of the stored scores (the old marginal cache's rounding is of the same order)."""
    from structkd.kd import structural_kd_loss
    from structkd.ner.config import KdConfig
    from structkd.ner.distillation import kd_loss, potential_rows
    from structkd.ner.pipeline import TASK
    from structkd.tasks.runner import cached_batch

    lens = torch.tensor([4, 1, 3, 2])
    teacher = _teacher("unconstrained", lens, 4)
    sents = [["w"] * n for n in lens.tolist()]
    cache = TeacherCache.build(tmp_path / "c", list(range(4)), lambda idx: potential_rows(teacher)[idx[0]:idx[-1] + 1],
                               teacher_id="t", tokens=sents, options={"cache_form": "potentials"}, batch_size=2,
                               progress=False, shared_fields=sorted(TASK.SHARED_CACHE_FIELDS))
    assert cache.fields == ["emissions"] and cache.shared_fields == ["transitions"]
    batch = SimpleNamespace(indices=[2, 0, 1], sentences=[sents[i] for i in (2, 0, 1)])
    cached = cached_batch(TASK, cache, ["unary", "edges"], batch, torch.device("cpu"))
    order = torch.tensor([2, 0, 1])
    student = _student(torch.randn(3, 4, len(TAGS), generator=torch.Generator().manual_seed(9)), lens[order])
    kd = KdConfig(method="structural", temperature=2.0)
    from structkd.structs.chain import LinearChainCRF

    online_teacher = LinearChainCRF(teacher.potentials[0][order].float(), teacher.potentials[1][0, 0].float(),
                                    lens[order])
    online = structural_kd_loss(online_teacher, student, temperature=2.0, impossible="renormalize")
    torch.testing.assert_close(kd_loss(kd, student, cached), online, rtol=2e-3, atol=2e-3)


def test_the_form_is_decided_in_one_place_by_bytes_per_word():
    from structkd.ner.distillation import cache_bytes_per_word, cache_form

    assert cache_form("structural", "crf", "crf", 9) == "potentials"
    assert cache_form("structural", "maxent", "crf", 37) == "potentials"
    assert cache_form("structural", "span", "crf", 9) == "marginals"  # a span teacher's potentials: not a chain
    assert cache_form("structural", "crf", "maxent", 9) == "marginals"  # [n, N] either way: nothing to recompute
    assert cache_form("structural", "crf", "crf", 9, n_teachers=2) == "marginals"  # a mixture is no chain
    assert cache_form("posterior", "crf", "crf", 9) == "marginals"
    assert cache_bytes_per_word("potentials", "structural", "crf", 37) == 74.0
    assert cache_bytes_per_word("marginals", "structural", "crf", 37) == pytest.approx(2 * (37 + 19 * 37**2 / 20))


@pytest.mark.parametrize("teacher_head,shared", [("crf", ["transitions"]), ("maxent", [])])
def test_a_chain_teacher_distils_into_a_crf_student_from_its_potentials(tmp_path, teacher_head, shared):
    """``ner distill`` stores a CRF or MaxEnt teacher's potentials for a CRF student; the KD loss of a batch read
    from that cache equals structural KD from the online teacher within the float16 rounding of the scores."""
    from test_ner_pipeline import ROWS, bilstm, training, write_corpus

    from structkd.data import read_columns
    from structkd.kd import structural_kd_loss
    from structkd.ner import NerModel, build_ner_config, distill_command, train_command
    from structkd.ner.pipeline import TASK
    from structkd.tasks.runner import cached_batch

    data = {"train": write_corpus(tmp_path / "train.conll", ROWS), "dev": write_corpus(tmp_path / "dev.conll", ROWS, 1)}
    train_command(build_ner_config({"data": data, "model": bilstm(teacher_head),
                                    "training": training(tmp_path / "teacher", epochs=1)}))
    kd = {"method": "structural", "teacher": str(tmp_path / "teacher" / "model"), "temperature": 2.0,
          "cache_dir": str(tmp_path / "cache")}
    config = build_ner_config({"data": data, "model": bilstm("crf"), "kd": kd,
                               "training": training(tmp_path / "student", epochs=1)})
    distill_command(config)
    cache = TeacherCache.load(tmp_path / "cache")
    assert cache.fields == ["emissions"] and cache.shared_fields == shared
    assert cache.fingerprint["options"]["cache_form"] == "potentials"
    sentences = read_columns(data["train"])[:6]
    teacher, student = NerModel.load(kd["teacher"]), NerModel.load(tmp_path / "student" / "model")
    batch = TASK.collate(list(enumerate(sentences)), student)
    with torch.no_grad():
        mine = student(sentences)
        cached = cached_batch(TASK, cache, TASK.teacher_fields(config, student), batch, torch.device("cpu"))
        online = structural_kd_loss(teacher(sentences), mine, temperature=2.0, impossible="renormalize")
        torch.testing.assert_close(TASK.kd_loss(config.kd, student, mine, cached, batch), online, rtol=5e-3,
                                   atol=5e-3)


def test_a_distillation_cut_short_in_its_cache_build_resumes_it(tmp_path, monkeypatch):
    """``ner distill`` stopped while building the cache (segments of one batch here): run again with
    ``resume`` (its output directory holds the saved config), it computes only the segments that were not
    finished, and the cache equals an uninterrupted build's."""
    from test_ner_pipeline import ROWS, bilstm, training, write_corpus

    from structkd.ner import build_ner_config, distill_command, train_command
    from structkd.ner.pipeline import NerTask

    monkeypatch.setattr(cache_module, "SEGMENT_SENTENCES", 32)
    data = {"train": write_corpus(tmp_path / "train.conll", ROWS, repeat=12),
            "dev": write_corpus(tmp_path / "dev.conll", ROWS, 1)}
    train_command(build_ner_config({"data": data, "model": bilstm("crf"),
                                    "training": training(tmp_path / "teacher", epochs=1)}))
    calls, cut = [], [True]
    rows = NerTask.cache_rows

    def counted(self, teacher, items, config, student):
        calls.append(len(items))
        if len(calls) == 3 and cut[0]:
            raise KeyboardInterrupt("stopped")
        return rows(self, teacher, items, config, student)

    monkeypatch.setattr(NerTask, "cache_rows", counted)

    def config(out):
        return build_ner_config({"data": data, "model": bilstm("crf"),
                                 "kd": {"method": "structural", "teacher": str(tmp_path / "teacher" / "model")},
                                 "training": training(out, epochs=1)})

    with pytest.raises(KeyboardInterrupt):
        distill_command(config(tmp_path / "student"))
    assert calls == [32, 32, 8] and not (tmp_path / "student" / "teacher_cache" / "index.json").exists()
    cut[0] = False
    distill_command(config(tmp_path / "student"), resume=True)
    assert calls == [32, 32, 8, 8]  # only the last segment
    distill_command(config(tmp_path / "whole"))
    same_cache(TeacherCache.load(tmp_path / "student" / "teacher_cache"),
               TeacherCache.load(tmp_path / "whole" / "teacher_cache"))
