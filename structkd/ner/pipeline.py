"""The NER task (:class:`NerTask`): column files in and out, entity F1, every KD method of
:mod:`structkd.ner.distillation`; the one runner (:mod:`structkd.tasks.runner`) trains, distils, evaluates and
predicts with it.  ``train_command`` and the other commands below are that runner bound to this task."""

from __future__ import annotations

import functools
from dataclasses import replace
from operator import attrgetter
from pathlib import Path
from typing import Any

import torch

from structkd.data import CorpusError, Sentence, read_columns, read_text, write_columns
from structkd.data.columns import column_scheme, is_raw_text
from structkd.data.lazy import LazySentences, concat, lazy_columns, lazy_text, mapped
from structkd.models.embeddings import vocabulary_sentences
from structkd.ner.config import DataConfig, NerConfig, load_ner_config
from structkd.ner.distillation import (
    SHARED_CACHE_FIELDS,
    cache_form,
    check_teacher_scheme,
    compute_potential_rows,
    compute_teacher_outputs,
    encode_states,
    forward_mixed,
    kd_loss,
    start_lost_mass_report,
    teacher_fields,
    token_divergence,
)
from structkd.ner.modeling import Batch, NerModel, build_model, evaluate, predict, saved_scheme, starts_from_teacher
from structkd.schemes import (
    AUTO,
    READ_AS,
    check_data_scheme,
    check_tag,
    detect_scheme,
    entity_types,
    label_scheme,
    model_scheme,
    tag_inventory,
    write_scheme,
)
from structkd.tasks import runner
from structkd.tasks.base import Prepared, Task, TaskData
from structkd.tasks.blackbox import TeacherOutputs, check_method, ner_potential_rows, ner_rows, read_teacher_outputs
from structkd.tasks.blackbox import check_labels as check_outputs_labels


def data_scheme(config: DataConfig, path: str | None = None) -> str:
    """The scheme the data's tags are written in: ``data.scheme``, or for ``auto`` (the default) the one the
    first of ``data.train``, ``data.dev`` and ``data.test`` is written in, else ``path``'s, else ``BIO``
    (:func:`structkd.data.columns.column_scheme`, logged; each file read once while it is unchanged)."""
    if config.scheme != AUTO:
        return check_data_scheme(config.scheme)
    source = next((p for p in (config.train, config.dev, config.test) if p and Path(p).is_file()), path)
    if source is None:
        return "BIO"
    stat = Path(source).stat()
    return _column_scheme(str(source), stat.st_mtime_ns, stat.st_size, config.layout, config.tag_column,
                          config.token_column)


@functools.lru_cache(maxsize=16)
def _column_scheme(path: str, mtime_ns: int, size: int, layout: str, tag_column: int | None,
                   token_column: int | None) -> str:
    return column_scheme(path, layout, tag_column, token_column)


def _read(path: str, config: DataConfig, labeled: bool = True) -> list[Sentence]:
    if not labeled and is_raw_text(path):
        sentences = read_text(path)
    else:
        scheme = data_scheme(config, path) if labeled else config.scheme
        sentences = read_columns(path, config.layout, config.tag_column, scheme, labeled=labeled,
                                 convert_to=config.convert_to, token_column=config.token_column,
                                 repair=config.repair)
    return sentences[: config.max_sentences] if config.max_sentences else sentences


def _read_unlabeled(path: str, config: DataConfig) -> LazySentences:
    """An unlabeled file as :func:`_read` reads it, read lazily (:mod:`structkd.data.lazy`)."""
    if is_raw_text(path):
        sentences = lazy_text(path)
    else:
        sentences = lazy_columns(path, config.layout, config.tag_column, config.scheme, labeled=False,
                                 convert_to=config.convert_to, token_column=config.token_column, repair=config.repair)
    return sentences[: config.max_sentences] if config.max_sentences else sentences


def read_data(config: DataConfig) -> TaskData:
    """Read every corpus named in the data config; the unlabeled files are checked and indexed, their sentences
    read when used."""
    data = TaskData()
    for name in ("train", "dev", "test"):
        path = getattr(config, name)
        if path:
            setattr(data, name, _read(path, config))
    data.unlabeled = concat(*(_read_unlabeled(path, config) for path in config.unlabeled))
    return data


SCHEME_SAMPLE = 64  # sentences the teacher tags to tell BIO from IOB1 (warn_teacher_writes)


def warn_teacher_writes(teacher: NerModel, sentences, scheme: str | None, name: str, logger) -> None:
    """Warn when a teacher of ``B-``/``I-`` labels writes, on the first :data:`SCHEME_SAMPLE` training sentences,
    tags of the other of BIO and IOB1 than the student's ``scheme`` (:func:`structkd.schemes.detect_scheme` on its
    predictions): its labels cannot tell which it was trained on (CoNLL-2003's original files are IOB1, Hugging
    Face's datasets BIO), its predictions can, and a student of the other scheme cannot take them."""
    if scheme not in ("BIO", "IOB1") or label_scheme(teacher.tags) != "BIO" or not len(sentences):
        return
    first = [sentences[i] for i in range(min(SCHEME_SAMPLE, len(sentences)))]
    written, reason = detect_scheme(predict(teacher, [s for s in first if len(s)]))
    if written != scheme and written in ("BIO", "IOB1") and not reason.startswith("no entity"):
        logger.warning("%s writes %s tags on the first %d training sentences (%s), but the student learns %s tags: "
                       "if the teacher was trained on %s tags, set data.convert_to=%s", name, written, len(first),
                       reason, scheme, written, written)


def target_scheme(config: DataConfig) -> str:
    """The models' scheme: ``data.convert_to``, else the data's (:func:`data_scheme`; IOB1 for IO files)."""
    return config.convert_to or model_scheme(data_scheme(config))


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


def unknown_labels(splits: dict[str, list[Sentence]], known: list[str]) -> dict[str, tuple[str, str]]:
    """Each gold tag outside ``known``, with the ``file:line`` and config key where it first occurs.

    Args:
        splits: the labeled sentences of each config key (``{"data.dev": [...]}``).
        known: the labels the model has or will have.
    """
    allowed, first = set(known), {}
    for key, sentences in splits.items():
        for s in sentences:
            for i, tag in enumerate(s.tags or ()):
                if tag not in allowed and tag not in first:
                    first[tag] = (_token_location(s, i), key)
    return first


def _listing(first: dict[str, tuple[str, str]]) -> str:
    return ", ".join(f"{tag!r} ({at}, {key})" for tag, (at, key) in first.items())


def warn_unknown_labels(splits: dict[str, list[Sentence]], known: list[str], whose: str, logger) -> None:
    """Warn, naming each tag's first ``file:line``, of evaluation tags outside ``known``: the model can never
    predict them, so they are scored as misses (as the parsers score a relation they lack)."""
    first = unknown_labels(splits, known)
    if first:
        logger.warning("%d tag(s) are not among %s labels [%s]: the model cannot predict them, so they are scored as "
                       "misses: %s", len(first), whose, ", ".join(known), _listing(first))


def unlabel_unknown(sentences: list[Sentence], known: list[str], whose: str, logger) -> list[Sentence]:
    """Training sentences with a tag outside ``known`` (the teacher's labels) become unlabeled: the student
    distils on them without their gold tags, and a warning names each tag's first ``file:line``."""
    first = unknown_labels({"data.train": sentences}, known)
    if not first:
        return sentences
    allowed = set(known)
    out = [s if allowed.issuperset(s.tags or ()) else Sentence(s.tokens, None, s.source, s.lines)
           for s in sentences]
    logger.warning("%d training sentence(s) have tags that are not among %s labels [%s]: they are distilled "
                   "without their gold tags (KD loss only): %s", sum(a is not b for a, b in zip(sentences, out)),
                   whose, ", ".join(known), _listing(first))
    return out


def _is_tag(tag: str, scheme: str) -> bool:
    try:
        check_tag(tag, scheme)
    except ValueError:
        return False
    return True


def collate(items: list[tuple[int, Sentence]], model: NerModel) -> Batch:
    indices = [i for i, _ in items]
    sentences = [s for _, s in items]
    tags, labeled = model.tag_tensor(sentences)
    return Batch(indices, sentences, tags, labeled)


class NerTask(Task):
    """Named entity recognition over column files: BiLSTM or transformer taggers with CRF, MaxEnt or span heads,
    entity F1 (seqeval), and every KD method (structural, posterior, token, top-K, sequence-level)."""

    name = "ner"
    config_file = "ner_config.json"
    description = "named entity recognition"

    def load_config(self, path, overrides=None) -> NerConfig:
        return load_ner_config(path, overrides)

    def resolve_config(self, config: NerConfig) -> NerConfig:
        """``data.scheme: auto`` resolved (:func:`data_scheme`) when a labeled file is there to tell, else (distilling
        on unlabeled text only) from the first teacher's saved labels (:func:`saved_scheme`); then, without
        ``data.convert_to``, the data converted to the first teacher's scheme where it is known and differs."""
        data = config.data
        if data.scheme == AUTO and any(p and Path(p).is_file() for p in (data.train, data.dev, data.test)):
            data = replace(data, scheme=data_scheme(data))
        teacher = next(iter(config.kd.teacher_dirs), None)
        if data.scheme == AUTO and teacher:
            scheme = saved_scheme(teacher)
            if scheme is not None:
                self.logger.info("data.scheme: auto read as %s from the teacher's labels (%s): no labeled file to "
                                 "read it from", scheme, teacher)
                data = replace(data, scheme=scheme)
        if teacher and data.scheme != AUTO and data.convert_to is None:
            data = self._to_teacher_scheme(data, teacher)
        return config if data == config.data else replace(config, data=data)

    def _to_teacher_scheme(self, data: DataConfig, teacher: str) -> DataConfig:
        """``data`` converted (``convert_to``) to the teacher's scheme when that is known exactly and is not the
        data's: the student then learns the teacher's tags (a BIOES teacher of BIO data, or a Hugging Face BIO
        teacher of CoNLL-2003's IOB1 files, whose entities begin with the ``B-`` that IOB1 forbids after ``O``)."""
        theirs, ours = saved_scheme(teacher, exact=True), model_scheme(check_data_scheme(data.scheme))
        if theirs is None or theirs == ours:
            return data
        self.logger.info("data.convert_to: %s, the teacher's scheme (%s): the data's %s tags are converted to it, and "
                         "the student predicts %s tags (set data.convert_to to choose)", theirs, teacher, ours, theirs)
        return replace(data, convert_to=theirs)

    def read_data(self, config: DataConfig) -> TaskData:
        return read_data(config)

    def read_input(self, path: str, config: DataConfig) -> list[Sentence]:
        return _read(path, config, labeled=False)

    def read_evaluation(self, path: str, config: DataConfig, model: NerModel, model_dir: str) -> list[Sentence]:
        sentences = _read(path, config)
        warn_unknown_labels({path: sentences}, model.tags, f"the model's ({model_dir})", self.logger)
        return sentences

    def write_predictions(self, path: str, sentences: list[Sentence], model: NerModel, config=None) -> None:
        """The model's tags, in the data's IO or BILOU when ``config`` says the input is written in it
        (:meth:`output_config`; IOB1 and BIOES models read such files), else in the model's own scheme."""
        tags = predict(model, sentences)
        scheme = getattr(config, "scheme", None)
        if scheme in READ_AS and getattr(config, "convert_to", None) is None:
            tags = [write_scheme(t, scheme) for t in tags]
        write_columns(path, [Sentence(s.tokens, t, s.source) for s, t in zip(sentences, tags)])

    def output_config(self, config: DataConfig, input_path: str) -> DataConfig:
        """With ``data.scheme: auto``, the scheme of a labeled input's tags when it is one that models read as
        another (IO, BILOU: predictions are written back in it); raw text and other inputs as they are."""
        if config.scheme != AUTO or input_path == "-" or is_raw_text(input_path):
            return config
        try:
            scheme = column_scheme(input_path, config.layout, config.tag_column, config.token_column)
        except CorpusError:  # no tag column (tokens only): nothing to write back
            return config
        if scheme not in READ_AS:
            return config
        self.logger.info("%s: predictions written in %s, the scheme of its tags", input_path, scheme)
        return replace(config, scheme=scheme)

    def words(self, sentence: Sentence) -> list[str]:
        return sentence.tokens

    def predictor(self, model: NerModel, tokenizer: str, max_words: int | None):
        from structkd.inference import Tagger

        return Tagger(model, tokenizer, max_words=max_words)

    def labels(self, sentences: list[Sentence], config: NerConfig) -> list[str]:
        """The label inventory of a model trained on ``sentences`` (:func:`label_set`)."""
        return label_set(sentences, self.scheme(config))

    def prepare_training(self, config: NerConfig, data: TaskData) -> Prepared:
        scheme = self.scheme(config)
        tags = self.labels(data.train + data.dev, config)
        warn_unknown_labels({"data.test": data.test}, tags, "the training and development sets'", self.logger)
        return Prepared(build_model(config.model, tags, scheme, data.train), data.train)

    def prepare_student(self, config: NerConfig, data: TaskData, teacher: NerModel) -> Prepared:
        whose = f"the teacher's ({config.kd.teacher})"
        check_teacher_scheme(teacher, self.scheme(config), f"the teacher {config.kd.teacher}")  # before any work
        start_lost_mass_report()
        warn_unknown_labels({"data.dev": data.dev, "data.test": data.test}, teacher.tags, whose, self.logger)
        sentences = concat(unlabel_unknown(data.train, teacher.tags, whose, self.logger), data.unlabeled)
        vocab = vocabulary_sentences(sentences, (data.dev, data.test), starts_from_teacher(config.model, teacher),
                                     config.model.open_vocabulary)
        warn_teacher_writes(teacher, sentences, self.scheme(config), f"the teacher {config.kd.teacher_dirs[0]}",
                            self.logger)
        student = build_model(config.model, teacher.tags, self.scheme(config), vocab, teacher=teacher)
        return Prepared(student, sentences)

    def prepare_from_outputs(self, config: NerConfig, data: TaskData) -> tuple[Prepared, TeacherOutputs]:
        """A student of a black-box teacher (``kd.teacher_outputs``: tags, k-best lists or per-token
        probabilities, :mod:`structkd.tasks.blackbox`): its labels are those of ``data.train`` and ``data.dev``
        (without ``data.train``: the file's), and a file label outside them is refused at its line."""
        kd, model = config.kd, config.model
        if model.init_from_teacher is True or model.keep_every:
            raise ValueError("model.init_from_teacher and model.keep_every start the student from the teacher's "
                             "weights, which kd.teacher_outputs (a teacher known by its outputs) does not give")
        sentences = concat(data.train, data.unlabeled)
        outputs = read_teacher_outputs(kd.teacher_outputs, mapped(sentences, attrgetter("tokens")),
                                       mapped(sentences, attrgetter("source")), "ner")
        check_method(outputs, kd.method)
        scheme = self.scheme(config)
        if data.train:
            tags, whose = self.labels(data.train + data.dev, config), "the student's (data.train and data.dev)"
        else:
            seen = outputs.labels()
            if scheme is not None:  # tags of another scheme are refused at their line
                check_outputs_labels(outputs, [t for t in seen if _is_tag(t, scheme)], f"the {scheme} scheme's")
            tags, whose = self.labels([Sentence(seen, seen)], config), "the student's"
        check_outputs_labels(outputs, tags, whose)
        warn_unknown_labels({"data.dev": data.dev, "data.test": data.test}, tags,
                            f"the student's ({kd.teacher_outputs})", self.logger)
        start_lost_mass_report()
        student = build_model(model, tags, scheme, sentences)
        return Prepared(student, sentences, {"teacher_outputs": outputs.kind}), outputs

    def rows_from_outputs(self, outputs: TeacherOutputs, indices, config: NerConfig, student: NerModel
                          ) -> list[dict]:
        return ner_rows(outputs, indices, config.kd, student.head_kind, student.tags)

    def load_model(self, directory, device="cpu") -> NerModel:
        return NerModel.load(directory, device=device)

    def collate(self, items: list[tuple[int, Sentence]], model: NerModel) -> Batch:
        return collate(items, model)

    def gold_loss(self, model: NerModel, output, batch: Batch) -> torch.Tensor:
        loss = model.gold_loss(output, batch.tags)
        return torch.where(batch.labeled.to(loss.device), loss, torch.zeros_like(loss))

    def labeled(self, batch: Batch, device: torch.device) -> torch.Tensor:
        return batch.labeled.to(device)

    def teacher_fields(self, config: NerConfig, student: NerModel) -> list[str]:
        return teacher_fields(config.kd.method, student.head_kind)

    def scheme(self, config: NerConfig) -> str | None:
        """The tag scheme of the models (their CRF constraints and spans): the data's, after ``convert_to``."""
        return target_scheme(config.data)

    def cache_options(self, config: NerConfig, student: NerModel) -> dict[str, Any]:
        options = {"student_head": student.head_kind, "tags": student.tags, "scheme": self.scheme(config)}
        if config.kd.method == "token":  # cached before the temperature (earlier caches held scaled scores)
            options["token_logits"] = "unscaled"
        return options

    def teacher_outputs(self, teacher: NerModel, sentences, config: NerConfig, student: NerModel) -> list[dict]:
        return compute_teacher_outputs(teacher, sentences, config.kd, student.head_kind, student.tags,
                                       self.scheme(config))

    def cached_shapes(self, batch: Batch) -> dict:
        n = max(len(s) for s in batch.sentences)
        return {"unary": ([n, None], 0.0), "logits": ([n, None], 0.0), "edges": ([max(n - 1, 0), None, None], 0.0),
                "topk_tags": ([None, n], -1.0), "topk_weights": (None, 0.0), "emissions": ([n, None], 0.0)}

    SHARED_CACHE_FIELDS = SHARED_CACHE_FIELDS

    def cache_form(self, config: NerConfig, student: NerModel, teacher) -> str:
        teachers = list(teacher) if isinstance(teacher, (list, tuple)) else [teacher]
        if isinstance(teachers[0], TeacherOutputs):  # per-token probabilities are a MaxEnt teacher's
            head = "maxent" if teachers[0].kind == "probs" else None
        else:
            head = teachers[0].head_kind
        return cache_form(config.kd.method, head, student.head_kind, len(student.tags), len(teachers))

    def cache_rows(self, teacher, items, config: NerConfig, student: NerModel) -> list[dict]:
        if isinstance(teacher, TeacherOutputs):
            return ner_potential_rows(teacher, items, student.tags)
        return compute_potential_rows(teacher, items, self.scheme(config))

    def kd_loss(self, kd, student: NerModel, output, cached: dict, batch: Batch) -> torch.Tensor:
        return kd_loss(kd, output, cached)

    # -- the toolbox (docs/kd.md) ----------------------------------------------------------------------------
    MIXABLE_FIELDS = frozenset({"unary", "edges"})

    def encode_states(self, model: NerModel, sentences, attentions: bool = False):
        return encode_states(model, sentences, attentions)

    def forward_mixed(self, model: NerModel, sentences, perm: torch.Tensor, lam: torch.Tensor):
        return forward_mixed(model, sentences, perm, lam)

    def teacher_outputs_of(self, teacher: NerModel, output, sentences, config: NerConfig, student: NerModel
                           ) -> list[dict]:
        return compute_teacher_outputs(teacher, sentences, config.kd, student.head_kind, student.tags,
                                       self.scheme(config), dist=output)

    def with_words(self, sentence: Sentence, words: list[str]) -> Sentence:
        return Sentence(list(words), None, sentence.source)

    def kd_divergence(self, kd, student: NerModel, output, cached: dict, batch: Batch) -> torch.Tensor:
        return token_divergence(kd, output, cached)

    def evaluate(self, model: NerModel, sentences: list[Sentence], report: bool = False) -> dict:
        return evaluate(model, sentences, report=report)

    def format_results(self, result: dict) -> str:
        return (f"entity micro F1 {100 * result['f1']:.2f} (precision {100 * result['precision']:.2f}, recall "
                f"{100 * result['recall']:.2f}), {result['sentences_per_second']:.0f} sentences/s, "
                f"{result['parameters']:,} parameters\n{format_table(result['per_type'])}")


TASK = NerTask()


# the commands of this task: the one runner with it bound
train_command, distill_command, evaluate_command, predict_command = runner.bound_commands(TASK)


def format_table(results: dict[str, dict]) -> str:
    """Per-type precision, recall and F1 rows of a seqeval report."""
    lines = [f"{'type':16} {'precision':>9} {'recall':>7} {'f1':>7} {'support':>7}"]
    for name, row in results.items():
        if isinstance(row, dict) and "f1-score" in row:
            lines.append(f"{name:16} {100 * row['precision']:9.2f} {100 * row['recall']:7.2f} "
                         f"{100 * row['f1-score']:7.2f} {int(row['support']):7d}")
    return "\n".join(lines)
