"""The example configs in examples/configs parse into valid NER (wnut17_*) and parser (ewt_*) configs."""

from pathlib import Path

import pytest

from structkd.ner import load_ner_config
from structkd.parse.config import load_parse_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "examples" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_example_config_parses(path):
    load = load_parse_config if path.name.startswith("ewt_") else load_ner_config
    config = load(path)
    assert config.data.train and config.training.output_dir.startswith("runs/")
