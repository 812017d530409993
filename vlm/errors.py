"""The one base class for a command that stops on something the user must fix, and the one way every entry point
(`vlm-rlhf <command>`, `python -m <stage>`, `accelerate launch -m <stage>`) reports it: a single `error:` line on
stderr and exit status 2, never a traceback."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence


class CommandError(Exception):
    """A command stopped on bad input, an unreachable service or a guard rail; the message says what and how to fix
    it, naming the file, record, URL or checkpoint involved."""


# What a command reports as one line: our own stops, and the standard errors our checks raise with a full message
# (config values: ValueError; paths: FileNotFoundError / FileExistsError).
REPORTED = (CommandError, ValueError, FileNotFoundError, FileExistsError)


def configure_logging() -> None:
    logging.basicConfig(level=os.environ.get("VLM_RLHF_LOG", "INFO"), format="%(levelname)s %(name)s: %(message)s")


def run_entry(prog: str, main: Callable[[list[str]], object], argv: Sequence[str] | None = None) -> int:
    """Run `main(argv)` as the command `prog`: logging set up, a reported error as one `prog: error: ...` line
    (on every rank of a multi-process launch: each stops on the same gathered numbers), a text result on stdout.
    Returns the exit status."""
    configure_logging()
    try:
        result = main(list(sys.argv[1:] if argv is None else argv))
    except REPORTED as e:
        sys.stderr.write(f"{prog}: error: {e}\n")
        return 2
    if isinstance(result, str):
        sys.stdout.write(result + "\n")
    return 0
