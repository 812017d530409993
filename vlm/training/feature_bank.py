"""Frozen vision features computed once per image and cached on disk, so training and RL skip the vision tower.

The features are the tower's pre-projector output (`VLMModel.get_vision_features`): every model built on the same
frozen tower (policy, reference, reward, value) reads the same bank and applies its own projector. The cache is a
`datasets` Dataset (memory-mapped Arrow) under `<cache_dir>/<vision fingerprint>/`, one row per image keyed by a
hash of the image file's bytes, so it survives moved folders and is never reused for another tower, another image
processor or an edited image. Images added later are computed and appended; a finished cache is swapped in by
rename, so an interrupted build loses nothing already stored.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from accelerate import PartialState
from datasets import Array2D, Dataset, Features, Value, concatenate_datasets, load_from_disk
from PIL import Image
from tqdm.auto import tqdm

from vlm.data.images import load_image

logger = logging.getLogger(__name__)


def vision_fingerprint(model, processor) -> str:
    """Hash of the vision tower's weights and the image processor's settings: what the features depend on."""
    backbone = getattr(model, "model", model)
    digest = hashlib.sha256()
    for name, tensor in sorted(backbone.vision_tower.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    digest.update(processor.image_processor.to_json_string().encode())
    return digest.hexdigest()[:20]


def image_key(path: str | Path) -> str:
    try:
        return hashlib.sha1(Path(path).read_bytes()).hexdigest()
    except OSError as e:
        raise FileNotFoundError(f"image {path}: cannot read ({e.strerror or e})") from e


class FeatureBank:
    """Pre-projector features by image path: `bank.rows(paths)` gives row numbers, `bank.features(rows)` the
    stacked tensor `[len(rows), num_image_tokens, D_vision]` (float32)."""

    def __init__(self, dataset: Dataset, row_of_path: dict[str, int], path: Path):
        self.dataset = dataset.with_format("torch", columns=["features"])
        self.row_of_path = row_of_path
        self.path = path

    def __len__(self) -> int:
        return len(self.dataset)

    def rows(self, image_paths: Sequence[str]) -> list[int]:
        missing = [p for p in image_paths if str(p) not in self.row_of_path]
        if missing:
            raise KeyError(f"{len(missing)} image(s) are not in the feature bank {self.path}, e.g. {missing[0]}")
        return [self.row_of_path[str(p)] for p in image_paths]

    def features(self, rows: Sequence[int]) -> torch.Tensor:
        return self.dataset[list(rows)]["features"]


def image_inputs(
    paths: Sequence[str], records: Iterable[str] | None = None, bank: FeatureBank | None = None
) -> list[torch.Tensor] | list[Image.Image]:
    """What `VLMProcessor` takes as the image of each file: its cached features `[num_image_tokens, D_vision]` from
    `bank`, or without one the decoded picture, a missing or corrupt file being named with its entry of `records`
    (what the image belongs to, e.g. "question_id 7"; read only when decoding)."""
    paths = list(paths)
    if bank is not None:
        return list(bank.features(bank.rows(paths))) if paths else []
    records = [""] * len(paths) if records is None else records
    return [load_image(path, record) for path, record in zip(paths, records, strict=True)]


def _compute(model, processor, paths: list[str], batch_size: int) -> list[torch.Tensor]:
    backbone = getattr(model, "model", model)
    device = next(backbone.vision_tower.parameters()).device
    chunks = []
    for start in tqdm(range(0, len(paths), batch_size), desc="vision features", unit="batch", leave=False):
        images = [load_image(p) for p in paths[start : start + batch_size]]
        pixels = processor.image_processor(images, return_tensors="pt")["pixel_values"].to(device)
        with torch.no_grad():
            chunks.append(backbone.get_vision_features(pixels).float().cpu())
    return chunks


def build_feature_bank(
    model, processor, image_paths: Sequence[str | Path], cache_dir: str | Path, batch_size: int = 64
) -> FeatureBank:
    """Features for every image in `image_paths`, computing only those the cache does not hold yet."""
    backbone = getattr(model, "model", model)
    if any(p.requires_grad for p in backbone.vision_tower.parameters()):
        raise ValueError("cached vision features need a frozen vision tower (freeze_vision: true)")
    paths = list(dict.fromkeys(str(p) for p in image_paths))
    fingerprint = vision_fingerprint(model, processor)
    store = Path(cache_dir) / fingerprint
    keys = {p: image_key(p) for p in tqdm(paths, desc="hashing images", unit="img", leave=False)}

    cached = load_from_disk(str(store)) if (store / "dataset_info.json").is_file() else None
    known = {k: i for i, k in enumerate(cached["key"])} if cached is not None else {}
    new_files: dict[str, str] = {}  # key -> one path with that content: identical files are computed once
    for p in paths:
        if keys[p] not in known:
            new_files.setdefault(keys[p], p)
    todo_keys, todo = list(new_files), list(new_files.values())
    if todo:
        logger.info("computing vision features for %d new image(s) into %s", len(todo), store)
        features = torch.cat(_compute(model, processor, todo, batch_size))
        n_tokens, width = features.shape[1:]
        schema = Features({"key": Value("string"), "features": Array2D(shape=(n_tokens, width), dtype="float32")})
        new = Dataset.from_dict({"key": todo_keys, "features": features.numpy()}, features=schema)
        merged = concatenate_datasets([cached, new]) if cached is not None else new
        store.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=store.parent, prefix=f".{fingerprint}."))
        merged.save_to_disk(str(tmp))
        (tmp / "bank.json").write_text(json.dumps({"fingerprint": fingerprint, "images": len(merged)}))
        old = store.with_name(f".{fingerprint}.old")
        if store.exists():
            store.rename(old)
        tmp.rename(store)
        shutil.rmtree(old, ignore_errors=True)
        cached = load_from_disk(str(store))
        known = {k: i for i, k in enumerate(cached["key"])}
    else:
        logger.info("all %d image(s) found in the vision feature cache %s", len(paths), store)
    return FeatureBank(cached, {p: known[keys[p]] for p in paths}, store)


def shared_feature_bank(
    model, processor, image_paths: Sequence[str | Path], cache_dir: str | Path, batch_size: int = 64
) -> FeatureBank:
    """`build_feature_bank` in a run of one or many processes: the main process computes what the cache lacks, then
    the others, finding everything cached, only read it (one writer: the cache is replaced by rename)."""
    # accelerate's state rather than the config's `TrainingArguments.main_process_first`: trl 1.12's PPOConfig
    # declares `world_size` as a field (ppo_config.py:184) that is None until `PPOTrainer.__init__`, so that method
    # raises there (`None > 1`: TypeError). TRL's PPO is frozen at 1.12 (removed in 1.13; pyproject pins <1.13), so
    # this stays until ppo/ stops using trl.experimental.ppo.PPOConfig.
    with PartialState().main_process_first():
        return build_feature_bank(model, processor, image_paths, Path(cache_dir).expanduser(), batch_size)
