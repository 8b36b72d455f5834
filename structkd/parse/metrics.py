"""Attachment scores of predicted dependency trees against gold CoNLL-U trees.

Two conventions are reported side by side:

* **all words** (the UD / CoNLL 2018 convention): every word counts, punctuation included;
* **without punctuation** (the PTB convention of Chen and Manning 2014, Dozat and Manning 2017, ...): words
  whose *gold* UPOS is ``PUNCT`` or ``SYM`` are left out (in UD, ``SYM`` marks symbols such as ``$`` and ``%``
  that the PTB tags as punctuation-like).

Relations are compared as written, subtypes included (``nmod:poss`` differs from ``nmod``); pass
``subtypes=False`` to compare only the universal part (the CoNLL 2018 shared task's LAS).

Complete match: a sentence whose every counted word has the right head (unlabeled, ``ucm``) or head and
relation (labeled, ``lcm``); a sentence without counted words is a match.
"""

from __future__ import annotations

from collections.abc import Sequence

PUNCT_UPOS = frozenset({"PUNCT", "SYM"})


def _rel(name: str, subtypes: bool) -> str:
    return name if subtypes else name.split(":", 1)[0]


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


def attachment_scores(gold, heads: Sequence[Sequence[int]], rels: Sequence[Sequence[str]],
                      punct_upos: frozenset[str] | set[str] = PUNCT_UPOS, subtypes: bool = True) -> dict:
    """UAS, LAS and complete-match rates, with and without punctuation, and per-relation scores.

    Args:
        gold: sentences with ``heads``, ``deprels`` and ``upos`` (:class:`structkd.data.ParsedSentence`).
        heads: predicted heads, ``heads[b][i]`` for word ``i + 1`` (0 = root).
        rels: predicted relation names, same layout.
        punct_upos: gold UPOS tags excluded from the ``*_nopunct`` scores.
        subtypes: compare relations with their subtypes.

    Returns:
        ``{"uas", "las", "ucm", "lcm", "uas_nopunct", "las_nopunct", "ucm_nopunct", "lcm_nopunct", "words",
        "words_nopunct", "sentences", "per_relation"}``; scores are fractions in ``[0, 1]``.  ``per_relation``
        maps each gold or predicted relation to ``{"support" (gold words), "predicted", "uas" and "las"
        (among its gold words: right head; right head and relation, i.e. labeled recall), "precision" (right
        head among the words predicted with it), "f1"}``.
    """
    if len(heads) != len(gold) or len(rels) != len(gold):
        raise ValueError(f"{len(heads)} head rows and {len(rels)} relation rows for {len(gold)} sentences")
    totals = dict.fromkeys(("words", "uas", "las", "words_np", "uas_np", "las_np", "ucm", "lcm", "ucm_np",
                            "lcm_np"), 0)
    per: dict[str, dict[str, int]] = {}
    for b, sentence in enumerate(gold):
        _count_sentence(sentence, heads[b], rels[b], b, punct_upos, subtypes, totals, per)
    sentences = len(gold)
    return {
        "uas": _ratio(totals["uas"], totals["words"]), "las": _ratio(totals["las"], totals["words"]),
        "ucm": _ratio(totals["ucm"], sentences), "lcm": _ratio(totals["lcm"], sentences),
        "uas_nopunct": _ratio(totals["uas_np"], totals["words_np"]),
        "las_nopunct": _ratio(totals["las_np"], totals["words_np"]),
        "ucm_nopunct": _ratio(totals["ucm_np"], sentences), "lcm_nopunct": _ratio(totals["lcm_np"], sentences),
        "words": totals["words"], "words_nopunct": totals["words_np"], "sentences": sentences,
        "per_relation": _per_relation_scores(per),
    }


def _count_sentence(sentence, heads: Sequence[int], rels: Sequence[str], index: int, punct_upos, subtypes: bool,
                    totals: dict[str, int], per: dict[str, dict[str, int]]) -> None:
    """Add one sentence's word and complete-match counts to ``totals`` and its per-relation counts to ``per``
    (``index``: its position, named in the error when the prediction's length differs)."""
    n = len(sentence.heads)
    if len(heads) != n or len(rels) != n:
        raise ValueError(f"{getattr(sentence, 'source', '') or f'sentence {index}'}: {len(heads)} predicted "
                         f"heads and {len(rels)} relations for {n} words")
    whole = {"u": True, "l": True, "u_np": True, "l_np": True}
    for i in range(n):
        gold_rel, pred_rel = _rel(sentence.deprels[i], subtypes), _rel(rels[i], subtypes)
        head_ok = int(heads[i]) == int(sentence.heads[i])
        label_ok = head_ok and gold_rel == pred_rel
        suffixes = ("", "_np") if sentence.upos[i] not in punct_upos else ("",)
        for suffix in suffixes:
            totals["words" + suffix] += 1
            totals["uas" + suffix] += head_ok
            totals["las" + suffix] += label_ok
            whole["u" + suffix] &= head_ok
            whole["l" + suffix] &= label_ok
        g = per.setdefault(gold_rel, dict.fromkeys(_RELATION_COUNTS, 0))
        p = per.setdefault(pred_rel, dict.fromkeys(_RELATION_COUNTS, 0))
        g["support"] += 1
        g["head"] += head_ok
        g["labeled"] += label_ok
        p["predicted"] += 1
        p["correct_pred"] += label_ok
    for key, flag in (("ucm", "u"), ("lcm", "l"), ("ucm_np", "u_np"), ("lcm_np", "l_np")):
        totals[key] += whole[flag]


_RELATION_COUNTS = ("support", "predicted", "head", "labeled", "correct_pred")


def _per_relation_scores(per: dict[str, dict[str, int]]) -> dict[str, dict]:
    """Each relation's support, predictions, UAS, LAS (labeled recall), precision and F1, by name."""
    scores = {}
    for name in sorted(per):
        r = per[name]
        recall, precision = _ratio(r["labeled"], r["support"]), _ratio(r["correct_pred"], r["predicted"])
        scores[name] = {"support": r["support"], "predicted": r["predicted"],
                        "uas": _ratio(r["head"], r["support"]), "las": recall, "precision": precision,
                        "f1": _ratio(2 * precision * recall, precision + recall) if precision + recall else 0.0}
    return scores


def format_scores(result: dict) -> str:
    """Two summary lines (all words; without punctuation) and the per-relation table of a result of
    :func:`attachment_scores` (plus ``sentences_per_second`` when present)."""
    speed = f", {result['sentences_per_second']:.0f} sentences/s" if "sentences_per_second" in result else ""
    lines = [
        f"all words:     UAS {100 * result['uas']:.2f}  LAS {100 * result['las']:.2f}  UCM {100 * result['ucm']:.2f}"
        f"  LCM {100 * result['lcm']:.2f}  ({result['words']} words, {result['sentences']} sentences{speed})",
        f"without punct: UAS {100 * result['uas_nopunct']:.2f}  LAS {100 * result['las_nopunct']:.2f}  "
        f"UCM {100 * result['ucm_nopunct']:.2f}  LCM {100 * result['lcm_nopunct']:.2f}  "
        f"({result['words_nopunct']} words; gold UPOS PUNCT and SYM excluded)",
        f"{'relation':16} {'support':>7} {'UAS':>7} {'LAS':>7} {'prec':>7} {'F1':>7}",
    ]
    rows = sorted(result.get("per_relation", {}).items(), key=lambda kv: (-kv[1]["support"], kv[0]))
    for name, r in rows:
        lines.append(f"{name:16} {r['support']:7d} {100 * r['uas']:7.2f} {100 * r['las']:7.2f} "
                     f"{100 * r['precision']:7.2f} {100 * r['f1']:7.2f}")
    return "\n".join(lines)
