"""`python -m sft` / `accelerate launch -m sft --config configs/<setup>/sft.yaml [--key value ...]`."""

import sys

from sft.train import main
from vlm.errors import run_entry

if __name__ == "__main__":
    sys.exit(run_entry("sft", main))
