"""The label store: every correctness verdict ever given to an answer, append-only, in a folder of JSONL parts.

One row per annotation *version*: `annotation_id` (`label-studio/<project id>/<annotation id>` or
`simulated/<annotator>/<answer_id>`), `version` (1, 2, ... when an annotator changes their mind), `answer_id`,
`verdict` (correct / incorrect / unsure), `corrected_answer`, `annotator`, `source` (`label-studio` or
`simulated`), `lead_time` (seconds), `created_at` / `updated_at` (from Label Studio), `recorded_at`, and the answer
as the annotator saw it (`image`, `question_id`, `question`, `answer`, `model`), so the reward stage needs nothing
else. Each `append` writes one new part file by atomic rename: a crash or a dead server mid-pull leaves the parts
already written intact and never a half-written one; history is never rewritten. A killed append leaves at most a
temporary `.labels-*.tmp` (never read); the next append, or `labels stats`, removes it under the lock. The lock
is an `flock` on `.lock`: it orders writers on one machine, not on a shared network filesystem (NFS).

Shared by the labeling stage (writes) and the reward stage (reads `latest` and `aggregate_verdicts`).
"""

from __future__ import annotations

import fcntl
import itertools
import json
import logging
import secrets
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path

from vlm.data.errors import DataError, read_jsonl
from vlm.io import atomic_write_text
from vlm.labels.agreement import cohen_kappa_by_pair, krippendorff_alpha
from vlm.labels.gold import annotator_quality

logger = logging.getLogger(__name__)

VERDICTS = ("correct", "incorrect", "unsure")
SOURCES = ("label-studio", "simulated")
LOCK = ".lock"
REQUIRED = ("annotation_id", "answer_id", "verdict", "annotator", "source")
# What makes two versions of one annotation different (timestamps alone do not: a re-save with the same verdict
# is not a new label).
REVISION_FIELDS = ("verdict", "corrected_answer")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def check_verdict(verdict, where: str) -> str:
    if verdict not in VERDICTS:
        raise DataError(f"{where}: unknown verdict {verdict!r} (expected one of {', '.join(VERDICTS)})")
    return verdict


def _check_row(row: dict, where: str) -> dict:
    missing = [k for k in REQUIRED if row.get(k) in (None, "")]
    if missing:
        raise DataError(f"{where}: label row has no {', '.join(missing)}")
    check_verdict(row["verdict"], where)
    if row["source"] not in SOURCES:
        raise DataError(f"{where}: unknown source {row['source']!r} (expected one of {', '.join(SOURCES)})")
    return row


class LabelStore:
    """A folder of `labels-<UTC time>-<random>.jsonl` parts, read in name (= time) order."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise DataError(f"{self.path}: a label store is a folder, and this is a file")
        # Parts never change once renamed into place, so the newest versions are kept for the set of parts they
        # were read from: a pull appending page after page reads the store once, not once per page.
        self._latest: tuple[tuple[str, ...], dict[str, dict]] = ((), {})

    def parts(self) -> list[Path]:
        return sorted(self.path.glob("labels-*.jsonl")) if self.path.is_dir() else []

    def rows(self) -> list[dict]:
        """Every stored row, oldest first; a malformed line is a `DataError` naming the part and line."""
        rows = []
        for part in self.parts():
            rows += [_check_row(row, where) for where, row in read_jsonl(part)]
        return rows

    def latest(self) -> list[dict]:
        """The newest version of every annotation."""
        return list(self._newest().values())

    def _newest(self) -> dict[str, dict]:
        parts = self.parts()
        names = tuple(p.name for p in parts)
        known, newest = self._latest
        if names[: len(known)] != known:  # not what we read before plus new parts: read it all again
            known, newest = (), {}
        newest = dict(newest)
        for part in parts[len(known) :]:
            for where, row in read_jsonl(part):
                row = _check_row(row, where)
                if row["annotation_id"] not in newest or row["version"] >= newest[row["annotation_id"]]["version"]:
                    newest[row["annotation_id"]] = row
        self._latest = (names, newest)
        return newest

    def append(self, rows: Iterable[dict]) -> list[dict]:
        """Store what is new: an unseen annotation as version 1, a changed one as its next version; rows equal to
        the stored latest version are dropped. Returns the rows written (one part file, renamed into place).
        Two writers (say, two pulls at once) take turns on the store's lock, so versions are never numbered twice."""
        rows = [dict(_check_row(row, f"new label row {i}")) for i, row in enumerate(rows)]
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / LOCK, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            self._remove_stale_temporaries()
            latest = dict(self._newest())
            recorded_at, new = now(), []
            for row in rows:
                previous = latest.get(row["annotation_id"])
                if previous is not None and all(previous.get(k) == row.get(k) for k in REVISION_FIELDS):
                    continue
                row["version"] = previous["version"] + 1 if previous else 1
                row.setdefault("recorded_at", recorded_at)
                latest[row["annotation_id"]] = row
                new.append(row)
            if new:
                stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
                name = f"labels-{stamp}-{secrets.token_hex(3)}.jsonl"
                atomic_write_text(self.path / name, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in new))
        return new

    def _remove_stale_temporaries(self) -> int:
        """Remove the temporary parts (`.labels-*.tmp`, never read) of appends killed before their rename. Call with
        the lock held: a writer holds it from before creating its temporary part until after the rename, so one
        seen under the lock belongs to no live writer."""
        stale = sorted(self.path.glob(".labels-*.tmp"))
        for tmp in stale:
            tmp.unlink(missing_ok=True)
        if stale:
            logger.warning("%s: removed %d temporary part(s) left by a killed append", self.path, len(stale))
        return len(stale)

    def remove_stale_temporaries(self) -> int:
        """For readers (`labels stats`): the cleanup `append` does, when no writer holds the lock right now (never
        waits for one); nothing on a store this process may only read. Returns how many were removed."""
        if not self.path.is_dir():
            return 0
        try:
            with open(self.path / LOCK, "a") as lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return 0  # a writer is busy: its temporary part is live, and the next append cleans up
                return self._remove_stale_temporaries()
        except PermissionError:
            return 0


def aggregate_verdicts(rows: Sequence[dict], vote_weight: dict[str, float] | None = None) -> dict[str, dict]:
    """Per answer: the majority verdict over its annotators' latest labels (a tie for the top is `unsure`), the
    vote counts, and the answer's fields. `rows` are latest versions (`LabelStore.latest()`). `vote_weight`
    (annotator -> weight, default 1) down-weights annotators, e.g. by their gold accuracy; `agreement` is then the
    weighted share of the top verdict."""
    vote_weight = vote_weight or {}
    by_answer: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_answer[row["answer_id"]].append(row)
    aggregated = {}
    for answer_id, labels in by_answer.items():
        votes = Counter(row["verdict"] for row in labels)
        weighted = Counter()
        for row in labels:
            weighted[row["verdict"]] += vote_weight.get(row["annotator"], 1.0)
        ranked = weighted.most_common()
        tie = len(ranked) > 1 and abs(ranked[0][1] - ranked[1][1]) < 1e-9
        first = labels[0]
        aggregated[answer_id] = {
            "answer_id": answer_id,
            "verdict": "unsure" if tie else ranked[0][0],
            "votes": {v: votes.get(v, 0) for v in VERDICTS},
            "annotators": len({row["annotator"] for row in labels}),
            "agreement": ranked[0][1] / sum(weighted.values()) if sum(weighted.values()) else 0.0,
            "corrected_answers": sorted({row["corrected_answer"] for row in labels if row.get("corrected_answer")}),
            **{k: first.get(k) for k in ("image", "question_id", "question", "answer", "model")},
        }
    return aggregated


def pairwise_agreement(rows: Sequence[dict]) -> dict:
    """Observed agreement over the answers labelled by two or more annotators: the share of annotator pairs on
    the same answer who gave the same verdict (each pair counted once)."""
    by_answer: dict[str, dict[str, str]] = defaultdict(dict)
    for row in rows:
        by_answer[row["answer_id"]][row["annotator"]] = row["verdict"]
    pairs = agreeing = items = 0
    for verdicts in by_answer.values():
        if len(verdicts) < 2:
            continue
        items += 1
        for a, b in itertools.combinations(verdicts.values(), 2):
            pairs += 1
            agreeing += a == b
    return {"items": items, "pairs": pairs, "agreement": agreeing / pairs if pairs else None}


def label_stats(rows: Sequence[dict], gold: dict[str, str] | None = None) -> dict:
    """Counts per verdict, per annotator (by verdict; gold accuracy, agreement with the others, median time per
    task), per source; agreement; aggregated verdicts per answer."""

    per_annotator: dict[str, Counter] = defaultdict(Counter)
    for row in rows:
        per_annotator[row["annotator"]][row["verdict"]] += 1
    aggregated = aggregate_verdicts(rows)
    return {
        "annotations": len(rows),
        "answers": len(aggregated),
        "by_verdict": {v: sum(1 for r in rows if r["verdict"] == v) for v in VERDICTS},
        "by_source": dict(Counter(r["source"] for r in rows)),
        "by_annotator": {a: {v: c[v] for v in VERDICTS} for a, c in sorted(per_annotator.items())},
        "annotator_quality": annotator_quality(rows, gold or {}),
        "gold_answers": sum(1 for a in aggregated if a in (gold or {})),
        "agreement": pairwise_agreement(rows)
        | {"cohen_kappa": cohen_kappa_by_pair(rows), "krippendorff_alpha": krippendorff_alpha(rows)},
        "aggregated_by_verdict": {v: sum(1 for a in aggregated.values() if a["verdict"] == v) for v in VERDICTS},
    }
