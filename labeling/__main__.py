"""`python -m labeling {generate,push,pull,simulate,stats,serve,round} ...` (the same as `vlm-rlhf label ...`)."""

import sys

from labeling.cli import main
from vlm.errors import run_entry

if __name__ == "__main__":
    sys.exit(run_entry("labeling", main))
