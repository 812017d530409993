"""Chance-corrected agreement between annotators, from maintained packages: Cohen's κ for each pair of annotators
(scikit-learn) and Krippendorff's α over all of them (the `krippendorff` package), which allows missing labels
(not every annotator labels every answer). Labels are nominal: correct / incorrect / unsure."""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Sequence

import numpy as np


def _table(rows: Sequence[dict]) -> tuple[list[str], list[str], dict[tuple[str, str], str]]:
    labels = {(r["annotator"], r["answer_id"]): r["verdict"] for r in rows}
    annotators = sorted({a for a, _ in labels})
    items = sorted({i for _, i in labels})
    return annotators, items, labels


def cohen_kappa_by_pair(rows: Sequence[dict], min_shared: int = 2) -> dict[str, dict]:
    """`"a | b" -> {shared, kappa}` for each pair of annotators with at least `min_shared` answers in common.
    κ is None where it is undefined (both gave one and the same verdict throughout)."""
    from sklearn.metrics import cohen_kappa_score

    by_annotator: dict[str, dict[str, str]] = defaultdict(dict)
    for (annotator, item), verdict in _table(rows)[2].items():
        by_annotator[annotator][item] = verdict
    result = {}
    for a, b in itertools.combinations(sorted(by_annotator), 2):
        shared = sorted(set(by_annotator[a]) & set(by_annotator[b]))
        if len(shared) < min_shared:
            continue
        x, y = [by_annotator[a][i] for i in shared], [by_annotator[b][i] for i in shared]
        kappa = None if len(set(x) | set(y)) < 2 else float(cohen_kappa_score(x, y))
        result[f"{a} | {b}"] = {"shared": len(shared), "kappa": kappa}
    return result


def krippendorff_alpha(rows: Sequence[dict]) -> float | None:
    """Nominal Krippendorff's α over every annotator and answer (missing labels allowed); None when there is
    nothing to compare (no answer with two labels, or a single value throughout)."""
    import krippendorff

    annotators, items, labels = _table(rows)
    values = sorted(set(labels.values()))
    if len(annotators) < 2 or len(values) < 2:
        return None
    code = {v: float(i) for i, v in enumerate(values)}
    data = np.full((len(annotators), len(items)), np.nan)
    for (annotator, item), verdict in labels.items():
        data[annotators.index(annotator), items.index(item)] = code[verdict]
    if not ((~np.isnan(data)).sum(axis=0) >= 2).any():
        return None
    return float(krippendorff.alpha(reliability_data=data, level_of_measurement="nominal"))
