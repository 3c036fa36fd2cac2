"""Per-layer ARank over a dataset: mean over heads, then mean (and std) over samples."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .capture import capture_attention
from .rank import sample_arank


@dataclass
class ARankResult:
    mean: list[float]
    std: list[float]
    num_samples: int
    tol: float | None = None

    def save_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load_json(cls, path: str | Path) -> "ARankResult":
        data = json.loads(Path(path).read_text())
        try:
            return cls(**data)
        except TypeError as e:
            raise ValueError(f"{path}: not an ARank result ({e})") from None


def real_block(mask_row: torch.Tensor) -> slice:
    """The contiguous span of real tokens of one row (left or right padding)."""
    idx = mask_row.nonzero().squeeze(1)
    return slice(int(idx[0]), int(idx[-1]) + 1)


@torch.no_grad()
def compute_arank(model, batches: Iterable[dict], num_samples: int, tol: float | None = None,
                  progress: bool = True) -> ARankResult:
    """Run `model` on batches (input_ids, attention_mask, pixel_values) until `num_samples` samples."""
    model.eval()
    n_layers = len(model.model.layers)
    per_layer: list[list[float]] = [[] for _ in range(n_layers)]
    current_mask: list[torch.Tensor] = []

    def sink(layer: int, probs: torch.Tensor) -> None:
        mask = current_mask[0]
        for b in range(probs.shape[0]):
            block = real_block(mask[b]) if mask is not None else slice(None)
            per_layer[layer].append(sample_arank(probs[b, :, block, block], tol))

    seen = 0
    bar = tqdm(total=num_samples, desc="ARank", unit="sample", disable=not progress)
    with capture_attention(model, sink):
        for batch in batches:
            take = min(num_samples - seen, batch["input_ids"].shape[0])
            if take <= 0:
                break
            inputs = {k: v[:take] for k, v in batch.items() if k in ("input_ids", "attention_mask")}
            if "pixel_values" in batch:
                # pixel_values hold only the samples that have an image; keep those of the taken rows.
                has_image = (batch["input_ids"][:take] == model.config.image_token_index).any(dim=1)
                n_images = int(has_image.sum())
                if n_images:
                    inputs["pixel_values"] = batch["pixel_values"][:n_images]
            current_mask[:] = [inputs.get("attention_mask")]
            device = next(model.parameters()).device
            model(**{k: v.to(device) for k, v in inputs.items()})
            seen += take
            bar.update(take)
    bar.close()
    if seen == 0:
        raise ValueError("no samples to compute ARank on")
    values = [torch.tensor(v) for v in per_layer]
    return ARankResult(mean=[float(v.mean()) for v in values],
                       std=[float(v.std()) if len(v) > 1 else 0.0 for v in values], num_samples=seen, tol=tol)


def plot_arank(result: ARankResult, path: str | Path, mod_layers: list[int] | None = None) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError("plotting ARank needs matplotlib: pip install 'gamma-mod[plot]'") from e
    layers = list(range(len(result.mean)))
    colours = ["tab:orange" if mod_layers and i in mod_layers else "tab:blue" for i in layers]
    fig, ax = plt.subplots(figsize=(max(4, 0.3 * len(layers)), 3))
    ax.bar(layers, result.mean, yerr=result.std, color=colours)
    ax.set_xlabel("decoder layer")
    ax.set_ylabel("ARank")
    ax.set_title(f"ARank over {result.num_samples} samples" + (" (orange: MoD)" if mod_layers else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
