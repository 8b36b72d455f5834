"""Black-box teachers (``kd.teacher_outputs``): a teacher known only by its outputs on the student's
distillation sentences, read from a file, checked against those sentences before any training, and turned into
the cached fields of the existing KD methods (``docs/teachers.md``, "Black-box teachers", specifies the files).

The file covers the run's distillation sentences in order: ``data.train`` then each ``data.unlabeled`` file, as
the run reads them, one record per sentence, whose tokens must equal the sentence's.  Five kinds:

=========  =========================================  ===========================================================
kind       file                                       cached fields (KD methods)
=========  =========================================  ===========================================================
tags       NER columns, token first, tag last         ``topk_tags [1, n]``, ``topk_weights [1]`` (``seqlevel``)
kbest      NER JSONL ``{"tokens", "sequences"}``      ``topk_tags [k, n]``, ``topk_weights [k]`` (``topk``:
                                                      uniform, ``topwk``: ``softmax(score / T)``, ``seqlevel``)
probs      NER JSONL ``{"tokens", "labels", "probs"}``  the marginals of the per-token teacher (``structural``,
                                                      ``posterior``; ``token``: ``log p``)
trees      parser CoNLL-U                             ``topk_heads``/``topk_rels`` or ``topk_labels`` (``topk``)
arcs       parser JSONL ``{"tokens", "heads", "rels"}``  arc marginals of the per-word head teacher restricted to
                                                      the student's trees (``structural``; ``token``: ``log p``)
=========  =========================================  ===========================================================

A per-token (per-word) probability file is the teacher ``P(y) = prod_i p_i(y_i)``; its temperature ``T`` is
``p_i^(1/T)`` renormalized.  Into a constrained CRF student it is the MaxEnt teacher of ``log p``, restricted at
loss time exactly as a softmax teacher (``kd.impossible``); into a tree student it is the first-order tree
distribution with arc scores ``log p(h | d)``: the product restricted to the student's trees and renormalized.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from structkd.data.columns import CorpusError, read_utf8_lines
from structkd.numerics import LOG_ZERO, STORED_LOG_ZERO

Tensor = torch.Tensor

__all__ = ["TeacherOutputs", "read_teacher_outputs", "check_method", "check_labels", "file_sha256", "ner_rows",
           "parse_rows", "check_trees", "TOLERANCE", "KIND_METHODS"]

TOLERANCE = 1e-3
"""How far from 1 a row of probabilities may sum (it is then divided by its sum)."""

KIND_METHODS = {"tags": ("seqlevel",), "kbest": ("topk", "topwk", "seqlevel"),
                "probs": ("structural", "posterior", "token"), "trees": ("topk",), "arcs": ("structural", "token")}
"""The ``kd.method`` values each kind of file can serve."""

_WHAT = {"tags": "a column file of tags", "kbest": "a JSONL file of k-best tag sequences",
         "probs": "a JSONL file of per-token label probabilities", "trees": "a CoNLL-U file of trees",
         "arcs": "a JSONL file of per-word head probabilities"}
_CHUNK = 1 << 20


@dataclass
class TeacherOutputs:
    """A teacher's outputs read from ``path``, one record per distillation sentence.

    Records by ``kind``: ``tags``: ``(tags, token lines)``; ``kbest``: ``[(tags, score), ...]`` best first;
    ``probs``: ``(labels, float64 array [n, n_labels])``; ``trees``: ``(heads, rels)``; ``arcs``:
    ``(float64 array [n, n + 1] of p(head | word), rels or None)``.  ``lines``: each record's first line.
    """

    path: str
    kind: str
    records: list
    lines: list[int]
    sha256: str
    inexpressible: list[bool] = field(default_factory=list)

    @property
    def identity(self) -> str:
        """What the teacher cache and a resumed run know this teacher by: its kind and the file's SHA-256."""
        return f"outputs:{self.kind}:{self.sha256}"

    def where(self, i: int) -> str:
        return f"{self.path}:{self.lines[i]}"

    def subset(self, positions: Sequence[int]) -> TeacherOutputs:
        """The records of the sentences at ``positions`` (a student that skips some training sentences)."""
        return replace(self, records=[self.records[p] for p in positions], lines=[self.lines[p] for p in positions])

    def labels(self) -> list[str]:
        """Every label the file uses (tags, or relations), in order of first use."""
        seen: dict[str, None] = {}
        for record in self.records:
            for label in _record_labels(self.kind, record):
                seen.setdefault(label, None)
        return list(seen)


def _record_labels(kind: str, record: Any) -> list[str]:
    if kind == "tags":
        return record[0]
    if kind == "kbest":
        return [t for tags, _ in record for t in tags]
    if kind == "probs":
        return list(record[0])
    if kind == "trees":
        return record[1]
    return record[1] or []


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------- reading
def read_teacher_outputs(path: str | Path, words: Sequence[Sequence[str]], sources: Sequence[str], task: str
                         ) -> TeacherOutputs:
    """Read and check a teacher's outputs on the sentences whose tokens are ``words`` (``sources``: their
    ``path:line``, for messages).  ``task``: ``ner`` (tags, k-best or probabilities) or ``parse`` (trees or arc
    probabilities); a JSONL file is told from a column or CoNLL-U file by its first line starting with ``{``.

    Raises:
        CorpusError: ``path:line: problem`` for the first problem: a missing or extra sentence, other tokens,
            malformed JSON or rows, probabilities that are negative, not finite or do not sum to one.
    """
    path = Path(path)
    lines = read_utf8_lines(path)
    first = next((raw.strip() for raw in lines if raw.strip()), "")
    if first.startswith("{"):
        kind, records, numbers = _read_jsonl(path, lines, words, sources, task)
    elif task == "ner":
        kind, records, numbers = "tags", *_read_tag_columns(path, lines, words, sources)
    else:
        kind, records, numbers = "trees", *_read_trees(path, words, sources)
    if len(records) < len(words):
        k = len(records)
        raise CorpusError(path, None, f"{k} sentence(s), but the run distils {len(words)} (data.train, then each "
                          f"data.unlabeled file, in order): sentence {k + 1} ({sources[k]}) has no teacher output")
    return TeacherOutputs(str(path), kind, records, numbers, file_sha256(path))


def _check_tokens(path: Path, number: int, tokens: Any, i: int, words: Sequence[Sequence[str]],
                  sources: Sequence[str]) -> None:
    """Record ``i`` (at ``number``) is the ``i``-th sentence: there is one, with the same tokens."""
    if i >= len(words):
        raise CorpusError(path, number, f"an extra sentence: the run distils only {len(words)} (data.train, then "
                          f"each data.unlabeled file, in order)")
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise CorpusError(path, number, '"tokens" must be a list of strings')
    expected = list(words[i])
    if tokens != expected:
        if len(tokens) != len(expected):
            detail = f"{len(tokens)} tokens, the sentence has {len(expected)}"
        else:
            k = next(j for j, (a, b) in enumerate(zip(tokens, expected)) if a != b)
            detail = f"token {k + 1} is {tokens[k]!r}, the sentence's is {expected[k]!r}"
        raise CorpusError(path, number, f"not the tokens of sentence {i + 1} of the run ({sources[i]}): {detail}")


def _read_tag_columns(path: Path, lines: list[str], words, sources) -> tuple[list, list[int]]:
    """``token ... tag`` lines (tab- or space-separated), a blank line after each sentence."""
    groups: list[list[tuple[int, str, str]]] = [[]]
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            if groups[-1]:
                groups.append([])
            continue
        fields = [f.strip() for f in raw.split("\t")] if "\t" in raw else raw.split()
        if len(fields) < 2 or not fields[0] or not fields[-1]:
            raise CorpusError(path, number, f"expected a token and a tag (the last column), got {raw!r}")
        groups[-1].append((number, fields[0], fields[-1]))
    records, numbers = [], []
    for i, group in enumerate(g for g in groups if g):
        _check_tokens(path, group[0][0], [t for _, t, _ in group], i, words, sources)
        records.append(([tag for _, _, tag in group], [n for n, _, _ in group]))
        numbers.append(group[0][0])
    return records, numbers


def _read_trees(path: Path, words, sources) -> tuple[list, list[int]]:
    """A CoNLL-U file of trees (any tree: the student's support is checked by :func:`check_trees`)."""
    from structkd.data import read_conllu

    records, numbers = [], []
    for i, sentence in enumerate(read_conllu(path, multiroot=True)):
        number = sentence.word_lines[0] if sentence.word_lines else int(sentence.source.rsplit(":", 1)[-1])
        _check_tokens(path, number, list(sentence.words), i, words, sources)
        records.append((list(sentence.heads), list(sentence.deprels)))
        numbers.append(number)
    return records, numbers


def _read_jsonl(path: Path, lines: list[str], words, sources, task: str) -> tuple[str, list, list[int]]:
    """One JSON object per line (blank lines skipped); a NER file of probabilities may start with a line
    ``{"labels": [...]}`` that its records share."""
    kind, header, records, numbers = None, None, [], []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        obj = _json_object(path, number, raw)
        if "tokens" not in obj:
            if task == "ner" and set(obj) == {"labels"} and not records and header is None:
                header = _strings(path, number, obj["labels"], '"labels"')
                continue
            raise CorpusError(path, number, 'no "tokens": each line is one sentence\'s record (docs/teachers.md)')
        this = _kind_of(path, number, obj, task)
        if kind is not None and this != kind:
            raise CorpusError(path, number, f"a {this} record in {_WHAT[kind]}")
        kind = this
        _check_tokens(path, number, obj["tokens"], len(records), words, sources)
        records.append(_RECORD_READERS[kind](path, number, obj, header))
        numbers.append(number)
    if kind is None:
        raise CorpusError(path, None, "the file holds no records")
    return kind, records, numbers


def _json_object(path: Path, number: int, raw: str) -> dict:
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as error:
        raise CorpusError(path, number, f"not valid JSON ({error.msg} at column {error.colno})") from None
    if not isinstance(obj, dict):
        raise CorpusError(path, number, f"each line must be a JSON object, got {type(obj).__name__}")
    return obj


def _kind_of(path: Path, number: int, obj: dict, task: str) -> str:
    keys = {"ner": {"sequences": "kbest", "probs": "probs"}, "parse": {"heads": "arcs"}}[task]
    found = [kind for key, kind in keys.items() if key in obj]
    if len(found) != 1:
        raise CorpusError(path, number, f"a record needs exactly one of {', '.join(repr(k) for k in keys)} "
                          f"besides \"tokens\", got keys {sorted(obj)}")
    return found[0]


def _strings(path: Path, number: int, value: Any, what: str, length: int | None = None) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise CorpusError(path, number, f"{what} must be a list of non-empty strings")
    if length is not None and len(value) != length:
        raise CorpusError(path, number, f"{what} has {len(value)} entries for {length} tokens")
    return value


def _probabilities(path: Path, number: int, value: Any, tokens: list[str], width: int, what: str) -> np.ndarray:
    """``float64 [n, width]`` rows of probabilities, one per token, each checked and divided by its sum."""
    if not isinstance(value, list) or len(value) != len(tokens):
        got = len(value) if isinstance(value, list) else type(value).__name__
        raise CorpusError(path, number, f"{what} must have one row per token ({len(tokens)}), got {got}")
    for r, row in enumerate(value):
        if not isinstance(row, list) or len(row) != width:
            got = len(row) if isinstance(row, list) else type(row).__name__
            raise CorpusError(path, number, f"{what} row {r + 1} (token {tokens[r]!r}) has {got} values, not {width}")
        if any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in row):
            raise CorpusError(path, number, f"{what} row {r + 1} (token {tokens[r]!r}) holds a value that is not a "
                              f"number")
    probs = np.asarray(value, dtype=np.float64).reshape(len(tokens), width)
    for r, row in enumerate(probs):
        total = float(row.sum())
        problem = ("a value that is not finite" if not np.isfinite(row).all() else "a negative value"
                   if (row < 0).any() else f"values summing to {total:.6g}, not 1 (tolerance {TOLERANCE:g})"
                   if abs(total - 1.0) > TOLERANCE else None)
        if problem:
            raise CorpusError(path, number, f"{what} row {r + 1} (token {tokens[r]!r}) has {problem}")
    return probs / probs.sum(1, keepdims=True)


def _kbest_record(path: Path, number: int, obj: dict, header: Any) -> list[tuple[list[str], float]]:
    sequences = obj["sequences"]
    if not isinstance(sequences, list) or not sequences:
        raise CorpusError(path, number, '"sequences" must be a non-empty list of {"tags": [...], "score": s}')
    out = []
    for k, seq in enumerate(sequences, start=1):
        if not isinstance(seq, dict) or set(seq) != {"tags", "score"}:
            raise CorpusError(path, number, f'sequence {k} must be an object with "tags" and "score" only')
        score = seq["score"]
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            raise CorpusError(path, number, f"sequence {k} has the score {score!r}, not a finite number")
        out.append((_strings(path, number, seq["tags"], f'sequence {k}\'s "tags"', len(obj["tokens"])),
                    float(score)))
    return sorted(out, key=lambda pair: -pair[1])  # best first; ties keep the file's order


def _probs_record(path: Path, number: int, obj: dict, header: Any) -> tuple[list[str], np.ndarray]:
    labels = obj.get("labels", header)
    if labels is None:
        raise CorpusError(path, number, 'no "labels": give them in the record or in a first line {"labels": [...]}')
    labels = _strings(path, number, labels, '"labels"')
    if len(set(labels)) != len(labels):
        raise CorpusError(path, number, f'"labels" repeats a label: {labels}')
    return labels, _probabilities(path, number, obj["probs"], obj["tokens"], len(labels), '"probs"')


def _arcs_record(path: Path, number: int, obj: dict, header: Any) -> tuple[np.ndarray, list[str] | None]:
    tokens = obj["tokens"]
    n = len(tokens)
    probs = _probabilities(path, number, obj["heads"], tokens, n + 1, '"heads"')
    for d in range(1, n + 1):
        if probs[d - 1, d] > TOLERANCE:
            raise CorpusError(path, number, f'"heads" row {d} (token {tokens[d - 1]!r}) gives its own word '
                              f"probability {probs[d - 1, d]:.6g} of heading it")
    probs[np.arange(n), np.arange(1, n + 1)] = 0.0
    probs /= probs.sum(1, keepdims=True)
    rels = obj.get("rels")
    return probs, (None if rels is None else _strings(path, number, rels, '"rels"', n))


_RECORD_READERS = {"kbest": _kbest_record, "probs": _probs_record, "arcs": _arcs_record}


# ---------------------------------------------------------------------------------------------- checks
def check_method(outputs: TeacherOutputs, method: str) -> None:
    """Refuse a ``kd.method`` the file's kind cannot serve, naming both."""
    if method not in KIND_METHODS[outputs.kind]:
        raise ValueError(f"kd.method={method} cannot be served by kd.teacher_outputs={outputs.path}, "
                         f"{_WHAT[outputs.kind]}: it serves kd.method {' or '.join(KIND_METHODS[outputs.kind])}")


def check_labels(outputs: TeacherOutputs, known: Sequence[str], whose: str) -> None:
    """Refuse the first label (tag or relation) of the file outside ``known``, at its line."""
    allowed = set(known)
    for i, record in enumerate(outputs.records):
        for k, label in enumerate(_record_labels(outputs.kind, record)):
            if label not in allowed:
                line = record[1][k] if outputs.kind == "tags" else outputs.lines[i]
                raise CorpusError(outputs.path, line, f"unknown label {label!r}: not among {whose} labels "
                                  f"[{', '.join(known)}]")


def check_trees(outputs: TeacherOutputs, multiroot: bool, projective: bool, impossible: str) -> int:
    """Mark the teacher trees a student cannot express (several root words unless ``multiroot``, crossing arcs
    when ``projective``): they get weight 0 (``kd.impossible`` ``renormalize`` or ``ignore``: the sentence then
    has no KD loss) or are refused at their line (``error``).  Returns how many there are."""
    from structkd.structs.heads import is_tree
    from structkd.structs.heads import projective as is_projective

    outputs.inexpressible = []
    for i, (heads, _) in enumerate(outputs.records):
        tree = torch.tensor([[-1, *heads]])
        ok = bool(is_tree(tree, multiroot=multiroot)) and (not projective or bool(is_projective(tree)))
        if not ok and impossible == "error":
            raise CorpusError(outputs.path, outputs.lines[i], f"a teacher tree the student cannot express "
                              f"({'several root words' if not multiroot and heads.count(0) > 1 else 'crossing arcs'})"
                              f"; kd.impossible=renormalize or ignore gives such trees weight 0")
        outputs.inexpressible.append(not ok)
    return sum(outputs.inexpressible)


# ---------------------------------------------------------------------------------------------- cached rows
def _padded(arrays: Sequence[np.ndarray]) -> tuple[Tensor, Tensor]:
    """``log p`` of per-sentence arrays ``[n_b, W_b]`` padded into ``float64 [B, max n, max W]`` (``LOG_ZERO``
    for probability 0 and padding) and their lengths ``[B]``."""
    lens = torch.tensor([a.shape[0] for a in arrays])
    width = max(a.shape[1] for a in arrays)
    out = torch.full((len(arrays), int(lens.max()), width), LOG_ZERO, dtype=torch.float64)
    for b, a in enumerate(arrays):
        p = torch.from_numpy(a)
        out[b, :a.shape[0], :a.shape[1]] = torch.where(p > 0, p.log(), torch.full_like(p, LOG_ZERO))
    return out, lens


def _student_probs(labels: Sequence[str], probs: np.ndarray, tags: Sequence[str]) -> np.ndarray:
    """``[n, len(tags)]``: the file's columns moved to the student's tag order (0 for tags the file lacks)."""
    out = np.zeros((probs.shape[0], len(tags)))
    index = {t: k for k, t in enumerate(tags)}
    out[:, [index[label] for label in labels]] = probs
    return out


def ner_rows(outputs: TeacherOutputs, indices: Sequence[int], kd: Any, student_head: str, tags: Sequence[str]
             ) -> list[dict[str, Tensor]]:
    """The cached fields of ``kd.method`` for the sentences ``indices`` (one dict per sentence, as
    :func:`structkd.ner.distillation.compute_teacher_outputs` gives them)."""
    index = {t: k for k, t in enumerate(tags)}
    if outputs.kind in ("tags", "kbest"):
        return [_sequence_row(outputs.kind, outputs.records[i], kd, index) for i in indices]
    from structkd.kd import project
    from structkd.structs.chain import LinearChainCRF, MaxEnt

    logp, lens = _padded([_student_probs(*outputs.records[i], tags) for i in indices])
    if kd.method == "token":
        return [{"logits": logp[b, :n].clamp(min=STORED_LOG_ZERO).float()} for b, n in enumerate(lens.tolist())]
    dist = MaxEnt(logp, lens)
    if kd.temperature != 1.0 and kd.temperature_mode == "global":
        dist = dist.scaled(1.0 / kd.temperature)
    zeros = torch.zeros_like(logp)
    crf = kd.method == "structural" and student_head == "crf"
    marginals = project(dist, LinearChainCRF(zeros, lens=lens) if crf else MaxEnt(zeros, lens))
    rows = []
    for b, n in enumerate(lens.tolist()):
        row = {"unary": marginals[0][b, :n].float()}
        if crf:
            row["edges"] = marginals[1][b, :max(n - 1, 0)].float()
        rows.append(row)
    return rows


def ner_potential_rows(outputs: TeacherOutputs, indices: Sequence[int], tags: Sequence[str]) -> list[dict[str, Tensor]]:
    """The cache's rows in the potentials form (:func:`structkd.ner.distillation.potential_rows`) of per-token
    probabilities: ``emissions [n, N]``, their logarithms (a MaxEnt teacher's chain, zero transitions)."""
    from structkd.ner.distillation import potential_rows
    from structkd.structs.chain import MaxEnt

    if outputs.kind != "probs":
        raise ValueError(f"the potentials form needs per-token probabilities, not {outputs.kind} outputs")
    return potential_rows(MaxEnt(*_padded([_student_probs(*outputs.records[i], tags) for i in indices])))


def _sequence_row(kind: str, record: Any, kd: Any, index: dict[str, int]) -> dict[str, Tensor]:
    """``topk_tags [k, n]`` and ``topk_weights [k]`` of a tags or k-best record."""
    sequences = [(record[0], 0.0)] if kind == "tags" else record[:1 if kd.method == "seqlevel" else kd.top_k]
    tags = torch.tensor([[index[t] for t in seq] for seq, _ in sequences], dtype=torch.float32)
    if kd.method == "topwk":
        scale = 1.0 / kd.temperature if kd.temperature_mode == "global" else 1.0
        weights = (torch.tensor([s for _, s in sequences], dtype=torch.float64) * scale).softmax(0).float()
    else:
        weights = torch.full((len(sequences),), 1.0 / len(sequences))
    return {"topk_tags": tags, "topk_weights": weights}


def parse_rows(outputs: TeacherOutputs, indices: Sequence[int], kd: Any, spec: Any, fields: Sequence[str],
               rels: Sequence[str]) -> list[dict[str, Tensor]]:
    """The cached ``fields`` for the sentences ``indices`` of a parser student described by ``spec``
    (:class:`structkd.parse.distillation.StudentSpec`), one dict per sentence."""
    rel_index = {r: k for k, r in enumerate(rels)}
    if outputs.kind == "trees":
        return [_tree_row(outputs, i, spec, rel_index) for i in indices]
    rows = [{} for _ in indices]
    if "arcs" in fields or "sibs" in fields:
        for row, (name, value) in zip(rows, _arc_marginals(outputs, indices, kd, spec)):
            row.update(zip(name, value))
    for row, i in zip(rows, indices):
        probs, names = outputs.records[i]
        n = probs.shape[0]
        if "arc_logits" in fields:
            p = torch.from_numpy(probs)
            logits = torch.full((n + 1, n + 1), STORED_LOG_ZERO, dtype=torch.float64)
            logits[1:] = torch.where(p > 0, p.log(), logits[1:]).clamp(min=STORED_LOG_ZERO)
            row["arc_logits"] = logits.float()
        if "rels" in fields or "gold_rels" in fields:
            onehot = torch.zeros(n, len(rels))
            onehot[torch.arange(n), torch.tensor([rel_index[r] for r in names])] = 1.0
            if "rels" in fields:  # P(r | h -> d): the teacher's relation of d whatever its head
                row["rels"] = torch.cat([torch.zeros(1, n + 1, len(rels)), onehot.unsqueeze(1).expand(n, n + 1, -1)])
            if "gold_rels" in fields:
                row["gold_rels"] = onehot
    return rows


def _arc_marginals(outputs: TeacherOutputs, indices: Sequence[int], kd: Any, spec: Any
                   ) -> list[tuple[tuple[str, ...], tuple[Tensor, ...]]]:
    """Per sentence ``(("arcs", ["sibs"]), marginals)``: of the per-word head teacher restricted to the
    student's trees (a tree student; exact), or its own per-word head distributions (a sequence-labeling
    student, which scores each word's head alone), at the global temperature."""
    from structkd.kd import project
    from structkd.structs.tree import DependencyCRF, MatrixTree
    from structkd.structs.tree2o import Dependency2oCRF

    logp, lens = _padded([outputs.records[i][0] for i in indices])        # [B, L, L + 1] at [d - 1, h]
    scores = torch.cat([torch.full_like(logp[:, :1], LOG_ZERO), logp], 1)  # [B, S, S] at [d, h]
    scale = 1.0 / kd.temperature if kd.temperature_mode == "global" else 1.0
    if spec.kind == "seqlabel":
        arcs = (scores * scale).softmax(-1) * (torch.arange(scores.shape[1]) >= 1).view(1, -1, 1)
        return [(("arcs",), (arcs[b, :n + 1, :n + 1].float(),)) for b, n in enumerate(lens.tolist())]
    teacher = MatrixTree(scores, lens, multiroot=True)  # the product over the trees: restricted below
    teacher = teacher.scaled(scale) if scale != 1.0 else teacher
    zeros = torch.zeros_like(scores)
    if spec.tree == "2o":
        probe = Dependency2oCRF(zeros, zeros.new_zeros(*zeros.shape, zeros.shape[-1]), lens, spec.multiroot)
    else:
        probe = (MatrixTree if spec.tree == "nonprojective" else DependencyCRF)(zeros, lens, spec.multiroot)
    marginals = project(teacher, probe, impossible="renormalize")
    _check_mass(outputs, indices, teacher, probe)
    names = ("arcs", "sibs")[:len(marginals)]
    out = []
    for b, n in enumerate(lens.tolist()):
        parts = tuple(m[b][tuple(slice(0, n + 1) for _ in range(m.dim() - 1))].float() for m in marginals)
        out.append((names, parts))
    return out


def _check_mass(outputs: TeacherOutputs, indices: Sequence[int], teacher: Any, probe: Any) -> None:
    """Refuse a sentence whose head probabilities give no tree of the student positive probability."""
    from structkd.kd.projections import restrict_teacher

    restricted = restrict_teacher(teacher, probe)
    empty = restricted.log_partition.detach() < LOG_ZERO / 2
    if bool(empty.any()):
        i = indices[int(empty.nonzero()[0])]
        raise CorpusError(outputs.path, outputs.lines[i], "the head probabilities give no tree the student can "
                          "express a positive probability (each such tree uses a head of probability 0)")


def _tree_row(outputs: TeacherOutputs, i: int, spec: Any, rel_index: dict[str, int]) -> dict[str, Tensor]:
    """``topk_heads``/``topk_rels`` (a biaffine student) or ``topk_labels`` (a sequence-labeling student,
    ``(head - word, relation)`` label indices, -1 outside its inventory) ``[1, n]`` and ``topk_weights [1]``
    (0 for a tree the student cannot express, :func:`check_trees`)."""
    heads, names = outputs.records[i]
    rels = [rel_index[r] for r in names]
    weight = torch.tensor([0.0 if outputs.inexpressible and outputs.inexpressible[i] else 1.0])
    if spec.kind == "seqlabel":
        labels = {tuple(label): k for k, label in enumerate(spec.labels)}
        row = [labels.get((h - d, r), -1) for d, (h, r) in enumerate(zip(heads, rels), start=1)]
        return {"topk_labels": torch.tensor([row], dtype=torch.float32), "topk_weights": weight}
    return {"topk_heads": torch.tensor([heads], dtype=torch.float32),
            "topk_rels": torch.tensor([rels], dtype=torch.float32), "topk_weights": weight}
