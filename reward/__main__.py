"""`python -m reward {train,score} ...` / `accelerate launch -m reward train --config configs/<setup>/reward.yaml`."""

import sys

from reward.cli import main
from vlm.errors import run_entry

if __name__ == "__main__":
    sys.exit(run_entry("reward", main))
