"""`python -m vlm.cli ...`, the same as the `vlm-rlhf` script (used where the script is not on PATH, e.g. tests)."""

import sys

from vlm.cli.main import main

sys.exit(main())
