"""Config precedence for every command: dataclass defaults, then `--config FILE.yaml`, then `--key value`.

Built on TRL's `TrlParser`. Unknown keys, values of the wrong type and abbreviated flags are errors of one line
that name the YAML file and the key; `--key none` sets a field that may be None to None, as `key: null` does in
YAML. A relative `--config` path that does
not exist from the working directory is looked up in the installed `configs/` package, so
`vlm-rlhf pipeline --config configs/demo.yaml` works from anywhere.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
import typing
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import yaml
from trl import TrlParser

from vlm.io import atomic_write_text

logger = logging.getLogger(__name__)

RUN_CONFIG = "run_config.yaml"


def resolve_config_path(path: str) -> str:
    p = Path(path)
    if p.exists() or p.is_absolute():
        return str(p)
    parts = p.parts[1:] if p.parts and p.parts[0] == "configs" else p.parts
    packaged = resources.files("configs").joinpath(*parts)
    if packaged.is_file():
        return str(packaged)
    raise FileNotFoundError(f"config file {path} not found (nor in the installed configs/ package)")


class _Parser(TrlParser):
    """TRL's parser, with argparse's prefix matching off (`--learning_rat` must not set `learning_rate` when the
    same key in YAML is refused) and a bad value reported as one line instead of the whole usage and an exit."""

    def __init__(self, dataclass_types, **kwargs):
        super().__init__(dataclass_types, allow_abbrev=False, **kwargs)

    def error(self, message):
        raise ValueError(message)


# Fields where "none" is a value of its own, not a missing one (transformers: `report_to none` = no integrations).
NONE_IS_A_VALUE = {"report_to"}


def _optional_fields(dataclass_types: Sequence[type]) -> set[str]:
    """Fields that may be None: `--key none` (or `null`) on the command line sets them to None, as `key: null` in
    YAML does (argparse alone would pass the string "none")."""
    names = set()
    for dtype in dataclass_types:
        hints = typing.get_type_hints(dtype)
        names |= {f.name for f in dataclasses.fields(dtype) if type(None) in typing.get_args(hints.get(f.name))}
    return names - NONE_IS_A_VALUE


def _yaml_settings(path: str, parser: _Parser) -> dict:
    """The YAML file's settings, each checked against the parser: an unknown key, a value of the wrong type or
    outside the choices is one error naming the file and the key."""
    try:
        with open(path, encoding="utf-8") as f:
            settings = yaml.safe_load(f)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ValueError(f"{path}: malformed YAML{where}: {getattr(e, 'problem', None) or e}") from None
    settings = {} if settings is None else settings
    if not isinstance(settings, dict):
        raise ValueError(f"{path}: expected a mapping of settings (key: value), got {type(settings).__name__}")
    for key, value in settings.pop("env", {}).items():  # TrlParser's `env:` block, kept
        os.environ[key] = str(value)
    actions = {a.dest: a for a in parser._actions}
    for key, value in settings.items():
        action = actions.get(key)
        if action is None or key == "help":
            close = difflib.get_close_matches(key, list(actions), n=1)
            raise ValueError(f"{path}: unknown key {key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        if isinstance(value, str) and callable(action.type) and action.type is not str:
            try:
                converted = action.type(value)
            except (TypeError, ValueError):
                kind = getattr(action.type, "__name__", "value")
                raise ValueError(f"{path}: {key}: {value!r} is not a valid {kind}") from None
            if action.choices and converted not in action.choices:
                raise ValueError(f"{path}: {key}: {value!r} is not one of {list(action.choices)}")
        elif action.choices and not isinstance(value, list) and value is not None and value not in action.choices:
            raise ValueError(f"{path}: {key}: {value!r} is not one of {list(action.choices)}")
    return settings


def _take_nulls(argv: list[str], optional: set[str]) -> tuple[list[str], dict]:
    """Split `--key none|null` for fields that may be None out of `argv`, as {key: None} defaults."""
    rest, nulls, i = [], {}, 0
    while i < len(argv):
        arg = argv[i]
        key, eq, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        if not eq and i + 1 < len(argv):
            value = argv[i + 1]
        if key in optional and value.lower() in ("none", "null"):
            nulls[key] = None
            i += 1 if eq else 2
            continue
        rest.append(arg)
        i += 1
    return rest, nulls


def parse_config(
    dataclass_types: Sequence[type], argv: Sequence[str] | None, prog: str | None = None, positional: str | None = None
) -> tuple:
    """Parse `argv` into the dataclasses. `positional` names a field of the first one that may also be given as a
    bare argument (`label push ... answers.jsonl`)."""
    argv = list(argv or [])
    parser = _Parser(list(dataclass_types), prog=prog)
    if positional is not None:
        parser.add_argument(f"{positional}_file", nargs="?", default=None, help=f"same as --{positional}")
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise ValueError("--config needs a YAML file path")
        path = resolve_config_path(argv[i + 1])
        del argv[i : i + 2]
        parser.set_defaults_with_config(**_yaml_settings(path, parser))
    argv, nulls = _take_nulls(argv, _optional_fields(dataclass_types))
    parser.set_defaults_with_config(**nulls)
    *outputs, unknown = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    flags = [a for a in unknown if a.startswith("--")]
    if unknown:
        first = flags[0].partition("=")[0] if flags else unknown[0]
        close = difflib.get_close_matches(first, [o for a in parser._actions for o in a.option_strings], n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ValueError(f"unknown argument {first}{hint}; every flag is spelt out in full (see --help)")
    if positional is None:
        return tuple(outputs)
    *configs, extra = outputs
    if getattr(extra, f"{positional}_file"):
        setattr(configs[0], positional, getattr(extra, f"{positional}_file"))
    return tuple(configs)


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)  # enums, paths, dtypes: their readable form


def resolved_config(*configs) -> dict:
    """Every field of the parsed configs after defaults, YAML, flags and `__post_init__`, as plain YAML values."""
    merged = {}
    for cfg in configs:
        # TrainingArguments.to_dict() turns enums into values and hides tokens; plain dataclasses go field by field
        merged |= cfg.to_dict() if hasattr(cfg, "to_dict") else dataclasses.asdict(cfg)
    return _plain(merged)


def record_config(*configs, out: str | os.PathLike) -> Path:
    """Log the resolved config at the start of a run and keep it as `<out>/run_config.yaml`, so every output says
    how it was made (on the main process only; `RANK` is set by torchrun/accelerate)."""
    text = yaml.safe_dump(resolved_config(*configs), sort_keys=False)
    path = Path(out) / RUN_CONFIG
    if int(os.environ.get("RANK", "0")) == 0:
        logger.info("resolved config (%s):\n%s", path, text)
        atomic_write_text(path, text)
    return path
