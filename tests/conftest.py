"""Shared fixtures: a tiny VLM saved in real HF format, and a small synthetic VQA dataset on disk."""

from __future__ import annotations

import pytest
import torch

import vlm  # noqa: F401  (registers the Auto classes)
from vlm.model.builder import load_vlm, save_vlm
from vlm.synthetic.dataset import SynthConfig, write_synthetic_dataset
from vlm.synthetic.presets import TinyPreset, build_tiny_vlm

# Small enough to build in ~1 s, same shapes as the demo model.
TEST_PRESET = TinyPreset(corpus_scenes=400, text_layers=2, vision_layers=2)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model, processor = build_tiny_vlm(TEST_PRESET)
    return save_vlm(model, processor, tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.fixture(scope="module")
def reward_checkpoint(tiny_checkpoint, tmp_path_factory):
    """A reward model in real HF format: the tiny VLM's backbone with a seeded scalar head."""
    from transformers import AutoProcessor

    from vlm.model.modeling_vlm import VLMForSequenceClassification

    torch.manual_seed(1)
    model = VLMForSequenceClassification.from_pretrained(tiny_checkpoint)
    out = tmp_path_factory.mktemp("rm") / "rm"
    model.save_pretrained(out)
    AutoProcessor.from_pretrained(tiny_checkpoint).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def likelihood_reward_checkpoint(tiny_checkpoint, tmp_path_factory):
    """A reward model that reads the answer through the LM head (`VLMForAnswerLikelihood`), logit = 0.5 * log p(answer,
    EOS) + 1, in real HF format."""
    from transformers import AutoProcessor

    from vlm.model.modeling_vlm import VLMForAnswerLikelihood

    model = VLMForAnswerLikelihood.from_pretrained(tiny_checkpoint)
    with torch.no_grad():
        model.likelihood_head.weight.fill_(0.5)
        model.likelihood_head.bias.fill_(1.0)
    out = tmp_path_factory.mktemp("rm-likelihood") / "rm"
    model.save_pretrained(out)
    AutoProcessor.from_pretrained(tiny_checkpoint).save_pretrained(out)
    return out


@pytest.fixture
def tiny_vlm(tiny_checkpoint):
    model, processor = load_vlm(tiny_checkpoint)
    return model.eval(), processor


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "synth"
    return write_synthetic_dataset(SynthConfig(out=str(out), train=24, val=12, seed=3))


@pytest.fixture(scope="session")
def label_studio_golden(tmp_path_factory):
    """An initialised Label Studio state dir (admin + two signed-up annotators), made once per session."""
    from label_studio_helpers import initialise_golden

    return initialise_golden(tmp_path_factory.mktemp("label-studio") / "golden")


@pytest.fixture
def label_studio(label_studio_golden, synthetic_data, tmp_path):
    """A real Label Studio server of its own for one test, serving the synthetic data's images as local files."""
    from label_studio_helpers import start_copy

    server = start_copy(label_studio_golden, tmp_path / "label-studio", document_root=synthetic_data)
    yield server
    server.stop()
