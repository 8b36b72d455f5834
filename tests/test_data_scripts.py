"""The data script that rebuilds the shipped WNUT17 sample reproduces it from the full corpus."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WNUT = ROOT.parent / "shared" / "data" / "wnut17"


@pytest.mark.skipif(not WNUT.exists(), reason="shared WNUT17 not present")
def test_sample_is_reproducible(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_sample", ROOT / "data_scripts" / "make_wnut17_sample.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.make_sample(WNUT, tmp_path, 800, 250)
    from structkd.data import read_columns

    for name in ("train.conll", "dev.conll"):
        rebuilt = read_columns(tmp_path / name)
        shipped = read_columns(ROOT / "structkd" / "resources" / "wnut17_sample" / name)
        assert [(s.tokens, s.tags) for s in rebuilt] == [(s.tokens, s.tags) for s in shipped]
    for name in ("unlabeled.txt", "unlabeled_dev_test.txt"):
        shipped_text = (ROOT / "structkd" / "resources" / "wnut17_sample" / name).read_text(encoding="utf-8")
        assert (tmp_path / name).read_text(encoding="utf-8") == shipped_text
