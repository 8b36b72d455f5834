"""Dependency parsing as sequence labeling (Strzyz et al. 2019): :class:`SeqLabelingParser` tags each word with
a relative head offset joined with its relation and returns a :class:`~structkd.structs.chain.MaxEnt` over those
labels (:func:`build_labels`), the student of "tree teacher to sequence labeling" structural KD
(:func:`structkd.kd.head_offset_marginals`); its trees are decoded from the labels by Chu-Liu-Edmonds, Eisner or
tree repair.  Encoders, vocabularies, tree tensors and saving are those of :mod:`structkd.models.parsers`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from structkd.models.parsers import (
    ParserEncoder,
    ParserOutput,
    has_tree,
    heads_and_rels,
    parser_builder,
    sentence_words,
    tree_lists,
)
from structkd.models.serialization import register_model
from structkd.models.transformer import SubwordEncoder
from structkd.models.vocab import TaggerVocab
from structkd.numerics import LOG_ZERO
from structkd.runtime.decoding import repair_tree  # numpy, shared with the torch-free runtime
from structkd.structs.base import length_mask
from structkd.structs.chain import MaxEnt
from structkd.structs.heads import is_tree, projective
from structkd.structs.tree import DependencyCRF, MatrixTree, arc_mask

Tensor = torch.Tensor
DECODERS = ("mst", "eisner", "repair")

def build_labels(sentences, rels: Sequence[str]) -> list[tuple[int, int]]:
    """The label inventory of parsing as sequence labeling: the sorted ``(head - dependent, relation index)``
    pairs of the training trees (a word attached to the root has offset ``-dependent``), as
    :func:`structkd.kd.head_offset_marginals` reads them."""
    index = {r: n for n, r in enumerate(rels)}
    found = set()
    for s in sentences:
        for d, (h, r) in enumerate(zip(s.heads, s.deprels), start=1):
            if r not in index:
                raise ValueError(f"{getattr(s, 'source', '')}: relation {r!r} is not in the inventory")
            found.add((h - d, index[r]))
    return sorted(found)


class SeqLabelingParser(nn.Module):
    """Dependency parsing as sequence labeling: each word is tagged with ``(head - index, relation)``.

    Args:
        encoder: ``"bilstm"`` or a transformer, as for :class:`BiaffineParser`.
        rels: relation names.
        labels: the label inventory, ``(offset, relation index)`` pairs (:func:`build_labels`); an offset
            ``-index`` attaches the word to the root.
        n_words, n_chars, encoder_options, vocab: as for :class:`BiaffineParser`.
        dropout: dropout (transformer features).

    ``forward`` returns a :class:`MaxEnt` over the labels (``[batch_size, seq_len, n_labels]``, position ``i`` is
    word ``i + 1``); labels whose head falls outside the sentence get :data:`LOG_ZERO`.  Its structural KD
    from a tree teacher is ``structural_kd_loss(teacher, student, offsets=model.offsets, rel_probs=...)``.
    """

    def __init__(self, encoder: str | Path | dict | SubwordEncoder = "bilstm", rels: Sequence[str] = (),
                 labels: Sequence[Sequence[int]] = (), n_words: int | None = None, n_chars: int | None = None,
                 dropout: float = 0.33, encoder_options: dict | None = None, vocab: TaggerVocab | None = None):
        super().__init__()
        if not rels or not labels:
            raise ValueError("a sequence-labeling parser needs its relations and labels (build_labels)")
        self.encoder = ParserEncoder.for_parser(encoder, n_words, n_chars, encoder_options, dropout, vocab)
        self.vocab = vocab
        self.rels = list(rels)
        self.labels = [(int(o), int(r)) for o, r in labels]
        if any(o == 0 or not 0 <= r < len(self.rels) for o, r in self.labels) or len(set(self.labels)) != len(labels):
            raise ValueError("labels must be distinct (offset != 0, relation index in range) pairs")
        self._options = {"dropout": dropout}
        self.scorer = nn.Linear(self.encoder.output_dim, len(self.labels))
        self.register_buffer("label_offsets", torch.tensor([o for o, _ in self.labels]), persistent=False)
        self.register_buffer("label_rels", torch.tensor([r for _, r in self.labels]), persistent=False)
        distinct = sorted({o for o, _ in self.labels})
        group = {o: i for i, o in enumerate(distinct)}
        self.register_buffer("distinct_offsets", torch.tensor(distinct), persistent=False)
        self.register_buffer("label_groups", torch.tensor([group[o] for o, _ in self.labels]), persistent=False)
        # the labels of each offset, by index (-1 pads): the best label at a given head is one small gather
        members = [[k for k, (o, _) in enumerate(self.labels) if o == offset] for offset in distinct]
        width = max((len(m) for m in members), default=1)
        self.register_buffer("group_labels", torch.tensor([m + [-1] * (width - len(m)) for m in members],
                                                          dtype=torch.long).view(len(members), width),
                             persistent=False)
        # offset o (|o| <= span) -> its group at o + span, -1 where no label has that offset
        span = max((abs(o) for o in distinct), default=0)
        offset_groups = torch.full((2 * span + 1,), -1, dtype=torch.long)
        offset_groups[torch.tensor(distinct, dtype=torch.long) + span] = torch.arange(len(distinct))
        self.register_buffer("offset_groups", offset_groups, persistent=False)

    @property
    def offsets(self) -> list[tuple[int, int]]:
        """The labels, as ``offsets=`` of :func:`structkd.kd.structural_kd_loss`."""
        return list(self.labels)

    @property
    def config(self) -> dict:
        """Constructor arguments (JSON), as saved by :func:`save_parser`."""
        return {**self.encoder.config, "rels": self.rels, "labels": [list(x) for x in self.labels], **self._options}

    def label_mask(self, lens: Tensor, seq_len: int) -> Tensor:
        """``BoolTensor [batch_size, seq_len, n_labels]``: labels whose head lies in the sentence (all labels of a
        word that has none, so that every word keeps a proper distribution)."""
        word = torch.arange(1, seq_len + 1, device=lens.device).view(1, -1, 1)
        head = word + self.label_offsets.to(lens.device).view(1, 1, -1)
        valid = (head >= 0) & (head <= lens.view(-1, 1, 1))
        return valid | ~valid.any(-1, keepdim=True)

    def forward(self, batch) -> MaxEnt:
        features, lens = self.encoder(batch, self.vocab)
        logits = self.scorer(features)
        logits = logits.masked_fill(~self.label_mask(lens, logits.shape[1]), LOG_ZERO)
        return MaxEnt(logits, lens)

    def gold(self, sentences, device: torch.device | str | None = None) -> Tensor:
        """Gold label indices ``LongTensor [batch_size, seq_len]`` (-1 at padding); a label missing from the
        inventory raises ``ValueError`` naming the sentence."""
        heads, rels = heads_and_rels(sentences, self.rels, None)
        index = {label: k for k, label in enumerate(self.labels)}
        out = torch.full((heads.shape[0], max(heads.shape[1] - 1, 0)), -1, dtype=torch.long)
        for b, s in enumerate(sentences):
            for d in range(1, len(s.heads) + 1):
                label = (int(heads[b, d]) - d, int(rels[b, d]))
                if label not in index:
                    raise ValueError(f"{getattr(s, 'source', f'sentence {b}')}: word {d} has label {label} "
                                     f"(offset, relation) outside the parser's inventory")
                out[b, d - 1] = index[label]
        return out.to(device)

    @staticmethod
    def loss(dist: MaxEnt, labels: Tensor) -> Tensor:
        """Per-sentence NLL ``[batch_size]`` of gold labels ``[batch_size, seq_len]``."""
        labels = labels.to(dist.device)
        return -dist.log_prob(torch.where(length_mask(dist.lens, labels.shape[1]), labels,
                                          torch.full_like(labels, -1)))

    def arc_scores(self, dist: MaxEnt) -> tuple[Tensor, Tensor]:
        """Label-derived arc scores and relations.

        Returns:
            ``scores [batch_size, seq_len + 1, seq_len + 1]``: ``scores[b, d, h]`` the best log-probability of
            a label of word ``d`` pointing at ``h`` (arcs no label expresses score below every expressible arc
            of the sentence); ``rels [batch_size, seq_len + 1, seq_len + 1]`` the relation of that label (the
            lowest label index among equally probable ones; the word's most probable relation, summed over
            offsets, where no label expresses the arc).
        """
        scores, logp = self._label_arcs(dist)
        batch_size, size = scores.shape[:2]
        every_head = torch.arange(size, device=scores.device).expand(batch_size, size, size)
        rels = self._relations_at(logp, every_head)
        fallback = self._fallback_relations(logp).unsqueeze(-1).expand_as(rels)
        return scores, torch.where(rels < 0, fallback, rels)

    def _label_arcs(self, dist: MaxEnt) -> tuple[Tensor, Tensor]:
        """The ``scores`` of :meth:`arc_scores` and the labels' log-probabilities ``[batch_size, seq_len,
        n_labels]``."""
        logp = dist.potentials[0].log_softmax(-1).detach()
        batch_size, seq_len, _ = logp.shape
        size = seq_len + 1
        # per word and offset, the log-probability of the best label with that offset
        groups = self.label_groups.to(logp.device).expand(batch_size, seq_len, -1)
        n_offsets = self.distinct_offsets.shape[0]
        values = logp.new_full((batch_size, seq_len, n_offsets), LOG_ZERO).scatter_reduce(-1, groups, logp, "amax")
        # word d (position d - 1) with offset o points at h = d + o
        words = torch.arange(1, size, device=logp.device).unsqueeze(1)
        heads = words + self.distinct_offsets.to(logp.device)                             # [L, n_offsets]
        keep = (heads >= 0) & (heads <= seq_len)
        d, h = words.expand_as(heads)[keep], heads[keep]
        scores = logp.new_full((batch_size, size, size), LOG_ZERO)
        scores[:, d, h] = values[:, keep]
        mask = arc_mask(dist.lens, size)
        expressible = mask & (scores > LOG_ZERO / 2)
        lowest = torch.where(expressible, scores, torch.full_like(scores, float("inf"))).amin((1, 2))
        floor = torch.where(torch.isfinite(lowest), lowest - 10.0, torch.zeros_like(lowest)).view(-1, 1, 1)
        return torch.where(mask & ~expressible, floor, scores), logp

    def _relations_at(self, logp: Tensor, heads: Tensor) -> Tensor:
        """The relation of the best label (lowest index among ties) of each word pointing at the given heads.

        Args:
            logp: ``[batch_size, seq_len, n_labels]`` the labels' log-probabilities (word ``d`` at ``d - 1``).
            heads: ``LongTensor [batch_size, seq_len + 1]`` or ``[batch_size, seq_len + 1, k]``: head(s) of word
                ``d`` at ``[:, d]`` (position 0 is the root; -1 for none).

        Returns:
            ``LongTensor`` shaped like ``heads``: relation indices, -1 where no label expresses the arc, at
            position 0 and where the head is -1.
        """
        single = heads.dim() == 2
        heads = heads.unsqueeze(-1) if single else heads
        batch_size, size, k = heads.shape
        table = self.offset_groups.to(heads.device)
        span = (table.numel() - 1) // 2
        words = torch.arange(size, device=heads.device).view(1, -1, 1)
        offsets = heads - words
        inside = (heads >= 0) & (words > 0) & (offsets.abs() <= span)
        group = torch.where(inside, table[(offsets + span).clamp(0, 2 * span)], -1)      # [B, S + 1, k]
        members = self.group_labels.to(heads.device)[group.clamp(min=0)]                 # [B, S + 1, k, width]
        rows = torch.cat([logp.new_zeros(batch_size, 1, logp.shape[-1]), logp], 1)       # row 0: the root
        values = rows.gather(-1, members.clamp(min=0).flatten(2)).view_as(members)
        best = values.masked_fill(members < 0, float("-inf")).argmax(-1, keepdim=True)   # first of equal maxima
        labels = members.gather(-1, best).squeeze(-1)
        rels = torch.where(group >= 0, self.label_rels.to(heads.device)[labels.clamp(min=0)], -1)
        return rels.squeeze(-1) if single else rels

    def _fallback_relations(self, logp: Tensor) -> Tensor:
        """Each word's most probable relation summed over offsets, ``[batch_size, seq_len + 1]`` (position 0 the
        root): the relation of an arc that no label expresses."""
        batch_size, seq_len, _ = logp.shape
        rel_mass = logp.new_zeros(batch_size, seq_len, len(self.rels))
        # labels far below the word's best (and the LOG_ZERO of impossible ones) weigh nothing next to it: clamped
        # before exp, which is very slow on arguments whose result is subnormal
        rel_mass.index_add_(2, self.label_rels.to(logp.device), logp.clamp(min=-80.0).exp())
        return torch.cat([rel_mass.new_zeros(batch_size, 1, len(self.rels)), rel_mass], 1).argmax(-1)

    # the interface both parsers share (see BiaffineParser.read)
    kind = "seqlabel"
    tree = None
    multiroot = False

    def read(self, sentences) -> ParserOutput:
        """The label distribution of sentences (no relation logits: relations are in the labels)."""
        return ParserOutput(self(list(sentences)), None)

    def sentence_loss(self, out: ParserOutput, sentences) -> Tensor:
        """Per-sentence NLL ``[batch_size]`` of the gold labels; a sentence without a tree is scored on its
        best labels, for the caller to zero."""
        labels = out.dist.argmax.clone()
        rows = [b for b, s in enumerate(sentences) if has_tree(s)]
        if rows:
            gold = self.gold([sentences[b] for b in rows], out.dist.device)
            labels[rows, :gold.shape[1]] = gold
        return self.loss(out.dist, labels)

    def predict_trees(self, out: ParserOutput, decoder: str = "mst") -> tuple[Tensor, Tensor]:
        """:meth:`decode` with ``decoder``."""
        return self.decode(out.dist, decoder)

    def parse_batch(self, sentences, decoder: str = "mst") -> tuple[Tensor, Tensor]:
        return self.predict_trees(self.read(sentences), decoder)

    def decode(self, dist: MaxEnt, method: str = "mst") -> tuple[Tensor, Tensor]:
        """A valid single-root tree per sentence and a relation per arc: ``(heads, rels)``, ``LongTensor
        [batch_size, seq_len + 1]`` (-1 at 0 and padding).

        ``method="mst"``: the maximum spanning tree (Chu-Liu-Edmonds, single root) over the label-derived arc
        scores of :meth:`arc_scores`; ``"eisner"``: the best *projective* single-root tree over those scores
        (Eisner's algorithm, batched: for projective treebanks, and faster than Chu-Liu-Edmonds' loop over
        sentences); ``"repair"``: the best label of each word, turned into a tree by :func:`repair_tree` with
        those scores.  All three return the labels' own tree when it is a valid single-root tree (``eisner``:
        and projective), which is then also the best tree of the label-derived scores."""
        if method not in DECODERS:
            raise ValueError(f"method must be one of {', '.join(DECODERS)}, got {method!r}")
        # the labels' own trees first (vectorized); only the other sentences need arc scores and a decoder
        best = dist.argmax                                                        # [B, L], -1 at padding
        positions = torch.arange(1, best.shape[1] + 1, device=best.device)
        offsets, label_rels = self.label_offsets.to(best.device), self.label_rels.to(best.device)
        none = torch.full_like(best[:, :1], -1)
        heads = torch.cat([none, torch.where(best >= 0, positions + offsets[best.clamp(min=0)], -1)], 1)
        rels = torch.cat([none, torch.where(best >= 0, label_rels[best.clamp(min=0)], -1)], 1)
        valid = is_tree(heads, dist.lens, multiroot=False)
        if method == "eisner":
            valid &= projective(heads, dist.lens)
        todo = (~valid).nonzero().squeeze(1)
        if todo.numel():
            rest = MaxEnt(dist.potentials[0].index_select(0, todo), dist.lens.index_select(0, todo))
            heads[todo], rels[todo] = self._decode_trees(rest, method)
        return heads, rels

    def _decode_trees(self, dist: MaxEnt, method: str) -> tuple[Tensor, Tensor]:
        """:meth:`decode` for sentences whose labels do not make a single-root tree."""
        scores, logp = self._label_arcs(dist)
        lens = dist.lens
        if method == "mst":
            heads = MatrixTree(scores, lens, multiroot=False).argmax
        elif method == "eisner":
            heads = DependencyCRF(scores, lens, multiroot=False).argmax
        else:
            best = dist.argmax.cpu()
            offsets = self.label_offsets.cpu()
            numpy_scores = scores.double().cpu().numpy()
            heads = torch.full((dist.batch_size, scores.shape[1]), -1, dtype=torch.long)
            for b, n in enumerate(lens.tolist()):
                proposed = (torch.arange(1, n + 1) + offsets[best[b, :n]]).tolist()
                heads[b, 1:n + 1] = torch.tensor(repair_tree(proposed, numpy_scores[b, :n + 1, :n + 1]),
                                                 dtype=torch.long)
            heads = heads.to(scores.device)
        rels = self._relations_at(logp, heads)
        unexpressed = (rels < 0) & (heads >= 0)
        if bool(unexpressed.any()):  # rare once trained: the fallback costs a pass over every label
            rels = torch.where(unexpressed, self._fallback_relations(logp), rels)
        return heads, torch.where(heads >= 0, rels, torch.full_like(rels, -1))

    @torch.no_grad()
    def predict(self, sentences, method: str = "mst") -> tuple[list[list[int]], list[list[str]]]:
        """Heads and relation names of each sentence (no gradient; call ``eval()`` first)."""
        heads, rels = self.decode(self(sentences), method)
        return tree_lists(heads, rels, self.rels, [len(sentence_words(s)) for s in sentences])


register_model(SeqLabelingParser, parser_builder(SeqLabelingParser))

__all__ = ["DECODERS", "SeqLabelingParser", "build_labels"]
