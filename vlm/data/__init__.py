"""Readers for the public formats only (VQA v2, LLaVA-Instruct, images) and the one error type for bad data; the
synthetic generator that writes them lives in `vlm.synthetic`."""

from vlm.data.errors import DataError
from vlm.data.images import load_image
from vlm.data.llava import load_llava_instruct
from vlm.data.vqa import load_vqa

__all__ = ["DataError", "load_image", "load_llava_instruct", "load_vqa"]
