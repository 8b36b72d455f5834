"""Saving and loading structkd models: safetensors weights plus a JSON description, never pickles.

A saved model is a directory::

    config.json          {"format": "structkd", "version": 1, "class": <registered name>, "args": {...},
                          "encoder_model": {"class": "BertModel", "absent_modules": ["pooler"]}}
    model.safetensors    every parameter and persistent buffer (safetensors.torch.save_model: shared tensors ok)
    vocab.json           BiLSTM taggers: words, characters and tags (TaggerVocab.save)
    lexicon/             BiLSTM students with an open vocabulary: the teacher's tokenizer and subword table
                         (structkd.runtime.lexicon)
    encoder/             transformer taggers and parsers: the transformers config and tokenizer files, so
                         that the model rebuilds offline (its weights are in model.safetensors)

``args`` are the constructor arguments of the registered class (``model.config``).  ``encoder_model`` records how
a transformer's ``transformers`` model was built beyond its config (its class, and submodules such as the pooler
that it was built without), so that a tagger on any encoder, the base model of a token classifier included,
reloads offline.  :func:`load_pretrained`
rebuilds the model from them and loads the weights; every inconsistency (missing, truncated or damaged file,
unknown class, a label set or tensor shape that does not match) raises an error naming the file.

:func:`save_pretrained` writes the directory whole and atomically (:mod:`structkd.train.atomic`): saving over an
older model leaves nothing of it behind (no ``encoder/`` of a transformer in a BiLSTM's directory), and a crash
while saving leaves the older model intact.  It refuses a directory that holds anything but a saved model.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model, save_model
from torch import nn

from structkd.models.taggers import BiLSTMTagger
from structkd.models.transformer import SubwordEncoder, TransformerTagger
from structkd.models.vocab import TaggerVocab
from structkd.runtime.files import read_json_in
from structkd.runtime.lexicon import LEXICON_DIR, load_lexicon
from structkd.train.atomic import atomic_directory, resolve_dir

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
VOCAB_NAME = "vocab.json"
ENCODER_DIR = "encoder"
FORMAT_VERSION = 1

Builder = Callable[[dict, Path], nn.Module]


def _build_bilstm(args: dict, directory: Path) -> nn.Module:
    return BiLSTMTagger(**args)


def _build_transformer(args: dict, directory: Path) -> nn.Module:
    encoder_dir = directory / ENCODER_DIR
    if not (encoder_dir / "config.json").is_file():
        raise FileNotFoundError(f"{encoder_dir / 'config.json'}: missing; a saved TransformerTagger keeps its "
                                f"encoder's transformers config and tokenizer files in {encoder_dir}")
    args = dict(args)
    options = {k: v for k, v in dict(args.pop("encoder", {})).items() if k != "model_name_or_path"}
    encoder = SubwordEncoder(str(encoder_dir), pretrained=False, **options)
    return TransformerTagger(encoder, **args)


MODEL_REGISTRY: dict[str, tuple[type, Builder]] = {
    "BiLSTMTagger": (BiLSTMTagger, _build_bilstm),
    "TransformerTagger": (TransformerTagger, _build_transformer),
}


def register_model(cls: type, builder: Builder | None = None, name: str | None = None) -> None:
    """Make ``cls`` savable: ``builder(args, directory)`` rebuilds it (default ``cls(**args)``)."""
    MODEL_REGISTRY[name or cls.__name__] = (cls, builder or (lambda args, directory: cls(**args)))


def _registered_name(model: nn.Module) -> str:
    for name, (cls, _) in MODEL_REGISTRY.items():
        if type(model) is cls:
            return name
    raise TypeError(f"{type(model).__name__} is not a registered model class ({', '.join(MODEL_REGISTRY)}); "
                    f"see register_model")


def save_pretrained(model: nn.Module, directory: str | Path, config: dict | None = None,
                    vocab: TaggerVocab | None = None) -> Path:
    """Save ``model`` to ``directory`` (created if needed) and return its path.

    Args:
        config: the constructor arguments that rebuild the model (default ``model.config``); JSON only.
        vocab: the vocabulary of a BiLSTM tagger (its tags must be the model's tags).
    """
    directory = Path(directory)
    name = _registered_name(model)
    args = dict(model.config if config is None else config)
    tags = args.get("tags")
    if vocab is not None and tags is not None and list(vocab.tags.items) != list(tags):
        raise ValueError(f"the vocabulary's tags {vocab.tags.items} differ from the model's tags {tags}")
    document = {"format": "structkd", "version": FORMAT_VERSION, "class": name, "args": args}
    try:
        text = json.dumps(document, indent=2, ensure_ascii=False)
    except TypeError as error:
        raise TypeError(f"the model config must be JSON (strings, numbers, lists, dicts): {error}") from error
    _check_replaceable(directory)
    with atomic_directory(directory) as tmp:
        if isinstance(model, TransformerTagger):
            model.encoder.save_files(tmp / ENCODER_DIR)
        elif isinstance(getattr(getattr(model, "encoder", None), "transformer", None), SubwordEncoder):
            model.encoder.transformer.save_files(tmp / ENCODER_DIR)  # transformer parsers (ParserEncoder)
        if vocab is not None:
            vocab.save(tmp / VOCAB_NAME)
            document["vocab"] = VOCAB_NAME
            if vocab.lexicon is not None:
                vocab.lexicon.save(tmp / LEXICON_DIR)
        built = _encoder_build(model)
        if built:
            document["encoder_model"] = built
        text = json.dumps(document, indent=2, ensure_ascii=False)
        save_model(model, str(tmp / WEIGHTS_NAME))
        (tmp / CONFIG_NAME).write_text(text + "\n", encoding="utf-8")
    return directory


MODEL_FILES = (CONFIG_NAME, WEIGHTS_NAME, VOCAB_NAME, ENCODER_DIR, LEXICON_DIR)


def _is_saved_model(directory: Path) -> bool:
    """Whether ``directory/config.json`` is a structkd model's (readable, with ``"format": "structkd"``)."""
    try:
        document = json.loads((directory / CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(document, dict) and document.get("format") == "structkd"


def _check_replaceable(directory: Path) -> None:
    """Refuse to save over anything but a saved model, which a save replaces whole (files written next to it,
    such as a parser's ``decoder.txt``, included): a directory with other entries and no structkd
    ``config.json`` is left alone, with an error naming it."""
    if directory.exists() and not directory.is_dir():
        raise FileExistsError(f"{directory}: exists and is not a directory; cannot save a model there")
    if not directory.is_dir() or _is_saved_model(directory):
        return
    if (directory / CONFIG_NAME).exists():
        raise FileExistsError(f"{directory / CONFIG_NAME}: not a structkd model's config; saving would replace "
                              f"the directory whole, so choose a new or empty one")
    others = sorted(p.name for p in directory.iterdir() if p.name not in MODEL_FILES)
    if others:
        raise FileExistsError(f"{directory}: holds files that are not a saved model's ({', '.join(others[:5])}); "
                              f"saving would replace the directory whole, so choose a new or empty one")


def _read_config(directory: Path) -> dict:
    path = directory / CONFIG_NAME
    document = read_json_in(directory, CONFIG_NAME, "save_pretrained")
    if not isinstance(document, dict) or document.get("format") != "structkd" or "class" not in document:
        raise ValueError(f"{path}: not a structkd model config (expected 'format': 'structkd' and a 'class')")
    if document.get("version") != FORMAT_VERSION:
        raise ValueError(f"{path}: format version {document.get('version')!r} is not supported "
                         f"(this structkd reads version {FORMAT_VERSION})")
    if not isinstance(document.get("args"), dict):
        raise ValueError(f"{path}: 'args' must be an object of constructor arguments")
    if document["class"] not in MODEL_REGISTRY:
        raise ValueError(f"{path}: unknown model class {document['class']!r}; known classes: "
                         f"{', '.join(MODEL_REGISTRY)}")
    return document


def _subword_encoder(model: nn.Module) -> SubwordEncoder | None:
    """The model's transformer encoder (a tagger's ``encoder``, a parser's ``encoder.transformer``), if any."""
    return next((m for m in model.modules() if isinstance(m, SubwordEncoder)), None)


def _encoder_build(model: nn.Module) -> dict | None:
    """How the ``transformers`` model inside ``model`` was built, beyond its config: its class (``T5EncoderModel``
    is not what ``AutoModel`` builds from a T5 config) and the submodules it was built without (the ``pooler``
    of the base model of a ``BertForTokenClassification``, built with ``add_pooling_layer=False``)."""
    encoder = _subword_encoder(model)
    if encoder is None:
        return None
    inner = encoder.model
    absent = sorted(name for name, value in vars(inner).items() if value is None and not name.startswith("_"))
    absent += sorted(name for name, value in inner._modules.items() if value is None)
    return {"class": type(inner).__name__, "absent_modules": absent}


def _rebuild_encoder(model: nn.Module, built: dict | None, config_path: Path) -> None:
    """Rebuild the ``transformers`` model of a loaded model as :func:`_encoder_build` recorded it (a model saved
    before the record: left as ``AutoModel`` built it)."""
    encoder = _subword_encoder(model)
    if encoder is None or not isinstance(built, dict):
        return
    name = built.get("class")
    if isinstance(name, str) and name != type(encoder.model).__name__:
        import transformers

        cls = getattr(transformers, name, None)
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise ValueError(f"{config_path}: the encoder is a {name}, which this transformers "
                             f"({transformers.__version__}) does not have")
        encoder.model = cls(encoder.model.config)
    for child in built.get("absent_modules", []):
        if child in encoder.model._modules:  # a submodule the default build has and the saved model had not
            setattr(encoder.model, child, None)


def load_vocab(directory: str | Path) -> TaggerVocab:
    """The vocabulary saved next to a BiLSTM tagger (with its open vocabulary's ``lexicon/``, if any)."""
    path = Path(directory) / VOCAB_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing")
    try:
        vocab = TaggerVocab.load(path)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path}: not a valid vocabulary ({error!r})") from error
    vocab.lexicon = load_lexicon(directory)
    return vocab


def _check_vocab(vocab: TaggerVocab, args: dict, directory: Path) -> None:
    path, config_path = directory / VOCAB_NAME, directory / CONFIG_NAME
    tags = args.get("tags")
    if tags is not None and list(vocab.tags.items) != list(tags):
        raise ValueError(f"{path}: label set {vocab.tags.items} does not match the tags {list(tags)} in "
                         f"{config_path}")
    for key, table in (("n_words", vocab.words), ("n_chars", vocab.chars)):
        if key in args and args[key] != len(table):
            raise ValueError(f"{path}: {len(table)} entries for {key} but {config_path} says {args[key]}")


def _check_shapes(model: nn.Module, path: Path, config_path: Path) -> None:
    """Compare the tensors in the weights file with the model's before loading, for a clear message."""
    expected = model.state_dict()
    try:
        weights = safe_open(str(path), framework="pt")
    except SafetensorError as error:
        raise ValueError(f"{path}: not a valid safetensors file, it is truncated or damaged ({error})") from error
    with weights:
        for key in weights.keys():
            if key in expected:
                shape = list(weights.get_slice(key).get_shape())
                if shape != list(expected[key].shape):
                    raise ValueError(f"{path}: tensor {key!r} has shape {shape} but the model described by "
                                     f"{config_path} needs {list(expected[key].shape)} (does its label set or "
                                     f"vocabulary match the one the weights were trained with?)")


def load_pretrained(directory: str | Path, device: torch.device | str = "cpu",
                    tags: Sequence[str] | None = None) -> nn.Module:
    """Rebuild a model saved by :func:`save_pretrained`, in eval mode on ``device``.

    Args:
        tags: the expected tag list; a model saved with another label set raises ``ValueError``.

    A BiLSTM tagger's vocabulary is attached as ``model.vocab`` (also :func:`load_vocab`).
    """
    directory = Path(directory)
    resolve_dir(directory, is_complete=lambda path: (path / CONFIG_NAME).is_file())  # after a crash mid-save
    document = _read_config(directory)
    config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    args = document["args"]
    if tags is not None and list(args.get("tags", [])) != list(tags):
        raise ValueError(f"{config_path}: the saved label set {args.get('tags')} does not match the expected "
                         f"tags {list(tags)}")
    vocab = None
    if "vocab" in document:
        vocab = load_vocab(directory)
        _check_vocab(vocab, args, directory)
    if not weights_path.is_file():
        raise FileNotFoundError(f"{weights_path}: missing")
    _, builder = MODEL_REGISTRY[document["class"]]
    try:
        model = builder(args, directory)
    except (TypeError, KeyError, ValueError) as error:
        raise ValueError(f"{config_path}: cannot build {document['class']} from its arguments: {error}") from error
    _rebuild_encoder(model, document.get("encoder_model"), config_path)
    _check_shapes(model, weights_path, config_path)
    try:
        load_model(model, str(weights_path), strict=True, device="cpu")
    except SafetensorError as error:
        raise ValueError(f"{weights_path}: not a valid safetensors file, it is truncated or damaged "
                         f"({error})") from error
    except RuntimeError as error:
        raise ValueError(f"{weights_path}: the weights do not match the model described by {config_path}: "
                         f"{error}") from error
    if vocab is not None:
        model.vocab = vocab
    return model.to(device).eval()
