"""PPO prompts: VQA questions as left-padded `Q: <image> {question} A:` ids, each row pointing at its image.

Images travel as an index into an image store held by the trainer: the frozen tower's pre-projector features
(computed once per run, cached on disk by `vlm.training.feature_bank`), or `pixel_values` when the tower is
trained. Every model (policy, reference, value, reward) gets the same rows and applies its own projector.

The rollout order is a function of (seed, update) alone, so a resumed run draws exactly the batches an
uninterrupted one would, without saving a sampler.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from tqdm.auto import tqdm

from vlm.data.images import load_image
from vlm.model.generation import vqa_prompt
from vlm.training.feature_bank import FeatureBank, image_inputs, shared_feature_bank


class ImageStore:
    """Model inputs for a batch of image indices: `{"vision_features": ...}` (from a feature bank) or
    `{"pixel_values": ...}`."""

    def __init__(self, key: str, rows_of_path: dict[str, int], fetch, bank: FeatureBank | None = None):
        self.key, self.row_of_path, self._fetch, self.bank = key, rows_of_path, fetch, bank

    def rows(self, paths) -> list[int]:
        return [self.row_of_path[str(p)] for p in paths]

    def inputs(self, image_idx: torch.Tensor, device) -> dict[str, torch.Tensor]:
        return {self.key: self._fetch(image_idx.tolist()).to(device)}

    def images(self, paths) -> list:
        """What `VLMProcessor` takes as images for these files: feature rows, or the decoded pictures."""
        return image_inputs(paths, bank=self.bank)


def feature_store(model, processor, paths, cache_dir: str | Path) -> ImageStore:
    """The frozen tower's features of `paths`, from the on-disk cache (computed by the main process first)."""
    bank = shared_feature_bank(model, processor, paths, cache_dir)
    return ImageStore("vision_features", bank.row_of_path, bank.features, bank)


def pixel_store(processor, paths, batch_size: int = 256) -> ImageStore:
    """Preprocessed pixels in memory, for a vision tower that is trained (features could not be cached)."""
    unique = list(dict.fromkeys(str(p) for p in paths))
    chunks = []
    for start in tqdm(range(0, len(unique), batch_size), desc="images", unit="batch", leave=False):
        images = [load_image(p) for p in unique[start : start + batch_size]]
        chunks.append(processor.image_processor(images, return_tensors="pt")["pixel_values"])
    pixels = torch.cat(chunks)
    return ImageStore("pixel_values", {p: i for i, p in enumerate(unique)}, lambda rows: pixels[rows])


def prompt_ids(processor, questions: list[str]) -> list[list[int]]:
    """Token ids of each VQA prompt, `<image>` expanded by the processor (a placeholder stands for the features:
    only their count of rows matters to the expansion)."""
    placeholder = torch.zeros(processor.num_image_tokens, 1)
    ids = []
    for start in range(0, len(questions), 512):
        batch = questions[start : start + 512]
        out = processor(images=[[placeholder]] * len(batch), text=[vqa_prompt(q) for q in batch], padding=False)
        ids += out["input_ids"]
    return ids


def prompt_dataset(vqa: Dataset, processor, store: ImageStore) -> Dataset:
    """Rows `{input_ids, image_idx, row_idx}`; `row_idx` points back into `vqa` (question, human answers)."""
    return Dataset.from_dict(
        {
            "input_ids": prompt_ids(processor, list(vqa["question"])),
            "image_idx": store.rows(vqa["image_path"]),
            "row_idx": list(range(len(vqa))),
        }
    )


def left_pad(rows: list[list[int]], pad_id: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([[pad_id] * (width - len(r)) + r for r in rows], dtype=torch.long)


@dataclass(frozen=True)
class RolloutOrder:
    """Which dataset rows each rank answers at each update: epochs of seeded permutations, cut into global batches,
    each rank taking its contiguous share."""

    num_rows: int
    seed: int

    def rows(self, update: int, local_batch: int, rank: int, world: int) -> list[int]:
        start = update * local_batch * world + rank * local_batch
        out = []
        for position in range(start, start + local_batch):
            epoch, offset = divmod(position, self.num_rows)
            out.append(int(_permutation(self.num_rows, self.seed, epoch)[offset]))
        return out


@functools.lru_cache(maxsize=4)
def _permutation(num_rows: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(num_rows)
