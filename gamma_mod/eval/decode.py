"""Decode tokens/s of several models on the same prompts, timed in turn (`alternating_decode_rates`).

Each repeat, every model in turn prefills its prompts (not timed) and then runs `new_tokens` greedy
steps over its own KV cache (timed), as `generate()` runs them. Timing the steps themselves keeps
prefill noise out of the decode figure, and alternating the models keeps a drift of machine load fair
to all of them (the same scheme as benchmarks/speed.py, over any model dict: dense, MoD and pruner
views alike). MoD models get `mod_decode_start` (the prompt width) so their decode rule sees which
tokens are generated, as the answer loop passes it.
"""

from __future__ import annotations

import statistics
import time

import torch

from .speed import SpeedInputs


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _prefill_kwargs(model, inputs: SpeedInputs) -> dict:
    device = next(model.parameters()).device
    kwargs = dict(input_ids=inputs.input_ids.to(device), attention_mask=inputs.attention_mask.to(device),
                  use_cache=True, logits_to_keep=1)
    if inputs.pixel_values is not None:
        kwargs["pixel_values"] = inputs.pixel_values.to(device=device, dtype=model.dtype)
    if getattr(model.model, "mod_layer_indices", None):
        kwargs["mod_decode_start"] = inputs.input_ids.shape[1]
    return kwargs


@torch.no_grad()
def decode_seconds(model, inputs: SpeedInputs, new_tokens: int) -> float:
    """Seconds of `new_tokens` greedy decode steps after one (untimed) prefill of `inputs`."""
    kwargs = _prefill_kwargs(model, inputs)
    device = kwargs["input_ids"].device
    out = model(**kwargs)
    token = out.logits[:, -1:].argmax(-1)
    mask = kwargs["attention_mask"]
    ones = torch.ones(mask.shape[0], 1, dtype=mask.dtype, device=device)
    extra = {k: v for k, v in kwargs.items() if k == "mod_decode_start"}
    _sync(device)
    start = time.perf_counter()
    for _ in range(new_tokens):
        mask = torch.cat([mask, ones], dim=1)
        out = model(input_ids=token, attention_mask=mask, cache=out.cache, use_cache=True, logits_to_keep=1, **extra)
        token = out.logits[:, -1:].argmax(-1)
    _sync(device)
    return time.perf_counter() - start


def alternating_decode_rates(models: dict[str, torch.nn.Module], inputs: dict[str, SpeedInputs], new_tokens: int = 8,
                             repeats: int = 5, warmup: int = 1) -> dict[str, float]:
    """Median decode tokens/s (batch x new_tokens / step seconds) per model, models timed in turn."""
    if new_tokens < 1 or repeats < 1:
        raise ValueError(f"new_tokens and repeats must be >= 1, got {new_tokens} and {repeats}")
    seconds: dict[str, list[float]] = {name: [] for name in models}
    for round_ in range(warmup + repeats):
        for name, model in models.items():
            model.eval()
            t = decode_seconds(model, inputs[name], new_tokens)
            if round_ >= warmup:
                seconds[name].append(t)
    return {name: inputs[name].input_ids.shape[0] * new_tokens / statistics.median(t) for name, t in seconds.items()}


__all__ = ["alternating_decode_rates", "decode_seconds"]
