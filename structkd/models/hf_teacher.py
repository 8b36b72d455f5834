"""The teacher a user already has: any Hugging Face ``AutoModelForTokenClassification`` checkpoint, used as it is.

:class:`HFTokenClassifier` reads a directory written by ``save_pretrained`` (or a hub name) and serves it as a
MaxEnt word tagger over its own labels, so that every KD method of :mod:`structkd.ner.distillation` works from
it, into CRF students (case 3 of :mod:`structkd.kd.projections`) and MaxEnt students:

* labels: the config's ``id2label`` in id order; every label must be ``O`` or ``<B|I|E|S>-<type>`` of one tag
  scheme (BIOES when ``E-``/``S-`` tags occur, otherwise BIO unless ``scheme`` says IOB1), BILOU's ``U-PER`` and
  ``L-PER`` read as the BIOES tags ``S-PER`` and ``E-PER``, an IO inventory (``O`` and bare types, ``PER``) as
  IOB1's ``I-PER`` (:func:`~structkd.schemes.read_labels`); labels that fit no scheme (``LABEL_0`` beside ``B-PER``)
  are refused with their list;
* word scores: the model's own sub-word logits, pooled as structkd's transformer taggers pool (``first``: the
  word's first sub-word, ``mean``: the mean of its sub-words), sentences longer than the encoder's limit read in
  overlapping windows (:class:`~structkd.models.transformer.SubwordEncoder`).

``docs/teachers.md`` shows the routes.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from structkd.models.encoders import is_hub_name
from structkd.models.transformer import Sentences, SubwordEncoder
from structkd.schemes import check_scheme, check_tag, label_scheme, parse_tag, read_labels
from structkd.structs.base import length_mask
from structkd.structs.chain import MaxEnt

Tensor = torch.Tensor

__all__ = ["HFTokenClassifier", "hf_labels", "is_hf_checkpoint"]


def is_hf_checkpoint(name_or_path: str | Path) -> bool:
    """Whether ``name_or_path`` is a ``transformers`` checkpoint rather than a structkd model: a directory whose
    ``config.json`` is not a structkd model's, or a name that is not a local path (a hub name)."""
    path = Path(name_or_path).expanduser()
    config = path / "config.json"
    if path.is_dir():
        if not config.is_file():
            return False
        try:
            document = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return False
        return isinstance(document, dict) and document.get("format") != "structkd"
    return is_hub_name(name_or_path)


def hf_labels(config, source: str = "config.json", scheme: str | None = None) -> tuple[list[str], str]:
    """The labels of a token classifier's config (``id2label`` in id order, read by
    :func:`~structkd.schemes.read_labels`) and their tag scheme.

    Raises:
        ValueError: ids that are not ``0..n-1``, or labels that fit no scheme (or not ``scheme``), listed.
    """
    id2label = {int(k): str(v) for k, v in dict(getattr(config, "id2label", None) or {}).items()}
    if sorted(id2label) != list(range(len(id2label))) or not id2label:
        raise ValueError(f"{source}: id2label must map the ids 0..n-1 to label names, got {id2label}")
    labels, implied = read_labels([id2label[i] for i in range(len(id2label))])  # BILOU as BIOES, IO as IOB1
    bad = []
    for label in labels:
        try:
            parse_tag(label)
        except ValueError:
            bad.append(label)
    if bad:
        raise ValueError(f"{source}: {len(bad)} label(s) of id2label fit no tag scheme (BIO, IOB1, BIOES: 'O' or "
                         f"'<B|I|E|S>-<type>'): {', '.join(repr(b) for b in bad)}; rename them in id2label "
                         f"(for example LABEL_0 -> O, LABEL_1 -> B-PER)")
    scheme = check_scheme(scheme) if scheme else implied or label_scheme(labels)
    misfits = []
    for label in labels:
        try:
            check_tag(label, scheme)
        except ValueError:
            misfits.append(label)
    if misfits:
        raise ValueError(f"{source}: label(s) {', '.join(repr(m) for m in misfits)} are not {scheme} tags; set the "
                         f"scheme the teacher was trained with (data.scheme / data.convert_to)")
    return labels, scheme


class HFTokenClassifier(nn.Module):
    """A ``transformers`` token classifier as a MaxEnt word tagger (``head_kind = "maxent"``).

    Args:
        model: an ``AutoModelForTokenClassification`` model (its ``config.id2label`` names the labels).
        tokenizer: its fast tokenizer.
        scheme: the labels' tag scheme (default: detected, see :func:`structkd.schemes.label_scheme`).
        pooling, max_length, stride: as in :class:`~structkd.models.transformer.SubwordEncoder` (the encoder's
            limit by default; longer sentences are read in windows).
        source: where it was loaded from (for messages and :attr:`name_or_path`).

    ``forward(sentences)`` returns :class:`~structkd.structs.chain.MaxEnt` over word logits ``[B, n_words,
    n_labels]``: the model's logits at each word's first sub-word (``pooling="first"``) or their mean.
    """

    head_kind = "maxent"
    batch_cost = None  # a softmax over each word's labels: batches are never split

    def __init__(self, model: nn.Module, tokenizer, scheme: str | None = None, pooling: str = "first",
                 max_length: int | None = None, stride: int | None = None, source: str = ""):
        super().__init__()
        self.name_or_path = source or str(getattr(model.config, "_name_or_path", "") or "")
        self.tags, self.scheme = hf_labels(model.config, f"{self.name_or_path or 'the model'}: config.json", scheme)
        self.model = model
        # the same weights as model.base_model: tokenization, windows and pooling, and hidden states on request
        self.encoder = SubwordEncoder(model.base_model, pooling=pooling, max_length=max_length, stride=stride,
                                      tokenizer=tokenizer)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, scheme: str | None = None, pooling: str = "first",
                        max_length: int | None = None, stride: int | None = None) -> HFTokenClassifier:
        """Load a token classifier checkpoint (a directory or a hub name), refusing one that is not a token
        classifier or whose classifier weights are missing (which ``transformers`` would initialize at random)."""
        from transformers import AutoConfig, AutoModelForTokenClassification, AutoTokenizer

        source = str(name_or_path)
        config = AutoConfig.from_pretrained(source)
        architectures = list(getattr(config, "architectures", None) or [])
        if not any(a.endswith("ForTokenClassification") for a in architectures):
            raise ValueError(f"{source}: config.json describes {', '.join(architectures) or 'no architecture'}, not "
                             f"a token classifier (AutoModelForTokenClassification): a teacher must be a trained "
                             f"structkd model or a transformers token classifier; use a bare encoder as "
                             f"model.encoder instead")
        hf_labels(config, f"{source}: config.json", scheme)  # labels refused before the weights are read
        model, info = AutoModelForTokenClassification.from_pretrained(source, output_loading_info=True)
        missing = list(info.get("missing_keys", []))
        if missing:
            raise ValueError(f"{source}: the checkpoint lacks weights of the token classifier "
                             f"({', '.join(missing[:5])}): transformers would initialize them at random")
        tokenizer = AutoTokenizer.from_pretrained(source)
        return cls(model, tokenizer, scheme, pooling, max_length, stride, source).eval()

    @property
    def config(self) -> dict:
        """What the tagger was built from (JSON)."""
        return {"name_or_path": self.name_or_path, "tags": self.tags, "scheme": self.scheme,
                **{k: v for k, v in self.encoder.config.items() if k in ("pooling", "max_length", "stride")}}

    def word_logits(self, sentences: Sentences) -> tuple[Tensor, Tensor]:
        """``(logits [B, n_words, n_labels], lens [B])``: the model's sub-word logits pooled into words."""
        batch = self.encoder.tokenize(sentences).to(self.encoder.device)
        batch_size, n_words = batch.first.shape
        if batch.input_ids.shape[1] == 0:  # only empty sentences
            return torch.zeros(batch_size, n_words, len(self.tags), device=self.encoder.device), batch.lens
        out = self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, return_dict=True)
        return self.encoder.pool(out.logits, batch), batch.lens

    def forward(self, sentences: Sentences, **_) -> MaxEnt:
        logits, lens = self.word_logits(sentences)
        return MaxEnt(logits, lens)

    def read(self, sentences) -> MaxEnt:
        """The distribution of sentences (objects with ``tokens``): the interface every tagger shares."""
        return self([s.tokens for s in sentences])

    def gold_loss(self, dist: MaxEnt, tags: Tensor) -> Tensor:
        """Per-sentence negative log-likelihood ``[B]`` of gold tag indices ``[B, L]``."""
        tags = tags.to(dist.device)
        return -dist.log_prob(torch.where(length_mask(dist.lens, dist.max_len), tags, torch.full_like(tags, -1)))

    def decode(self, dist: MaxEnt) -> list[list[str]]:
        """The most likely label of each word (the model's own prediction, which may break the scheme)."""
        return [[self.tags[t] for t in row[:n]] for row, n in zip(dist.argmax.tolist(), dist.lens.tolist())]

    def save(self, directory: str | Path) -> Path:
        """Write the checkpoint back in the ``transformers`` format (``save_pretrained``), whole and atomically."""
        from structkd.train.atomic import atomic_directory

        directory = Path(directory)
        with atomic_directory(directory) as tmp:
            self.model.save_pretrained(str(tmp))
            self.encoder.tokenizer.save_pretrained(str(tmp))
        return directory
