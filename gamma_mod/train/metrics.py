"""MoD training metrics for the Trainer's log channel (console, log_history, TensorBoard, wandb, mlflow).

`ModMetrics` hooks every MoD layer of the model it is attached to and, per training forward, reads the
layer's routing record (`LayerRoutingStats` in gamma_mod/mod/layer.py, through `stat_value`, which takes
ints or tensors so a lazy, tensor-valued record works too) and its router's output. Values stay on the
device until `flush()` (one host sync per logging step). Keys, grouped for dashboards (`NN`: layer index):

    mod/skip/layer_NN            skipped fraction of the layer's routable tokens (token-weighted over the window)
    mod/skip_all/layer_NN        skipped fraction of all real tokens (padding excluded)
    mod/routing_loss/layer_NN    the layer's routing cross-entropy (mean over the window's forwards)
    mod/routing_loss/total       their sum, as added (x router_aux_loss_coef) to the loss
    mod/score_mean|score_std/layer_NN   router selection score over routable tokens (gamma: keep probability;
                                        p-MoD: the raw router logit)
    mod/score_near0|score_near1/layer_NN  fraction of those scores < 0.01 / > 0.99 (gamma; collapse warning data)
    mod/tanhnorm_min|tanhnorm_max/layer_NN  p-MoD: range of the TanhNorm weights over routable tokens
    perf/tokens_per_second       sequence positions (padding included) per wall-clock second since the last log

Under distributed training the values are this process's (rank 0 logs them), not a gather over ranks.
A gradient-checkpointing recompute re-runs the hooks after `end_step()`; its record is overwritten by the
next forward and never counted.
"""

from __future__ import annotations

import time
from collections import defaultdict

import torch
from transformers import TrainerCallback

NEAR = 0.01  # a score within this of 0 or 1 counts as saturated


def stat_value(stats, name: str) -> torch.Tensor | None:
    """One field of a layer's routing record as a detached tensor (int, float, tensor or callable), or None."""
    value = getattr(stats, name, None)
    if callable(value):  # a lazy record may expose its fields as methods
        value = value()
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        return value.detach()
    return torch.tensor(float(value))


def is_mod_layer(module) -> bool:
    return all(hasattr(module, a) for a in ("router", "strategy", "layer_idx", "mod"))


def layer_key(group: str, layer: int) -> str:
    return f"mod/{group}/layer_{layer:02d}"


class ModMetrics(TrainerCallback):
    """Collects the MoD metrics of training forwards; `end_step()` after each forward, `flush()` at log time."""

    def __init__(self) -> None:
        self._handles: list = []
        self._pending: dict[int, dict[str, torch.Tensor]] = {}  # this forward's values per layer
        self._logits: torch.Tensor | None = None  # the router output of the layer running now
        self._sums: dict[str, torch.Tensor] = {}
        self._tokens = 0
        self._since = time.perf_counter()

    # -- hooks ------------------------------------------------------------------------------------
    def attach(self, model) -> None:
        self.detach()
        routers = set()
        for module in model.modules():
            if not is_mod_layer(module):
                continue
            self._handles.append(module.register_forward_hook(self._after_layer, with_kwargs=True))
            if id(module.router) not in routers:  # a shared router is one module: hook it once
                routers.add(id(module.router))
                self._handles.append(module.router.register_forward_hook(self._after_router))

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _after_router(self, module, args, output) -> None:
        self._logits = output.detach() if isinstance(output, torch.Tensor) else None

    def _after_layer(self, layer, args, kwargs, output) -> None:
        logits, self._logits = self._logits, None
        ctx = kwargs.get("mod_context")
        if not layer.training or ctx is None:
            return
        stats = getattr(ctx, "stats", {}).get(layer.layer_idx)
        if stats is None:
            return
        values: dict[str, torch.Tensor] = {}
        routable, skipped = stat_value(stats, "routable"), stat_value(stats, "skipped")
        if routable is not None and skipped is not None:
            values["routable"], values["skipped"] = routable.float(), skipped.float()
        loss = stat_value(stats, "loss")
        if loss is not None:
            values["loss"] = loss.float()
        keep = stat_value(stats, "keep")
        if keep is not None:
            mask = getattr(ctx, "attention_mask", None)
            real = (mask if mask is not None else torch.ones_like(keep)).to(keep.device).bool()
            values["real"] = real.sum().float()
            values["skipped_all"] = (real & ~keep.bool()).sum().float()
        if logits is not None and getattr(ctx, "routable", None) is not None:
            values.update(self._score_values(layer.strategy, logits, ctx.routable.bool()))
        self._pending[layer.layer_idx] = values

    @staticmethod
    def _score_values(strategy, logits: torch.Tensor, routable: torch.Tensor) -> dict[str, torch.Tensor]:
        score = strategy.selection_score(logits.float())
        if score.shape != routable.shape:
            return {}
        s = score[routable]
        out = {"score_n": torch.tensor(float(s.numel()), device=s.device), "score_sum": s.sum(),
               "score_sq": (s * s).sum()}
        tanh_norm = getattr(strategy, "tanh_norm", None)
        if tanh_norm is not None:  # p-MoD: scores are logits; the TanhNorm weights are what matter
            w = tanh_norm(logits.float())[routable]
            if w.numel():
                out["tanh_min"], out["tanh_max"] = w.min(), w.max()
        else:
            out["near0"], out["near1"] = (s < NEAR).sum().float(), (s > 1 - NEAR).sum().float()
        return out

    # -- accumulation -----------------------------------------------------------------------------
    def end_step(self, num_tokens: int = 0) -> None:
        """Count the forward that just ran (its layers' values) and its `num_tokens` sequence positions."""
        self._tokens += int(num_tokens)
        for layer, values in self._pending.items():
            for name, value in values.items():
                key = (layer, name)
                if name == "tanh_min":
                    self._sums[key] = torch.minimum(self._sums[key], value) if key in self._sums else value
                elif name == "tanh_max":
                    self._sums[key] = torch.maximum(self._sums[key], value) if key in self._sums else value
                else:
                    self._sums[key] = self._sums[key] + value if key in self._sums else value
            if "loss" in values:
                self._sums[(layer, "loss_n")] = self._sums.get((layer, "loss_n"), 0) + 1
        self._pending.clear()

    def flush(self) -> dict[str, float]:
        """The metrics of everything since the last flush, as log entries; resets the window."""
        now = time.perf_counter()
        logs: dict[str, float] = {}
        if self._tokens:
            logs["perf/tokens_per_second"] = round(self._tokens / max(now - self._since, 1e-9), 3)
        self._tokens, self._since = 0, now
        sums = {k: float(v) for k, v in self._sums.items()}  # the one host sync
        self._sums.clear()
        per_layer: dict[int, dict[str, float]] = defaultdict(dict)
        for (layer, name), value in sums.items():
            per_layer[layer][name] = value
        total_loss = None
        for layer in sorted(per_layer):
            v = per_layer[layer]
            if v.get("routable"):
                logs[layer_key("skip", layer)] = round(v["skipped"] / v["routable"], 6)
            if v.get("real"):
                logs[layer_key("skip_all", layer)] = round(v["skipped_all"] / v["real"], 6)
            if v.get("loss_n"):
                loss = v["loss"] / v["loss_n"]
                logs[layer_key("routing_loss", layer)] = round(loss, 6)
                total_loss = (total_loss or 0.0) + loss
            if v.get("score_n"):
                n = v["score_n"]
                mean = v["score_sum"] / n
                logs[layer_key("score_mean", layer)] = round(mean, 6)
                logs[layer_key("score_std", layer)] = round(max(v["score_sq"] / n - mean * mean, 0.0) ** 0.5, 6)
                if "near0" in v:
                    logs[layer_key("score_near0", layer)] = round(v["near0"] / n, 6)
                    logs[layer_key("score_near1", layer)] = round(v["near1"] / n, 6)
            if "tanh_min" in v:
                logs[layer_key("tanhnorm_min", layer)] = round(v["tanh_min"], 6)
                logs[layer_key("tanhnorm_max", layer)] = round(v["tanh_max"], 6)
        if total_loss is not None:
            logs["mod/routing_loss/total"] = round(total_loss, 6)
        return logs

    # -- Trainer callback: hooks live only while training runs -------------------------------------
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if model is not None:
            self.attach(model)
        self._since = time.perf_counter()

    def on_train_end(self, args, state, control, **kwargs):
        self.detach()
