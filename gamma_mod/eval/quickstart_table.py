"""The quickstart's report table, for one seed or as mean ± spread over several.

Every row becomes a flat dict of numbers (`row_metrics`): accuracy overall and per question type,
TFLOPs per sample and its ratio to dense, prefill samples/s and speed-up, decode tokens/s and
speed-up, skipped-token fraction. Ratios are taken per seed (each seed's MoD against that seed's
dense, timed in the same run) and THEN averaged, so machine-load drift between seeds does not enter
them. Spread is the sample standard deviation over seeds (n - 1; 0 for one seed). A row without a
figure (the image-blind baseline has no comparable speed) shows "-".
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

TYPE_PREFIX = "accuracy/"


def _ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan


def row_metrics(rows: Sequence[Any]) -> list[dict[str, Any]]:
    """Flat numbers per row of one run; rows[0] is dense (the reference of every ratio)."""
    dense = rows[0]
    out = []
    for r in rows:
        m: dict[str, Any] = {"name": r.name, "layers": list(r.mod_layers or []), "accuracy": r.accuracy,
                             "tflops": r.tflops, "tflops_ratio": _ratio(r.tflops, dense.tflops),
                             "prefill_samples_per_s": r.prefill_samples_per_s,
                             "prefill_speedup": _ratio(r.prefill_samples_per_s, dense.prefill_samples_per_s),
                             "decode_tokens_per_s": r.decode_tokens_per_s,
                             "decode_speedup": _ratio(r.decode_tokens_per_s, dense.decode_tokens_per_s),
                             "skipped_fraction": r.skipped_fraction}
        m.update({TYPE_PREFIX + k: v for k, v in sorted(r.accuracy_by_type.items())})
        out.append(m)
    return out


def aggregate(runs: Sequence[list[dict[str, Any]]]) -> tuple[list[dict[str, Any]], list[dict[str, float]]]:
    """(means, spreads) per row name over seeds, in the first run's row order; a row missing from a seed
    is averaged over the seeds that have it."""
    names = [m["name"] for m in runs[0]]
    for run in runs[1:]:
        names += [m["name"] for m in run if m["name"] not in names]
    means, spreads = [], []
    for name in names:
        per_seed = [m for run in runs for m in run if m["name"] == name]
        mean: dict[str, Any] = {"name": name, "layers": per_seed[0]["layers"], "seeds": len(per_seed)}
        spread: dict[str, float] = {}
        for key in per_seed[0]:
            if key in ("name", "layers"):
                continue
            values = [m[key] for m in per_seed if key in m and not math.isnan(m[key])]
            mean[key] = statistics.mean(values) if values else math.nan
            spread[key] = statistics.stdev(values) if len(values) > 1 else 0.0
        means.append(mean)
        spreads.append(spread)
    return means, spreads


def question_types(metrics: Sequence[dict[str, Any]]) -> list[str]:
    return sorted({k[len(TYPE_PREFIX):] for m in metrics for k in m if k.startswith(TYPE_PREFIX)})


def format_table(metrics: Sequence[dict[str, Any]], chance: float, spreads: Sequence[dict[str, float]] | None = None,
                 seeds: Sequence[int] | None = None) -> str:
    types = question_types(metrics)

    def cell(i: int, key: str, scale: float = 1.0, fmt: str = ".1f", suffix: str = "") -> str:
        value = metrics[i].get(key, math.nan)
        if value is None or math.isnan(value):
            return "-"
        text = f"{scale * value:{fmt}}"
        if spreads is not None and len(seeds or ()) > 1:
            text += f" ± {scale * spreads[i].get(key, 0.0):{fmt}}"
        return text + suffix

    header = (["model", "accuracy"] + [f"{t}" for t in types]
              + ["TFLOPs/sample", "TFLOPs vs dense", "prefill samples/s", "prefill speed-up", "decode tok/s",
                 "decode vs dense", "skipped tokens", "layers skipping"])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, m in enumerate(metrics):
        cells = [m["name"], cell(i, "accuracy", 100, suffix="%")]
        cells += [cell(i, TYPE_PREFIX + t, 100, suffix="%") for t in types]
        cells += [cell(i, "tflops", fmt=".4g"), cell(i, "tflops_ratio", fmt=".3f"),
                  cell(i, "prefill_samples_per_s"), cell(i, "prefill_speedup", fmt=".2f", suffix="x"),
                  cell(i, "decode_tokens_per_s"), cell(i, "decode_speedup", fmt=".2f", suffix="x"),
                  cell(i, "skipped_fraction", 100, suffix="%"), str(m["layers"]) if m["layers"] else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"\nchance level (majority answer per question type): {100 * chance:.1f}%",
             "accuracy per question type in the type columns; skipped tokens: MoD of routable tokens (mean over "
             "MoD layers), pruners of image tokens; the text-only row is trained and asked without the image "
             "(gamma_mod/eval/textonly.py), so it has no comparable speed figures"]
    if seeds is not None and len(seeds) > 1:
        notes.append(f"mean ± sample standard deviation over seeds {', '.join(map(str, seeds))}; ratios are per seed, "
                     "then averaged")
    return "\n".join(lines + notes)


__all__ = ["row_metrics", "aggregate", "format_table", "question_types"]
