"""`vlm-rlhf <command> [--config FILE.yaml] [--key value ...]`: one entry point that dispatches to each command
through the lazy table in `vlm.cli.commands`; each stage keeps its own `main(argv)`."""

from __future__ import annotations

import sys

from vlm.cli.commands import COMMANDS, run_command
from vlm.errors import run_entry

USAGE = "usage: vlm-rlhf <command> [options]\n\ncommands:\n" + "\n".join(
    f"  {name:<14} {help_}" for name, (_, _, help_) in COMMANDS.items()
)


def _format(command: str, result) -> str | None:
    if command == "pipeline":
        from vlm.cli.pipeline_summary import format_summary

        return format_summary(result)
    if command == "eval":
        from vlm.cli.evaluate import format_results

        return format_results(result)
    if command == "probe":
        from vlm.cli.probe import format_probes

        return format_probes(result)
    return None if result is None else str(result)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"vlm-rlhf: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    return run_entry(f"vlm-rlhf {command}", lambda args: _format(command, run_command(command, args)), rest)


if __name__ == "__main__":
    sys.exit(main())
