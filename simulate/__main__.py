"""``python -m simulate``: the same as ``tide simulate``."""

import sys

from simulate import main

sys.exit(main())
