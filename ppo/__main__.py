"""`python -m ppo` / `accelerate launch -m ppo --config configs/<setup>/ppo.yaml [--key value ...]`."""

import logging
import sys

from ppo.guards import TrainingStopped
from ppo.train import main

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        main(sys.argv[1:])
    except (TrainingStopped, ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"ppo: error: {e}", file=sys.stderr)  # noqa: T201  (the command's message, one per rank)
        sys.exit(2)
