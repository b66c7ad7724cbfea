"""``python -m pulse.cli``: the same as the ``pulse`` command."""

import sys

from pulse.cli import main

sys.exit(main())
