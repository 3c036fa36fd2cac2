"""A second handle on a loaded model with its own pruner, sharing every parameter and buffer.

Comparisons measure dense, FastV and PDrop on ONE set of weights in one run; a deep copy per setting
would multiply the memory (a 13B model per row). The view is a shallow copy of the causal-LM wrapper
and of its inner model (`.model`) whose module tables are copied, so setting the view's pruner or its
per-forward statistics never touches the original; the decoder layers, vision tower and tensors are
the same objects. The view gets its own config copy (its `prune` section describes the view).
"""

from __future__ import annotations

import copy

from . import TokenPruner, build_pruner


def with_pruner(model, spec: str | dict | TokenPruner | None):
    """`model` (a LlavaLlamaForCausalLM) seen with pruner `spec` (None: no pruner); weights shared."""
    view = copy.copy(model)
    view._modules = dict(model._modules)  # own module table: replacing `.model` below leaves `model` alone
    inner = copy.copy(model.model)
    inner._modules = dict(model.model._modules)
    view._modules["model"] = inner
    view.config = copy.deepcopy(model.config)
    inner.config = view.config
    view.config.set_prune(spec.to_dict() if isinstance(spec, TokenPruner) else spec)
    inner.pruner = view.config.prune_config()
    inner.last_prune_stats = None
    view.last_routing_stats = {}
    return view


__all__ = ["with_pruner", "build_pruner"]
