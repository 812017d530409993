"""Data layer: readers for the official VQA v2 and LLaVA-Instruct formats, and the synthetic generator."""

from vlm.data.errors import DataError
from vlm.data.images import load_image
from vlm.data.llava import load_llava_instruct
from vlm.data.vqa import load_vqa

__all__ = ["DataError", "load_image", "load_llava_instruct", "load_vqa"]
