"""Config precedence for every command: dataclass defaults, then `--config FILE.yaml`, then `--key value`.

Built on TRL's `TrlParser` (unknown YAML keys and unknown flags are errors). A relative `--config` path that does
not exist from the working directory is looked up in the installed `configs/` package, so
`vlm-rlhf pipeline --config configs/demo.yaml` works from anywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from trl import TrlParser


def resolve_config_path(path: str) -> str:
    p = Path(path)
    if p.exists() or p.is_absolute():
        return str(p)
    parts = p.parts[1:] if p.parts and p.parts[0] == "configs" else p.parts
    packaged = resources.files("configs").joinpath(*parts)
    if packaged.is_file():
        return str(packaged)
    raise FileNotFoundError(f"config file {path} not found (nor in the installed configs/ package)")


def parse_config(
    dataclass_types: Sequence[type], argv: Sequence[str] | None, prog: str | None = None, positional: str | None = None
) -> tuple:
    """Parse `argv` into the dataclasses. `positional` names a field of the first one that may also be given as a
    bare argument (`label push ... answers.jsonl`)."""
    argv = list(argv or [])
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise ValueError("--config needs a YAML file path")
        argv[i + 1] = resolve_config_path(argv[i + 1])
    parser = TrlParser(list(dataclass_types), prog=prog)
    if positional is None:
        return parser.parse_args_and_config(args=argv)
    parser.add_argument(f"{positional}_file", nargs="?", default=None, help=f"same as --{positional}")
    *configs, extra = parser.parse_args_and_config(args=argv)
    if getattr(extra, f"{positional}_file"):
        setattr(configs[0], positional, getattr(extra, f"{positional}_file"))
    return tuple(configs)
