"""The `vlm-rlhf` entry point, `pipeline` and the core commands (`init-model`, `data`, `eval`): the only code that
knows every stage, and starts each one by name through the lazy command table in `vlm.cli.commands`."""

from vlm.cli.main import main

__all__ = ["main"]
