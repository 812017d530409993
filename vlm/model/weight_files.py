"""Check a checkpoint's safetensors files before loading them, so a truncated or corrupt one is one clear error
naming the file (safetensors itself says only "incomplete metadata, file not fully covered", deep in a traceback).

A safetensors file is an 8-byte little-endian header length N, N bytes of JSON header (each tensor's dtype, shape
and `data_offsets` [begin, end) into the data), then the data: whole exactly when its size is 8 + N + the largest
`end` (https://github.com/huggingface/safetensors#format). Only the header is read.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

from vlm.data.errors import DataError, read_json

SAFE_WEIGHTS = "model.safetensors"
SAFE_WEIGHTS_INDEX = "model.safetensors.index.json"
_MAX_HEADER = 100_000_000  # safetensors refuses larger headers too


def _problem(path: Path) -> str | None:
    """What is wrong with the safetensors file at `path`, or None when its header describes exactly its size."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return f"{size} bytes, shorter than the 8-byte header length"
        (length,) = struct.unpack("<Q", head)
        if length > _MAX_HEADER or 8 + length > size:
            return f"{size} bytes, but the header alone claims {length}"
        try:
            header = json.loads(f.read(length))
        except (UnicodeDecodeError, ValueError):
            return "its header is not valid JSON"
    if not isinstance(header, dict):
        return "its header is not a JSON object"
    try:
        end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
    except (KeyError, IndexError, TypeError):
        return "a tensor in its header has no data_offsets"
    if not isinstance(end, int) or 8 + length + end != size:
        return f"{size} bytes, but its header describes {8 + length + end}"
    return None


def check_safetensors(path: str | os.PathLike) -> None:
    """Raise a `DataError` naming `path` when it is not a whole safetensors file."""
    path = Path(path)
    try:
        problem = _problem(path)
    except OSError as e:
        problem = e.strerror or str(e)
    if problem:
        raise DataError(f"{path}: truncated or corrupt safetensors file ({problem})")


def check_weight_files(folder: str | os.PathLike | None) -> None:
    """Check the safetensors weights of a saved model folder: `model.safetensors`, or every shard its index lists.
    What is not a local folder (a Hub id, None) is left to `from_pretrained`."""
    if folder is None or not Path(folder).is_dir():
        return
    folder = Path(folder)
    if (folder / SAFE_WEIGHTS).is_file():
        check_safetensors(folder / SAFE_WEIGHTS)
    elif (folder / SAFE_WEIGHTS_INDEX).is_file():
        index = read_json(folder / SAFE_WEIGHTS_INDEX)
        shards = sorted(set(index.get("weight_map", {}).values())) if isinstance(index, dict) else []
        for shard in shards:
            if not (folder / shard).is_file():
                raise DataError(f"{folder / shard}: missing (listed in {folder / SAFE_WEIGHTS_INDEX})")
            check_safetensors(folder / shard)
