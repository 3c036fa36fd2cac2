"""`log_efficiency=PATH`: what MoD saved while lmms-eval ran, per task, in `gamma-mod speed`'s terms.

Forward hooks on the model watch every prefill (a forward with an empty or no KV cache: the prompt
of a generation, or the one forward of a log-likelihood request) and read the routing statistics the
model leaves in `last_routing_stats` (routable and skipped token counts per MoD layer). Per task:
  - skipped-token fraction per MoD layer, of the routable tokens and of all prefill tokens;
  - analytic TFLOPs per sample (paper convention, `eval.flops`): `speed.measured_tflops` on each
    batch (its mean length, what each layer really skipped), and the same sequence fully dense.
Decode steps are not counted, as in the paper's TFLOPs figures.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..flops import decoder_shape, decoder_tflops
from ..speed import SpeedInputs, measured_tflops


@dataclass
class TaskEfficiency:
    samples: int = 0
    tokens: int = 0  # real (unpadded) prefill tokens
    tflops: float = 0.0  # summed over samples
    dense_tflops: float = 0.0
    routable: dict[int, int] = field(default_factory=dict)  # per MoD layer
    skipped: dict[int, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        n = max(1, self.samples)
        layers = sorted(self.routable)
        routable, skipped = sum(self.routable.values()), sum(self.skipped.values())
        return {
            "samples": self.samples,
            "prefill_tokens_per_sample": self.tokens / n,
            "tflops_per_sample": self.tflops / n,
            "dense_tflops_per_sample": self.dense_tflops / n,
            "tflops_ratio": self.tflops / self.dense_tflops if self.dense_tflops else 1.0,
            "skipped_of_routable": {i: self.skipped[i] / self.routable[i] if self.routable[i] else 0.0 for i in layers},
            "skipped_of_tokens": {i: self.skipped[i] / self.tokens if self.tokens else 0.0 for i in layers},
            "mean_skipped_of_routable": skipped / routable if routable else 0.0,
        }


class EfficiencyMeter:
    def __init__(self, model) -> None:
        self.model = model
        self.tasks: dict[str, TaskEfficiency] = {}
        self._task: str | None = None
        self._pending: tuple[torch.Tensor, torch.Tensor] | None = None
        self._hooks = [model.register_forward_pre_hook(self._before, with_kwargs=True),
                       model.register_forward_hook(self._after, with_kwargs=True)]

    @contextmanager
    def task(self, name: str) -> Iterator[None]:
        """Attribute the forwards inside the block to task `name`."""
        previous, self._task = self._task, name
        try:
            yield
        finally:
            self._task = previous

    def _before(self, module, args, kwargs) -> None:
        cache = kwargs.get("past_key_values", kwargs.get("cache"))
        prefill = cache is None or cache.get_seq_length() == 0
        ids, mask = kwargs.get("input_ids"), kwargs.get("attention_mask")
        self._pending = None
        if prefill and self._task is not None and ids is not None:
            self._pending = (ids, mask if mask is not None and mask.dim() == 2 else torch.ones_like(ids))

    def _after(self, module, args, kwargs, output) -> None:
        if self._pending is None:
            return
        ids, mask = self._pending
        self._pending = None
        stats = dict(module.last_routing_stats) if module.model.mod_layer_indices else {}
        config = module.config
        batch = ids.shape[0]
        bucket = self.tasks.setdefault(self._task, TaskEfficiency())
        bucket.samples += batch
        bucket.tokens += int(mask.sum())
        bucket.tflops += measured_tflops(module, SpeedInputs(ids, mask, None), stats) * batch
        seq = int(round(float(mask.sum(dim=1).float().mean())))
        shape = decoder_shape(config)
        bucket.dense_tflops += decoder_tflops(seq, shape.hidden, shape.ffn, shape.num_layers, [], 0.0,
                                              q_dim=shape.q_dim, kv_dim=shape.kv_dim) * batch
        for layer, (routable, skipped) in stats.items():
            bucket.routable[layer] = bucket.routable.get(layer, 0) + routable
            bucket.skipped[layer] = bucket.skipped.get(layer, 0) + skipped

    def report(self) -> dict[str, Any]:
        return {task: bucket.summary() for task, bucket in sorted(self.tasks.items())}

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.report(), indent=2))
        return path

    def close(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []


def format_table(report: dict[str, Any]) -> str:
    lines = ["| task | samples | prefill tokens/sample | TFLOPs/sample | dense TFLOPs/sample | skipped (of routable) "
             "| per MoD layer (of routable) |", "|---|---|---|---|---|---|---|"]
    for task, row in report.items():
        per_layer = " ".join(f"{i}:{100 * f:.0f}%" for i, f in row["skipped_of_routable"].items()) or "dense"
        lines.append(f"| {task} | {row['samples']} | {row['prefill_tokens_per_sample']:.1f} | "
                     f"{row['tflops_per_sample']:.4g} | {row['dense_tflops_per_sample']:.4g} | "
                     f"{100 * row['mean_skipped_of_routable']:.1f}% | {per_layer} |")
    return "\n".join(lines)
