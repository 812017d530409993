"""The one error type for bad input data: its message names the file and the record."""

from __future__ import annotations

import json
import os
from typing import Any

from vlm.errors import CommandError


class DataError(CommandError, ValueError):
    """Bad input data. The message names the file and, where there is one, the record."""


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file, turning a missing file or malformed JSON into a `DataError` naming the file."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


class ServiceError(CommandError, RuntimeError):
    """An outside service (a Label Studio server) could not be reached, refused us, or could not start.
    The message names the service's URL and what we were doing; it never holds a secret."""


def read_jsonl(path: str | os.PathLike) -> list[tuple[str, Any]]:
    """`[(where, object)]` for each non-blank line of a JSON Lines file, `where` being `path:line`; a missing file,
    non-UTF-8 text, a malformed line or a line that is not a JSON object is a `DataError` naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{number}: malformed JSON ({e.msg}, column {e.colno})") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
        records.append((f"{path}:{number}", record))
    return records
