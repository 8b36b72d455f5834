"""Export a saved student to ONNX plus what the torch-free runtime (:mod:`structkd.runtime`) needs.

An exported directory holds::

    model.onnx       the scores (:mod:`structkd.export.graphs`), dynamic batch and length axes
    runtime.json     {"format": "structkd-runtime", "version": 1, "task", "kind", "encoder", labels, decoder...}
    arrays.npz       CRF transitions/start/end and their constraint masks, a parser's relation weight or labels
    vocab.json       BiLSTM models: words and characters (copied from the saved model)
    lexicon/         BiLSTM models with an open vocabulary: the teacher's tokenizer and subword table (copied)
    tokenizer.json   transformer models: the fast tokenizer, read with the ``tokenizers`` library
    inference.json   copied from the saved model when present (its ``tokenizer`` names the text tokenizer)

The graph is exported with torch's TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``): it
maps ``nn.LSTM`` to ONNX ``LSTM`` with dynamic axes in well under a second.  Every export is checked before
it is kept: ONNX Runtime and torch score a second batch of other sizes and must agree (``EXPORT_TOLERANCE``).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from structkd.export.graphs import BiaffineScores, SeqLabelScores, TaggerScores
from structkd.models.parsers import BiaffineParser
from structkd.models.seqlabel_parser import SeqLabelingParser
from structkd.models.serialization import CONFIG_NAME, VOCAB_NAME, load_pretrained
from structkd.models.taggers import BiLSTMTagger
from structkd.models.transformer import SubwordEncoder, TransformerTagger
from structkd.runtime.inputs import SubwordInputs, WordVocab
from structkd.runtime.lexicon import LEXICON_DIR
from structkd.runtime.models import ARRAYS_NAME, FORMAT_VERSION, GRAPH_NAME, RUNTIME_NAME, TOKENIZER_NAME

EXPORT_TOLERANCE = 1e-4
"""Largest difference allowed between ONNX Runtime's and torch's float32 scores on the check batch."""
FORMATS = ("onnx",)
BILSTM_INPUTS = {"words": {0: "batch", 1: "words"}, "chars": {0: "batch", 1: "words", 2: "chars"},
                 "lens": {0: "batch"}}
SUBWORD_INPUTS = {"input_ids": {0: "windows", 1: "subwords"}, "attention_mask": {0: "windows", 1: "subwords"},
                  "sources": {0: "batch", 1: "words", 2: "pieces"}, "weights": {0: "batch", 1: "words", 2: "pieces"}}


def _encoder(model: nn.Module) -> nn.Module:
    """The BiLSTM or :class:`SubwordEncoder` of any student."""
    encoder = model.encoder
    if isinstance(model, (BiaffineParser, SeqLabelingParser)):
        return encoder.bilstm if encoder.bilstm is not None else encoder.transformer
    return encoder


def _describe(model: nn.Module, source: Path) -> tuple[nn.Module, dict, dict]:
    """The score module, the runtime document and the decoder arrays of a loaded model."""
    bilstm = not isinstance(_encoder(model), SubwordEncoder)
    meta: dict = {"format": "structkd-runtime", "version": FORMAT_VERSION, "encoder": "bilstm" if bilstm
                  else "transformer", "source": str(source)}
    arrays: dict[str, np.ndarray] = {}
    if isinstance(model, (BiLSTMTagger, TransformerTagger)):
        graph = TaggerScores(model)
        tags = model.config["tags"]
        head = "crf" if hasattr(model.head, "transitions") else "maxent"
        meta.update(task="ner", kind="tagger", head=head, tags=list(tags), outputs=["emissions"],
                    scheme=model.config.get("scheme"))  # how the runtime reads entities (None: from the tags)
        if head == "crf":
            arrays.update({name: getattr(model.head, name).detach().double().cpu().numpy()
                           for name in ("transitions", "start", "end")})
            for name in ("allowed", "allowed_start", "allowed_end"):
                mask = getattr(model.head, name)
                if mask is not None:
                    arrays[name] = mask.cpu().numpy().astype(bool)
    elif isinstance(model, BiaffineParser):
        graph = BiaffineScores(model)
        meta.update(task="parse", kind="biaffine", tree=model.tree, multiroot=model.multiroot, rels=model.rels,
                    outputs=["arcs", "rel_dep", "rel_head"])
        arrays["rel_weight"] = model.rel.weight.detach().double().cpu().numpy()
    elif isinstance(model, SeqLabelingParser):
        graph = SeqLabelScores(model)
        decoder_file = source / "decoder.txt"
        decoder = decoder_file.read_text(encoding="utf-8").strip() if decoder_file.is_file() else "mst"
        meta.update(task="parse", kind="seqlabel", rels=model.rels, labels=[list(x) for x in model.labels],
                    decoder=decoder, outputs=["logits"])
        arrays["label_offsets"] = np.array([o for o, _ in model.labels], dtype=np.int64)
        arrays["label_rels"] = np.array([r for _, r in model.labels], dtype=np.int64)
    else:
        raise TypeError(f"{source / CONFIG_NAME}: {type(model).__name__} cannot be exported")
    return graph.eval(), meta, arrays


def _subword_settings(encoder: SubwordEncoder, source: Path) -> dict:
    if not getattr(encoder.tokenizer, "is_fast", False):
        raise ValueError(f"{source}: the encoder's tokenizer is not a fast (tokenizers) tokenizer; the runtime "
                         f"reads tokenizer.json")
    return {"prefix": list(encoder._prefix), "suffix": list(encoder._suffix), "unk": list(encoder._unk),
            "pad": int(encoder._pad), "window": encoder.window, "stride": encoder.stride, "pooling": encoder.pooling,
            "max_length": encoder.max_length}


def _probe_sentences(words: list[str], lens: list[int], seed: int) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    return [[words[i] for i in rng.integers(0, len(words), n)] for n in lens]


def _probe_words(model: nn.Module, work: Path) -> list[str]:
    """Words to build check batches from: the model's vocabulary (BiLSTM) or the tokenizer's pieces."""
    vocab = getattr(model, "vocab", None)
    if vocab is not None:
        known = [w for w in vocab.words.items[2:] if w] or ["a"]
        # an open vocabulary also embeds words it has no row for: some in the check batches
        return known + ([w[::-1] + "zq" for w in known[:len(known) // 4 + 1]] if vocab.lexicon is not None else [])
    tokenizer = _encoder(model).tokenizer
    special = set(tokenizer.all_special_tokens)
    pieces = sorted(w for w in tokenizer.get_vocab() if w not in special and w.isalpha()) or ["a"]
    return pieces + [a + b for a, b in zip(pieces, reversed(pieces))]  # and words of several subwords


def _feeds(inputs, sentences: list[list[str]]) -> dict[str, np.ndarray]:
    return inputs.encode(sentences)


def _torch_outputs(graph: nn.Module, feed: dict[str, np.ndarray], names: list[str]) -> list[np.ndarray]:
    with torch.no_grad():
        out = graph(*(torch.from_numpy(feed[k]) for k in names))
    return [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]


def _export_graph(graph: nn.Module, feed: dict, inputs: dict, outputs: list[str], path: Path,
                  opset: int | None) -> None:
    dynamic = {**inputs, **{name: ({0: "batch", 1: "nodes", 2: "nodes"} if name == "arcs" else
                                   {0: "batch", 1: "words" if name in ("emissions", "logits") else "nodes"})
                            for name in outputs}}
    args = tuple(torch.from_numpy(feed[k]) for k in inputs)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(graph, args, str(path), input_names=list(inputs), output_names=outputs,
                          dynamic_axes=dynamic, opset_version=opset or 17, dynamo=False)


def _check(graph: nn.Module, path: Path, feed: dict, names: list[str]) -> float:
    """Largest difference between ONNX Runtime and torch on ``feed``; raises above ``EXPORT_TOLERANCE``."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {k: feed[k] for k in names})
    expected = _torch_outputs(graph, feed, names)
    worst = 0.0
    for a, b in zip(got, expected):
        if a.shape != b.shape:
            raise RuntimeError(f"{path}: the exported graph gives shape {a.shape} where torch gives {b.shape}")
        real = b > -1e11  # LOG_ZERO entries compare as equal when both are far below every real score
        worst = max(worst, float(np.abs(np.where(real, a - b, 0.0)).max(initial=0.0)))
    if worst > EXPORT_TOLERANCE:
        raise RuntimeError(f"{path}: ONNX Runtime and torch differ by {worst:.3g} on the check batch (> "
                           f"{EXPORT_TOLERANCE}); the export is not kept")
    return worst


def _write_side_files(model: nn.Module, source: Path, work: Path, meta: dict, arrays: dict) -> None:
    if meta["encoder"] == "bilstm":
        vocab_file = source / VOCAB_NAME
        if not vocab_file.is_file():
            raise FileNotFoundError(f"{vocab_file}: missing; a BiLSTM model is exported with its vocabulary")
        shutil.copyfile(vocab_file, work / VOCAB_NAME)
        if (source / LEXICON_DIR).is_dir():  # an open vocabulary: the graph also reads the oov vectors
            shutil.copytree(source / LEXICON_DIR, work / LEXICON_DIR)
    else:
        encoder = _encoder(model)
        meta["subwords"] = _subword_settings(encoder, source)
        encoder.tokenizer.backend_tokenizer.save(str(work / TOKENIZER_NAME))
    inference = source / "inference.json"
    if inference.is_file():
        shutil.copyfile(inference, work / "inference.json")
        try:
            meta["tokenizer"] = json.loads(inference.read_text(encoding="utf-8")).get("tokenizer")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as error:
            raise ValueError(f"{inference}: not a readable JSON object ({error})") from error
    np.savez(work / ARRAYS_NAME, **arrays)
    (work / RUNTIME_NAME).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _check_out_dir(out: Path) -> None:
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / RUNTIME_NAME).is_file())):
        raise FileExistsError(f"{out}: exists and is not an exported model directory; choose a new or empty one")


def export_model(model_dir: str | Path, out_dir: str | Path, format: str = "onnx", opset: int | None = None) -> Path:
    """Export the student saved in ``model_dir`` to ``out_dir`` for :func:`structkd.runtime.load`.

    Args:
        model_dir: a directory written by ``NerModel.save`` / ``ParseModel.save`` (``save_pretrained``): a
            BiLSTM or transformer tagger with a CRF or MaxEnt head, a first-order biaffine parser or a
            sequence-labeling parser.
        out_dir: created (or an earlier export replaced); anything else there is refused.
        format: ``"onnx"`` (the only one).
        opset: ONNX opset (default 17).

    Returns:
        ``out_dir``.  Raises ``ValueError``/``TypeError`` naming the file for models that cannot be exported
        (span heads, second-order parsers, slow tokenizers) before any export work.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    source, out = Path(model_dir), Path(out_dir)
    _check_out_dir(out)
    import structkd.models  # noqa: F401  (registers the parser classes)

    model = load_pretrained(source, device="cpu").float().eval()
    graph, meta, arrays = _describe(model, source)
    with tempfile.TemporaryDirectory(dir=out.parent if out.parent.is_dir() else None) as tmp:
        work = Path(tmp)
        _write_side_files(model, source, work, meta, arrays)
        inputs = BILSTM_INPUTS if meta["encoder"] == "bilstm" else SUBWORD_INPUTS
        builder = (WordVocab.load(work / VOCAB_NAME) if meta["encoder"] == "bilstm"
                   else SubwordInputs(work / TOKENIZER_NAME, meta["subwords"]))
        if getattr(builder, "lexicon", None) is not None:
            inputs = {**inputs, "oov": {0: "oov"}}
        words = _probe_words(model, work)
        trace = _feeds(builder, _probe_sentences(words, [6, 2, 4], 0))
        _export_graph(graph, trace, inputs, meta["outputs"], work / GRAPH_NAME, opset)
        _check(graph, work / GRAPH_NAME, _feeds(builder, _probe_sentences(words, [9, 1, 3, 20, 5], 1)), list(inputs))
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(work, out)
    return out


__all__ = ["EXPORT_TOLERANCE", "export_model"]
