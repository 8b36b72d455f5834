"""The parsing commands: train a teacher or a baseline, distill a student, evaluate, predict."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from structkd.data import ParsedSentence, read_conllu, read_tokenized_text, write_conllu
from structkd.models.parsers import build_rels
from structkd.parse.config import DataConfig, ParseConfig
from structkd.parse.distillation import (
    StudentSpec,
    check_method,
    compute_teacher_outputs,
    kd_loss,
    kd_weight,
    teacher_fields,
)
from structkd.parse.modeling import (
    Batch,
    ParseModel,
    build_model,
    evaluate,
    has_tree,
    predict,
    split_projective,
    stand_in_trees,
    without_tree,
)
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

logger = logging.getLogger("structkd.parse")


@dataclass
class ParseData:
    train: list[ParsedSentence] = field(default_factory=list)
    dev: list[ParsedSentence] = field(default_factory=list)
    test: list[ParsedSentence] = field(default_factory=list)
    unlabeled: list[ParsedSentence] = field(default_factory=list)


def read_treebank(path: str, config: DataConfig) -> list[ParsedSentence]:
    return read_conllu(path, multiroot=config.multiroot, max_sentences=config.max_sentences or None)


def read_data(config: DataConfig) -> ParseData:
    """Read every treebank named in the data config."""
    data = ParseData()
    for name in ("train", "dev", "test"):
        path = getattr(config, name)
        if path:
            setattr(data, name, read_treebank(path, config))
    data.unlabeled = [without_tree(s) for path in config.unlabeled for s in _read_input(path, config)]
    return data


def training_trees(sentences: list[ParsedSentence], config: DataConfig, needs_projective: bool,
                   what: str = "model") -> list[ParsedSentence]:
    """The training sentences, without non-projective trees when the model needs projective ones (or
    ``data.projective_only`` says so): skipped with a logged count, or an error (``data.on_nonprojective``)."""
    only = needs_projective if config.projective_only is None else config.projective_only
    if not only:
        return sentences
    keep, drop = split_projective(sentences)
    if drop:
        if config.on_nonprojective == "error":
            raise ValueError(f"{drop[0].source}: a non-projective training tree ({len(drop)} of {len(sentences)}), "
                             f"which the projective {what} cannot learn; set data.on_nonprojective=skip, or use "
                             f"model.tree=nonprojective")
        logger.warning("skipping %d non-projective training trees of %d (%.2f%%): the %s needs projective trees",
                       len(drop), len(sentences), 100 * len(drop) / len(sentences), what)
    if not keep:
        raise ValueError("no projective training tree is left")
    return keep


def collate(items: list[tuple[int, ParsedSentence]]) -> Batch:
    return Batch([i for i, _ in items], [s for _, s in items])


def _evaluate_fn(model: ParseModel, dev: list[ParsedSentence]) -> dict[str, float]:
    return {k: v for k, v in evaluate(model, dev).items() if isinstance(v, float)}


def _finish(model: ParseModel, config: ParseConfig, data: ParseData, extra: dict | None = None) -> dict:
    """Load the best weights, save the model for ``ParseModel.load`` and evaluate it (:func:`finish_run`)."""
    return finish_run(model, config.training.output_dir, {"dev": data.dev, "test": data.test},
                      lambda m, sentences: evaluate(m, sentences, report=True),
                      {**(extra or {}), "parameters": model.parameter_count()})


def _model_name(config: ParseConfig) -> str:
    m = config.model
    return f"{m.encoder} {m.kind}" + (f" ({m.tree})" if m.kind == "biaffine" else "") + " parser"


def train_command(config: ParseConfig, resume: bool = False, overwrite: bool = False) -> dict:
    """Train a teacher or a baseline parser on gold trees; returns dev/test results.

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
    if data.unlabeled:
        logger.warning("data.unlabeled (%d sentences) is for parse distill: training on gold trees ignores it",
                       len(data.unlabeled))
    train = training_trees(data.train, config.data, config.model.needs_projective, _model_name(config))
    torch.manual_seed(config.training.seed)
    # the relation inventory covers every training tree, so that students trained on trees this model skips
    # (non-projective ones) share it
    model = build_model(config.model, build_rels(data.train), train, config.data.multiroot)
    out = Path(config.training.output_dir)
    if is_main_process():
        out.mkdir(parents=True, exist_ok=True)
        config.save(out / "parse_config.json")

    def loss_fn(m: ParseModel, batch: Batch) -> torch.Tensor:
        return m.gold_loss(m(batch.sentences), batch.sentences).mean()

    trainer = Trainer(model, config.training, list(enumerate(train)), data.dev or None, loss_fn,
                      _evaluate_fn if data.dev else None, collate_fn=collate, lengths=[len(s.words) for s in train],
                      run_config=config.to_dict(), device=device)
    trainer.train(resume=resume)
    return _finish(model, config, data, {"skipped_nonprojective": len(data.train) - len(train)})


def build_teacher_cache(teacher: ParseModel, config: ParseConfig, sentences: list[ParsedSentence],
                        spec: StudentSpec, rebuild: bool = False) -> TeacherCache | None:
    """Compute (or reuse) the teacher's outputs over the student's training sentences."""
    kd = config.kd
    if kd.method == "none":
        return None
    directory = Path(kd.cache_dir or Path(config.training.output_dir) / "teacher_cache")
    options = {"method": kd.method, "temperature": kd.temperature, "mode": kd.temperature_mode,
               "top_k": kd.top_k, "relations": kd.relations, "fields": teacher_fields(kd, spec), **spec.options(),
               # arc marginals of the teacher restricted to the student's trees (impossible="renormalize"): a
               # cache from before, with unrestricted marginals, is refused instead of read
               "support": "restricted"}
    teacher.eval()
    return TeacherCache.build(
        directory, sentences, lambda chunk: compute_teacher_outputs(teacher, chunk, kd, spec),
        teacher_id=teacher_fingerprint(kd.teacher), tokens=[s.words for s in sentences], options=options,
        batch_size=32, collate_fn=list, rebuild=rebuild, progress=config.training.progress)


def _cached_batch(cache: TeacherCache, fields: list[str], batch: Batch, device: torch.device) -> dict:
    n = max(len(s) for s in batch.sentences)
    shapes = {"arcs": [n + 1, n + 1], "arc_logits": [n + 1, n + 1], "sibs": [n + 1, n + 1, n + 1],
              "rels": [n + 1, n + 1, None], "gold_rels": [n, None], "topk_heads": [None, n],
              "topk_rels": [None, n], "topk_labels": [None, n], "topk_weights": None}
    out = {}
    for name in fields:
        pad = -1.0 if name.startswith("topk_") and name != "topk_weights" else 0.0
        out[name] = cache.batch(batch.indices, name, shapes[name], pad_value=pad).to(device)
    return out


def distill_command(config: ParseConfig, resume: bool = False, rebuild_cache: bool = False,
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
    if not data.train and kd.method == "none":
        raise ValueError("data.train is required: kd.method=none learns from gold trees alone")
    if not data.train and config.model.kind == "seqlabel":
        raise ValueError("data.train is required: a sequence-labeling student takes its label inventory from the "
                         "training trees")
    teacher = ParseModel.load(kd.teacher)
    trees = training_trees(data.train, config.data, config.model.needs_projective, "student") if data.train else []
    train = _known_relations(trees, teacher.rels) if trees else []
    torch.manual_seed(config.training.seed)
    sentences = train + data.unlabeled
    student = build_model(config.model, teacher.rels, train, config.data.multiroot, teacher=teacher,
                          vocab_sentences=sentences)
    spec = StudentSpec.of(student)
    check_method(kd, spec, teacher)
    if data.unlabeled and "gold_rels" in teacher_fields(kd, spec):
        raise ValueError("kd.relations=gold distils relations on the gold arcs, which data.unlabeled sentences do "
                         "not have: use kd.relations=marginal (or none)")
    out = Path(config.training.output_dir)
    if is_main_process():
        out.mkdir(parents=True, exist_ok=True)
        config.save(out / "parse_config.json")
    if kd.method != "none":  # the teacher's outputs are computed on the run's device
        teacher.to(device)
    with main_process_first():  # computed once; the other processes then read it
        cache = build_teacher_cache(teacher, config, sentences, spec, rebuild=rebuild_cache)
    fields = teacher_fields(kd, spec)
    del teacher
    state = {"trainer": None}

    def loss_fn(m: ParseModel, batch: Batch) -> torch.Tensor:
        output = m(batch.sentences)
        gold = m.gold_loss(output, batch.sentences)
        if cache is None:
            return gold.mean()
        trainer = state["trainer"]
        weight = kd_weight(kd, trainer.progress.global_step, trainer.total_steps)
        device = output.dist.device
        heads, rels = stand_in_trees(batch.sentences, m.rels, device)  # top-k: where a teacher tree is missing
        distill = kd_loss(kd, m, output, _cached_batch(cache, fields, batch, device), heads, rels)
        labeled = torch.tensor([has_tree(s) for s in batch.sentences], device=device)
        return torch.where(labeled, weight * distill + (1 - weight) * gold, distill).mean()

    trainer = Trainer(student, config.training, list(enumerate(sentences)), data.dev or None, loss_fn,
                      _evaluate_fn if data.dev else None, collate_fn=collate,
                      lengths=[len(s.words) for s in sentences], run_config=run_config, device=device)
    state["trainer"] = trainer
    trainer.train(resume=resume)
    return _finish(student, config, data, {"skipped_nonprojective": len(data.train) - len(trees),
                                           "skipped_unknown_relations": len(trees) - len(train),
                                           "unlabeled_sentences": len(data.unlabeled)})


def _known_relations(sentences: list[ParsedSentence], rels: list[str]) -> list[ParsedSentence]:
    """Sentences whose relations are all in the teacher's inventory (the others are skipped, with a count)."""
    known = set(rels)
    keep = [s for s in sentences if known.issuperset(s.deprels)]
    if len(keep) < len(sentences):
        missing = sorted({r for s in sentences for r in s.deprels} - known)
        logger.warning("skipping %d training trees with relations the teacher does not know: %s",
                       len(sentences) - len(keep), ", ".join(missing))
    if not keep:
        raise ValueError("no training tree uses only the teacher's relations")
    return keep


def evaluate_command(model_dir: str, data_path: str, config: DataConfig, device: str = "auto") -> dict:
    """Attachment scores, complete match, a per-relation table and the speed of a saved parser on a treebank,
    run on ``device`` (``auto``: the first CUDA device if there is one, else the CPU)."""
    model = ParseModel.load(model_dir, device=resolve_device(device, what="--device"))
    return evaluate(model, read_treebank(data_path, config), report=True)


def _read_input(path: str, config: DataConfig) -> list[ParsedSentence]:
    if Path(path).suffix in (".txt", ".text"):
        return read_tokenized_text(path, max_sentences=config.max_sentences or None)
    return read_conllu(path, multiroot=config.multiroot, validate=False, max_sentences=config.max_sentences or None)


def predict_command(model_dir: str, input_path: str, output_path: str, config: DataConfig,
                    device: str = "auto") -> int:
    """Parse a CoNLL-U file (HEAD and DEPREL may be ``_``) or a text file (``.txt``: one whitespace-tokenized
    sentence per line) and write CoNLL-U with HEAD and DEPREL replaced, every other column and comment kept; the
    parser runs on ``device`` (as in :func:`evaluate_command`)."""
    model = ParseModel.load(model_dir, device=resolve_device(device, what="--device"))
    sentences = _read_input(input_path, config)
    heads, rels = predict(model, sentences)
    write_conllu(output_path, sentences, heads, rels)
    return len(sentences)
