"""`python -m reward {train,score} ...` / `accelerate launch -m reward train --config configs/<setup>/reward.yaml`."""

import logging
import sys

from reward.cli import main

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    main(sys.argv[1:])
