"""Per-layer ARank over a dataset: per sample the mean over heads, per layer the mean (and std) over samples."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .capture import capture_attention
from .rank import sample_arank

MODEL_INPUTS = ("input_ids", "attention_mask", "pixel_values")


@dataclass
class ARankResult:
    """mean[i], std[i]: ARank of decoder layer i over `num_samples` samples (std with Bessel's
    correction, 0 for one sample); `tol` is the relative rank tolerance used (None: torch's default)."""

    mean: list[float]
    std: list[float]
    num_samples: int
    tol: float | None = None

    def __post_init__(self) -> None:
        if len(self.mean) != len(self.std) or not self.mean:
            raise ValueError(f"mean and std must be non-empty and of equal length ({len(self.mean)} vs {len(self.std)})")
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {self.num_samples}")
        if not all(math.isfinite(v) for v in self.mean + self.std):
            raise ValueError("ARank values must be finite")

    def save_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load_json(cls, path: str | Path) -> "ARankResult":
        data = json.loads(Path(path).read_text())
        try:
            return cls(**data)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: not an ARank result ({e})") from None


def batch_inputs(batch: dict, take: int, model) -> dict[str, torch.Tensor]:
    """The first `take` samples of a collated batch, on the model's device; images in the model's dtype.

    A Hugging Face family's batch is passed whole (its vision fields are joined per patch, per image, per
    video, not per row); compute_arank keeps the first `take` rows' results."""
    from ..families import get_family

    param = next(model.parameters())
    if get_family(model.config).name != "llava_fork":
        return {k: v.to(param.device, dtype=param.dtype if v.is_floating_point() else v.dtype)
                for k, v in batch.items() if isinstance(v, torch.Tensor) and k != "labels"}
    inputs = {k: batch[k][:take] for k in ("input_ids", "attention_mask") if batch.get(k) is not None}
    pixels = batch.get("pixel_values")
    if pixels is not None:
        # The collator stacks images only for samples that have one, in batch order.
        image_token = model.config.image_token_index
        n_images = int((inputs["input_ids"] == image_token).any(dim=1).sum()) if image_token is not None else 0
        if n_images:
            inputs["pixel_values"] = pixels[:n_images]
    param = next(model.parameters())
    return {k: v.to(param.device, dtype=param.dtype if v.is_floating_point() else v.dtype) for k, v in inputs.items()}


@torch.no_grad()
def sample_aranks(model, inputs: dict[str, torch.Tensor], tol: float | None = None) -> torch.Tensor:
    """One forward -> (B, L) ARank of every sample (mean over heads) in every decoder layer."""
    from ..families import get_family

    batch = inputs["input_ids"].shape[0]
    out = torch.zeros(batch, len(get_family(model.config).decoder_layers(model)))

    def sink(layer: int, sample: int, probs: torch.Tensor) -> None:
        out[sample, layer] = sample_arank(probs, tol)  # the map is dropped right here

    with capture_attention(model, sink):
        model(**inputs, use_cache=False)
    return out


def compute_arank(model, batches: Iterable[dict], num_samples: int, tol: float | None = None,
                  progress: bool = True) -> ARankResult:
    """Run `model` (dense, eval mode) on collated batches (input_ids, attention_mask, pixel_values)
    until `num_samples` samples are seen; fewer if the batches run out (the result says how many)."""
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    was_training = model.training
    model.eval()
    rows: list[torch.Tensor] = []
    seen = 0
    bar = tqdm(total=num_samples, desc="ARank", unit="sample", disable=not progress)
    try:
        for batch in batches:
            take = min(num_samples - seen, batch["input_ids"].shape[0])
            if take <= 0:
                break
            rows.append(sample_aranks(model, batch_inputs(batch, take, model), tol)[:take])
            seen += take
            bar.update(take)
    finally:
        bar.close()
        model.train(was_training)
    if seen == 0:
        raise ValueError("no samples to compute ARank on (empty data)")
    values = torch.cat(rows).double()  # (N, L)
    std = values.std(dim=0) if seen > 1 else torch.zeros(values.shape[1], dtype=values.dtype)
    return ARankResult(mean=values.mean(dim=0).tolist(), std=std.tolist(), num_samples=seen, tol=tol)


def plot_arank(result: ARankResult, path: str | Path, mod_layers: list[int] | None = None) -> None:
    """Bar plot of ARank per layer (error bars: std over samples); `mod_layers` are drawn in orange."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: works without a display
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError("plotting ARank needs matplotlib: pip install matplotlib (or 'gamma-mod[plot]')") from e
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
