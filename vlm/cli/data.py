"""`vlm-rlhf data synth` (write the synthetic dataset), `vlm-rlhf data instruct-mix` (the instruction mix of its
scenes) and `vlm-rlhf data check` (read and summarise a VQA split)."""

from __future__ import annotations

import argparse
import collections
import json

from vlm.config_parsing import parse_config, record_config
from vlm.data.vqa import load_vqa
from vlm.synthetic.dataset import SynthConfig, write_synthetic_dataset
from vlm.synthetic.instruct_mix import InstructMixConfig, write_instruct_mix


def synth_main(argv=None):
    (cfg,) = parse_config((SynthConfig,), argv, prog="vlm-rlhf data synth")
    out = write_synthetic_dataset(cfg)
    record_config(cfg, out=out)  # after writing: a folder holding anything but a finished dataset is refused
    return out


def instruct_mix_main(argv=None) -> dict:
    (cfg,) = parse_config((InstructMixConfig,), argv, prog="vlm-rlhf data instruct-mix")
    return write_instruct_mix(cfg)


def check_main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="vlm-rlhf data check", description="Read a VQA v2 split and summarise it.")
    parser.add_argument("--data", required=True, help="folder with the VQA v2 JSON files")
    parser.add_argument("--split", default="val2014")
    parser.add_argument("--images", default=None, help="image folder (default: DATA/SPLIT)")
    parser.add_argument("--verify-images", action="store_true", help="also check every image file's header")
    args = parser.parse_args(argv)
    ds = load_vqa(args.data, args.split, image_dir=args.images, verify_images=args.verify_images)
    summary = {"split": args.split, "questions": len(ds), "images": len(set(ds["image_id"]))}
    if "answer_type" in ds.column_names:
        summary["answer_types"] = dict(collections.Counter(ds["answer_type"]))
    else:
        summary["annotations"] = "absent (questions only)"
    return summary


def main(argv=None):
    argv = list(argv or [])
    commands = {"synth": synth_main, "instruct-mix": instruct_mix_main, "check": check_main}
    if not argv or argv[0] not in commands:
        raise SystemExit(f"usage: vlm-rlhf data {{{','.join(commands)}}} [options]")
    result = commands[argv[0]](argv[1:])
    return json.dumps(result, indent=2) if isinstance(result, dict) else result
