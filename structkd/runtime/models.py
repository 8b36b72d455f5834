"""Exported models at run time: ONNX Runtime computes the scores, numpy decodes them.

:func:`load` reads a directory written by :func:`structkd.export.export_model` and returns a :class:`Tagger` or
a :class:`Parser`, called like ``structkd.load``'s: on a string (one result) or a list of strings and token lists
(one result each), tokenized with the same tokenizer, returning the same
:class:`~structkd.inference.results.Document` / :class:`~structkd.inference.results.Parse` objects with the same
offsets and exact marginal scores (:mod:`structkd.runtime.marginals`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from structkd.runtime import decoding, marginals
from structkd.runtime.documents import (
    BatchedPredictor,
    ParserOutput,
    Prepared,
    TaggerOutput,
    document_of,
    parse_of,
    parser_pieces,
    tagger_pieces,
)
from structkd.runtime.files import read_json_in
from structkd.runtime.inputs import SubwordInputs, WordVocab
from structkd.runtime.results import Document, Entity, Parse, Word
from structkd.runtime.spans import scheme_of, spans

RUNTIME_NAME = "runtime.json"
GRAPH_NAME = "model.onnx"
ARRAYS_NAME = "arrays.npz"
VOCAB_NAME = "vocab.json"
TOKENIZER_NAME = "tokenizer.json"
FORMAT_VERSION = 1


def _read_document(directory: Path) -> dict:
    path = directory / RUNTIME_NAME
    document = read_json_in(directory, RUNTIME_NAME, "structkd export", "exported model")
    if not isinstance(document, dict) or document.get("format") != "structkd-runtime":
        raise ValueError(f"{path}: not a structkd exported model (expected 'format': 'structkd-runtime')")
    if document.get("version") != FORMAT_VERSION:
        raise ValueError(f"{path}: format version {document.get('version')!r} is not supported")
    for name in (GRAPH_NAME, ARRAYS_NAME):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory / name}: missing")
    return document


class ExportedModel(BatchedPredictor):
    """What :class:`Tagger` and :class:`Parser` share: the tokenizer, the inputs, the ONNX session; inputs,
    pieces, batches and order as ``structkd.load``'s predictors (:class:`~structkd.runtime.documents.BatchedPredictor`).

    Args:
        directory: an exported model directory.
        threads: ONNX Runtime intra-op threads (``None``: its default).
        batch_size, max_batch_words: batch limits in sentences and padded words.
        tokenizer: a :mod:`structkd.text` tokenizer name; default the one in ``runtime.json`` (the model's
            ``inference.json`` at export), else :func:`structkd.text.default_tokenizer`.
        sentences: split string inputs into sentences.
        max_words: the longest sentence read whole (a tagger reads longer ones in pieces, a parser refuses them).
    """

    default_max_words = 1000

    def __init__(self, directory: str | Path, threads: int | None = None, batch_size: int = 64,
                 tokenizer: str | None = None, sentences: bool = False, max_words: int | None = None,
                 max_batch_words: int = 4096):
        import onnxruntime

        self.directory = Path(directory)
        self.meta = _read_document(self.directory)
        chosen = _tokenizer(tokenizer, self.meta.get("tokenizer"), self.directory / RUNTIME_NAME)
        super().__init__(chosen, sentences, self.default_max_words if max_words is None else max_words, batch_size,
                         max_batch_words)
        options = onnxruntime.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(str(self.directory / GRAPH_NAME), options,
                                                    providers=["CPUExecutionProvider"])
        with np.load(self.directory / ARRAYS_NAME) as arrays:
            self.arrays = {k: arrays[k] for k in arrays.files}
        if "rel_weight" in self.arrays:  # [i, r, j] for one matrix product per word
            self.rel_weight = self.arrays["rel_weight"].transpose(1, 0, 2).reshape(
                self.arrays["rel_weight"].shape[1], -1)
        if self.meta["encoder"] == "bilstm":
            self.inputs = WordVocab.load(self.directory / VOCAB_NAME, self.meta.get("max_word_len", 20))
        else:
            self.inputs = SubwordInputs(self.directory / TOKENIZER_NAME, self.meta["subwords"])

    def scores(self, sentences: Sequence[Sequence[str]]) -> tuple[list[np.ndarray], np.ndarray]:
        """The graph's outputs for one batch of (non-empty) token lists, and ``lens [batch_size]``."""
        feed = self.inputs.encode(sentences)
        names = [i.name for i in self.session.get_inputs()]
        outputs = self.session.run(None, {k: feed[k] for k in names})
        return outputs, np.array([len(s) for s in sentences], dtype=np.int64)


def _tokenizer(given: str | None, saved: str | None, path: Path) -> str:
    """The tokenizer name to use (``given``, else ``saved``, else the default), its library checked now."""
    from structkd.text import check_tokenizer, default_tokenizer, tokenize

    if given is not None:
        chosen = check_tokenizer(given)
    elif saved is not None:
        try:
            chosen = check_tokenizer(saved)
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from error
    else:
        chosen = default_tokenizer()
    tokenize("", chosen)  # a missing library is named now, before the graph is read
    return chosen


class Tagger(ExportedModel):
    """An exported tagger (CRF or MaxEnt head): ``tagger("Emma lives in Paris")`` ->
    :class:`~structkd.inference.results.Document` (tokens with offsets, tags, entities with their exact marginal
    probability), as ``structkd.load``'s :class:`~structkd.inference.predictors.Tagger`."""

    @property
    def tags(self) -> list[str]:
        return self.meta["tags"]

    @property
    def scheme(self) -> str:
        """The saved tag scheme, else BIOES if the tags have ``E-``/``S-`` prefixes, else BIO (the spans read
        from a tag sequence are the same under every scheme that has its prefixes)."""
        return scheme_of(self.tags, self.meta.get("scheme"))

    def _pieces(self, prepared: Prepared, where: str) -> list[tuple[int, int]]:
        return tagger_pieces(prepared, self.max_words)

    def _result(self, prepared: Prepared, outputs: list) -> Document:
        return document_of(prepared, outputs)

    def _run(self, batch: list[list[str]]) -> list[TaggerOutput]:
        (emissions,), lens = self.scores(batch)
        return [self._tag(emissions[b, :n]) for b, n in enumerate(lens.tolist())]

    def _tag(self, emissions: np.ndarray) -> TaggerOutput:
        """Tags and entities ``(start, end_inclusive, label, score)`` of one sentence's emissions ``[n, n_tags]``."""
        chain, probs = None, None
        if self.meta["head"] == "crf":
            a = self.arrays
            chain = decoding.chain_potentials(emissions, a["transitions"], a["start"], a["end"], a.get("allowed"),
                                              a.get("allowed_start"), a.get("allowed_end"))
            row = decoding.viterbi_path(*chain)
        else:
            row = emissions.argmax(-1).tolist()
            probs = marginals.softmax(emissions)
        tags = [self.tags[t] for t in row]
        found = spans(tags, self.scheme)
        scores = marginals.entity_probabilities(found, self.tags, len(tags), chain=chain, probs=probs)
        return tags, [(i, j, kind, score) for (i, j, kind), score in zip(found, scores)]


class Parser(ExportedModel):
    """An exported parser (biaffine or sequence labeling): ``parser("Emma sleeps")`` ->
    :class:`~structkd.inference.results.Parse` (per word: head, 0 for the root, relation, the head's marginal
    probability and the relation's probability given the head), as ``structkd.load``'s
    :class:`~structkd.inference.predictors.Parser`."""

    default_max_words = 500

    def _pieces(self, prepared: Prepared, where: str) -> list[tuple[int, int]]:
        return parser_pieces(prepared, self.max_words, where)

    def _result(self, prepared: Prepared, outputs: list) -> Parse:
        return parse_of(prepared, outputs)

    def _run(self, batch: list[list[str]]) -> list[ParserOutput]:
        outputs, lens = self.scores(batch)
        return self._biaffine(outputs, lens) if self.meta["kind"] == "biaffine" else self._labels(outputs[0], lens)

    def _biaffine(self, outputs: list[np.ndarray], lens: np.ndarray) -> list[ParserOutput]:
        """Eisner / Chu-Liu-Edmonds heads (single root, as ``BiaffineParser.parse``) with their arc marginals under
        the model's tree distribution, and each arc's best relation with its softmax probability."""
        arcs, dep, head = outputs
        decoder = decoding.eisner if self.meta["tree"] == "projective" else decoding.mst
        heads = decoder(arcs, lens, False)
        chosen = np.take_along_axis(head, np.maximum(heads, 0)[..., None], 1).astype(np.float64)
        n_rels = len(self.meta["rels"])
        projected = (dep.astype(np.float64) @ self.rel_weight).reshape(*dep.shape[:2], n_rels, -1)  # [B, S, R, h+1]
        rel_probs = marginals.softmax(np.einsum("bdrj,bdj->bdr", projected, chosen))          # [B, S, R]
        out = []
        for b, n in enumerate(lens.tolist()):
            words = np.arange(1, n + 1)
            head_p = marginals.head_probabilities(arcs[b, :n + 1, :n + 1], heads[b, words], self.meta["tree"],
                                                  bool(self.meta.get("multiroot")))
            rels = rel_probs[b, words].argmax(-1)
            out.append((heads[b, words].tolist(), [self.meta["rels"][r] for r in rels.tolist()], head_p.tolist(),
                        rel_probs[b, words, rels].tolist()))
        return out

    def _labels(self, logits: np.ndarray, lens: np.ndarray) -> list[ParserOutput]:
        """Sequence-labeling heads and relations (:func:`~structkd.runtime.seqlabel.decode_labels`) with the summed
        marginals of the labels that point at each head, and the relation's share of them."""
        from structkd.runtime.seqlabel import decode_labels

        offsets, label_rels = self.arrays["label_offsets"], self.arrays["label_rels"]
        heads, rels = decode_labels(logits, lens, offsets, label_rels, len(self.meta["rels"]), self.meta["decoder"])
        out = []
        for b, n in enumerate(lens.tolist()):
            probs = marginals.softmax(logits[b, :n])
            h, r = heads[b, 1:n + 1], rels[b, 1:n + 1]
            head_p = marginals.label_head_probabilities(probs, offsets, h)
            rel_p = marginals.label_rel_probabilities(probs, offsets, label_rels, h, r, head_p)
            out.append((h.tolist(), [self.meta["rels"][x] for x in r.tolist()], head_p.tolist(), rel_p.tolist()))
        return out


def load(path: str | Path, threads: int | None = None, batch_size: int = 64, tokenizer: str | None = None,
         sentences: bool = False, max_words: int | None = None, max_batch_words: int = 4096) -> Tagger | Parser:
    """A :class:`Tagger` or :class:`Parser` from a directory written by :func:`structkd.export.export_model`,
    called like ``structkd.load``'s (the same tokenization, results and options; see :class:`ExportedModel`)."""
    meta = _read_document(Path(path))
    cls = Tagger if meta["task"] == "ner" else Parser
    return cls(path, threads=threads, batch_size=batch_size, tokenizer=tokenizer, sentences=sentences,
               max_words=max_words, max_batch_words=max_batch_words)


__all__ = ["Document", "Entity", "ExportedModel", "Parse", "Parser", "Tagger", "Word", "load"]
