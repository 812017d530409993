"""`python -m sft` / `accelerate launch -m sft --config configs/<setup>/sft.yaml [--key value ...]`."""

import logging
import sys

from sft.train import main

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    main(sys.argv[1:])
