"""`vlm-rlhf label {round,generate,push,pull,simulate,stats,serve} [options]` (also `vlm-rlhf labels stats`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from vlm.config_parsing import parse_config
from vlm.io import atomic_write_text
from vlm.labels.gold import read_gold
from vlm.labels.store import VERDICTS, LabelStore, aggregate_verdicts, label_stats


@dataclass
class StatsConfig:
    store: str = field(default="labels", metadata={"help": "Label store folder."})
    out: str | None = field(default=None, metadata={"help": "Also write the aggregated verdict per answer (JSONL)."})
    json: bool = field(default=False, metadata={"help": "Print the statistics as JSON."})
    gold: list[str] = field(
        default_factory=list, metadata={"help": "Gold key file(s) (<answers>.gold.jsonl): per-annotator accuracy."}
    )


def round_main(argv):
    from labeling.round import main as round_main_

    return round_main_(argv)


def generate_main(argv):
    from labeling.generate import GenerateConfig, generate

    (cfg,) = parse_config((GenerateConfig,), argv, prog="vlm-rlhf label generate")
    return generate(cfg)


def push_main(argv):
    from labeling.push import PushConfig, push

    (cfg,) = parse_config((PushConfig,), argv, prog="vlm-rlhf label push", positional="answers")
    return push(cfg)


def pull_main(argv):
    from labeling.pull import PullConfig, pull

    (cfg,) = parse_config((PullConfig,), argv, prog="vlm-rlhf label pull")
    return pull(cfg)


def simulate_main(argv):
    from labeling.simulate import SimulateConfig, simulate

    (cfg,) = parse_config((SimulateConfig,), argv, prog="vlm-rlhf label simulate")
    return simulate(cfg)


def serve_main(argv):
    from labeling.serve import ServeConfig, serve

    (cfg,) = parse_config((ServeConfig,), argv, prog="vlm-rlhf label serve")
    return serve(cfg)


def format_stats(stats: dict) -> str:
    lines = [f"{stats['annotations']} labels on {stats['answers']} answers ({stats['by_source']})"]
    lines.append("by verdict:      " + ", ".join(f"{v} {stats['by_verdict'][v]}" for v in VERDICTS))
    lines.append(
        "answers (majority, ties unsure): " + ", ".join(f"{v} {stats['aggregated_by_verdict'][v]}" for v in VERDICTS)
    )
    agreement = stats["agreement"]
    if agreement["items"]:
        lines.append(
            f"agreement:       {100 * agreement['agreement']:.1f} % of {agreement['pairs']} annotator pairs "
            f"on {agreement['items']} answers labelled more than once"
        )
        kappas = [k["kappa"] for k in agreement["cohen_kappa"].values() if k["kappa"] is not None]
        alpha = agreement["krippendorff_alpha"]
        lines.append(
            "chance-corrected: Krippendorff's alpha "
            + ("n/a" if alpha is None else f"{alpha:.3f}")
            + (f", Cohen's kappa {min(kappas):.3f}..{max(kappas):.3f} over {len(kappas)} pairs" if kappas else "")
        )
    else:
        lines.append("agreement:       no answer has more than one label")
    lines.append("by annotator:")
    width = max((len(a) for a in stats["by_annotator"]), default=0)
    quality = stats["annotator_quality"]
    for annotator, counts in stats["by_annotator"].items():
        q = quality[annotator]
        extra = [
            f"gold {100 * q['gold_accuracy']:.1f} % of {q['gold_labels']}" if q["gold_accuracy"] is not None else "",
            f"agrees {100 * q['agreement']:.1f} %" if q["agreement"] is not None else "",
            f"median {q['median_lead_time']:.1f} s/task" if q["median_lead_time"] is not None else "",
        ]
        lines.append(
            f"  {annotator:<{width}}  "
            + ", ".join(f"{v} {counts[v]}" for v in VERDICTS)
            + "".join(f"; {e}" for e in extra if e)
        )
    return "\n".join(lines)


def stats_main(argv):
    (cfg,) = parse_config((StatsConfig,), argv, prog="vlm-rlhf label stats")
    store = LabelStore(cfg.store)
    store.remove_stale_temporaries()  # left by a killed append; only when no writer is busy
    rows = store.latest()
    if not rows:
        raise ValueError(f"label store {cfg.store} holds no labels")
    stats = label_stats(rows, read_gold(cfg.gold))
    if cfg.out:
        aggregated = aggregate_verdicts(rows).values()
        atomic_write_text(cfg.out, "".join(json.dumps(a, ensure_ascii=False) + "\n" for a in aggregated))
    return json.dumps(stats, indent=2) if cfg.json else format_stats(stats)


COMMANDS = {
    "round": round_main,
    "generate": generate_main,
    "push": push_main,
    "pull": pull_main,
    "simulate": simulate_main,
    "stats": stats_main,
    "serve": serve_main,
}


def main(argv=None):
    argv = list(argv or [])
    if not argv or argv[0] not in COMMANDS:
        raise SystemExit(f"usage: vlm-rlhf label {{{','.join(COMMANDS)}}} [options]  (--help on each)")
    result = COMMANDS[argv[0]](argv[1:])
    return json.dumps(result, indent=2) if isinstance(result, dict) else result
