"""The `mod` section of a model config.

Field names follow the released gamma-MoD checkpoints (`mod_enable`, `mod_mode`, `mod_layers_idx`,
`capacity_factor`, `router_aux_loss_coef`) so their config.json files load unchanged; the rest are
our extensions with defaults that reproduce the official behaviour where one exists.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

ROUTER_WEIGHTINGS = ("prob", "straight_through", "none")
PREFILL_MODES = ("topk", "threshold")
DECODE_MODES = ("dense", "threshold")
STRATEGIES = ("gamma", "pmod")
PRD_SCHEDULES = ("shiftedcos", "shiftedlinear")


@dataclass
class ModConfig:
    mod_enable: bool = True
    # "sparse": routed as configured; "dense": routers run (and are trained) but every token is kept.
    mod_mode: str = "sparse"
    mod_layers_idx: list[int] = field(default_factory=list)
    # Fraction of ROUTABLE tokens that SKIP a MoD layer ("0.34"/"0.5" in the checkpoint names).
    capacity_factor: float = 0.5
    router_aux_loss_coef: float = 0.01
    strategy: str = "gamma"
    # One router shared by every MoD layer (the paper's shared vision-language router) or one per layer;
    # None: the strategy's own choice (gamma: shared; pmod: one per layer, as the official p-MoD).
    shared_router: bool | None = None
    # How the router probability p enters the kept tokens' update (always on the MLP branch):
    #   prob             h + attn; then + p * mlp            (official gamma-MoD)
    #   straight_through value of p / p.detach() == 1, gradient of p: exact dense output when all kept
    #   none             no scaling; the router learns only from the routing loss
    router_weighting: str = "prob"
    prefill: str = "topk"
    decode: str = "dense"
    prefill_threshold: float = 0.005  # official threshold mode: prefill keeps p > this
    decode_threshold: float = 0.5  # official threshold mode: a new token is skipped when p < this
    # p-MoD knobs (strategy "pmod"); MCG-NJU/p-MoD's names in brackets. TanhNorm w = pmod_alpha * tanh(r) + 1
    # [mod_weight_norm "tanh_0.2_1"]. PRD [mod_target_layers "{prd_schedule}_decay_{prd_dense_above}_{prd_floor}"]:
    # retention(l) = shiftedcos: cos(pi l / D) / 2 + prd_average_ratio, shiftedlinear: 0.5 - l / D + prd_average_ratio
    # [mod_router_factor], layers with retention > prd_dense_above stay dense, the rest keep max(retention, prd_floor).
    # D = prd_divisor, or num_hidden_layers - 1 when None (ours; the official hard-codes 31, equal at 32 layers).
    pmod_alpha: float = 0.2
    prd_schedule: str = "shiftedcos"
    prd_average_ratio: float = 0.5
    prd_dense_above: float = 0.85
    prd_floor: float = 0.15
    prd_divisor: int | None = None
    # Per-layer skip ratios; filled by strategies with a schedule (p-MoD PRD), else capacity_factor everywhere.
    layer_capacity: dict[int, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mod_mode not in ("sparse", "dense"):
            raise ValueError(f"mod.mod_mode must be 'sparse' or 'dense', got {self.mod_mode!r}")
        if not 0.0 <= self.capacity_factor < 1.0:
            raise ValueError(f"mod.capacity_factor (fraction skipped) must be in [0, 1), got {self.capacity_factor}")
        if self.router_weighting not in ROUTER_WEIGHTINGS:
            raise ValueError(f"mod.router_weighting must be one of {ROUTER_WEIGHTINGS}, got {self.router_weighting!r}")
        if self.prefill not in PREFILL_MODES:
            raise ValueError(f"mod.prefill must be one of {PREFILL_MODES}, got {self.prefill!r}")
        if self.decode not in DECODE_MODES:
            raise ValueError(f"mod.decode must be one of {DECODE_MODES}, got {self.decode!r}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"mod.strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.router_aux_loss_coef < 0:
            raise ValueError("mod.router_aux_loss_coef must be >= 0")
        if self.shared_router is None:
            self.shared_router = self.strategy == "gamma"
        if self.prd_schedule not in PRD_SCHEDULES:
            raise ValueError(f"mod.prd_schedule must be one of {PRD_SCHEDULES}, got {self.prd_schedule!r}")
        if self.prd_divisor is not None and self.prd_divisor <= 0:
            raise ValueError(f"mod.prd_divisor must be a positive layer count or null, got {self.prd_divisor}")
        self.mod_layers_idx = sorted(int(i) for i in (self.mod_layers_idx or []))
        if len(set(self.mod_layers_idx)) != len(self.mod_layers_idx):
            raise ValueError(f"mod.mod_layers_idx has duplicates: {self.mod_layers_idx}")
        # JSON turns int keys into strings; normalise back.
        self.layer_capacity = {int(k): float(v) for k, v in (self.layer_capacity or {}).items()}

    def skip_ratio(self, layer_idx: int) -> float:
        if self.mod_mode == "dense":
            return 0.0
        return self.layer_capacity.get(layer_idx, self.capacity_factor)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "ModConfig | None":
        if not data or not data.get("mod_enable", True):
            return None
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown keys in the config's mod section: {sorted(unknown)}")
        return cls(**data)

    def validate_against(self, num_hidden_layers: int) -> None:
        bad = [i for i in self.mod_layers_idx if not 0 <= i < num_hidden_layers]
        if bad:
            raise ValueError(f"mod.mod_layers_idx {bad} out of range for a model with {num_hidden_layers} layers")
        if 0 in self.mod_layers_idx:
            # Layer 0 fixes the cache length and the causal mask the dense layers see; it must stay dense.
            raise ValueError("layer 0 must stay dense (mod.mod_layers_idx contains 0)")
