"""LLaVA-Instruct conversations as chat rows for the instruction stage, one row per conversation.

A conversation longer than `max_length` with the image expanded keeps its longest run of whole turns from the
start that fits, and the answers after it are dropped and counted; one whose first answer does not fit is dropped.
Cutting mid-answer would train a broken answer. Images are attached per batch by `AttachConversationImages`
(decoded, or cached features), `[]` for a text-only row, so the collator sees `{messages, images}` and nothing is
copied.
"""

from __future__ import annotations

import logging

from datasets import Dataset

from vlm.data.llava import conversation_rows, load_llava_instruct
from vlm.training.feature_bank import FeatureBank, image_inputs

logger = logging.getLogger(__name__)


def answer_ends(rows: Dataset, processor) -> list[list[int]]:
    """Per row, the length in tokens (`<image>` counted as N) of the rendering up to and including each answer."""
    tokenizer, extra = processor.tokenizer, processor.num_image_tokens - 1
    prefixes, owners = [], []
    for k, (messages, path) in enumerate(zip(rows["messages"], rows["image_path"])):
        for t in range(2, len(messages) + 1, 2):
            prefixes.append(messages[:t])
            owners.append((k, extra * bool(path)))
    texts = processor.apply_chat_template(prefixes, tokenize=False) if prefixes else []
    ends = [[] for _ in range(len(rows))]
    for (k, image), ids in zip(owners, tokenizer(texts, add_special_tokens=False)["input_ids"]):
        ends[k].append(len(ids) + image)
    return ends


def _whole_turns_within(rows: Dataset, processor, max_length: int) -> tuple[Dataset, int]:
    """(rows cut to whole turns within max_length, conversations left empty removed; answers dropped). Rows that
    all fit are returned as they are."""
    ends = answer_ends(rows, processor)
    fitting = [sum(end <= max_length for end in row_ends) for row_ends in ends]  # ends grow: the first ones fit
    dropped = sum(map(len, ends)) - sum(fitting)
    if not dropped:
        return rows, 0
    kept = [dict(row, messages=row["messages"][: 2 * n]) for row, n in zip(rows, fitting) if n]
    return (Dataset.from_list(kept) if kept else rows.select([])), dropped


def instruct_rows(json_path, image_folder, processor, max_length: int | None, limit: int | None = None):
    """(rows, facts): the conversations that fit `max_length` (cut to whole turns), and counts of conversations,
    rows, trained answers and answers dropped for length."""
    conversations = load_llava_instruct(json_path, image_folder, limit=limit)
    rows = conversation_rows(conversations)
    facts = {"conversations": len(conversations), "rows": len(rows), "dropped_turns": 0}
    if max_length is not None and len(rows):
        rows, facts["dropped_turns"] = _whole_turns_within(rows, processor, max_length)
        if facts["dropped_turns"]:
            logger.warning(
                "%s: %d answers end past max_length %d (image tokens counted); they and the turns after them are "
                "dropped",
                json_path,
                facts["dropped_turns"],
                max_length,
            )
        facts["rows"] = len(rows)
    facts["answers"] = sum(len(m) // 2 for m in rows["messages"]) if len(rows) else 0
    facts["text_only_rows"] = sum(not p for p in rows["image_path"]) if len(rows) else 0
    return rows, facts


class AttachConversationImages:
    """`Dataset.with_transform` hook: adds `images` ([image] or [] per row) to a batch of conversation rows."""

    def __init__(self, bank: FeatureBank | None = None):
        self.bank = bank

    def __call__(self, batch: dict) -> dict:
        with_image = [k for k, path in enumerate(batch["image_path"]) if path]
        records = (f"conversation {batch['id'][k]}" for k in with_image)
        loaded = iter(image_inputs([batch["image_path"][k] for k in with_image], records, self.bank))
        images = [[next(loaded)] if path else [] for path in batch["image_path"]]
        return {"id": batch["id"], "messages": batch["messages"], "images": images}


def with_conversation_images(rows: Dataset, bank: FeatureBank | None) -> Dataset:
    return rows.with_transform(AttachConversationImages(bank))
