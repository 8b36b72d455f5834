"""The example configs in examples/configs parse into valid NER configs."""

from pathlib import Path

import pytest

from structkd.ner import load_ner_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "examples" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_example_config_parses(path):
    config = load_ner_config(path)
    assert config.data.train and config.training.output_dir.startswith("runs/")
