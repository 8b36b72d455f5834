"""``structkd TASK predict`` (issue #21 item 3) and ``structkd export`` (item 4) on the command line: formats,
standard input and output, streaming, the output path checked first, --max-words, errors at the input's line."""

import io
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import conllu  # noqa: E402
import pytest  # noqa: E402
from test_input_checks import ROWS, small, write  # noqa: E402
from test_parse_pipeline import write_treebank  # noqa: E402

from structkd.cli import main  # noqa: E402
from structkd.ner import build_ner_config, train_command  # noqa: E402
from structkd.parse import build_parse_config  # noqa: E402
from structkd.parse import train_command as parse_train  # noqa: E402
from structkd.tasks.predicting import _umask  # noqa: E402


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    train_command(build_ner_config({"data": {"train": write(root / "train.conll", ROWS, 2)}, **small(root / "t")}))
    treebank = write_treebank(root / "train.conllu", 2)
    parser = {"kind": "biaffine", "tree": "projective", "encoder": "bilstm", "word_dim": 8, "hidden": 8,
              "char_filters": 4, "layers": 1, "arc_hidden": 8, "rel_hidden": 6}
    parse_train(build_parse_config({"data": {"train": treebank}, "model": parser,
                                    "training": {"epochs": 1, "output_dir": str(root / "p"), "progress": False}}))
    return {"tagger": str(root / "t" / "model"), "parser": str(root / "p" / "model"), "treebank": treebank,
            "root": root}


class Recorder(io.StringIO):
    """Standard input that counts the lines handed out, with standard output noting that count at its first
    write: a streaming command writes before it has read everything."""

    def __init__(self, text):
        super().__init__(text)
        self.read_lines = 0

    def __iter__(self):
        while line := self.readline():
            self.read_lines += 1
            yield line


class Out(io.StringIO):
    def __init__(self, source):
        super().__init__()
        self.source, self.read_at_first_write = source, None

    def write(self, text):
        if self.read_at_first_write is None and text.strip():
            self.read_at_first_write = self.source.read_lines
        return super().write(text)


def test_raw_text_from_stdin_to_stdout_is_streamed(models, monkeypatch):
    lines = [f"John Smith visited Paris, France! ({n})" for n in range(200)]
    stdin = Recorder("\n".join(lines) + "\n")
    stdout = Out(stdin)
    monkeypatch.setattr(sys, "stdin", stdin)
    monkeypatch.setattr(sys, "stdout", stdout)
    assert main(["ner", "predict", models["tagger"], "-", "-", "--format", "jsonl", "--chunk-size", "16"]) == 0
    records = [json.loads(line) for line in stdout.getvalue().splitlines()]
    assert len(records) == 200 and records[7]["text"] == lines[7]
    assert [t["text"] for t in records[0]["tokens"]][:6] == ["John", "Smith", "visited", "Paris", ",", "France"]
    assert stdout.read_at_first_write <= 2 * 16  # the first results were written after one chunk, not the file


@pytest.mark.parametrize("fmt", ["conll", "conllu", "json", "jsonl"])
def test_every_format_for_a_tagger(models, tmp_path, fmt):
    text = tmp_path / "raw.txt"
    text.write_text("John lives in Paris.\nHi john\n", encoding="utf-8")
    out = tmp_path / f"out.{fmt}"
    assert main(["ner", "predict", models["tagger"], str(text), str(out), "--format", fmt]) == 0
    body = out.read_text(encoding="utf-8")
    assert out.stat().st_mode & 0o777 == 0o666 & ~_umask()  # written under a temporary name, then a file's usual mode
    if fmt == "conll":
        assert [r.split("\t")[0] for r in body.splitlines() if r] == ["John", "lives", "in", "Paris", ".", "Hi",
                                                                       "john"]
    elif fmt == "conllu":
        assert [t["form"] for t in conllu.parse(body)[0]] == ["John", "lives", "in", "Paris", "."]
    elif fmt == "json":
        assert [d["text"] for d in json.loads(body)] == ["John lives in Paris.", "Hi john"]
    else:
        assert len(body.splitlines()) == 2


def test_a_parser_keeps_the_input_columns_in_conllu_and_writes_json(models, tmp_path):
    out = tmp_path / "parsed.conllu"
    assert main(["parse", "predict", models["parser"], models["treebank"], str(out), "--chunk-size", "3"]) == 0
    gold, predicted = conllu.parse(open(models["treebank"]).read()), conllu.parse(out.read_text())
    assert len(gold) == len(predicted)
    assert all([t["lemma"] for t in g] == [t["lemma"] for t in p] and g.metadata == p.metadata
               for g, p in zip(gold, predicted))
    assert main(["parse", "predict", models["parser"], models["treebank"], str(tmp_path / "p.json"),
                 "--format", "json"]) == 0
    parses = json.loads((tmp_path / "p.json").read_text())
    assert len(parses) == len(gold) and all("head_score" in w for w in parses[0]["sentences"][0])


def test_the_output_path_is_checked_before_any_work(models, tmp_path, capsys):
    missing = tmp_path / "no" / "such" / "folder" / "out.conll"
    assert main(["ner", "predict", models["tagger"], models["treebank"], str(missing)]) == 2
    assert f"{missing}: the folder {missing.parent} does not exist" in capsys.readouterr().err
    assert main(["ner", "predict", models["tagger"], str(tmp_path / "nope.txt"), str(tmp_path / "o")]) == 2
    assert "nope.txt: no such file" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_max_words_for_parsers_and_long_lines_for_taggers(models, tmp_path, capsys):
    assert main(["parse", "predict", models["parser"], models["treebank"], str(tmp_path / "p.conllu"),
                 "--max-words", "3"]) == 2
    err = capsys.readouterr().err
    assert f"{models['treebank']}:3: a sentence of 7 words, longer than --max-words 3" in err
    assert not (tmp_path / "p.conllu").exists()  # nothing half-written is left
    line = tmp_path / "long.txt"
    line.write_text(" ".join(["Paris"] * 20000) + "\n", encoding="utf-8")
    out = tmp_path / "long.jsonl"
    assert main(["ner", "predict", models["tagger"], str(line), str(out), "--format", "jsonl", "--pretokenized"]) == 0
    assert len(json.loads(out.read_text())["tags"]) == 20000  # read in pieces of --max-words (1000) words
    assert main(["parse", "predict", models["parser"], str(line), str(tmp_path / "x"), "--pretokenized"]) == 2
    assert "20000 words" in capsys.readouterr().err


def test_errors_in_a_later_chunk_name_the_input_line(models, tmp_path, capsys):
    good = open(models["treebank"]).read()
    bad = good + "1\tword\tword\tNOUN\t_\t_\t0\troot\t_\t_\n2\tbroken\n\n"
    path = tmp_path / "bad.conllu"
    path.write_text(bad, encoding="utf-8")
    assert main(["parse", "predict", models["parser"], str(path), str(tmp_path / "o.conllu"), "--chunk-size", "2"]) == 2
    line = bad.splitlines().index("2\tbroken") + 1
    assert f"{path}:{line}:" in capsys.readouterr().err


def test_export_then_the_runtime_tags_like_torch(models, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    import structkd
    from structkd import runtime

    out = tmp_path / "onnx"
    assert main(["export", models["tagger"], str(out)]) == 0
    exported = runtime.load(str(out))
    torch_model = structkd.load(models["tagger"], tokenizer="whitespace")
    words = [["John", "Smith", "lives", "in", "Paris"], ["Hi", "john"]]
    assert [r.tags for r in exported(words)] == [r.tags for r in torch_model(words)]
    with pytest.raises(SystemExit):  # argparse refuses the format
        main(["export", models["tagger"], str(tmp_path / "onnx2"), "--format", "tflite"])


def test_a_trained_model_carries_its_tokenizer(models):
    """The train and distill commands save the raw-text tokenizer with the model (issue #21 item 2)."""
    from structkd.inference import saved_tokenizer
    from structkd.text import default_tokenizer

    assert saved_tokenizer(models["tagger"]) == saved_tokenizer(models["parser"]) == default_tokenizer()
