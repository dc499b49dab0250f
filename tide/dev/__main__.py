"""``python -m tide.dev``: the same as ``tide dev``."""

import sys

from tide.dev import main

sys.exit(main())
