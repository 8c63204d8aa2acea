"""``python -m ssvi.bench``: the same as ``python -m ssvi bench``."""

import sys

from .cli import main

sys.exit(main())
