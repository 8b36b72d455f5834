"""Test configuration: make the brute-force enumerators in ``tests/brute.py`` importable as ``brute``."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
