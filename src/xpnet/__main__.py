"""``python -m xpnet``: the same as the ``xpnet`` console script."""

import sys

from .cli import main

sys.exit(main())
