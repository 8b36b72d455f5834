"""The dependency-parsing task (:class:`ParseTask`): CoNLL-U in and out, attachment scores, the KD methods of
:mod:`structkd.parse.distillation`; the one runner (:mod:`structkd.tasks.runner`) trains, distils, evaluates
and predicts with it.  ``train_command`` and the other commands below are that runner bound to this task."""

from __future__ import annotations

import logging
from operator import attrgetter
from typing import Any, NamedTuple

import torch

from structkd.data import CorpusError, ParsedSentence, read_conllu, read_tokenized_text, write_conllu
from structkd.data.columns import is_raw_text
from structkd.data.conllu_io import as_parsed
from structkd.data.lazy import LazySentences, concat, lazy_conllu, lazy_text, mapped
from structkd.models.embeddings import vocabulary_sentences
from structkd.models.parsers import build_rels
from structkd.parse.config import DataConfig, ParseConfig, load_parse_config
from structkd.parse.distillation import (
    SHARED_CACHE_FIELDS,
    StudentSpec,
    cache_form,
    check_method,
    compute_teacher_outputs,
    encode_states,
    factored_rows,
    forward_mixed,
    head_divergence,
    kd_loss,
    teacher_fields,
)
from structkd.parse.metrics import format_scores
from structkd.parse.modeling import (
    Batch,
    ParseModel,
    build_model,
    evaluate,
    has_tree,
    predict,
    projectivize,
    split_projective,
    stand_in_trees,
    starts_from_teacher,
    without_tree,
)
from structkd.tasks import runner
from structkd.tasks.base import Prepared, Task, TaskData
from structkd.tasks.blackbox import TeacherOutputs, check_trees, parse_rows, read_teacher_outputs
from structkd.tasks.blackbox import check_labels as check_outputs_labels
from structkd.tasks.blackbox import check_method as check_outputs_method

logger = logging.getLogger("structkd.parse")


def read_treebank(path: str, config: DataConfig) -> list[ParsedSentence]:
    """A labeled treebank; trees with several root words are refused at their line only under
    ``data.on_multiroot: error`` (else training drops them, :func:`training_trees`, and evaluation scores them)."""
    multiroot = config.multiroot or config.on_multiroot != "error"
    return read_conllu(path, multiroot=multiroot, max_sentences=config.max_sentences or None)


def several_roots(sentence: ParsedSentence) -> bool:
    """Whether more than one word of the sentence's tree is attached to the root."""
    return sum(h == 0 for h in sentence.heads) > 1


def read_data(config: DataConfig) -> TaskData:
    """Read every treebank named in the data config; the unlabeled files are checked and indexed, their
    sentences read when used."""
    data = TaskData()
    for name in ("train", "dev", "test"):
        path = getattr(config, name)
        if path:
            setattr(data, name, read_treebank(path, config))
    for name in () if config.multiroot else ("dev", "test"):
        _warn_several_roots(getattr(data, name) or [], f"data.{name}")
    data.unlabeled = concat(*(_read_unlabeled(path, config) for path in config.unlabeled))
    return data


def _warn_several_roots(sentences: list[ParsedSentence], key: str) -> None:
    rooted = [s for s in sentences if several_roots(s)]
    if rooted:
        logger.warning("%s: %d of its %d trees have several root words (the first at %s); a single-root parser "
                       "(data.multiroot: false) scores them as they are, and cannot match them whole", key,
                       len(rooted), len(sentences), rooted[0].source)


def _read_unlabeled(path: str, config: DataConfig) -> LazySentences:
    """:func:`_read_input` of an unlabeled file without its trees, read lazily (:mod:`structkd.data.lazy`)."""
    limit = config.max_sentences or None
    if is_raw_text(path):
        sentences = lazy_text(path, limit).map(as_parsed)
    else:
        sentences = lazy_conllu(path, multiroot=config.multiroot, validate=False, max_sentences=limit)
    return sentences.map(without_tree)


class TrainingTrees(NamedTuple):
    """The training trees a model learns: ``trees``, the position in ``data.train`` of each (``kept``), how
    many of them were projectivized, and how many trees with several roots were dropped."""

    trees: list[ParsedSentence]
    kept: list[int]
    projectivized: int = 0
    multiroot_skipped: int = 0

    def counts(self, total: int) -> dict[str, int]:
        """What ``results.json`` reports of them, out of ``total`` training sentences."""
        return {"skipped_nonprojective": total - len(self.trees) - self.multiroot_skipped,
                "projectivized_nonprojective": self.projectivized, "skipped_multiroot": self.multiroot_skipped}


def training_trees(sentences: list[ParsedSentence], config: DataConfig, needs_projective: bool,
                   what: str = "model") -> TrainingTrees:
    """The training trees a model can learn: for a single-root model (``data.multiroot: false``) those with one
    root word (the others dropped with a logged count), then projective ones when the model needs them
    (:func:`projective_trees`)."""
    rooted = [] if config.multiroot else [k for k, s in enumerate(sentences) if several_roots(s)]
    if not rooted:
        return projective_trees(sentences, config, needs_projective, what)
    if len(rooted) == len(sentences):
        raise ValueError(f"{sentences[0].source}: every training tree has several root words, which the "
                         f"single-root {what} cannot learn; set data.multiroot=true")
    logger.warning("skipping %d training %s of %d with several root words (the first at %s): the single-root %s "
                   "(data.multiroot: false, as in UD) cannot learn them; data.multiroot=true learns them, "
                   "data.on_multiroot=error refuses them", len(rooted), "tree" if len(rooted) == 1 else "trees",
                   len(sentences), sentences[rooted[0]].source, what)
    dropped = set(rooted)
    kept = [k for k in range(len(sentences)) if k not in dropped]
    chosen = projective_trees([sentences[k] for k in kept], config, needs_projective, what)
    return TrainingTrees(chosen.trees, [kept[k] for k in chosen.kept], chosen.projectivized, len(rooted))


def projective_trees(sentences: list[ParsedSentence], config: DataConfig, needs_projective: bool,
                     what: str = "model") -> TrainingTrees:
    """The training sentences with projective trees when the model needs them (or ``data.projective_only`` says
    so), as ``data.on_nonprojective`` says: a non-projective tree is replaced by its nearest projective tree
    (``projectivize``), dropped (``skip``), both with a logged count, or refused (``error``)."""
    only = needs_projective if config.projective_only is None else config.projective_only
    everything = TrainingTrees(list(sentences), list(range(len(sentences))))
    if not only:
        return everything
    keep, drop = split_projective(sentences)
    if not drop:
        return everything
    share = f"{len(drop)} non-projective training trees of {len(sentences)} ({100 * len(drop) / len(sentences):.2f}%)"
    if config.on_nonprojective == "error":
        raise ValueError(f"{drop[0].source}: a non-projective training tree ({len(drop)} of {len(sentences)}), "
                         f"which the projective {what} cannot learn; set data.on_nonprojective=projectivize (or "
                         f"skip), or use model.tree=nonprojective")
    if config.on_nonprojective == "skip":
        logger.warning("skipping %s: the %s needs projective trees", share, what)
        if not keep:
            raise ValueError("no projective training tree is left")
        kept = {id(s) for s in keep}
        return TrainingTrees(keep, [k for k, s in enumerate(sentences) if id(s) in kept])
    fixed = {id(s): t for s, t in zip(drop, projectivize(drop, config.multiroot))}
    moved = sum(a != b for s in drop for a, b in zip(s.heads, fixed[id(s)].heads))
    logger.warning("projectivized %s: %d of their %d words took the nearest ancestor of their head that a "
                   "projective tree allows (the %s needs projective trees)", share, moved,
                   sum(len(s) for s in drop), what)
    return TrainingTrees([fixed.get(id(s), s) for s in sentences], everything.kept, len(drop))


def collate(items: list[tuple[int, ParsedSentence]]) -> Batch:
    return Batch([i for i, _ in items], [s for _, s in items])


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


def _read_input(path: str, config: DataConfig) -> list[ParsedSentence]:
    if is_raw_text(path):
        return read_tokenized_text(path, max_sentences=config.max_sentences or None)
    return read_conllu(path, multiroot=config.multiroot, validate=False, max_sentences=config.max_sentences or None)


def _check_outputs_fields(outputs: TeacherOutputs, fields: list[str], unlabeled: bool) -> None:
    """Relations distilled from a file of head probabilities need its ``"rels"`` (refused at the first record
    without them); ``kd.relations=gold`` needs gold trees."""
    if unlabeled and "gold_rels" in fields:
        raise ValueError("kd.relations=gold distils relations on the gold arcs, which data.unlabeled sentences "
                         "do not have: use kd.relations=marginal (or none)")
    if outputs.kind == "arcs" and {"rels", "gold_rels"} & set(fields):
        missing = next((i for i, (_, rels) in enumerate(outputs.records) if rels is None), None)
        if missing is not None:
            raise CorpusError(outputs.path, outputs.lines[missing], 'no "rels": relations are distilled '
                              '(kd.relations, or a sequence-labeling student) from the teacher\'s relation of each '
                              'word; give "rels" in every record or set kd.relations=none')


def _model_name(config: ParseConfig) -> str:
    m = config.model
    return f"{m.encoder} {m.kind}" + (f" ({m.tree})" if m.kind == "biaffine" else "") + " parser"


class ParseTask(Task):
    """Dependency parsing over CoNLL-U: biaffine (first/second order, projective or not) and
    sequence-labeling parsers, UAS/LAS, structural, token and top-K KD."""

    name = "parse"
    config_file = "parse_config.json"
    native_format = "conllu"
    default_max_words = 500  # arcs grow with the square of the length, Eisner with its cube
    description = "dependency parsing"

    def load_config(self, path, overrides=None) -> ParseConfig:
        return load_parse_config(path, overrides)

    def read_data(self, config: DataConfig) -> TaskData:
        return read_data(config)

    def read_input(self, path: str, config: DataConfig) -> list[ParsedSentence]:
        return _read_input(path, config)

    def read_evaluation(self, path: str, config: DataConfig, model: ParseModel, model_dir: str) -> list:
        return read_treebank(path, config)  # relations the parser lacks are scored as misses (LAS)

    def write_predictions(self, path: str, sentences: list[ParsedSentence], model: ParseModel, config=None) -> None:
        heads, rels = predict(model, sentences)
        write_conllu(path, sentences, heads, rels)

    def words(self, sentence: ParsedSentence) -> list[str]:
        return sentence.words

    def predictor(self, model: ParseModel, tokenizer: str, max_words: int | None):
        from structkd.inference import Parser

        return Parser(model, tokenizer, max_words=max_words)

    def prepare_training(self, config: ParseConfig, data: TaskData) -> Prepared:
        chosen = training_trees(data.train, config.data, config.model.needs_projective, _model_name(config))
        # the relation inventory covers every training tree, so that students trained on trees this model skips
        # (non-projective ones) share it
        model = build_model(config.model, build_rels(data.train), chosen.trees, config.data.multiroot)
        return Prepared(model, chosen.trees, chosen.counts(len(data.train)))

    def prepare_student(self, config: ParseConfig, data: TaskData, teacher: ParseModel) -> Prepared:
        kd = config.kd
        if not data.train and kd.method == "none":
            raise ValueError("data.train is required: kd.method=none learns from gold trees alone")
        if not data.train and config.model.kind == "seqlabel":
            raise ValueError("data.train is required: a sequence-labeling student takes its label inventory from "
                             "the training trees")
        chosen = training_trees(data.train, config.data, config.model.needs_projective, "student")
        trees = chosen.trees
        train = _known_relations(trees, teacher.rels) if trees else []
        sentences = concat(train, data.unlabeled)
        vocab = vocabulary_sentences(sentences, (data.dev, data.test), starts_from_teacher(config.model, teacher),
                                     config.model.open_vocabulary)
        student = build_model(config.model, teacher.rels, train, config.data.multiroot, teacher=teacher,
                              vocab_sentences=vocab)
        spec = StudentSpec.of(student)
        check_method(kd, spec, teacher)
        if data.unlabeled and "gold_rels" in teacher_fields(kd, spec):
            raise ValueError("kd.relations=gold distils relations on the gold arcs, which data.unlabeled sentences "
                             "do not have: use kd.relations=marginal (or none)")
        extra = {**chosen.counts(len(data.train)), "skipped_unknown_relations": len(trees) - len(train),
                 "unlabeled_sentences": len(data.unlabeled)}
        return Prepared(student, sentences, extra)

    def prepare_from_outputs(self, config: ParseConfig, data: TaskData) -> tuple[Prepared, TeacherOutputs]:
        """A student of a black-box teacher (``kd.teacher_outputs``: CoNLL-U trees or per-word head
        probabilities, :mod:`structkd.tasks.blackbox`): its relations are those of ``data.train`` (without it:
        the file's), and a file relation outside them is refused at its line.  The file covers every sentence
        of ``data.train`` and ``data.unlabeled``; those the student skips (non-projective training trees) are
        skipped in it too."""
        kd, model = config.kd, config.model
        if model.keep_every or model.init_from_teacher is True:
            raise ValueError("model.keep_every and model.init_from_teacher start the student from the teacher's "
                             "weights, which kd.teacher_outputs (a teacher known by its outputs) does not give")
        if not data.train and model.kind == "seqlabel":
            raise ValueError("data.train is required: a sequence-labeling student takes its label inventory from "
                             "the training trees")
        every = concat(data.train, data.unlabeled)
        outputs = read_teacher_outputs(kd.teacher_outputs, mapped(every, attrgetter("words")),
                                       mapped(every, attrgetter("source")), "parse")
        check_outputs_method(outputs, kd.method)
        rels = build_rels(data.train) if data.train else sorted(outputs.labels())
        if not rels:
            raise ValueError(f"the student's relations come from data.train or from the \"rels\" of "
                             f"{kd.teacher_outputs}: give either")
        check_outputs_labels(outputs, rels, "the student's relations" + (" (data.train)" if data.train else ""))
        chosen = training_trees(data.train, config.data, model.needs_projective, "student")
        train = chosen.trees
        sentences = concat(train, data.unlabeled)
        student = build_model(model, rels, train, config.data.multiroot, vocab_sentences=sentences)
        spec = StudentSpec.of(student)
        _check_outputs_fields(outputs, teacher_fields(kd, spec), bool(data.unlabeled))
        # the training trees the student learns, then every unlabeled sentence
        outputs = outputs.subset(chosen.kept + list(range(len(data.train), len(every))))
        extra = {**chosen.counts(len(data.train)), "unlabeled_sentences": len(data.unlabeled),
                 "teacher_outputs": outputs.kind}
        if outputs.kind == "trees":
            extra["inexpressible_teacher_trees"] = check_trees(outputs, spec.multiroot, spec.needs_projective,
                                                               kd.impossible)
            if extra["inexpressible_teacher_trees"]:
                logger.warning("%d teacher trees of %s are trees the student cannot express: they get no KD loss",
                               extra["inexpressible_teacher_trees"], kd.teacher_outputs)
        return Prepared(student, sentences, extra), outputs

    def rows_from_outputs(self, outputs: TeacherOutputs, indices, config: ParseConfig, student: ParseModel
                          ) -> list[dict]:
        spec = StudentSpec.of(student)
        return parse_rows(outputs, indices, config.kd, spec, teacher_fields(config.kd, spec), student.rels)

    def load_model(self, directory, device="cpu") -> ParseModel:
        return ParseModel.load(directory, device=device)

    def collate(self, items: list[tuple[int, ParsedSentence]], model: ParseModel) -> Batch:
        return collate(items)

    def gold_loss(self, model: ParseModel, output, batch: Batch) -> torch.Tensor:
        return model.gold_loss(output, batch.sentences)  # 0 for sentences without a tree

    def labeled(self, batch: Batch, device: torch.device) -> torch.Tensor:
        return torch.tensor([has_tree(s) for s in batch.sentences], device=device)

    def teacher_fields(self, config: ParseConfig, student: ParseModel) -> list[str]:
        return teacher_fields(config.kd, StudentSpec.of(student))

    def cache_options(self, config: ParseConfig, student: ParseModel) -> dict[str, Any]:
        spec = StudentSpec.of(student)
        return {"relations": config.kd.relations, "fields": teacher_fields(config.kd, spec), **spec.options(),
                # arc marginals of the teacher restricted to the student's trees (kd.impossible renormalize or
                # error) or not (ignore): a cache of the other kind is refused instead of read
                "support": "unrestricted" if config.kd.impossible == "ignore" else "restricted"}

    def teacher_outputs(self, teacher: ParseModel, sentences, config: ParseConfig, student: ParseModel
                        ) -> list[dict]:
        return compute_teacher_outputs(teacher, sentences, config.kd, StudentSpec.of(student))

    SHARED_CACHE_FIELDS = SHARED_CACHE_FIELDS

    def cache_form(self, config: ParseConfig, student: ParseModel, teacher) -> str:
        teachers = list(teacher) if isinstance(teacher, (list, tuple)) else [teacher]
        return cache_form(config.kd, StudentSpec.of(student), teachers[0], len(teachers))

    def cache_rows(self, teacher: ParseModel, items, config: ParseConfig, student: ParseModel) -> list[dict]:
        return factored_rows(teacher, items, config.kd, StudentSpec.of(student))

    def cached_shapes(self, batch: Batch) -> dict:
        n = max(len(s) for s in batch.sentences)
        shapes = {"arcs": [n + 1, n + 1], "arc_logits": [n + 1, n + 1], "sibs": [n + 1, n + 1, n + 1],
                  "rels": [n + 1, n + 1, None], "rel_dep": [n + 1, None], "rel_head": [n + 1, None],
                  "arc_scores": [n + 1, n + 1],
                  "gold_rels": [n, None], "topk_heads": [None, n],
                  "topk_rels": [None, n], "topk_labels": [None, n], "topk_weights": None}
        return {name: (shape, -1.0 if name.startswith("topk_") and name != "topk_weights" else 0.0)
                for name, shape in shapes.items()}

    def kd_loss(self, kd, student: ParseModel, output, cached: dict, batch: Batch) -> torch.Tensor:
        device = output.dist.device
        heads, rels = stand_in_trees(batch.sentences, student.rels, device)  # top-k: where a teacher tree is missing
        return kd_loss(kd, student, output, cached, heads, rels)

    # -- the toolbox (docs/kd.md) ----------------------------------------------------------------------------
    MIXABLE_FIELDS = frozenset({"arcs", "sibs"})

    def mix_teacher_outputs(self, config: ParseConfig, outputs: list[list[dict]], weights) -> list[dict]:
        """Arc and sibling marginals average; the mixture's relation distribution of an arc is each teacher's
        weighted by its probability of the arc, ``sum_k w_k P_k(h -> d) P_k(r | h -> d) / P_mix(h -> d)``
        (the teachers' own where no teacher has the arc)."""
        plain = [[{k: v for k, v in row.items() if k != "rels"} for row in out] for out in outputs]
        rows = super().mix_teacher_outputs(config, plain, weights)
        if "rels" not in outputs[0][0]:
            return rows
        for i, row in enumerate(rows):
            joint = sum(w * out[i]["arcs"].unsqueeze(-1) * out[i]["rels"] for w, out in zip(weights, outputs))
            mean = sum(w * out[i]["rels"] for w, out in zip(weights, outputs))
            arcs = row["arcs"].unsqueeze(-1)
            row["rels"] = torch.where(arcs > 0, joint / arcs.clamp(min=torch.finfo(arcs.dtype).tiny), mean)
        return rows

    def encode_states(self, model: ParseModel, sentences, attentions: bool = False):
        return encode_states(model, sentences, attentions)

    def forward_mixed(self, model: ParseModel, sentences, perm: torch.Tensor, lam: torch.Tensor):
        return forward_mixed(model, sentences, perm, lam)

    def teacher_outputs_of(self, teacher: ParseModel, output, sentences, config: ParseConfig, student: ParseModel
                           ) -> list[dict]:
        return compute_teacher_outputs(teacher, sentences, config.kd, StudentSpec.of(student), out=output)

    def with_words(self, sentence: ParsedSentence, words: list[str]) -> ParsedSentence:
        n = len(words)
        return without_tree(ParsedSentence(list(words), ["_"] * n, [0] * n, ["_"] * n, source=sentence.source))

    def kd_divergence(self, kd, student: ParseModel, output, cached: dict, batch: Batch) -> torch.Tensor:
        heads, rels = stand_in_trees(batch.sentences, student.rels, output.dist.device)
        return head_divergence(kd, student, output, cached, heads, rels)

    def evaluate(self, model: ParseModel, sentences: list[ParsedSentence], report: bool = False) -> dict:
        return evaluate(model, sentences, report=report)

    def format_results(self, result: dict) -> str:
        return format_scores(result) + f"\n{result['parameters']:,} parameters"


TASK = ParseTask()


# the commands of this task: the one runner with it bound
train_command, distill_command, evaluate_command, predict_command = runner.bound_commands(TASK)
