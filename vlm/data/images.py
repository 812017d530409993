"""Image file access with errors that name the file and the record."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError

from vlm.data.errors import DataError


def check_image_exists(path: str | Path, record: str) -> None:
    if not Path(path).is_file():
        raise DataError(f"{path}: image file not found ({record})")


def verify_image(path: str | Path, record: str) -> None:
    """Check an image's header and structure without decoding the pixels (Pillow's `verify`)."""
    check_image_exists(path, record)
    try:
        with Image.open(path) as im:
            im.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: corrupt or unreadable image ({record}): {e}") from None


def load_image(path: str | Path, record: str = "") -> Image.Image:
    """Decode an image to RGB; a missing or corrupt file raises `DataError` naming the file and the record."""
    check_image_exists(path, record)
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: corrupt or unreadable image ({record}): {e}") from None
