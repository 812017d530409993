"""`python -m ppo` / `accelerate launch -m ppo --config configs/<setup>/ppo.yaml [--key value ...]`."""

import sys

from ppo.train import main
from vlm.errors import run_entry

if __name__ == "__main__":
    sys.exit(run_entry("ppo", main))
