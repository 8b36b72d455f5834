"""``python -m structkd``: the ``structkd`` command line."""

import sys

from structkd.cli import main

sys.exit(main())
