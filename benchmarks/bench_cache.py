"""The teacher cache at scale: build throughput, disk, peak memory and training steps per second.

On synthetic sentences whose lengths follow a real corpus (UD English EWT train by default, read from
``../shared/data`` when it is there, else the histogram hard-coded below), with tiny random teachers (a
BiLSTM-CRF or BiLSTM-MaxEnt tagger whose scores are scaled to a trained tagger's spread, a biaffine parser),
each configuration in a fresh process:

* ``build``: :meth:`structkd.train.TeacherCache.build` through the task's own code (sentences per second,
  the fingerprint pass included, and the share of that time spent in the teacher and the form's rows), the
  cache's size on disk, and the largest growth of the anonymous resident memory during the build
  (:class:`PeakRss`), also at a tenth of the sentences, to compare;
* ``train``: distillation steps of a tiny BiLSTM-CRF (or biaffine) student reading the cache (batch 32: read,
  student forward, structural KD, backward, AdamW step), and apart from it the time to read a batch and, for
  the potentials form, to recompute the teacher's marginals by forward-backward;
* ``error``: for chains, the largest error of the marginals the cache gives (float16 marginals, or marginals
  recomputed from float16 potentials) against the teacher's own in float64, on 256 sentences.

Configurations: CRF -> CRF and MaxEnt -> CRF structural KD at 9 and 37 tags, each stored as marginals (the
format-1 layout: ``unary [n, N]`` + ``edges [n - 1, N, N]``) and as potentials (``emissions [n, N]`` + one
``transitions [N, N]``), and a first-order parser's arc marginals ``[n + 1, n + 1]`` (projective biaffine
teacher and student, ``kd.relations=none``).  Disk and time are scaled to 10^5 sentences from ``--sentences``
(linear in the sentence count; the memory is bounded and reported as measured).

    python benchmarks/bench_cache.py [--sentences 10000] [--threads 1] [--steps 40] [--only ...]

About 2 minutes on one core at the default 10^4 sentences, 12 at 10^5 (the recorded run; 4.3 GB of disk for
the 37-tag marginals).

Results: ``benchmarks/results/cache_cpu.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"
EWT = Path(__file__).resolve().parents[2] / "shared" / "data" / "ud-english-ewt" / "en_ewt-ud-train.conllu"
# sentence lengths of UD English EWT train (12,544 sentences, mean 16.3): count of each length 1..60; the 229
# longer sentences (61 to 159 words) are folded into length 70 here
EWT_COUNTS = [521, 625, 491, 368, 419, 446, 435, 430, 455, 471, 488, 475, 421, 438, 443, 409, 379, 373, 351, 356,
              300, 314, 313, 256, 213, 216, 177, 180, 181, 135, 136, 111, 119, 100, 78, 76, 87, 71, 77, 57,
              54, 60, 37, 34, 32, 21, 22, 32, 23, 23, 18, 25, 11, 12, 11, 7, 11, 7, 8, 11]
CONFIGS = {f"{teacher}->crf {form} {n_tags} tags": {"kind": "chain", "teacher": teacher, "form": form, "tags": n_tags}
           for n_tags in (9, 37) for teacher in ("crf", "maxent") for form in ("marginals", "potentials")}
CONFIGS["tree arcs"] = {"kind": "tree", "form": "marginals"}
BATCH = 32


def length_table() -> tuple[np.ndarray, np.ndarray, str]:
    """``(lengths, probabilities, source)`` of the sentence lengths."""
    if EWT.is_file():
        counts: dict[int, int] = {}
        n = 0
        for line in EWT.read_text(encoding="utf-8").splitlines():
            if not line:
                if n:
                    counts[n] = counts.get(n, 0) + 1
                n = 0
            elif not line.startswith("#") and line.split("\t", 1)[0].isdigit():
                n += 1
        lengths = np.array(sorted(counts))
        return lengths, np.array([counts[k] for k in lengths]) / sum(counts.values()), str(EWT)
    counts = EWT_COUNTS + [229]
    lengths = np.array(list(range(1, 61)) + [70])
    return lengths, np.array(counts) / sum(counts), "EWT train histogram (hard-coded)"


def sentence_lengths(n: int, seed: int = 0) -> list[int]:
    lengths, probs, _ = length_table()
    return np.random.default_rng(seed).choice(lengths, size=n, p=probs).tolist()


def tag_names(n_tags: int) -> list[str]:
    """``O`` and B-/I- tags of ``(n_tags - 1) / 2`` types (9: 4 types, 37: 18 types, OntoNotes' count)."""
    return ["O"] + [f"{p}-T{k}" for k in range((n_tags - 1) // 2) for p in ("B", "I")]


# -- the cases --------------------------------------------------------------------------------------------
def chain_case(config: dict, n: int) -> dict:
    """Teacher, student, task, sentences and the cache's compute function of a chain configuration."""
    from structkd.data import Sentence
    from structkd.ner.config import KdConfig, ModelConfig
    from structkd.ner.distillation import compute_potential_rows, compute_teacher_outputs
    from structkd.ner.modeling import build_model
    from structkd.ner.pipeline import TASK

    tags = tag_names(config["tags"])
    rng = np.random.default_rng(1)
    sentences = [Sentence([f"w{int(w)}" for w in rng.integers(0, 5000, size=k)], None, f"synthetic:{i}")
                 for i, k in enumerate(sentence_lengths(n))]
    vocab = sentences[:2000]
    torch.manual_seed(0)
    small = {"kind": "bilstm", "word_dim": 32, "hidden": 32, "char_filters": 16, "dropout": 0.0}
    teacher = build_model(ModelConfig(**small, head=config["teacher"]), tags, "BIO", vocab).eval()
    _peak_scores(teacher)
    student = build_model(ModelConfig(**{**small, "hidden": 64}, head="crf"), tags, "BIO", vocab)
    kd = KdConfig(method="structural", impossible="renormalize")
    if config["form"] == "potentials":
        def compute(chunk):
            return compute_potential_rows(teacher, chunk, "BIO")
    else:
        def compute(chunk):
            return compute_teacher_outputs(teacher, chunk, kd, "crf", tags, "BIO")
    return {"teacher": teacher, "student": student, "task": TASK, "sentences": sentences, "compute": compute,
            "kd": kd, "fields": ["unary", "edges"], "words": lambda s: s.tokens}


def _peak_scores(teacher) -> None:
    """Scale a random tagger's scores to a trained one's spread (emissions of standard deviation about 4,
    transitions about 2): random ones are nearly uniform, which would flatter the float16 rounding."""
    head = teacher.tagger.head
    layer = head.emissions if hasattr(head, "emissions") else head.logits
    with torch.no_grad():
        layer.weight.mul_(15.0)
        layer.bias.mul_(15.0)
        if hasattr(head, "transitions"):
            head.transitions.copy_(torch.randn_like(head.transitions) * 2)


def tree_case(config: dict, n: int) -> dict:
    """The parser configuration: a projective first-order teacher's arc marginals for a biaffine student."""
    from structkd.data import ParsedSentence
    from structkd.parse.config import KdConfig, ModelConfig
    from structkd.parse.distillation import StudentSpec, compute_teacher_outputs
    from structkd.parse.modeling import build_model, without_tree
    from structkd.parse.pipeline import TASK

    rng = np.random.default_rng(1)
    rels = ["root", "nsubj", "obj", "det", "amod", "case", "nmod", "advmod"]
    sentences = []
    for i, k in enumerate(sentence_lengths(n)):
        heads = [0] + [int(rng.integers(1, d + 1)) for d in range(1, k)]  # a tree: each word after the first
        words = [f"w{int(w)}" for w in rng.integers(0, 5000, size=k)]
        sentences.append(ParsedSentence(words, ["X"] * k, heads, ["root"] + ["nsubj"] * (k - 1),
                                        source=f"synthetic:{i}"))
    torch.manual_seed(0)
    small = {"word_dim": 32, "hidden": 32, "char_filters": 16, "layers": 1, "arc_hidden": 64, "rel_hidden": 32,
             "dropout": 0.0}
    teacher = build_model(ModelConfig(**small), rels, sentences[:2000]).eval()
    student = build_model(ModelConfig(**small), rels, sentences[:2000])
    sentences = [without_tree(s) for s in sentences]  # distillation text: the teacher's outputs alone
    kd = KdConfig(method="structural", relations="none")
    spec = StudentSpec.of(student)

    def compute(chunk):
        return compute_teacher_outputs(teacher, chunk, kd, spec)

    return {"teacher": teacher, "student": student, "task": TASK, "sentences": sentences, "compute": compute,
            "kd": kd, "fields": ["arcs"], "words": lambda s: s.words}


# -- one configuration, in its own process ------------------------------------------------------------------
class PeakRss:
    """The largest anonymous resident memory of this process while in the block, above where it started, in MB
    (sampled every 5 ms, :func:`_rss`; ``ru_maxrss`` cannot tell a peak within the block from one before)."""

    def __enter__(self) -> PeakRss:
        import threading

        self.base = self.peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())

    @property
    def mb(self) -> float:
        return (self.peak - self.base) / 2**20


def _rss() -> int:
    """Resident memory that is not file-backed (``resident - shared`` of ``/proc/self/statm``): the pages of
    the cache's own memory-mapped files, which the kernel may drop at any time, are left out."""
    with open("/proc/self/statm") as fh:
        fields = fh.read().split()
    return (int(fields[1]) - int(fields[2])) * os.sysconf("SC_PAGE_SIZE")


def run_one(name: str, n: int, steps: int, directory: Path) -> dict:
    from structkd.train import TeacherCache

    config = CONFIGS[name]
    case = (chain_case if config["kind"] == "chain" else tree_case)(config, n)
    shared = ["transitions"] if config["form"] == "potentials" else []
    teacher_seconds = [0.0]

    def compute(chunk):  # the teacher's (and the form's) share of the build
        start = time.perf_counter()
        rows = case["compute"](chunk)
        teacher_seconds[0] += time.perf_counter() - start
        return rows

    with PeakRss() as rss:
        start = time.perf_counter()
        cache = TeacherCache.build(directory, case["sentences"], compute, teacher_id="bench",
                                   tokens=(case["words"](s) for s in case["sentences"]),
                                   options={"cache_form": config["form"]}, batch_size=BATCH, progress=False,
                                   shared_fields=shared)
        seconds = time.perf_counter() - start
    disk = sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())
    words = sum(len(case["words"](s)) for s in case["sentences"])
    out = {"sentences": n, "words": words, "build_seconds": seconds, "sentences_per_second": n / seconds,
           "teacher_seconds": teacher_seconds[0], "cache_seconds": seconds - teacher_seconds[0],
           "disk_bytes": disk, "bytes_per_word": disk / words, "build_peak_mb": rss.mb,
           "fields": cache.fields, "shared_fields": cache.shared_fields}
    out.update(train_steps(case, cache, steps))
    if config["kind"] == "chain":
        out["max_marginal_error"] = marginal_error(case, config)
    return out


def train_steps(case: dict, cache, steps: int) -> dict:
    """Steps of distillation from the cache: total step time, and the read and recompute parts alone."""
    from structkd.ner.distillation import _chain_marginals, teacher_chain
    from structkd.tasks.runner import cached_batch

    task, student, kd = case["task"], case["student"], case["kd"]
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-3)
    n = len(case["sentences"])
    order = np.concatenate([np.random.default_rng(2 + r).permutation(n) for r in range(-(-BATCH * (steps + 2) // n))])
    batches = [order[i:i + BATCH].tolist() for i in range(0, BATCH * (steps + 2), BATCH)]
    read, recompute, step_times = [], [], []
    for indices in batches:
        batch = task.collate([(i, case["sentences"][i]) for i in indices], student)
        start = time.perf_counter()
        cached = cached_batch(task, cache, case["fields"], batch, torch.device("cpu"))
        read.append(time.perf_counter() - start)
        output = student(batch.sentences)
        if "emissions" in cached:  # what the loss does first: the teacher chain's marginals, restricted
            t0 = time.perf_counter()
            with torch.no_grad():
                _chain_marginals(kd, teacher_chain(cached, output.lens, kd.temperature, output.dtype), output)
            recompute.append(time.perf_counter() - t0)
        loss = task.kd_loss(kd, student, output, cached, batch).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step_times.append(time.perf_counter() - start)
    warm = slice(2, None)  # the first two steps warm up
    median = lambda xs: float(np.median(xs[warm])) * 1000 if xs else None  # noqa: E731
    return {"step_ms": median(step_times), "steps_per_second": 1000 / median(step_times), "read_ms": median(read),
            "recompute_ms": median(recompute), "step_ms_spread": [float(np.percentile(step_times[warm], q)) * 1000
                                                                  for q in (10, 90)]}


def marginal_error(case: dict, config: dict) -> float:
    """Largest error of the unary and edge marginals the cache form gives against the teacher's in float64."""
    from structkd.ner.distillation import potential_rows, teacher_chain

    sentences = case["sentences"][:256]
    with torch.no_grad():
        dist = case["teacher"](sentences)
    lens = dist.lens
    if config["teacher"] == "crf":
        exact = type(dist)(dist.potentials[0].double(), dist.potentials[1][0, 0].double(), lens)
    else:
        from structkd.structs.chain import LinearChainCRF

        exact = LinearChainCRF(dist.potentials[0].double(), None, lens)
    truth = exact.part_marginals()
    if config["form"] == "marginals":
        got = tuple(m.half().double() for m in truth)
    else:
        rows = potential_rows(dist)
        cached = {"emissions": torch.zeros_like(dist.potentials[0])}
        for b, row in enumerate(rows):
            cached["emissions"][b, :row["emissions"].shape[0]] = row["emissions"].half().float()
        if "transitions" in rows[0]:  # stored once, in float32
            cached["transitions"] = rows[0]["transitions"]
        got = teacher_chain(cached, lens, 1.0, torch.float64).part_marginals()
    return max(float((g - t).abs().max()) for g, t in zip(got, truth))


def cache_alone_peak(n: int, directory: Path) -> float:
    """The build's memory growth with no teacher: 9-tag marginals of 20-word sentences made up on the spot
    (what the cache itself holds: one chunk, one segment's shapes)."""
    from structkd.train import TeacherCache

    def compute(chunk):
        return [{"unary": torch.rand(len(s), 9), "edges": torch.rand(len(s) - 1, 9, 9)} for s in chunk]

    with PeakRss() as rss:
        TeacherCache.build(directory, [["w"] * 20] * n, compute, teacher_id="none", batch_size=BATCH, progress=False)
    return rss.mb


# -- bytes per word of every pair, from the fields' shapes ------------------------------------------------------
def pair_rows(n_tags: tuple[int, ...] = (9, 37), n_rels: int = 51, top_k: int = 3, rel_hidden: int = 100
              ) -> list[dict]:
    """Bytes per word (float16; the once-stored transitions and relation weight left out) of every
    teacher/student pair, averaged over the sentence-length distribution (``sum bytes(n) / sum n``), before
    (format 1: always marginals) and now (:func:`structkd.ner.distillation.cache_form`,
    :func:`structkd.parse.distillation.cache_form` with a biaffine teacher of ``rel_hidden``-wide relation
    MLPs)."""
    from structkd.ner.distillation import cache_form, cached_field_shapes

    lengths, probs, _ = length_table()

    def per_word(shapes_of) -> float:
        total = sum(p * 2 * sum(int(np.prod(s)) for s in shapes_of(int(n)).values()) for n, p in zip(lengths, probs))
        return total / float((lengths * probs).sum())

    rows = []
    ner = [("CRF", "crf", "CRF", "crf", "structural"), ("MaxEnt", "maxent", "CRF", "crf", "structural"),
           ("span (semi-Markov)", "span", "CRF", "crf", "structural"), ("2 CRFs (kd.teachers)", "crf2", "CRF", "crf",
                                                                        "structural"),
           ("per-token probabilities (black box)", "maxent", "CRF", "crf", "structural"),
           ("any", "crf", "MaxEnt", "maxent", "structural"), ("any", "crf", "any", "crf", "posterior"),
           ("CRF or MaxEnt", "crf", "any", "crf", "token"), ("any", "crf", "any", "crf", "topk"),
           ("any", "crf", "any", "crf", "seqlevel")]
    for n in n_tags:
        for teacher, head, student, s_head, method in ner:
            teachers = 2 if head == "crf2" else 1
            form = cache_form(method, head.rstrip("2"), s_head, n, teachers)
            before = per_word(lambda k, m=method, h=s_head, t=n: cached_field_shapes("marginals", m, h, k, t, top_k))
            now = per_word(lambda k, f=form, m=method, h=s_head, t=n: cached_field_shapes(f, m, h, k, t, top_k))
            fields = list(cached_field_shapes(form, method, s_head, 1, n, top_k))
            rows.append({"task": f"NER, {n} tags", "teacher": teacher, "student": student, "kd": method, "form": form,
                         "fields": fields + (["transitions (once)"] if form == "potentials" and head == "crf" else []),
                         "bytes_per_word_before": before, "bytes_per_word": now})
    trees = {"arcs": lambda k: (k + 1, k + 1), "sibs": lambda k: (k + 1, k + 1, k + 1),
             "rels": lambda k: (k + 1, k + 1, n_rels), "gold_rels": lambda k: (k, n_rels),
             "arc_logits": lambda k: (k + 1, k + 1), "topk_heads": lambda k: (top_k, k),
             "topk_rels": lambda k: (top_k, k), "topk_labels": lambda k: (top_k, k), "topk_weights": lambda k: (top_k,)}
    parse = [("1o or 2o", "biaffine 1o", "structural, relations none", ["arcs"]),
             ("1o or 2o", "biaffine 1o", "structural, relations gold", ["arcs", "gold_rels"]),
             ("1o or 2o", "biaffine 1o", "structural, relations marginal", ["arcs", "rels"]),
             ("1o (projective)", "biaffine 2o", "structural, relations none", ["arcs", "sibs"]),
             ("2o", "biaffine 2o", "structural, relations none", ["arcs", "sibs"]),
             ("any", "sequence labeling", "structural", ["arcs", "rels"]),
             ("any", "biaffine", "token, relations gold", ["arc_logits", "gold_rels"]),
             ("any", "biaffine", "topk", ["topk_heads", "topk_rels", "topk_weights"]),
             ("any", "sequence labeling", "topk", ["topk_labels", "topk_weights"])]
    # a biaffine teacher's relation distributions as its factors (structkd.parse.distillation.cache_form):
    # rel_dep and rel_head [n + 1, rel_hidden] per sentence, the weight once
    # and a first-order projective teacher's arc scores [n + 1, n + 1] instead of a 2o student's arcs and sibs
    trees.update(rel_dep=lambda k: (k + 1, rel_hidden), rel_head=lambda k: (k + 1, rel_hidden),
                 arc_scores=lambda k: (k + 1, k + 1))
    for teacher, student, method, fields in parse:
        value = per_word(lambda k, fs=fields: {f: trees[f](k) for f in fs})
        now, form = fields, "marginals"
        if "rels" in fields:
            now, form = [f for f in now if f != "rels"] + ["rel_dep", "rel_head"], "factored"
        if teacher == "1o (projective)":
            now, form = ["arc_scores"] + [f for f in now if f not in ("arcs", "sibs")], "factored"
        rows.append({"task": f"parsing, {n_rels} relations", "teacher": teacher, "student": student, "kd": method,
                     "form": form, "fields": now + (["rel_weight (once)"] if "rel_dep" in now else []),
                     "bytes_per_word_before": value,
                     "bytes_per_word": per_word(lambda k, fs=now: {f: trees[f](k) for f in fs})})
    return rows


def pair_markdown(rows: list[dict]) -> str:
    lines = ["| task | teacher | student | KD | stored | bytes/word before | bytes/word now |",
             "|---|---|---|---|---|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['task']} | {r['teacher']} | {r['student']} | {r['kd']} | {' + '.join(r['fields'])} | "
                     f"{r['bytes_per_word_before']:,.0f} | {r['bytes_per_word']:,.0f} |")
    return "\n".join(lines) + "\n"


# -- driver -----------------------------------------------------------------------------------------------
def measure(name: str, n: int, steps: int, threads: int, call: str = "run_one") -> dict:
    """:func:`run_one` (or ``call``) in a fresh process (a clean peak-memory reading), in a temporary directory."""
    directory = Path(tempfile.mkdtemp(prefix="bench_cache_"))
    args = f"{name!r}, {n}, {steps}, " if call == "run_one" else f"{n}, "
    code = (f"import sys, json, torch; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            f"torch.set_num_threads({threads}); import bench_cache as b; "
            f"print('RESULT', json.dumps(b.{call}({args}__import__('pathlib').Path("
            f"{str(directory / 'cache')!r}))))")
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    except subprocess.CalledProcessError as error:
        raise RuntimeError(f"{name}: {error.stderr[-3000:]}") from error
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return json.loads(out.stdout.split("RESULT ", 1)[1])


def per_1e5(row: dict) -> dict:
    scale = 1e5 / row["sentences"]
    return {"disk_gb_per_1e5": row["disk_bytes"] * scale / 1e9,
            "build_minutes_per_1e5": row["build_seconds"] * scale / 60}


def markdown(rows: dict, meta: dict) -> str:
    lines = [
        "# Teacher cache at scale (CPU)",
        "",
        f"`python benchmarks/bench_cache.py --sentences {meta['sentences']} --threads {meta['threads']} "
        f"--steps {meta['steps']}`; {meta['cpu']}, torch {meta['torch']}, load average {meta['load']}. Sentence "
        f"lengths: {meta['lengths']} (mean {meta['mean_length']:.1f} words). Tiny random teachers (BiLSTM 32, "
        f"scores scaled to a trained tagger's spread), batch {BATCH}; disk and build time scaled linearly to "
        f"10^5 sentences from {meta['sentences']:,}; build peak MB is the largest growth of the process's "
        f"anonymous resident memory during the build (file-backed pages of the cache's own files left out), "
        f"measured; teacher share: of the build time, in the teacher and the rows of the form; "
        f"read (the batch from the cache), recompute (the teacher chain's marginals by forward-backward, "
        f"restricted to the student's sequences, as the loss computes them; part of the step) and step times are "
        f"medians of {meta['steps']} steps (step: 10th-90th percentile in brackets), one run each. One thread: "
        f"on this 2-core machine, shared with other jobs, two threads made the same runs 10 to 20 times slower "
        f"(oversubscription).",
        "",
        "| configuration | fields | bytes/word | disk per 10^5 sent. | build sent./s | teacher share | build peak MB | "
        "read ms | recompute ms | step ms | steps/s | max marginal error |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in rows.items():
        fields = " + ".join(row["fields"]) + "".join(f" + {f} (once)" for f in row["shared_fields"])
        spread = "[{:.0f}-{:.0f}]".format(*row["step_ms_spread"])
        err = f"{row['max_marginal_error']:.1e}" if "max_marginal_error" in row else "-"
        rec = f"{row['recompute_ms']:.1f}" if row["recompute_ms"] is not None else "-"
        lines.append(f"| {name} | {fields} | {row['bytes_per_word']:.1f} | {per_1e5(row)['disk_gb_per_1e5']:.2f} GB | "
                     f"{row['sentences_per_second']:,.0f} | {row['teacher_seconds'] / row['build_seconds']:.0%} | "
                     f"{row['build_peak_mb']:.0f} | {row['read_ms']:.1f} | "
                     f"{rec} | {row['step_ms']:.0f} {spread} | {row['steps_per_second']:.1f} | {err} |")
    check = meta.get("memory_check")
    if check:
        small, large = (f"{k:,}" for k in check["sentences"])
        parts = [f"{name}: {a:.0f} and {b:.0f} MB" for name, (a, b) in check.items()
                 if name not in ("sentences", "cache_alone_mb")]
        a, b = check["cache_alone_mb"]
        lines += ["", f"Build memory at {small} and {large} sentences: the cache alone (a made-up 9-tag teacher, "
                      f"20-word sentences) {a:.1f} and {b:.1f} MB; " + "; ".join(parts) + " (the teacher's "
                      "working memory, largest on the batches of the longest sentences, which more sentences "
                      "meet more often)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=10000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--only", nargs="*", default=None, help="configuration names (default: all)")
    parser.add_argument("--no-memory-check", dest="memory_check", action="store_false",
                        help="skip the rerun at a tenth of the sentences")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    names = args.only or list(CONFIGS)
    rows = {}
    for name in names:
        print(f"{name} ...", flush=True)
        rows[name] = {**measure(name, args.sentences, args.steps, args.threads)}
        rows[name].update(per_1e5(rows[name]))
        print(json.dumps(rows[name]), flush=True)
    check = {}
    if args.memory_check:
        sizes = [args.sentences // 10, args.sentences]
        check = {"sentences": sizes, "cache_alone_mb": [measure("", k, 0, args.threads, "cache_alone_peak")
                                                        for k in sizes]}
        for name in ("crf->crf marginals 9 tags", "tree arcs"):
            if name in rows:
                small = measure(name, sizes[0], 3, args.threads)
                check[name] = [small["build_peak_mb"], rows[name]["build_peak_mb"]]
    lengths, probs, source = length_table()
    meta = {"memory_check": check, "sentences": args.sentences, "threads": args.threads, "steps": args.steps,
            "lengths": source,
            "mean_length": float((lengths * probs).sum()), "cpu": platform.processor() or platform.machine(),
            "torch": torch.__version__, "load": [round(x, 2) for x in os.getloadavg()]}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pairs = pair_rows()
    text = markdown(rows, meta) + "\n## Bytes per word of every teacher/student pair\n\n" + pair_markdown(pairs)
    (out / "cache_cpu.json").write_text(json.dumps({"meta": meta, "rows": rows, "pairs": pairs}, indent=1) + "\n",
                                        encoding="utf-8")
    (out / "cache_cpu.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
