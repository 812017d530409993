"""The `vlm-rlhf` commands: init-model (preset and real-checkpoint paths), data, pipeline, configs, bad input.

Every shipped YAML parses into its config types (no unknown keys) and the accelerate configs load. `init-model`
builds the tiny preset and, through the gpt2-large config, a VLM from a full `CLIPModel`, a vision-only CLIP and a
GPT-2 checkpoint saved in HF format, and refuses bad input; `data synth` / `data check` work and name a malformed
file. The pipeline end to end on a small setup: SFT beats the untrained model by more than 20 points of held-out
VQA accuracy; two labeling rounds (disagreement, then the round-1 reward model's uncertainty) with gold answers;
the reward model; PPO after the reward model and the SFT-vs-PPO report (KL of SFT to itself 0, of PPO > 0, the
"Reward and KL" table); instruct after PPO (perplexity falls, the report has sample dialogues). Run again, it
reuses every model and report; labels made with other settings are refused. An unknown command exits 2.
"""

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from transformers import CLIPConfig, CLIPModel, CLIPVisionModel, GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from grpo.config import VLMGRPOConfig
from labeling.round import RoundConfig
from ppo.config import VLMPPOConfig
from reward.config import RewardConfig
from sft.config import VQASFTConfig
from sft.instruct_config import InstructConfig
from vlm.cli import main
from vlm.cli.init_model import InitModelConfig
from vlm.cli.pipeline import PipelineConfig
from vlm.cli.pretrain_base import PretrainBaseConfig
from vlm.config_parsing import parse_config
from vlm.model.builder import load_vlm
from vlm.synthetic.dataset import SynthConfig
from vlm.synthetic.instruct_mix import InstructMixConfig
from vlm.synthetic.presets import TinyPreset, train_tiny_tokenizer

REPO = Path(__file__).resolve().parents[1]
CONFIG_TYPES = {
    "demo.yaml": (PipelineConfig,),
    "data.yaml": (SynthConfig,),
    "model.yaml": (InitModelConfig, TinyPreset),
    "sft.yaml": (VQASFTConfig,),
    "sft-projector.yaml": (VQASFTConfig,),
    "reward.yaml": (RewardConfig,),
    "ppo.yaml": (VLMPPOConfig,),
    "grpo.yaml": (VLMGRPOConfig,),
    "instruct.yaml": (InstructConfig,),
    "instruct-data.yaml": (InstructMixConfig,),
    "labeling.yaml": (RoundConfig,),
    "base.yaml": (PretrainBaseConfig,),
}
# What the pipeline passes beside a shipped YAML that the YAML cannot hold: the labels' gold key files.
PIPELINE_FLAGS = {"configs/demo/reward.yaml": ["--gold", "runs/demo/labels/round-1/answers.gold.jsonl"]}


STAGE_CONFIGS = sorted(p for p in (REPO / "configs").rglob("*.yaml") if p.parent.name != "accelerate")


@pytest.mark.parametrize("path", STAGE_CONFIGS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_shipped_yaml_parses(path):
    types = CONFIG_TYPES[path.name]
    flags = PIPELINE_FLAGS.get(str(path.relative_to(REPO)), [])
    parsed = parse_config(types, ["--config", str(path), *flags])
    assert parsed[0] is not None
    keys = set(yaml.safe_load(path.read_text()))
    known = {f for t in types for f in t.__dataclass_fields__}
    assert keys <= known


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "accelerate").glob("*.yaml")), ids=lambda p: p.name)
def test_accelerate_configs_load(path):
    from accelerate.commands.config.config_args import ClusterConfig

    assert ClusterConfig.from_yaml_file(path).num_processes >= 1


def test_init_model_tiny_preset(tmp_path):
    out = tmp_path / "m"
    argv = ["init-model", "--preset", "tiny", "--out", str(out), "--corpus_scenes", "200", "--text_layers", "2"]
    assert main(argv) == 0
    model, processor = load_vlm(out)
    assert model.config.text_config.n_layer == 2 and processor.num_image_tokens == 17
    assert (out / "model.safetensors").exists() and not list(out.glob("*.bin"))
    assert main(argv) == 2  # never overwrites an existing checkpoint


def _save_real_format_checkpoints(root: Path, full_clip: bool) -> tuple[Path, Path]:
    """Tiny CLIP and GPT-2 checkpoints saved exactly as hub checkpoints are (config + safetensors + processor)."""
    torch.manual_seed(0)
    vision_kwargs = dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8
    )
    if full_clip:
        clip = CLIPModel(
            CLIPConfig(
                vision_config=vision_kwargs,
                text_config=dict(
                    hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=99
                ),
                projection_dim=16,
            )
        )
    else:
        clip = CLIPVisionModel(CLIPVisionModel.config_class(**vision_kwargs))
    clip.save_pretrained(root / "clip")
    CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        root / "clip"
    )
    tokenizer = train_tiny_tokenizer(TinyPreset(corpus_scenes=100))
    assert isinstance(tokenizer, PreTrainedTokenizerFast)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=48, n_layer=2, n_head=4, n_positions=128))
    gpt2.save_pretrained(root / "gpt2")
    tokenizer.save_pretrained(root / "gpt2")
    return root / "clip", root / "gpt2"


@pytest.mark.parametrize("full_clip", [True, False], ids=["full-CLIPModel", "vision-only"])
def test_init_model_from_checkpoints_with_the_gpt2_large_config(tmp_path, full_clip):
    clip_dir, gpt2_dir = _save_real_format_checkpoints(tmp_path, full_clip)
    out = tmp_path / "vlm"
    config = REPO / "configs/gpt2-large-clip-vqav2/model.yaml"
    argv = [
        "init-model",
        "--config",
        str(config),
        "--vision",
        str(clip_dir),
        "--language_model",
        str(gpt2_dir),
        "--projector_num_heads",
        "4",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    model, processor = load_vlm(out)
    vision = CLIPVisionModel.from_pretrained(clip_dir)
    gpt2 = GPT2LMHeadModel.from_pretrained(gpt2_dir)
    for name, p in vision.state_dict().items():
        assert torch.equal(model.model.vision_tower.state_dict()[name], p), name  # pretrained weights copied
    lm_state = model.model.language_model.state_dict()
    assert torch.equal(lm_state["h.0.attn.c_attn.weight"], gpt2.transformer.h[0].attn.c_attn.weight)
    old_vocab = gpt2.config.vocab_size
    assert torch.equal(lm_state["wte.weight"][:old_vocab], gpt2.transformer.wte.weight)
    tok = processor.tokenizer
    assert len(tok) == old_vocab + 2 and model.config.text_config.vocab_size == len(tok)  # <image> and <pad> added
    assert tok.pad_token_id not in (tok.eos_token_id, model.config.image_token_id)
    assert model.config.num_image_tokens == 17 and model.config.freeze_vision


def test_init_model_bad_input(tmp_path, capsys):
    assert main(["init-model", "--out", str(tmp_path / "x")]) == 2
    assert "needs --preset tiny, or both --vision and --language_model" in capsys.readouterr().err
    assert main(["init-model", "--config", "configs/nope.yaml"]) == 2
    assert "configs/nope.yaml not found" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("preset: tiny\nlayers: 3\n")
    assert main(["init-model", "--config", str(bad), "--out", str(tmp_path / "y")]) == 2
    assert f"{bad}: unknown key 'layers' (did you mean 'text_layers'?)" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()


SMALL_DATA = ["--train", "4", "--val", "2", "--feedback", "2", "--dev", "0"]


def test_data_commands(tmp_path, capsys):
    out = tmp_path / "d"
    assert main(["data", "synth", "--config", "configs/demo/data.yaml", "--out", str(out), *SMALL_DATA]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert main(["data", "check", "--data", str(out), "--split", "val2014", "--verify-images"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (
        summary["questions"] > 0
        and summary["images"] == 2
        and sum(summary["answer_types"].values()) == summary["questions"]
    )
    (out / "v2_mscoco_val2014_annotations.json").write_text("{oops")
    assert main(["data", "check", "--data", str(out), "--split", "val2014"]) == 2
    assert "v2_mscoco_val2014_annotations.json: malformed JSON" in capsys.readouterr().err


def test_pipeline_end_to_end_and_resume(tmp_path, capsys):
    """Every stage on a small setup, SFT beating the untrained model by more than 20 points; a re-run reuses it all."""
    data_cfg = tmp_path / "data.yaml"
    data_cfg.write_text("train: 40\nval: 6\nfeedback: 24\ndev: 6\nseed: 5\n")
    model_cfg = tmp_path / "model.yaml"
    model_cfg.write_text("preset: tiny\ncorpus_scenes: 200\ntext_layers: 2\n")
    sft_cfg = tmp_path / "sft.yaml"
    sft_cfg.write_text(
        "cache_vision_features: true\nper_device_train_batch_size: 16\nlearning_rate: 3.0e-3\nmax_steps: 30\n"
        "eval_strategy: steps\neval_steps: 15\neval_limit: 20\nsave_strategy: 'no'\nlogging_steps: 5\n"
        "report_to: none\ndisable_tqdm: true\n"
    )
    reward_cfg = tmp_path / "reward.yaml"
    reward_cfg.write_text(
        "cache_vision_features: true\nper_device_train_batch_size: 16\nlearning_rate: 3.0e-4\nnum_train_epochs: 2\n"
        "min_labels: 10\neval_fraction: 0.3\nsave_strategy: 'no'\nreport_to: none\ndisable_tqdm: true\n"
    )
    ppo_cfg = tmp_path / "ppo.yaml"
    ppo_cfg.write_text(
        "total_episodes: 48\nper_device_train_batch_size: 8\ngradient_accumulation_steps: 2\nlearning_rate: 1.0e-4\n"
        "num_ppo_epochs: 2\neval_strategy: steps\neval_steps: 2\neval_limit: 12\nsave_strategy: 'no'\n"
        "report_to: none\ndisable_tqdm: true\nkl_budget: 5.0\ntrain_split: feedback2014\neval_split: dev2014\n"
        "reward_check: warn\n"  # a 30-step policy's reward model may well rank below greedy: trained anyway
    )
    grpo_cfg = tmp_path / "grpo.yaml"
    grpo_cfg.write_text(
        "max_steps: 3\nnum_generations: 4\nper_device_train_batch_size: 8\ngradient_accumulation_steps: 2\n"
        "per_device_eval_batch_size: 8\nlearning_rate: 1.0e-4\neval_strategy: steps\neval_steps: 2\neval_limit: 12\n"
        "save_strategy: 'no'\nreport_to: none\ndisable_tqdm: true\ntrain_split: feedback2014\neval_split: dev2014\n"
    )
    instruct_cfg = tmp_path / "instruct.yaml"
    instruct_cfg.write_text(
        "max_steps: 20\nper_device_train_batch_size: 8\nlearning_rate: 3.0e-3\neval_limit: 4\n"
        "cache_vision_features: true\nsave_strategy: 'no'\nreport_to: none\ndisable_tqdm: true\n"
    )
    demo_labeling = yaml.safe_load(Path("configs/demo/labeling.yaml").read_text())
    labeling_cfg = tmp_path / "labeling.yaml"  # the demo's labeling settings, on a pool of 12 questions
    labeling_cfg.write_text(yaml.safe_dump(demo_labeling | {"questions": 12, "samples": 3}))
    argv = ["pipeline", "--config", "configs/demo.yaml", "--output_dir", str(tmp_path / "run")]
    argv += ["--labeling_config", str(labeling_cfg)]
    argv += ["--instruct_config", str(instruct_cfg)]
    argv += ["--data_config", str(data_cfg), "--model_config", str(model_cfg), "--sft_config", str(sft_cfg)]
    argv += ["--reward_config", str(reward_cfg), "--ppo_config", str(ppo_cfg), "--rl_from_sft_checkpoint", ""]
    argv += ["--rl", "both", "--grpo_config", str(grpo_cfg)]
    argv += ["--examples", "5"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    summary = json.loads((tmp_path / "run/pipeline.json").read_text())
    assert summary["sft"]["steps"] == 30 and summary["sft"]["final_loss"] < summary["sft"]["first_loss"]
    assert summary["eval"]["sft"]["accuracy"] > summary["eval"]["init"]["accuracy"] + 0.2
    assert [p["step"] for p in summary["sft"]["vqa_curve"]] == [15, 30] and "SFT learning curve" in printed
    assert len(summary["examples"]) == 5
    for row in summary["examples"]:
        assert 0.0 <= row["sft_vqa_accuracy"] <= 1.0 and row["question"] in printed
    assert (tmp_path / "run/eval/report.md").is_file() and "VQA accuracy" in printed
    labels = summary["labels"]  # stage 2: sampled SFT answers, labelled by the simulated annotators
    assert labels["source"] == "simulated" and "simulated annotators" in printed
    # two rounds (configs/demo.yaml): answers to 12 questions each, chosen by disagreement, then by the round-1
    # RM's uncertainty, with gold answers mixed in; every answer labelled by 2 annotators
    assert [(r["round"], r["selection"]) for r in labels["rounds"]] == [(1, "disagreement"), (2, "uncertainty")]
    assert (tmp_path / "run/models/reward-round-1/summary.json").is_file() and len(labels["gold"]) == 2
    assert labels["stats"]["gold_answers"] >= 2 and "round 2 (uncertainty" in printed
    assert 24 <= labels["stats"]["answers"] <= 80 and labels["stats"]["annotations"] == 2 * labels["stats"]["answers"]
    assert labels["stats"]["by_verdict"]["correct"] > 0 and labels["stats"]["by_verdict"]["incorrect"] > 0
    labelled = [json.loads(line) for f in Path(labels["store"]).glob("*.jsonl") for line in f.read_text().splitlines()]
    assert {Path(r["image"]).parent.name for r in labelled} == {"feedback2014"}  # the demo's pool, not SFT's scenes
    reward = summary["reward"]  # stage 3: trained on those labels, measured on answers to unseen images
    assert reward["labels"]["held_out_answers"] > 0 and 0.0 <= reward["held_out"]["labels"]["accuracy"] <= 1.0
    assert "reward model (pointwise" in printed and (tmp_path / "run/models/reward/reliability.png").is_file()
    ppo = summary["ppo"]  # stage 4: PPO of the SFT policy against that reward model, then SFT vs PPO side by side
    assert ppo["updates"] == 3 and ppo["best"]["step"] in (0, 2, 3)
    ppo_summary = json.loads((tmp_path / "run/models/ppo/summary.json").read_text())
    assert (ppo_summary["data"]["split"], ppo_summary["data"]["eval_split"]) == ("feedback2014", "dev2014")
    assert set(ppo_summary["reward_check"]) >= {"greedy", "best_of_n_by_reward", "pair_accuracy"}
    rl = summary["rl_eval"]
    assert rl["sft"]["kl_to_reference"] == pytest.approx(0.0, abs=1e-6) and rl["ppo"]["kl_to_reference"] > 0
    # each model's answers are scored: the mean reward-model logit (checked against a hand computation in test_eval;
    # at this size three PPO updates may leave the answers, and so the mean, unchanged)
    assert all(math.isfinite(rl[m]["reward_score"]) for m in ("sft", "ppo")) and "KL to the RL start" in printed
    grpo = summary["grpo"]  # GRPO beside PPO (`rl: both`): same start, reward model and prompts, one table
    assert grpo["updates"] == 3 and grpo["best"]["step"] in (0, 2, 3) and rl["grpo"]["kl_to_reference"] > 0
    assert "GRPO from" in printed and "wall time (s)" in printed and "what color is the" in printed
    assert "Reward and KL" in (tmp_path / "run/eval-rl/report.md").read_text()
    instruct = summary["instruct"]  # stage 5: instruction tuning of the PPO policy, start vs end with chat metrics
    assert instruct["steps"] == 20 and instruct["start"] == summary["models"]["ppo"]
    assert instruct["final_perplexity"] < instruct["start_perplexity"]
    chat = summary["instruct_eval"]
    assert list(chat) == ["instruct-start", "instruct"] and "held-out answer perplexity" in printed
    assert chat["instruct"]["chat"]["perplexity"] < chat["instruct-start"]["chat"]["perplexity"]
    assert "Sample dialogues" in (tmp_path / "run/eval-instruct/report.md").read_text()
    models = ("init", "sft", "reward", "ppo", "instruct")
    weights = [tmp_path / f"run/models/{m}/model.safetensors" for m in models]
    stamps = [w.stat().st_mtime_ns for w in weights]
    assert main(argv) == 0  # resumes: data, models and evaluation are reused, not rebuilt
    assert [w.stat().st_mtime_ns for w in weights] == stamps
    assert json.loads((tmp_path / "run/pipeline.json").read_text())["eval"] == summary["eval"]
    labeling_cfg.write_text(yaml.safe_dump(demo_labeling | {"questions": 13, "samples": 3}))
    assert main(argv) == 2  # labels made with other settings are not silently mixed with new ones
    assert "holds answers and labels made with other labeling settings" in capsys.readouterr().err


def test_unknown_command(capsys):
    assert main(["nope"]) == 2
    assert "unknown command" in capsys.readouterr().err


def test_every_cli_config_field_has_help():
    """Every field of every dataclass the commands parse (through `parse_config`, and `label round`'s
    `label_studio` settings) has a `help`, as TRL's configs do: it is what `--help` shows. The list is explicit, and
    checked against the `parse_config((...))` calls in the source, so a new command's config cannot slip by."""
    import dataclasses
    import re

    from labeling.cli import StatsConfig
    from labeling.generate import GenerateConfig
    from labeling.pull import PullConfig
    from labeling.push import PushConfig
    from labeling.round import LabelStudioSettings
    from labeling.serve import ServeConfig
    from labeling.simulate import SimulateConfig
    from reward.score import ScoreConfig
    from vlm.cli.evaluate import EvalConfig
    from vlm.cli.probe import ProbeConfig

    parsed = [
        SynthConfig,
        InstructMixConfig,
        InitModelConfig,
        TinyPreset,
        PretrainBaseConfig,
        ProbeConfig,
        EvalConfig,
        PipelineConfig,  # vlm-rlhf ...
        GenerateConfig,
        PushConfig,
        PullConfig,
        SimulateConfig,
        ServeConfig,
        StatsConfig,
        RoundConfig,  # label ...
        LabelStudioSettings,  # label round's `label_studio`
        ScoreConfig,
        RewardConfig,
        VQASFTConfig,
        InstructConfig,
        VLMPPOConfig,
        VLMGRPOConfig,  # reward score, the stages
    ]
    called = set()
    for package in ("vlm", "labeling", "reward", "sft", "ppo", "grpo"):
        for source in (REPO / package).rglob("*.py"):
            for names in re.findall(r"parse_config\(\(([^)]*)\)", source.read_text()):
                called |= {name.strip() for name in names.split(",") if name.strip()}
    assert called, "no parse_config((...)) call found: has the parser moved?"
    unlisted = called - {c.__name__ for c in parsed}
    assert not unlisted, f"parsed by a command but not checked here, add them to the list: {sorted(unlisted)}"
    missing = [f"{c.__name__}.{f.name}" for c in parsed for f in dataclasses.fields(c) if not f.metadata.get("help")]
    assert not missing, f"fields without metadata={{'help': ...}}: {missing}"


def test_config_errors_are_one_line_naming_the_file_and_key(tmp_path, capsys):
    """Prefix matching is off (`--learning_rat` is refused, with the right spelling suggested); a YAML value of the
    wrong type, outside the choices, or an unknown YAML key is one `error:` line naming the file and the key, with
    no usage dump; `--key none` sets a field that may be None to None, as `key: null` does in YAML."""
    assert main(["sft", "--learning_rat", "1e-3"]) == 2
    err = capsys.readouterr().err
    assert "unknown argument --learning_rat (did you mean --learning_rate?)" in err
    for text, expected in [
        ("learning_rate: abc\n", "learning_rate: 'abc' is not a valid float"),
        ("answer: guess\n", "answer: 'guess' is not one of ['multiple_choice', 'sample']"),
        ("learnin_rate: 1.0e-3\n", "unknown key 'learnin_rate' (did you mean 'learning_rate'?)"),
        ("- just a list\n", "expected a mapping of settings (key: value), got list"),
    ]:
        config = tmp_path / "sft.yaml"
        config.write_text(text)
        assert main(["sft", "--config", str(config)]) == 2
        captured = capsys.readouterr()
        lines = [line for line in captured.err.splitlines() if line.strip()]
        assert lines == [f"vlm-rlhf sft: error: {config}: {expected}"] and "usage" not in captured.out + captured.err
    (cfg,) = parse_config((VQASFTConfig,), ["--config", "configs/demo/sft.yaml", "--eval_split", "none"])
    assert cfg.eval_split is None and cfg.learning_rate == 1.0e-3
    (cfg,) = parse_config((VLMPPOConfig,), ["--eval_split=null", "--lora", "none"])
    assert cfg.eval_split is None and cfg.lora is None
