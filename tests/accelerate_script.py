"""Helper for ``tests/test_train_accelerate.py`` (not a test module): a tiny training run under
``accelerate launch --cpu --num_processes 2``. Each process writes ``rank<k>.json`` into the output directory
with the item indices it trained on (per epoch) and a hash of its final weights."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch
from torch import nn

from structkd.train import TrainConfig, Trainer


def main(out_dir: str) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 3))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 4, generator=g)
    y = (x @ torch.randn(4, 3, generator=g)).argmax(-1)
    data = [{"x": x[i], "y": y[i], "idx": torch.tensor(i)} for i in range(32)]
    seen: dict[int, list[int]] = {}
    trainer_box: list[Trainer] = []

    def loss_fn(model, batch):
        seen.setdefault(trainer_box[0].progress.epoch, []).extend(batch["idx"].tolist())
        return nn.functional.cross_entropy(model(batch["x"]), batch["y"])

    def evaluate_fn(model, dev):
        return {"f1": (model(x).argmax(-1) == y).float().mean().item()}

    cfg = TrainConfig(epochs=2, batch_size=4, lr=0.05, warmup=1, output_dir=out_dir, progress=False, log_every=1,
                      checkpoint_every_steps=3)
    trainer = Trainer(model, cfg, data, data, loss_fn, evaluate_fn)  # the Accelerator is created automatically
    trainer_box.append(trainer)
    trainer.train()
    state = trainer.unwrapped_model.state_dict()
    digest = hashlib.sha256(b"".join(state[k].detach().cpu().numpy().tobytes() for k in sorted(state))).hexdigest()
    info = {"rank": trainer.process_index, "world": trainer.num_processes, "seen": seen, "weights": digest,
            "steps": trainer.progress.global_step}
    Path(out_dir, f"rank{trainer.process_index}.json").write_text(json.dumps(info), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1])
