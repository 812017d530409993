"""Batches of whole conversations with the loss on the answers only, as LLaVA trains them.

Written here because TRL 1.12 does not do it for image data: `SFTTrainer` refuses `assistant_only_loss` for vision
datasets (sft_trainer.py:1052; the open request is trl#3751), and its vision collator trains every token of a
`messages` row. The masking is transformers' own: `processor.apply_chat_template(..., return_assistant_tokens_mask
=True)` marks the template's `{% generation %}` spans (each answer + EOS), re-aligned after the processor expands
`<image>` (`VLMProcessor.replace_image_token`). Everything else (system prompt, user turns, image tokens, padding) is
-100, the same labels TRL's `DataCollatorForLanguageModeling` builds from `assistant_masks`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transformers import ProcessorMixin


@dataclass
class ConversationCollator:
    processor: ProcessorMixin

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        images = [example["images"] for example in examples]
        out = self.processor.apply_chat_template(
            [example["messages"] for example in examples],
            tokenize=True,
            return_dict=True,
            return_assistant_tokens_mask=True,
            return_tensors="pt",
            processor_kwargs={
                "images": images if any(images) else None,
                "padding": True,
                "padding_side": "right",
                "add_special_tokens": False,
            },
        )
        answers = out.pop("assistant_masks").bool()
        out["labels"] = out["input_ids"].masked_fill(~answers, -100)
        return dict(out)
