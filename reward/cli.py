"""`vlm-rlhf reward {train,score} [options]`."""

from __future__ import annotations

import json


def main(argv=None):
    argv = list(argv or [])
    if not argv or argv[0] not in ("train", "score"):
        raise SystemExit("usage: vlm-rlhf reward {train,score} [options]  (--help on each)")
    if argv[0] == "train":
        from reward.train import main as train_main

        return train_main(argv[1:])
    from reward.score import main as score_main

    return json.dumps(score_main(argv[1:]), indent=2)
