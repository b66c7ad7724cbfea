"""``python -m pulse.processors``: the same as ``pulse worker``."""

import sys

from pulse.processors.worker import main

from pulse.settings import Settings

if __name__ == "__main__":
    sys.exit(main(Settings.from_env(), sys.argv[1:]))
