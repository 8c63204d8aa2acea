"""``python -m ssvi ...``: see :mod:`ssvi.cli`."""

import sys

from .cli import main

sys.exit(main())
