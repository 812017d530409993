"""`python -m grpo` / `accelerate launch -m grpo --config configs/<setup>/grpo.yaml [--key value ...]`."""

import sys

from grpo.train import main
from vlm.errors import run_entry

if __name__ == "__main__":
    sys.exit(run_entry("grpo", main))
