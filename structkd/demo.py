"""The README's main job: structural KD end to end on the WNUT17 sample shipped in the package.

1. train a BiLSTM-CRF teacher on the sample's training sentences (gold NLL);
2. train a small BiLSTM-MaxEnt student twice: on gold labels alone, and with structural KD from the CRF
   teacher (case 2, "student finer": exact token marginals of the teacher's CRF), interpolated with gold;
3. print entity F1 (seqeval) on the sample's development sentences, parameter counts and tagging speed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
from seqeval.metrics import f1_score
from tqdm import tqdm

from structkd.data import read_columns
from structkd.kd import interpolate, structural_kd_loss
from structkd.models.taggers import BiLSTMTagger
from structkd.models.vocab import TaggerVocab


def sample_path(name: str) -> Path:
    """Path of a file of the shipped WNUT17 sample (``train.conll`` or ``dev.conll``)."""
    return Path(str(resources.files("structkd") / "resources" / "wnut17_sample" / name))


@dataclass
class DemoResult:
    name: str
    f1: float
    parameters: int
    sentences_per_second: float


def batches(sentences, batch_size: int, generator: torch.Generator | None = None):
    order = torch.randperm(len(sentences), generator=generator).tolist() if generator is not None \
        else list(range(len(sentences)))
    for start in range(0, len(order), batch_size):
        yield [sentences[i] for i in order[start:start + batch_size]]


def evaluate(model: BiLSTMTagger, vocab: TaggerVocab, sentences, batch_size: int = 64) -> tuple[float, float]:
    """Entity-level micro F1 and sentences per second."""
    model.eval()
    gold, predicted = [], []
    start = time.perf_counter()
    with torch.no_grad():
        for batch in batches(sentences, batch_size):
            tags = model(**vocab.encode(batch)).argmax
            for s, row in zip(batch, tags.tolist()):
                predicted.append([vocab.tags.items[t] for t in row[:len(s)]])
                gold.append(s.tags)
    elapsed = time.perf_counter() - start
    return float(f1_score(gold, predicted)), len(sentences) / elapsed


def train(model: BiLSTMTagger, vocab: TaggerVocab, sentences, epochs: int, seed: int, desc: str,
          teacher: BiLSTMTagger | None = None, kd_weight: float = 0.5, lr: float = 3e-3) -> None:
    """Gold NLL training, or ``kd_weight * structural KD + (1 - kd_weight) * gold`` with a teacher."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in tqdm(range(epochs), desc=desc, unit="epoch"):
        model.train()
        for batch in batches(sentences, 32, generator):
            inputs = vocab.encode(batch)
            dist = model(**inputs)
            loss = model.gold_loss(dist, inputs["tags"])
            if teacher is not None:
                with torch.no_grad():
                    teacher_dist = teacher(**inputs)
                loss = interpolate(structural_kd_loss(teacher_dist, dist), loss, kd_weight)
            optimizer.zero_grad()
            (loss.sum() / len(batch)).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
    model.eval()


def run_demo(epochs: int = 12, seed: int = 0, threads: int | None = None) -> list[DemoResult]:
    """Train the teacher and both students on the shipped sample; return their scores."""
    if threads:
        torch.set_num_threads(threads)
    train_set = read_columns(sample_path("train.conll"))
    dev_set = read_columns(sample_path("dev.conll"))
    vocab = TaggerVocab.build(train_set)
    tags = vocab.tags.items
    print(f"WNUT17 sample: {len(train_set)} training and {len(dev_set)} development sentences, {len(tags)} tags")
    results = []

    torch.manual_seed(seed)
    teacher = BiLSTMTagger(len(vocab.words), len(vocab.chars), tags, "crf", "BIO", word_dim=100, hidden=200)
    train(teacher, vocab, train_set, epochs, seed, "teacher (BiLSTM-CRF)")
    results.append(_score("teacher BiLSTM-CRF", teacher, vocab, dev_set))

    for name, kd in (("student MaxEnt, gold only", None), ("student MaxEnt, structural KD", teacher)):
        torch.manual_seed(seed)
        student = BiLSTMTagger(len(vocab.words), len(vocab.chars), tags, "maxent", word_dim=50, hidden=50,
                               char_filters=25)
        train(student, vocab, train_set, epochs, seed, name, teacher=kd)
        results.append(_score(name, student, vocab, dev_set))
    print(format_results(results))
    return results


def _score(name: str, model: BiLSTMTagger, vocab: TaggerVocab, sentences) -> DemoResult:
    f1, speed = evaluate(model, vocab, sentences)
    return DemoResult(name, f1, sum(p.numel() for p in model.parameters()), speed)


def format_results(results: list[DemoResult]) -> str:
    lines = [f"{'model':32} {'dev F1':>7} {'parameters':>11} {'sent/s':>8}"]
    for r in results:
        lines.append(f"{r.name:32} {100 * r.f1:7.2f} {r.parameters:11,d} {r.sentences_per_second:8.0f}")
    return "\n".join(lines)
