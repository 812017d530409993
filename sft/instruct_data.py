"""LLaVA-Instruct conversations as TRL prompt-completion rows for the instruction stage.

One row per answer (`vlm.data.llava.conversation_rows`); rows longer than `max_length` with the image expanded
are dropped, not cut, since TRL's truncation keeps the start and would leave such a row with a cut answer or no
trained token at all. Images are attached per batch by `AttachConversationImages` (decoded, or cached features),
`[]` for a text-only row, so TRL's vision collator sees `{images, prompt, completion}` and nothing is copied.
"""

from __future__ import annotations

import logging

from datasets import Dataset

from vlm.data.llava import conversation_rows, load_llava_instruct
from vlm.training.feature_bank import FeatureBank, image_inputs

logger = logging.getLogger(__name__)


def row_lengths(rows: Dataset, processor, batch_size: int = 1024) -> list[int]:
    """Tokens of each row as the model sees it: the rendered prompt + completion, `<image>` counted as N tokens."""
    tokenizer, extra = processor.tokenizer, processor.num_image_tokens - 1
    lengths = []
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        texts = processor.apply_chat_template(
            [p + c for p, c in zip(batch["prompt"], batch["completion"])], tokenize=False
        )
        ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
        lengths += [len(t) + extra * bool(path) for t, path in zip(ids, batch["image_path"])]
    return lengths


def instruct_rows(json_path, image_folder, processor, max_length: int | None, limit: int | None = None):
    """(rows, facts): the rows that fit `max_length`, and counts of conversations, rows and dropped turns."""
    conversations = load_llava_instruct(json_path, image_folder, limit=limit)
    rows = conversation_rows(conversations)
    facts = {"conversations": len(conversations), "rows": len(rows), "dropped_turns": 0}
    if max_length is not None and len(rows):
        lengths = row_lengths(rows, processor)
        keep = [i for i, n in enumerate(lengths) if n <= max_length]
        facts["dropped_turns"] = len(rows) - len(keep)
        if facts["dropped_turns"]:
            logger.warning(
                "%s: %d of %d turns are longer than max_length %d (image tokens counted) and are dropped",
                json_path,
                facts["dropped_turns"],
                len(rows),
                max_length,
            )
            rows = rows.select(keep)
        facts["rows"] = len(rows)
    facts["text_only_rows"] = sum(not p for p in rows["image_path"]) if len(rows) else 0
    return rows, facts


class AttachConversationImages:
    """`Dataset.with_transform` hook: adds `images` ([image] or [] per row) to a batch of instruction rows."""

    def __init__(self, bank: FeatureBank | None = None):
        self.bank = bank

    def __call__(self, batch: dict) -> dict:
        with_image = [k for k, path in enumerate(batch["image_path"]) if path]
        records = (f"conversation {batch['id'][k]}" for k in with_image)
        loaded = iter(image_inputs([batch["image_path"][k] for k in with_image], records, self.bank))
        images = [[next(loaded)] if path else [] for path in batch["image_path"]]
        return {
            "id": batch["id"],
            "turn": batch["turn"],
            "prompt": batch["prompt"],
            "completion": batch["completion"],
            "images": images,
        }


def with_conversation_images(rows: Dataset, bank: FeatureBank | None) -> Dataset:
    return rows.with_transform(AttachConversationImages(bank))
