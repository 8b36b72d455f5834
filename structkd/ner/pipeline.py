"""The NER commands: train a teacher or a baseline, distill a student, evaluate, predict, and the demo."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from structkd.data import Sentence, read_columns, read_text, write_columns
from structkd.ner.config import DataConfig, NerConfig
from structkd.ner.distillation import compute_teacher_outputs, kd_loss, kd_weight, teacher_fields
from structkd.ner.modeling import Batch, NerModel, build_model, evaluate, predict
from structkd.schemes import entity_types, tag_inventory
from structkd.train import (
    TeacherCache,
    Trainer,
    check_resumable,
    finish_run,
    is_main_process,
    main_process_first,
    prepare_output_dir,
    resolve_device,
    teacher_fingerprint,
    training_device,
)

logger = logging.getLogger("structkd.ner")


@dataclass
class NerData:
    train: list[Sentence] = field(default_factory=list)
    dev: list[Sentence] = field(default_factory=list)
    test: list[Sentence] = field(default_factory=list)
    unlabeled: list[Sentence] = field(default_factory=list)


def _read(path: str, config: DataConfig, labeled: bool = True) -> list[Sentence]:
    if not labeled and Path(path).suffix in (".txt", ".text"):
        sentences = read_text(path)
    else:
        sentences = read_columns(path, config.layout, config.tag_column, config.scheme, labeled=labeled,
                                 convert_to=config.convert_to, token_column=config.token_column,
                                 repair=config.repair)
    return sentences[: config.max_sentences] if config.max_sentences else sentences


def read_data(config: DataConfig) -> NerData:
    """Read every corpus named in the data config."""
    data = NerData()
    for name in ("train", "dev", "test"):
        path = getattr(config, name)
        if path:
            setattr(data, name, _read(path, config))
    data.unlabeled = [s for path in config.unlabeled for s in _read(path, config, labeled=False)]
    return data


def target_scheme(config: DataConfig) -> str:
    return config.convert_to or config.scheme


def label_set(sentences: list[Sentence], scheme: str) -> list[str]:
    """``O`` and every tag of ``scheme`` for each entity type the sentences show, sorted: a type seen only as
    ``B-X`` still gets ``I-X`` (BIO), so that a later corpus using it is not refused."""
    found = {t for s in sentences if s.tags for t in s.tags}
    return ["O"] + sorted(set(tag_inventory(entity_types(sorted(found)), scheme)) - {"O"})


def _token_location(sentence: Sentence, index: int) -> str:
    """``path:line`` of a sentence's ``index``-th word (its first line when the reader kept no line numbers)."""
    if sentence.lines and ":" in sentence.source:
        return f"{sentence.source.rsplit(':', 1)[0]}:{sentence.lines[index]}"
    return sentence.source


def check_labels(splits: dict[str, list[Sentence]], known: list[str], whose: str, way_out: str) -> None:
    """Refuse gold tags outside ``known`` before any work, naming each unknown tag's first ``file:line``.

    Args:
        splits: the labeled sentences of each config key (``{"data.dev": [...]}``).
        known: the labels the model has or will have.
        whose: whose labels ``known`` are, for the message (``"the teacher's"``).
        way_out: what the user can do, appended to the message.
    """
    allowed, first = set(known), {}
    for key, sentences in splits.items():
        for s in sentences:
            for i, tag in enumerate(s.tags or ()):
                if tag not in allowed and tag not in first:
                    first[tag] = (_token_location(s, i), key)
    if first:
        (where, key), *_ = first.values()
        listing = ", ".join(f"{tag!r} ({at}, {k})" for tag, (at, k) in first.items())
        raise ValueError(f"{where}: {len(first)} tag(s) of {key} are not among {whose} labels "
                         f"[{', '.join(known)}]: {listing}; {way_out}")


def collate(items: list[tuple[int, Sentence]], model: NerModel) -> Batch:
    indices = [i for i, _ in items]
    sentences = [s for _, s in items]
    tags, labeled = model.tag_tensor(sentences)
    return Batch(indices, sentences, tags, labeled)


def _gold(model: NerModel, dist, batch: Batch) -> torch.Tensor:
    loss = model.gold_loss(dist, batch.tags)
    return torch.where(batch.labeled.to(loss.device), loss, torch.zeros_like(loss))


def _evaluate_fn(model: NerModel, dev: list[Sentence]) -> dict[str, float]:
    return {k: v for k, v in evaluate(model, dev).items() if isinstance(v, float)}


def _plain(value):
    """JSON for NumPy scalars in seqeval reports."""
    return value.item() if hasattr(value, "item") else str(value)


def _finish(trainer: Trainer, model: NerModel, config: NerConfig, data: NerData) -> dict:
    """Load the best weights, save the model for ``from_pretrained`` and evaluate it (:func:`finish_run`)."""
    return finish_run(model, config.training.output_dir, {"dev": data.dev, "test": data.test},
                      lambda m, sentences: evaluate(m, sentences, report=True), json_default=_plain)


def train_command(config: NerConfig, resume: bool = False, overwrite: bool = False) -> dict:
    """Train a teacher or a baseline student on gold labels; returns dev/test results.

    ``resume`` continues the run in ``training.output_dir``, ``overwrite`` replaces an earlier one there; without
    either such a directory is refused before any work (:func:`structkd.train.prepare_output_dir`).
    """
    config.check_files()  # data files that do not exist are refused by key before any work
    if resume:  # refused here, before any setup work, if output_dir/last was written under other settings
        check_resumable(config.training.output_dir, config.training, config.to_dict())
    prepare_output_dir(config.training.output_dir, resume, overwrite)  # an earlier run: refused or replaced
    device = training_device(config.training.device)  # a device this machine lacks is refused before any work
    data = read_data(config.data)
    if not data.train:
        raise ValueError("data.train is required")
    tags = label_set(data.train + data.dev, target_scheme(config.data))
    check_labels({"data.test": data.test}, tags, "the training and development sets'",
                 "the model could never predict them: add them to data.train, or map them to labels it has")
    torch.manual_seed(config.training.seed)
    model = build_model(config.model, tags, target_scheme(config.data), data.train)
    out = Path(config.training.output_dir)
    if is_main_process():
        out.mkdir(parents=True, exist_ok=True)
        config.save(out / "ner_config.json")

    def loss_fn(m: NerModel, batch: Batch) -> torch.Tensor:
        return _gold(m, m(batch.sentences), batch).mean()

    trainer = Trainer(model, config.training, list(enumerate(data.train)), data.dev or None, loss_fn,
                      _evaluate_fn if data.dev else None, collate_fn=lambda items: collate(items, model),
                      lengths=[len(s.tokens) for s in data.train], run_config=config.to_dict(), device=device)
    trainer.train(resume=resume)
    return _finish(trainer, model, config, data)


def build_teacher_cache(teacher: NerModel, config: NerConfig, sentences: list[Sentence], student: NerModel,
                        rebuild: bool = False) -> TeacherCache | None:
    """Compute (or reuse) the teacher's outputs over the student's training sentences."""
    kd = config.kd
    if kd.method == "none":
        return None
    directory = Path(kd.cache_dir or Path(config.training.output_dir) / "teacher_cache")
    scheme = target_scheme(config.data)
    options = {"method": kd.method, "temperature": kd.temperature, "mode": kd.temperature_mode,
               "top_k": kd.top_k, "student_head": student.head_kind, "tags": student.tags, "scheme": scheme}
    teacher.eval()
    return TeacherCache.build(
        directory, sentences,
        lambda chunk: compute_teacher_outputs(teacher, chunk, kd, student.head_kind, student.tags, scheme),
        teacher_id=teacher_fingerprint(kd.teacher), tokens=[s.tokens for s in sentences], options=options,
        batch_size=32, collate_fn=list, rebuild=rebuild, progress=config.training.progress)


def _cached_batch(cache: TeacherCache, fields: list[str], batch: Batch, device: torch.device) -> dict:
    n_tags = None
    seq_len = max(len(s) for s in batch.sentences)
    out = {}
    for name in fields:
        if name == "edges":
            n_tags = out["unary"].shape[-1]
            value = cache.batch(batch.indices, name, [max(seq_len - 1, 0), n_tags, n_tags])
        elif name == "topk_tags":
            value = cache.batch(batch.indices, name, [None, seq_len], pad_value=-1.0)
        elif name == "topk_weights":
            value = cache.batch(batch.indices, name)
        else:
            value = cache.batch(batch.indices, name, [seq_len, None])
        out[name] = value.to(device)
    return out


def distill_command(config: NerConfig, resume: bool = False, rebuild_cache: bool = False,
                    overwrite: bool = False) -> dict:
    """Distill a saved teacher (``kd.teacher``) into a new student; returns the student's dev/test results.

    ``resume`` continues the run in ``training.output_dir``, ``overwrite`` replaces an earlier one there; without
    either such a directory is refused before any work (:func:`structkd.train.prepare_output_dir`).
    ``overwrite`` leaves the teacher and a ``kd.cache_dir`` alone.
    """
    kd = config.kd
    if not kd.teacher:
        raise ValueError("kd.teacher (the directory of a trained teacher) is required for distillation")
    config.check_files()  # data files and a teacher directory that do not exist are refused by key
    # the run's settings, kept in its checkpoints, with the teacher by its weights (its directory may move)
    run_config = {**config.to_dict(), "teacher_weights": teacher_fingerprint(kd.teacher)}
    if resume:  # refused here, before any setup work, if output_dir/last was written under other settings
        check_resumable(config.training.output_dir, config.training, run_config)
    prepare_output_dir(config.training.output_dir, resume, overwrite, protect=(kd.teacher, kd.cache_dir))
    device = training_device(config.training.device)  # a device this machine lacks is refused before any work
    data = read_data(config.data)
    if not data.train and not data.unlabeled:
        raise ValueError("distillation needs data.train or data.unlabeled sentences")
    teacher = NerModel.load(kd.teacher)
    check_labels({"data.train": data.train, "data.dev": data.dev, "data.test": data.test}, teacher.tags,
                 f"the teacher's ({kd.teacher})", "the student learns the teacher's labels: map or remove these "
                 "tags, or distil from a teacher trained with them")
    torch.manual_seed(config.training.seed)
    sentences = data.train + data.unlabeled
    # a student whose word embeddings come from the teacher can embed any word: its vocabulary covers every
    # split (tokens only); otherwise it is learned from the training and unlabeled sentences alone
    vocab_sentences = sentences + data.dev + data.test if config.model.init_from_teacher else sentences
    student = build_model(config.model, teacher.tags, target_scheme(config.data), vocab_sentences, teacher=teacher)
    out = Path(config.training.output_dir)
    if is_main_process():
        out.mkdir(parents=True, exist_ok=True)
        config.save(out / "ner_config.json")
    if kd.method != "none":  # the teacher's outputs are computed on the run's device
        teacher.to(device)
    with main_process_first():  # computed once; the other processes then read it
        cache = build_teacher_cache(teacher, config, sentences, student, rebuild=rebuild_cache)
    fields = teacher_fields(kd.method, student.head_kind)
    del teacher
    state = {"trainer": None}

    def loss_fn(m: NerModel, batch: Batch) -> torch.Tensor:
        dist = m(batch.sentences)
        gold = _gold(m, dist, batch)
        if cache is None:
            return gold.mean()
        trainer = state["trainer"]
        weight = kd_weight(kd, trainer.progress.global_step, trainer.total_steps)
        distill = kd_loss(kd, dist, _cached_batch(cache, fields, batch, dist.device))
        labeled = batch.labeled.to(dist.device)
        mixed = torch.where(labeled, weight * distill + (1 - weight) * gold, distill)
        return mixed.mean()

    trainer = Trainer(student, config.training, list(enumerate(sentences)), data.dev or None, loss_fn,
                      _evaluate_fn if data.dev else None, collate_fn=lambda items: collate(items, student),
                      lengths=[len(s.tokens) for s in sentences], run_config=run_config, device=device)
    state["trainer"] = trainer
    trainer.train(resume=resume)
    return _finish(trainer, student, config, data)


def evaluate_command(model_dir: str, data_path: str, config: DataConfig, device: str = "auto") -> dict:
    """Entity F1 and a per-type table of a saved model on a labeled corpus, run on ``device`` (``auto``: the
    first CUDA device if there is one, else the CPU)."""
    model = NerModel.load(model_dir, device=resolve_device(device, what="--device"))
    sentences = _read(data_path, config)
    check_labels({data_path: sentences}, model.tags, f"the model's ({model_dir})",
                 "the model cannot predict them, so they would be scored as misses: map or remove them")
    return evaluate(model, sentences, report=True)


def predict_command(model_dir: str, input_path: str, output_path: str, config: DataConfig,
                    device: str = "auto") -> int:
    """Tag a text file (one sentence per line, ``.txt``) or a column file on ``device`` (as in
    :func:`evaluate_command`); write ``token<TAB>tag`` CoNLL."""
    model = NerModel.load(model_dir, device=resolve_device(device, what="--device"))
    sentences = _read(input_path, config, labeled=False)
    tags = predict(model, sentences)
    write_columns(output_path, [Sentence(s.tokens, t, s.source) for s, t in zip(sentences, tags)])
    return len(sentences)


def format_table(results: dict[str, dict]) -> str:
    """Per-type precision, recall and F1 rows of a seqeval report."""
    lines = [f"{'type':16} {'precision':>9} {'recall':>7} {'f1':>7} {'support':>7}"]
    for name, row in results.items():
        if isinstance(row, dict) and "f1-score" in row:
            lines.append(f"{name:16} {100 * row['precision']:9.2f} {100 * row['recall']:7.2f} "
                         f"{100 * row['f1-score']:7.2f} {int(row['support']):7d}")
    return "\n".join(lines)
