"""Unlabeled text read lazily (structkd.data.lazy, issue #19 item 4): the same sentences and errors as the eager
readers, views that read nothing, and distillation runs equal to those on eagerly read text."""

import json
import os
import pickle

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from structkd.data import CorpusError, read_columns, read_conllu, read_text, read_tokenized_text  # noqa: E402
from structkd.data.conllu_io import as_parsed  # noqa: E402
from structkd.data.lazy import (  # noqa: E402
    ConcatSequence,
    LazySentences,
    concat,
    enumerated,
    lazy_columns,
    lazy_conllu,
    lazy_text,
    mapped,
    sentence_lengths,
)
from structkd.data.splits import apply_slices  # noqa: E402
from structkd.models.embeddings import vocabulary_sentences  # noqa: E402
from structkd.ner import build_ner_config  # noqa: E402
from structkd.ner.pipeline import TASK as NER  # noqa: E402
from structkd.parse import build_parse_config  # noqa: E402
from structkd.parse.pipeline import TASK as PARSE  # noqa: E402
from structkd.tasks import runner  # noqa: E402
from structkd.tasks.upos import TASK as UPOS  # noqa: E402
from structkd.tasks.upos import build_upos_config  # noqa: E402

BOM = "\ufeff"
COLUMNS = {  # column files: a byte-order mark, -DOCSTART-, CRLF, comments, a hashtag token, blank lines at the end
    "token-tag": f"{BOM}-DOCSTART-\tO\n\nJohn\tB-PER\r\nlives\tO\r\n\r\n# a comment\n#paris\tO\nnice\tO\n\n"
                 "-DOCSTART-\tO\nNew\tB-LOC\nYork\tI-LOC\n\n\n\n",
    "index-token-tag": "1\tHi\tO\n2\tjohn\tB-PER\n\n1\t-DOCSTART-\tO\n\n1\tthe\tO\n2\tcity\tO\n",
    "conll2003": "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\nPeter NNP B-NP B-PER\n",
    "crlf-only": "a\tO\r\nb\tO\r\n\r\nc\tO\r\n",
}
TEXT = f"{BOM}John lives in Paris\r\n\n   \nnice city\rtoday .\nlast\u2028one\n\n\n"
CONLLU = "\n".join([
    "# sent_id = 1", "1-2\tjohns\t_\t_\t_\t_\t_\t_\t_\t_", "1\tjohn\tjohn\tPROPN\t_\t_\t_\t_\t_\t_",
    "2\ts\t's\tPART\t_\t_\t_\t_\t_\t_", "3\tcity\tcity\tNOUN\t_\t_\t_\t_\t_\t_", "",
    "1\tParis\tParis\tPROPN\t_\t_\t3\tnsubj\t_\t_", "2\tis\tbe\tAUX\t_\t_\t3\tcop\t_\t_",
    "2.1\tsaid\tsay\tVERB\t_\t_\t_\t_\t_\t_", "3\tnice\tnice\tADJ\t_\t_\t0\troot\t_\t_", "", "", ""])


def write(path, text):
    path.write_bytes(text.encode("utf-8"))
    return str(path)


def same_everywhere(lazy, eager):
    """The lazy sequence holds the eager list: iterated, item by item (either end), and in slices."""
    assert len(lazy) == len(eager) and list(lazy) == eager
    assert [lazy[i] for i in reversed(range(len(eager)))] == eager[::-1] and lazy[-1] == eager[-1]
    for key in (slice(1, None), slice(None, -1), slice(1, 2), slice(None, None, 2), slice(None, None, -1),
                slice(5, 1)):
        assert list(lazy[key]) == eager[key]
    assert sentence_lengths(lazy, len) == [len(s) for s in eager]


@pytest.mark.parametrize("layout", list(COLUMNS))
def test_column_files_read_lazily_equal_the_eager_reader(tmp_path, layout):
    path = write(tmp_path / "f.conll", COLUMNS[layout])
    options = {"layout": "auto" if layout == "crlf-only" else layout, "labeled": False}
    same_everywhere(lazy_columns(path, **options), read_columns(path, **options))


def test_text_and_conllu_files_read_lazily_equal_the_eager_readers(tmp_path):
    text = write(tmp_path / "t.txt", TEXT)
    eager = read_text(text)
    # "\r" breaks lines (as universal newlines do); "\u2028" does not (split_lines), and separates words
    assert [s.tokens for s in eager] == [["John", "lives", "in", "Paris"], ["nice", "city"], ["today", "."],
                                         ["last", "one"]]
    same_everywhere(lazy_text(text), eager)
    same_everywhere(lazy_text(text).map(as_parsed), read_tokenized_text(text))
    assert list(lazy_text(text, max_sentences=2)) == eager[:2]
    conllu = write(tmp_path / "u.conllu", BOM + CONLLU.replace("\n", "\r\n"))
    eager = read_conllu(conllu, validate=False)
    assert [s.words for s in eager] == [["john", "s", "city"], ["Paris", "is", "nice"]]
    same_everywhere(lazy_conllu(conllu, validate=False), eager)
    assert list(lazy_conllu(conllu, validate=False, max_sentences=1)) == eager[:1]


BAD = [  # (suffix, text, reader options): every one refused at the same file:line by both readers
    (".conll", "a\tO\nb\tO\tx\n", {}),  # a column count other than the first row's
    (".conll", "a\tO\n\n\tO\n", {}),  # an empty token
    (".conll", "", {}),  # no sentence
    (".conll", "a\tO\n\nb\t\xffO\n", {}),  # not UTF-8 (written as latin-1 below)
    (".txt", "one\ntwo \xff\n", {}),
    (".txt", "\n \n", {}),
    (".conllu", "1\ta\ta\tX\t_\t_\t0\troot\t_\n", {}),  # 9 columns
    (".conllu", "1\ta\ta\tX\t_\t_\t_\t_\t_\t_\n\n2\tb\tb\tX\t_\t_\t_\t_\t_\t_\n", {}),  # word ID 2 first
    (".conllu", "1\ta\ta\tX\t_\t_\tx\t_\t_\t_\n", {}),  # HEAD not an integer
    (".conllu", "# only a comment\n\n", {}),
    (".conllu", "1\ta\ta\tX\t_\t_\t0\troot\t_\t_\n1\tb\tb\tX\t_\t_\t0\troot\t_\t_\n", {"validate": True}),
]


@pytest.mark.parametrize("suffix,text,options", BAD, ids=range(len(BAD)))
def test_bad_lines_are_refused_at_the_same_line_when_indexed(tmp_path, suffix, text, options):
    path = tmp_path / f"bad{suffix}"
    path.write_bytes(text.encode("latin-1"))
    if suffix == ".conll":
        eager, lazy = (lambda: read_columns(path, labeled=False)), (lambda: lazy_columns(path, labeled=False))
    elif suffix == ".txt":
        eager, lazy = (lambda: read_text(path)), (lambda: lazy_text(path))
    else:
        validate = options.get("validate", False)
        eager, lazy = (lambda: read_conllu(path, validate=validate)), (lambda: lazy_conllu(path, validate=validate))
    with pytest.raises(CorpusError) as expected:
        eager()
    with pytest.raises(CorpusError) as found:
        lazy()  # the index pass: before any sentence is used
    assert str(found.value) == str(expected.value) and str(found.value).startswith(str(path))


def test_a_file_changed_after_indexing_is_refused_and_the_sequence_pickles(tmp_path):
    path = tmp_path / "t.txt"
    write(path, "a b\nc d\n")
    sentences = lazy_text(path)
    again = pickle.loads(pickle.dumps(sentences.map(as_parsed)))  # what data loader workers get
    assert [s.words for s in again] == [["a", "b"], ["c", "d"]]
    write(path, "a b\nc d e\n")
    with pytest.raises(CorpusError, match=r"t.txt: the file changed after it was indexed"):
        sentences[1]


def test_views_read_nothing_and_iteration_streams(tmp_path, monkeypatch):
    path = write(tmp_path / "t.txt", "".join(f"w{i} x\n" for i in range(10)))
    sentences = lazy_text(path)

    def refuse(*_):
        raise AssertionError("a sentence was read one by one")

    monkeypatch.setattr(LazySentences, "_read", refuse)
    labeled = [read_text(path)[0]]
    joined = labeled + sentences  # the list's + gives a view
    assert isinstance(joined, ConcatSequence) and len(joined) == 11
    view = joined[3:8]  # across no copy: slices of the index
    assert isinstance(view, ConcatSequence) and [s.tokens[0] for s in view] == ["w2", "w3", "w4", "w5", "w6"]
    assert [s.tokens[0] for s in sentences[4:6]] == ["w4", "w5"]  # iteration streams: no _read
    assert sentence_lengths(joined, len) == [2] * 11  # the lazy part's from the index
    # model.init_from_teacher with model.open_vocabulary=false: the dev and test sentences too, joined unread
    vocabulary = vocabulary_sentences(joined, (labeled, []), from_teacher=True, open_vocabulary=False)
    assert isinstance(vocabulary, ConcatSequence) and sentences in vocabulary.parts and len(vocabulary) == 12
    assert vocabulary_sentences(joined, (labeled, []), from_teacher=False) is joined
    assert vocabulary_sentences(joined, (labeled, []), from_teacher=True) is joined  # the open vocabulary
    monkeypatch.undo()
    assert joined[0] is labeled[0] and joined[-1].tokens == ["w9", "x"] and joined[1].tokens == ["w0", "x"]
    assert [s.tokens[0] for s in joined[::4]] == [labeled[0].tokens[0], "w3", "w7"]
    pairs = enumerated(joined)
    assert len(pairs) == 11 and pairs[2][0] == 2 and pairs[2][1].tokens == ["w1", "x"] and pairs[-1][0] == 10
    assert [i for i, _ in pairs[-2:]] == [9, 10] and [i for i, _ in pairs][:3] == [0, 1, 2]
    words = mapped(joined, lambda s: s.tokens)
    assert words[5] == ["w4", "x"] and list(words[9:]) == [["w8", "x"], ["w9", "x"]]
    assert concat([1], [2]) == [1, 2] and concat(sentences) is sentences
    with pytest.raises(IndexError):
        joined[11]


def test_every_task_reads_its_unlabeled_files_lazily_as_it_read_them_eagerly(tmp_path):
    text = write(tmp_path / "raw.txt", TEXT)
    columns = write(tmp_path / "more.conll", COLUMNS["token-tag"])
    conllu = write(tmp_path / "more.conllu", CONLLU)
    config = build_ner_config({"data": {"unlabeled": [text, columns], "slices": {"unlabeled": "1:7"}}}).data
    ner = apply_slices(NER.read_data(config), config.slices)  # as the runner cuts them
    assert isinstance(ner.unlabeled, ConcatSequence) and isinstance(ner.unlabeled.parts[0], LazySentences)
    eager = [*read_text(text), *read_columns(columns, labeled=False)][1:7]
    assert list(ner.unlabeled) == eager
    parse = PARSE.read_data(build_parse_config({"data": {"unlabeled": [conllu, text], "max_sentences": 4}}).data)
    from structkd.parse.modeling import without_tree

    eager = [without_tree(s) for s in read_conllu(conllu, validate=False) + read_tokenized_text(text, 4)]
    assert list(parse.unlabeled) == eager and [s.heads for s in eager][0] == [-1, -1, -1]
    upos = UPOS.read_data(build_upos_config({"data": {"unlabeled": [conllu, text]}}).data)
    assert [s.tokens for s in upos.unlabeled] == [s.words for s in read_conllu(conllu, validate=False)] + [
        s.tokens for s in read_text(text)]
    assert all(s.tags is None for s in upos.unlabeled) and upos.unlabeled[0].lines == [3, 4, 5]


def _materialized(task, monkeypatch):
    """Make ``task.read_data`` read its unlabeled files eagerly (a list), as before."""
    read = type(task).read_data

    def eager(self, config):
        data = read(self, config)
        data.unlabeled = list(data.unlabeled)
        return data

    monkeypatch.setattr(type(task), "read_data", eager)


def _run(task, config, out):
    runner.distill_command(task, config)
    losses = [r["loss"] for r in map(json.loads, (out / "train_log.jsonl").read_text().splitlines())
              if "loss" in r]
    return losses, load_file(str(out / "model" / "model.safetensors"))


def _same_runs(task, make_config, tmp_path, monkeypatch):
    lazy = _run(task, make_config(tmp_path / "lazy"), tmp_path / "lazy")
    with monkeypatch.context() as patch:
        _materialized(task, patch)
        eager = _run(task, make_config(tmp_path / "eager"), tmp_path / "eager")
    assert lazy[0] == eager[0] and len(lazy[0]) >= 4  # the loss curve
    assert lazy[1].keys() == eager[1].keys() and all(torch.equal(lazy[1][k], eager[1][k]) for k in lazy[1])


def test_a_tagger_distilled_on_lazy_text_equals_one_distilled_on_eager_text(tmp_path, monkeypatch):
    from test_ner_pipeline import ROWS, write_corpus

    from structkd.ner.modeling import build_model
    from structkd.ner.pipeline import read_data

    train = write_corpus(tmp_path / "train.conll", ROWS, 1)
    model = {"kind": "bilstm", "word_dim": 8, "hidden": 8, "char_filters": 4}
    config = build_ner_config({"data": {"train": train}, "model": model})
    build_model(config.model, ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"], "BIO",
                read_data(config.data).train).save(tmp_path / "teacher")  # an untrained teacher serves
    unlabeled = [write(tmp_path / "raw.txt", TEXT * 3), write(tmp_path / "more.conll", COLUMNS["token-tag"] * 2)]

    def make(out):
        return build_ner_config({"data": {"train": train, "unlabeled": unlabeled, "slices": {"unlabeled": "2:"}},
                                 "model": model, "kd": {"method": "structural", "teacher": str(tmp_path / "teacher")},
                                 "training": {"epochs": 2, "batch_size": 4, "group_by_length": True, "log_every": 1,
                                              "output_dir": str(out), "progress": False}})

    _same_runs(NER, make, tmp_path, monkeypatch)


def test_a_parser_distilled_on_lazy_text_equals_one_distilled_on_eager_text(tmp_path, monkeypatch):
    from test_parse_pipeline import bilstm, write_treebank

    from structkd.models.parsers import build_rels
    from structkd.parse.modeling import build_model

    train = write_treebank(tmp_path / "train.conllu", 1)
    trees = read_conllu(train)
    build_model(build_parse_config({"model": bilstm()}).model, build_rels(trees), trees).save(tmp_path / "teacher")
    unlabeled = [write(tmp_path / "more.conllu", CONLLU * 2), write(tmp_path / "raw.txt", TEXT * 2)]

    def make(out):
        kd = {"method": "structural", "teacher": str(tmp_path / "teacher")}
        return build_parse_config({"data": {"train": train, "unlabeled": unlabeled, "max_sentences": 7},
                                   "model": bilstm(), "kd": kd,
                                   "training": {"epochs": 2, "batch_size": 4, "log_every": 1, "output_dir": str(out),
                                                "progress": False}})

    _same_runs(PARSE, make, tmp_path, monkeypatch)
