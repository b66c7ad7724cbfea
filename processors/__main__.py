"""``python -m processors``: the same as ``pulse worker``."""

import sys

from processors.worker import main
from settings import Settings

if __name__ == "__main__":
    sys.exit(main(Settings.from_env(), sys.argv[1:]))
