"""The VLM: additive fusion, HF round trips, cached/batched generation, the score head, freezing.

Different images change the logits at text positions; zero image features leave the plain token embeddings and
other features are added exactly at the `<image>` positions; the sequence length is the text length after the
expansion; the processor refuses an `<image>` count that differs from the images given, the model a token count
that differs from the features; `save_pretrained` -> `from_pretrained` gives identical logits and the Auto classes
resolve (causal LM, processor, sequence classifier sharing the backbone); the LM head is tied to the embeddings;
cached greedy generation equals a step-by-step re-forward, batched left-padded generation equals one-by-one, and the
vision tower runs once per `generate`; the sequence classifier reads the last token and sees the image; the
answer-likelihood reward model's logit is a * (the policy's summed log-probs of the answer's tokens and EOS) + b,
computed by hand from the policy's own logits, and moves when only the answer or only the image changes; freezing is
configuration; bad configs are refused; the backbone path TRL's chunked loss and PPO reward/value path call sees the
image; bf16 runs; cached vision features give the logits of pixel values; a sampled `<image>` in a response is text;
the Trainer's resume load does not report the tied `lm_head.weight` missing but does report a real gap; a truncated
`model.safetensors` is one `error:` line naming it (exit code 2).
"""

import contextlib
import logging
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoProcessor,
    Trainer,
    TrainingArguments,
)

from vlm import VLMConfig, VLMForCausalLM, VLMForSequenceClassification, VLMProcessor
from vlm.cli import main as cli_main
from vlm.data.errors import DataError
from vlm.model.builder import load_vlm
from vlm.model.generation import generate_answers, greedy_without_cache, vqa_prompt


def random_image(seed: int, size: int = 64) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def encode(processor, questions, seeds):
    return processor(
        images=[random_image(s) for s in seeds],
        text=[vqa_prompt(q) for q in questions],
        padding=True,
        return_tensors="pt",
    )


def test_different_images_change_text_logits(tiny_vlm):
    model, processor = tiny_vlm
    a = encode(processor, ["What color is the square?"], [0])
    b = encode(processor, ["What color is the square?"], [1])
    assert torch.equal(a["input_ids"], b["input_ids"])
    with torch.no_grad():
        la, lb = model(**a).logits, model(**b).logits
    text_positions = a["input_ids"][0] != model.config.image_token_id
    assert (la[0, text_positions] - lb[0, text_positions]).abs().max() > 1e-4


def test_fusion_is_additive(tiny_vlm):
    model, processor = tiny_vlm
    inputs = encode(processor, ["How many objects are there?"], [0])
    ids = inputs["input_ids"]
    backbone = model.model
    embeds = backbone.get_input_embeddings()(ids)
    n, d = model.config.num_image_tokens, model.config.text_config.hidden_size

    zero = backbone.add_image_features(ids, embeds, torch.zeros(1, n, d))
    assert torch.equal(zero, embeds)  # zero features: plain token embeddings, nothing concatenated

    feats = torch.randn(1, n, d)
    fused = backbone.add_image_features(ids, embeds, feats)
    mask = ids[0] == model.config.image_token_id
    assert int(mask.sum()) == n
    assert torch.allclose(fused[0, mask], embeds[0, mask] + feats[0])
    assert torch.equal(fused[0, ~mask], embeds[0, ~mask])


def test_sequence_length_is_text_length_after_expansion(tiny_vlm):
    model, processor = tiny_vlm
    prompt = vqa_prompt("Is there a red circle?")
    inputs = processor(images=[random_image(0)], text=[prompt], return_tensors="pt")
    plain = processor.tokenizer(prompt)["input_ids"]  # `<image>` counted once
    n = model.config.num_image_tokens
    assert inputs["input_ids"].shape[1] == len(plain) + n - 1
    with torch.no_grad():
        assert model(**inputs).logits.shape[1] == inputs["input_ids"].shape[1]


def test_processor_refuses_image_count_mismatch(tiny_vlm):
    _, processor = tiny_vlm
    with pytest.raises(ValueError, match="<image>"):
        processor(images=[random_image(0), random_image(1)], text=[vqa_prompt("Is it red?")])
    with pytest.raises(ValueError, match="<image>"):
        processor(images=[random_image(0)], text=["Q: no image here A:"])
    with pytest.raises(ValueError, match="no images"):
        processor(text=[vqa_prompt("Is it red?")])


def test_model_refuses_token_feature_mismatch(tiny_vlm):
    model, processor = tiny_vlm
    inputs = encode(processor, ["Is it red?"], [0])
    ids = inputs["input_ids"]
    first_image = int((ids[0] == model.config.image_token_id).nonzero()[0])
    truncated = torch.cat([ids[:, :first_image], ids[:, first_image + 1 :]], dim=1)  # one `<image>` short
    with pytest.raises(ValueError, match="do not match"):
        model(input_ids=truncated, pixel_values=inputs["pixel_values"])


def test_save_load_round_trip_and_auto_classes(tiny_vlm, tmp_path):
    model, processor = tiny_vlm
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), VLMConfig)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    loaded_processor = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded, VLMForCausalLM) and isinstance(loaded_processor, VLMProcessor)
    assert loaded_processor.num_image_tokens == processor.num_image_tokens
    inputs = encode(processor, ["What shape is the red object?"], [5])
    again = encode(loaded_processor, ["What shape is the red object?"], [5])
    assert torch.equal(inputs["input_ids"], again["input_ids"])
    assert torch.equal(inputs["pixel_values"], again["pixel_values"])
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, loaded(**again).logits)
    classifier = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert isinstance(classifier, VLMForSequenceClassification) and classifier.score.out_features == 1
    classifier.save_pretrained(tmp_path / "rm")
    reloaded = VLMForSequenceClassification.from_pretrained(tmp_path / "rm")
    assert torch.equal(reloaded.score.weight, classifier.score.weight)
    assert VLMForSequenceClassification.from_pretrained(tmp_path, num_labels=3).score.out_features == 3
    # the backbone is shared with the causal LM checkpoint; only the score head is new
    assert torch.equal(classifier.model.projector.out.weight, model.model.projector.out.weight)


def test_lm_head_tied_to_embeddings(tiny_vlm):
    model, _ = tiny_vlm
    assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()


@contextlib.contextmanager
def transformers_log():
    """The messages transformers logs inside the block (its loggers do not reach pytest's caplog)."""
    lines = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    library = logging.getLogger("transformers")
    library.addHandler(handler)
    try:
        yield lines
    finally:
        library.removeHandler(handler)


def test_resuming_does_not_report_the_tied_lm_head_missing_but_reports_a_real_gap(tiny_checkpoint, tmp_path):
    """The Trainer's resume load of a checkpoint that leaves the tied `lm_head.weight` out re-ties it without a
    "missing keys" line; a weight really missing is still reported (by the Trainer and by `from_pretrained`), and an
    untied LM head is still saved."""
    model, _ = load_vlm(tiny_checkpoint)
    trainer = Trainer(model=model, args=TrainingArguments(output_dir=str(tmp_path / "t"), report_to="none"))
    with transformers_log() as lines:
        trainer._load_from_checkpoint(str(tiny_checkpoint))  # what `train(resume_from_checkpoint=...)` calls
    assert not [line for line in lines if "missing" in line.lower()], lines
    assert model.lm_head.weight is model.get_input_embeddings().weight

    gap = tmp_path / "gap"
    shutil.copytree(tiny_checkpoint, gap)
    weights = load_file(gap / "model.safetensors")
    del weights["model.projector.norm.weight"]
    save_file(weights, gap / "model.safetensors", metadata={"format": "pt"})
    with transformers_log() as lines:
        trainer._load_from_checkpoint(str(gap))
        load_vlm(gap)
    assert any("missing keys" in line and "model.projector.norm.weight" in line for line in lines), lines
    assert any("model.projector.norm.weight" in line and "MISSING" in line for line in lines), lines

    config = VLMConfig.from_pretrained(tiny_checkpoint)
    config.tie_word_embeddings = config.text_config.tie_word_embeddings = False
    VLMForCausalLM(config).save_pretrained(tmp_path / "untied")
    assert "lm_head.weight" in load_file(tmp_path / "untied" / "model.safetensors")


def test_truncated_weights_give_one_error_naming_the_file(tiny_checkpoint, synthetic_data, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_checkpoint, broken)
    weights = broken / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)
    argv = ["eval", "--model", str(broken), "--data", str(synthetic_data), "--limit", "2", "--out", str(tmp_path / "e")]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [line for line in err.splitlines() if "error:" in line]
    assert line.startswith(f"vlm-rlhf eval: error: {weights}: truncated or corrupt safetensors file (")
    weights.write_bytes(b"\xff" * 64)  # a header length past the end of the file
    with pytest.raises(DataError, match=f"{weights}: truncated or corrupt safetensors file"):
        VLMForSequenceClassification.from_pretrained(broken)


def test_cached_generate_equals_naive_reforward(tiny_vlm):
    model, processor = tiny_vlm
    inputs = encode(processor, ["What color is the circle?"], [2])
    steps = 12
    with torch.no_grad():
        cached = model.generate(**inputs, max_new_tokens=steps, min_new_tokens=steps, do_sample=False)
        naive = greedy_without_cache(model, max_new_tokens=steps, **inputs)
    assert torch.equal(cached, naive)


def test_vision_tower_runs_once_per_generate(tiny_vlm):
    model, processor = tiny_vlm
    calls = []
    hook = model.model.vision_tower.register_forward_hook(lambda m, i, o: calls.append(i))
    try:
        inputs = encode(processor, ["Is there a blue cross?", "How many squares are there?"], [0, 1])
        with torch.no_grad():
            model.generate(**inputs, max_new_tokens=6, min_new_tokens=6, do_sample=False)
    finally:
        hook.remove()
    assert len(calls) == 1  # prefill only, for both images at once


def test_batched_left_padded_generation_equals_one_by_one(tiny_vlm):
    model, processor = tiny_vlm
    questions = ["Is the red circle left of the blue square?", "How many?", "What color is the triangle?"]
    images = [random_image(s) for s in (3, 4, 5)]
    kwargs = dict(max_new_tokens=6, min_new_tokens=6)
    batched = generate_answers(model, processor, images, questions, batch_size=3, **kwargs)
    single = [generate_answers(model, processor, [im], [q], **kwargs)[0] for im, q in zip(images, questions)]
    assert batched == single
    inputs = encode(processor, questions, (3, 4, 5))
    assert (inputs["attention_mask"][:, 0] == 0).any()  # the batch really was left-padded


def test_sequence_classifier_reads_last_token_and_sees_image(tiny_checkpoint):
    torch.manual_seed(0)
    model = VLMForSequenceClassification.from_pretrained(tiny_checkpoint).eval()  # scalar head by default
    processor = AutoProcessor.from_pretrained(tiny_checkpoint)
    texts = [vqa_prompt("What color is the square?") + " red", vqa_prompt("Is it?") + " no"]
    with torch.no_grad():
        batch = model(
            **processor(images=[random_image(0), random_image(1)], text=texts, padding=True, return_tensors="pt")
        )
        alone = [
            model(**processor(images=[random_image(s)], text=[t], return_tensors="pt")).logits
            for s, t in zip((0, 1), texts)
        ]
        other_image = model(**processor(images=[random_image(7)], text=[texts[0]], return_tensors="pt")).logits
    assert batch.logits.shape == (2, 1)
    assert torch.allclose(batch.logits[0], alone[0][0], atol=1e-5)
    assert torch.allclose(batch.logits[1], alone[1][0], atol=1e-5)
    assert (other_image - alone[0]).abs().item() > 1e-5


def test_answer_likelihood_reward_is_the_policys_log_likelihood_of_the_answer(
    tiny_checkpoint, likelihood_reward_checkpoint
):
    from vlm.model.reward_scoring import load_reward_model, reward_inputs, score_answers

    rm, processor = load_reward_model(likelihood_reward_checkpoint)
    policy = VLMForCausalLM.from_pretrained(tiny_checkpoint).eval()
    images = [random_image(0), random_image(1), random_image(0)]
    questions = ["What color is the square?", "How many objects are there?", "What color is the square?"]
    answers = ["red", "two apples", "blue"]
    scores = score_answers(rm, processor, images, questions, answers)
    inputs = reward_inputs(processor, images, questions, answers)
    mask = inputs.pop("answer_mask")
    with torch.no_grad():
        log_probs = torch.log_softmax(policy(**inputs).logits[:, :-1], -1)
    for row, answer in enumerate(answers):
        marked = inputs["input_ids"][row][mask[row].bool()]
        assert processor.tokenizer.decode(marked) == f" {answer}{processor.tokenizer.eos_token}"
        positions = mask[row].nonzero()[:, 0]
        by_hand = log_probs[row, positions - 1, inputs["input_ids"][row, positions]].sum()
        assert scores[row].item() == pytest.approx(0.5 * by_hand.item() + 1.0, abs=1e-4)
    assert abs(scores[0] - scores[2]) > 1e-3  # only the answer differs
    other_image = score_answers(rm, processor, [random_image(7)], questions[:1], answers[:1])
    assert abs(other_image[0] - scores[0]) > 1e-5  # only the image differs


def test_freezing_is_configuration(tiny_vlm):
    model, processor = tiny_vlm
    assert not any(p.requires_grad for p in model.model.vision_tower.parameters())
    assert all(p.requires_grad for p in model.model.projector.parameters())
    assert all(p.requires_grad for p in model.model.language_model.parameters())
    model.train()
    inputs = encode(processor, ["What color is the square?"], [0])
    model(**inputs, labels=inputs["input_ids"]).loss.backward()
    assert model.model.projector.out.weight.grad.abs().sum() > 0  # the image reaches the loss through the addition
    model.config.freeze_language_model = True
    model.apply_freezing()
    assert not any(p.requires_grad for p in model.model.language_model.parameters())


def test_config_validation():
    with pytest.raises(ValueError, match="num_image_tokens"):
        VLMConfig(
            vision_config={"image_size": 64, "patch_size": 16, "hidden_size": 32, "num_attention_heads": 4},
            num_image_tokens=10,
        )
    with pytest.raises(ValueError, match="projector_num_heads"):
        VLMConfig(
            vision_config={"image_size": 64, "patch_size": 16, "hidden_size": 30, "num_attention_heads": 3},
            projector_num_heads=8,
        )
    config = VLMConfig(vision_config={"image_size": 224, "patch_size": 32})
    assert config.num_image_tokens == 50  # ViT-B/32: 49 patches + CLS


def test_backbone_path_used_by_trl_sees_the_image(tiny_checkpoint):
    """TRL's chunked SFT loss calls `model.base_model(...)`, its PPO reward/value path
    `getattr(model, model.base_model_prefix)(...)` then `model.score(hidden_states[-1])`: both must see the image."""
    model = VLMForSequenceClassification.from_pretrained(tiny_checkpoint, num_labels=1).eval()
    processor = AutoProcessor.from_pretrained(tiny_checkpoint)
    text = [vqa_prompt("Is there a red circle?") + " yes"]
    a = processor(images=[random_image(0)], text=text, return_tensors="pt")
    b = processor(images=[random_image(1)], text=text, return_tensors="pt")
    backbone = getattr(model, model.base_model_prefix)
    assert backbone is model.base_model is model.model
    with torch.no_grad():
        out_a = backbone(**a, output_hidden_states=True, use_cache=False)
        out_b = backbone(**b, output_hidden_states=True, use_cache=False)
        assert torch.allclose(out_a.hidden_states[-1], out_a.last_hidden_state)  # post final LayerNorm
        score_a = model.score(out_a.hidden_states[-1])[:, -1]
        assert torch.allclose(score_a, model(**a).logits, atol=1e-6)
        assert (score_a - model.score(out_b.hidden_states[-1])[:, -1]).abs().item() > 1e-6


def test_runs_in_bfloat16(tiny_checkpoint):
    """Device- and dtype-agnostic: fp32 pixel values and a bf16 model meet in the backbone."""
    model = VLMForCausalLM.from_pretrained(tiny_checkpoint, dtype=torch.bfloat16).eval()
    processor = AutoProcessor.from_pretrained(tiny_checkpoint)
    inputs = encode(processor, ["What color is the cross?"], [0])
    assert inputs["pixel_values"].dtype == torch.float32
    with torch.no_grad():
        logits = model(**inputs).logits
        out = model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits.float()).all()
    assert out.shape[1] == inputs["input_ids"].shape[1] + 4


def test_precomputed_vision_features_equal_pixel_values(tiny_vlm):
    """Stages cache pre-projector features of the frozen tower; feeding them back must change nothing."""
    model, processor = tiny_vlm
    inputs = encode(processor, ["How many circles are there?", "Is there a red cross?"], [0, 1])
    with torch.no_grad():
        features = model.get_vision_features(inputs["pixel_values"])
        assert features.shape == (2, model.config.num_image_tokens, model.config.vision_config.hidden_size)
        from_pixels = model(**inputs).logits
        cached = {k: v for k, v in inputs.items() if k != "pixel_values"}
        from_features = model(**cached, vision_features=features).logits
    assert torch.equal(from_pixels, from_features)
    with pytest.raises(ValueError, match="not both"):
        model(**inputs, vision_features=features)


def test_sampled_image_token_in_a_response_is_text(tiny_vlm):
    """A response that samples `<image>` is re-scored in RL: only the prompt's N tokens per row get the image."""
    model, processor = tiny_vlm
    inputs = encode(processor, ["What color is the square?"], [0])
    extra = torch.tensor([[model.config.image_token_id]])
    ids = torch.cat([inputs["input_ids"], extra], dim=1)
    mask = torch.cat([inputs["attention_mask"], torch.ones_like(extra)], dim=1)
    with torch.no_grad():
        prompt_only = model(**inputs).logits
        longer = model(input_ids=ids, attention_mask=mask, pixel_values=inputs["pixel_values"]).logits
    assert torch.allclose(longer[:, :-1], prompt_only, atol=1e-5)
