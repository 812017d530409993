"""The frozen-vision feature bank: computed once, appended to, keyed by image content and vision fingerprint.

A second build computes only the new images and stores the tower's own features for them, leaving one store and no
leftovers; a copied image file shares its original's row, and another tower gets a bank of its own; a trainable
tower is refused, and a corrupt or missing image is named.
"""

from __future__ import annotations

import shutil

import pytest
import torch

from vlm.data import DataError, load_image, load_vqa
from vlm.model.builder import load_vlm
from vlm.training.feature_bank import build_feature_bank


def _paths(data, n):
    return list(dict.fromkeys(load_vqa(data, "val2014")["image_path"]))[:n]


def test_bank_appends_new_images_and_reuses_the_rest(tiny_vlm, synthetic_data, tmp_path, monkeypatch):
    model, processor = tiny_vlm
    paths = _paths(synthetic_data, 6)
    first = build_feature_bank(model, processor, paths[:4], tmp_path)
    assert len(first) == 4

    computed = []
    real_forward = model.model.get_vision_features
    monkeypatch.setattr(model.model, "get_vision_features", lambda px: computed.append(len(px)) or real_forward(px))
    second = build_feature_bank(model, processor, paths, tmp_path)
    assert computed == [2] and len(second) == 6  # only the two new images went through the tower
    pixels = processor.image_processor([load_image(paths[5])], return_tensors="pt")
    with torch.no_grad():
        expected = real_forward(pixels["pixel_values"])[0]
    assert torch.allclose(second.features(second.rows([paths[5]]))[0], expected, atol=1e-6)
    assert [p.name for p in tmp_path.iterdir()] == [second.path.name]  # one store, no leftovers


def test_bank_is_keyed_by_content_and_by_vision_tower(tiny_checkpoint, synthetic_data, tmp_path):
    model, processor = load_vlm(tiny_checkpoint)
    paths = _paths(synthetic_data, 2)
    copy = tmp_path / "copy.jpg"
    shutil.copy(paths[0], copy)
    bank = build_feature_bank(model, processor, paths + [str(copy)], tmp_path / "cache")
    assert len(bank) == 2 and bank.rows([str(copy)]) == bank.rows([paths[0]])  # same bytes, one row

    with torch.no_grad():
        model.model.vision_tower.pre_layrnorm.weight.mul_(2.0)  # another tower
    other = build_feature_bank(model, processor, paths, tmp_path / "cache")
    assert other.path != bank.path
    assert not torch.allclose(other.features([0]), bank.features([0]))


def test_bank_refuses_a_trainable_tower_and_names_a_bad_image(tiny_checkpoint, synthetic_data, tmp_path):
    model, processor = load_vlm(tiny_checkpoint)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="broken.jpg: corrupt or unreadable image"):
        build_feature_bank(model, processor, [str(broken)], tmp_path / "cache")
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        build_feature_bank(model, processor, [str(tmp_path / "missing.jpg")], tmp_path / "cache")
    model.model.vision_tower.requires_grad_(True)
    with pytest.raises(ValueError, match="frozen vision tower"):
        build_feature_bank(model, processor, _paths(synthetic_data, 1), tmp_path / "cache")
