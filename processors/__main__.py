"""``python -m pulse.processors ARGS``: the same as ``pulse worker ARGS``.

Kept for what starts stages this way (the processor tests' harness, the benchmarks). The
process becomes ``python -m pulse.cli worker ARGS`` (same pid, so signals still reach it);
the stages never import the CLI.
"""

import os
import sys

if __name__ == "__main__":
    os.execv(sys.executable, [sys.executable, "-m", "pulse.cli", "worker", *sys.argv[1:]])
