"""Run-folder figures and report.md: training curves from the Trainer's log history, and the
pipeline's summary page (ARank per layer, the stages' curves, the results table).

matplotlib is imported only inside the drawing functions, so `import gamma_mod` does not need it.
"""

from __future__ import annotations

import re
from pathlib import Path

SKIP_KEY = re.compile(r"^mod/skip/layer_(\d+)$")


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: works without a display
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError("plotting needs matplotlib: pip install matplotlib") from e
    return plt


def series(log_history: list[dict], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of one logged key, in step order."""
    points = [(h["step"], float(h[key])) for h in log_history if key in h and "step" in h]
    points.sort()
    return [p[0] for p in points], [p[1] for p in points]


def _line_plot(path: Path, curves: dict[str, tuple[list[int], list[float]]], ylabel: str, title: str) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, (steps, values) in curves.items():
        ax.plot(steps, values, marker="o" if len(steps) < 20 else None, markersize=3, label=label)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if len(curves) > 1:
        ax.legend(fontsize=7, ncol=2 if len(curves) > 6 else 1)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_training_plots(out: str | Path, log_history: list[dict]) -> list[Path]:
    """loss.png (loss, lm_loss), routing_loss.png (total and per layer), skip_fraction.png (per MoD layer
    over steps) into `out`, each only when its keys were logged. Returns the files written."""
    out = Path(out)
    written = []
    loss = {k: series(log_history, k) for k in ("loss", "lm_loss")}
    loss = {k: v for k, v in loss.items() if v[0]}
    if loss:
        _line_plot(out / "loss.png", loss, "loss", "training loss")
        written.append(out / "loss.png")
    keys = sorted({k for h in log_history for k in h})
    routing = {k.removeprefix("mod/routing_loss/"): series(log_history, k)
               for k in keys if k.startswith("mod/routing_loss/")}
    if routing:
        _line_plot(out / "routing_loss.png", routing, "routing cross-entropy", "routing loss (total and per MoD layer)")
        written.append(out / "routing_loss.png")
    skip = {f"layer {int(m.group(1))}": series(log_history, k) for k in keys if (m := SKIP_KEY.match(k))}
    if skip:
        _line_plot(out / "skip_fraction.png", skip, "skipped fraction of routable tokens",
                   "skip fraction per MoD layer")
        written.append(out / "skip_fraction.png")
    return written


def last_values(log_history: list[dict], prefix: str) -> dict[str, float]:
    """The last logged value of every key starting with `prefix`."""
    last: dict[str, float] = {}
    for h in log_history:
        for k, v in h.items():
            if k.startswith(prefix) and isinstance(v, (int, float)):
                last[k] = v
    return last


def write_training_report(out: str | Path, log_history: list[dict]) -> Path:
    """The training plots and report.md embedding them (plus the last logged MoD metrics) in `out`."""
    out = Path(out)
    images = write_training_plots(out, log_history)
    steps = [h["step"] for h in log_history if "loss" in h and "step" in h]
    lines = [f"# Training run `{out.name}`", ""]
    lines.append(f"{len(steps)} logged steps (last: {max(steps)})." if steps else "No training step was logged.")
    lines.append("")
    for image in images:
        lines += [f"![{image.stem}]({image.name})", ""]
    last = last_values(log_history, "mod/")
    if last:
        lines += ["## MoD metrics at the last logging step", "", "| metric | value |", "|---|---|"]
        lines += [f"| `{k}` | {v:.4g} |" for k, v in sorted(last.items())]
        lines.append("")
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def write_pipeline_report(out: str | Path, tables: dict[str, str], stages: list[str],
                          arank_png: str | None = None) -> Path:
    """`out`/report.md: the ARank plot, the results tables and each stage's curves (relative links)."""
    out = Path(out)
    lines = ["# gamma-mod pipeline run", ""]
    if arank_png and (out / arank_png).is_file():
        lines += ["## ARank per layer (orange: the layers made MoD)", "", f"![ARank per layer]({arank_png})", ""]
    for name, table in tables.items():
        lines += [f"## Results: {name}", "", table, ""]
    for stage in stages:
        images = [p for p in ("loss.png", "routing_loss.png", "skip_fraction.png") if (out / stage / p).is_file()]
        if not images:
            continue
        lines += [f"## Training curves: `{stage}`", ""]
        lines += [f"![{stage} {Path(p).stem}]({stage}/{p})" for p in images]
        lines.append("")
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
