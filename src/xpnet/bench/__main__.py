"""``python -m xpnet.bench [options]``: the same as ``xpnet bench [options]``."""

import sys

from .cli import main

sys.exit(main())
