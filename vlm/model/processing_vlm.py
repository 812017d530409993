"""`VLMProcessor`: CLIP image processor + tokenizer; the only place where `<image>` becomes N tokens."""

from __future__ import annotations

import torch
from transformers import ProcessorMixin
from transformers.image_utils import make_flat_list_of_images

IMAGE_TOKEN = "<image>"


class VLMProcessor(ProcessorMixin):
    r"""
    Turns `(images, text)` into `input_ids`, `attention_mask` and `pixel_values`.

    Each `<image>` in the text stands for one image and is expanded to `num_image_tokens` copies through
    transformers' `replace_image_token` hook (as `LlavaProcessor` does), so chat-template assistant masks stay
    aligned after expansion. The base `__call__` refuses a text whose `<image>` count differs from the images given.

    Cached vision features stand in for images: where every image given is a 2-D tensor
    `[num_image_tokens, D_vision]` (a row of `vlm.training.feature_bank.FeatureBank`), the image processor is
    skipped and the output carries `vision_features` instead of `pixel_values`; `<image>` expands exactly as for a
    picture. So TRL's collator, generation and PPO take cached features through the same call.

    Args:
        image_processor: a CLIP image processor.
        tokenizer: a tokenizer that knows `<image>` as a special token.
        num_image_tokens (`int`): copies of `<image>` per image (the vision tower's output length).
        chat_template (`str`, *optional*): Jinja chat template.
        image_token (`str`, defaults to `"<image>"`).
    """

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        num_image_tokens: int | None = None,
        chat_template: str | None = None,
        image_token: str = IMAGE_TOKEN,
        **kwargs,
    ):
        if num_image_tokens is None:
            raise ValueError("VLMProcessor needs num_image_tokens (the vision tower's output length)")
        self.num_image_tokens = num_image_tokens
        self.image_token = image_token
        self.image_token_id = tokenizer.convert_tokens_to_ids(image_token)
        if self.image_token_id is None or self.image_token_id == tokenizer.unk_token_id:
            raise ValueError(f"The tokenizer has no {image_token!r} token; build the model with vlm.model.builder")
        super().__init__(image_processor, tokenizer, chat_template=chat_template)

    def _process_images(self, images, **kwargs):
        flat = make_flat_list_of_images(images)
        if not all(isinstance(image, torch.Tensor) and image.ndim == 2 for image in flat):
            return super()._process_images(images, **kwargs)
        if any(image.shape[0] != self.num_image_tokens for image in flat):
            shapes = sorted({tuple(image.shape) for image in flat})
            raise ValueError(f"cached vision features must be [{self.num_image_tokens}, D]; got shapes {shapes}")
        replacements = [self.replace_image_token({}, image_idx=i) for i in range(len(flat))]
        return {"vision_features": torch.stack(flat)}, replacements

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs) -> str:
        return self.image_token * self.num_image_tokens


__all__ = ["VLMProcessor", "IMAGE_TOKEN"]
