"""`vlm-rlhf init-model`: build a fresh VLM (tiny preset in code, or real CLIP + GPT-2 checkpoints) and save it."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from vlm.config_parsing import parse_config, record_config
from vlm.model.builder import build_vlm_from_pretrained, save_vlm
from vlm.synthetic.presets import TinyPreset, build_tiny_vlm

logger = logging.getLogger(__name__)


@dataclass
class InitModelConfig:
    out: str = field(default="runs/demo/models/init", metadata={"help": "Where to save the new checkpoint."})
    preset: str | None = field(
        default=None, metadata={"help": "Build a preset in code instead of loading checkpoints.", "choices": ["tiny"]}
    )
    vision: str | None = field(
        default=None,
        metadata={"help": "CLIP checkpoint (full CLIPModel or vision-only), e.g. openai/clip-vit-base-patch32."},
    )
    language_model: str | None = field(default=None, metadata={"help": "Causal LM checkpoint, e.g. gpt2-large."})
    tokenizer: str | None = field(default=None, metadata={"help": "Tokenizer (default: the language model's)."})
    projector_num_heads: int | None = field(
        default=None, metadata={"help": "Heads of the projector's encoder layer (must divide the vision width)."}
    )
    freeze_vision: bool = field(default=True, metadata={"help": "Freeze the vision tower (LLaVA's recipe)."})
    freeze_projector: bool = field(default=False, metadata={"help": "Freeze the projector."})
    freeze_language_model: bool = field(default=False, metadata={"help": "Freeze the language model."})

    def __post_init__(self):
        if self.preset is None and not (self.vision and self.language_model):
            raise ValueError("init-model needs --preset tiny, or both --vision and --language_model checkpoints")
        if self.preset is not None and (self.vision or self.language_model):
            raise ValueError("--preset builds in code; drop --vision/--language_model, or drop --preset")


def init_model(cfg: InitModelConfig, preset: TinyPreset | None = None) -> Path:
    if Path(cfg.out).exists():  # checked before building: loading gpt2-large only to refuse would waste minutes
        raise FileExistsError(f"{cfg.out} already exists; remove it or choose another --out")
    kwargs = dict(
        freeze_vision=cfg.freeze_vision,
        freeze_projector=cfg.freeze_projector,
        freeze_language_model=cfg.freeze_language_model,
    )
    if cfg.projector_num_heads is not None:
        kwargs["projector_num_heads"] = cfg.projector_num_heads
    if cfg.preset == "tiny":
        model, processor = build_tiny_vlm(preset or TinyPreset(), **kwargs)
    else:
        model, processor = build_vlm_from_pretrained(cfg.vision, cfg.language_model, cfg.tokenizer, **kwargs)
    out = save_vlm(model, processor, cfg.out)
    logger.info("saved %s", out)
    return out


def main(argv=None) -> Path:
    cfg, preset = parse_config((InitModelConfig, TinyPreset), argv, prog="vlm-rlhf init-model")
    out = init_model(cfg, preset)
    record_config(cfg, preset, out=out)  # after the build: init-model refuses an existing folder
    return out
