"""The demo's base tower: `vlm-rlhf pretrain-base` and the copy shipped in `vlm/synthetic/base/`.

The command, run for a few steps, writes a whole base folder (HF tower, card with the weights' sha256, model card,
run_config.yaml) whose loss fell and whose probe reads colour far above chance; the tiny preset loads it as its tower
(weights equal), and refuses a base of other sizes, tampered weights or a folder that is not a base, in one line.
It refuses an existing folder. The shipped base matches its card (hash), loads into the demo's preset, and its
patches still give away each object's colour and shape (re-probed here on fresh scenes). `vlm-rlhf probe` measures
a checkpoint's tower and projector, writes the figures, and refuses a reward model.
"""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from vlm.cli import main
from vlm.synthetic.base_tower import CARD, SHIPPED, WEIGHTS, check_base, load_base_tower, sha256
from vlm.synthetic.presets import TinyPreset, build_tiny_vlm
from vlm.synthetic.probes import probe_accuracies, tower_features

SMALL = ["--vision_hidden_size", "64", "--vision_layers", "1", "--vision_heads", "2"]


@pytest.fixture(scope="module")
def small_base(tmp_path_factory):
    out = tmp_path_factory.mktemp("base") / "small"
    argv = ["pretrain-base", "--config", "configs/demo/base.yaml", "--out", str(out), *SMALL]
    argv += ["--steps", "120", "--batch_size", "32", "--learning_rate", "3e-3"]
    argv += ["--probe_train_scenes", "300", "--probe_test_scenes", "150"]
    assert main(argv) == 0
    return out


def test_pretrain_base_writes_a_whole_base_that_learned(small_base):
    assert sorted(p.name for p in small_base.iterdir()) == [
        "README.md",
        CARD,
        "config.json",
        WEIGHTS,
        "run_config.yaml",
    ]
    card = check_base(small_base)
    losses = [p["loss"] for p in card["pretraining"]["loss_curve"]]
    assert losses[-1] < 0.6 * losses[0], losses
    probes = card["probes"]
    assert probes["tower.colour"] > probes["majority.colour"] + 0.4, probes
    assert card["sha256"][WEIGHTS] == sha256(small_base / WEIGHTS)
    assert card["command"].startswith("vlm-rlhf pretrain-base --config configs/demo/base.yaml")
    assert yaml.safe_load((small_base / "run_config.yaml").read_text())["steps"] == 120
    readme = (small_base / "README.md").read_text()
    assert card["sha256"][WEIGHTS] in readme and f"{100 * probes['tower.shape']:.1f}" in readme


def test_the_preset_loads_the_base_and_refuses_what_does_not_fit(small_base, tmp_path, capsys):
    preset = TinyPreset(corpus_scenes=100, vision_hidden_size=64, vision_layers=1, vision_heads=2, text_layers=1)
    model, _ = build_tiny_vlm(TinyPreset(**{**preset.__dict__, "vision_base": str(small_base)}))
    tower = load_base_tower(str(small_base), preset.vision_config())
    for name, weight in tower.state_dict().items():
        assert torch.equal(model.model.vision_tower.state_dict()[name], weight), name

    with pytest.raises(ValueError, match=r"sizes are not the preset's: hidden_size 64 \(preset 128\)"):
        load_base_tower(str(small_base), TinyPreset().vision_config())
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    for f in small_base.iterdir():
        (tampered / f.name).write_bytes(f.read_bytes())
    data = bytearray((tampered / WEIGHTS).read_bytes())
    data[-1] ^= 1
    (tampered / WEIGHTS).write_bytes(bytes(data))
    with pytest.raises(ValueError, match="not the weights its card.json describes"):
        check_base(tampered)
    with pytest.raises(ValueError, match="not a base tower"):
        check_base(tmp_path)

    assert main(["pretrain-base", "--config", "configs/demo/base.yaml", "--out", str(small_base), *SMALL]) == 2
    assert "already exists" in capsys.readouterr().err


def test_the_shipped_base_matches_its_card_and_sees():
    card = check_base(SHIPPED)  # raises unless model.safetensors has the card's sha256
    assert card["command"].startswith("vlm-rlhf pretrain-base --config configs/demo/base.yaml")
    assert card["probes"]["tower.colour"] >= 0.95 and card["probes"]["tower.shape"] >= 0.95
    demo = yaml.safe_load(open("configs/demo/model.yaml"))
    assert demo["vision_base"] == "shipped"
    preset = TinyPreset(**{k: v for k, v in demo.items() if k in TinyPreset.__dataclass_fields__})
    tower = load_base_tower("shipped", preset.vision_config())
    with torch.no_grad():
        probes = probe_accuracies(tower_features(tower, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD), 64, 16, 400, 200)
    assert probes["tower.colour"] >= 0.9 and probes["tower.shape"] >= 0.9, probes
    assert json.loads((SHIPPED / "config.json").read_text())["model_type"] == "clip_vision_model"


def test_probe_command_reads_a_checkpoints_tower_and_projector(tiny_checkpoint, reward_checkpoint, tmp_path, capsys):
    out = tmp_path / "probes.json"
    argv = ["probe", "--model", str(tiny_checkpoint), "--train_scenes", "300", "--test_scenes", "150"]
    assert main([*argv, "--out", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert figures["model"] == str(tiny_checkpoint)
    # the test checkpoint's tower is random: colour, linear in the pixels, still shows through tower and projector
    for features in ("tower", "projector"):
        assert figures[f"{features}.colour"] > figures["majority.colour"] + 0.3, figures
        assert 0.0 <= figures[f"{features}.cell"] <= 1.0
    printed = capsys.readouterr().out
    assert "linear probes on" in printed and "projector" in printed

    assert main(["probe", "--model", str(reward_checkpoint)]) == 2
    assert "not a policy" in capsys.readouterr().err
