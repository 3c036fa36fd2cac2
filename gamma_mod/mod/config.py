"""The `mod` section of a model config.

Field names follow the released gamma-MoD checkpoints (`mod_enable`, `mod_mode`, `mod_layers_idx`,
`router_aux_loss_coef`) so their config.json files load unchanged; the rest are our extensions with
defaults that reproduce the official behaviour where one exists. One name per idea: the fraction of
routable tokens a MoD layer skips is `skip_ratio` (official files call it `capacity_factor`: read here,
at the boundary, and nowhere else); `strategy` is the ROUTING strategy (how tokens are scored, kept
and weighted: gamma_mod.mod.strategies.ROUTING_STRATEGIES); which layers become MoD is the LAYER
SELECTION (`mod_layers_idx`, chosen by ARank (gamma_mod.arank.select), p-MoD's PRD schedule, or an
official `mod_mode`).

`compat` picks the behaviour of the MoD layers: "ours" (positions, routable tokens and routing loss
as in gamma_mod/mod/layer.py) or "official" (the released code's rules, gamma_mod/mod/compat.py).
Unset, it is "official" exactly when `mod_mode` is a value only the official code writes
(arank_mod, true, first_half, ...): `sparse` and `dense` are also our own values and keep our meaning.
`mod_mode` is kept as written (a JSON `true` stays `true`), so saving a loaded folder keeps it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError

ROUTER_WEIGHTINGS = ("prob", "straight_through", "none")
PREFILL_MODES = ("topk", "threshold")
DECODE_MODES = ("dense", "threshold")
COMPAT_MODES = ("ours", "official")
# Our meaning: "sparse" routes as configured, "dense" keeps every token (routers still run).
OUR_MOD_MODES = ("sparse", "dense")
# Every value the official training (`initialize_mod_modules`) or eval class (`True`) writes. Officially
# each names a LAYER CHOICE only (used when mod_layers_idx is absent); see `official_layer_choice`.
OFFICIAL_MOD_MODES = ("arank_mod", "true", "first_half", "second_half", "first_last_dense", "last_two_thirds",
                      "first_five_dense", "custom", "sparse", "dense")
# Official layouts: the fixed routable region (first N positions) their files hard-code.
#   llava_hr  gamma_mod/model/language_model/llava_llama_mod.py: 1024 image tokens + 35 instruction tokens
#   mgm       gamma_mod/MGM/mgm/model/language_model/mod_mgm_llama.py: 2880 (MGM-HD image tokens)
OFFICIAL_REGIONS = {"llava_hr": 1024 + 35, "mgm": 2880}
# The fraction of the region skipped in official training, whatever skip_ratio (official capacity_factor) says.
OFFICIAL_SKIP_RATIO = 0.5


class ModConfigError(ConfigError):
    """A bad `mod` section; the message names the field, the value and what is accepted."""


def official_layer_choice(mod_mode: str, num_layers: int) -> list[int] | None:
    """The MoD layers an official `mod_mode` implies (the official `initialize_mod_modules`), or None
    for values that imply none (`true`, `custom`: the layers are whatever mod_layers_idx says)."""
    n = num_layers
    choices = {
        "first_half": range(0, n // 2),
        "second_half": range(n // 2, n - 1),
        "sparse": range(0, n, 2),
        "dense": range(n),
        "first_last_dense": range(1, n - 1),
        "last_two_thirds": range(n // 3 + 2, n - 1),
        "first_five_dense": range(5, n - 1),
        "arank_mod": [i for i in range(n) if i not in {0, 1, 2, n - 1}],
    }
    return list(choices[mod_mode]) if mod_mode in choices else None


def mod_mode_name(value: Any) -> str:
    """`mod_mode` as a string: the official eval class writes the boolean True (JSON `true`)."""
    if value is True or (isinstance(value, str) and value.lower() == "true"):
        return "true"
    if not isinstance(value, str) or value not in OFFICIAL_MOD_MODES:
        raise ModConfigError(
            f"mod.mod_mode {value!r} (config.json `mod` section) is not an accepted value; accepted: "
            f"{', '.join(OFFICIAL_MOD_MODES)} (sparse/dense: ours, the rest: written by the official gamma-MoD code)")
    return value
PRD_SCHEDULES = ("shiftedcos", "shiftedlinear")
# Keys of official (and older gamma-mod) mod sections -> our field names.
OFFICIAL_KEYS = {"capacity_factor": "skip_ratio", "layer_capacity": "layer_skip_ratios"}


@dataclass
class ModConfig:
    mod_enable: bool = True
    # "sparse": routed as configured; "dense": routers run (and are trained) but every token is kept.
    # The official values (OFFICIAL_MOD_MODES) load too; they name a layer choice (see module docstring).
    mod_mode: str | bool = "sparse"
    mod_layers_idx: list[int] = field(default_factory=list)
    # Fraction of ROUTABLE tokens that SKIP a MoD layer ("0.34"/"0.5" in the checkpoint names).
    skip_ratio: float = 0.5
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
    # Per-layer skip ratios; filled by strategies with a schedule (p-MoD PRD), else skip_ratio everywhere.
    layer_skip_ratios: dict[int, float] = field(default_factory=dict)
    # "ours" or "official" (reproduce the released gamma-MoD code, gamma_mod/mod/compat.py; `prefill`/`decode`
    # are then the official rules, with prefill_threshold/decode_threshold); None: "official" when mod_mode
    # is an official-only value, else "ours".
    compat: str | None = None
    # Official mode only. Which official file's rules ("llava_hr" or "mgm") and the fixed routable region
    # (first N positions); None: from the model's vision tower (mgm -> "mgm", else "llava_hr") and the layout.
    official_layout: str | None = None
    official_region: int | None = None

    def __post_init__(self) -> None:
        mode = mod_mode_name(self.mod_mode)
        if self.shared_router is None:  # the strategy decides: gamma shares one router, p-MoD has one per layer
            self.shared_router = self.strategy == "gamma"
        if self.compat is not None and self.compat not in COMPAT_MODES:
            raise ModConfigError(f"mod.compat must be one of {COMPAT_MODES}, got {self.compat!r}")
        if self.official_layout is not None and self.official_layout not in OFFICIAL_REGIONS:
            raise ModConfigError(f"mod.official_layout must be one of {tuple(OFFICIAL_REGIONS)}, "
                                 f"got {self.official_layout!r}")
        if self.official_region is not None and self.official_region < 1:
            raise ModConfigError(f"mod.official_region must be a positive token count, got {self.official_region}")
        if self.official and (self.strategy, self.router_weighting, self.shared_router) != ("gamma", "prob", True):
            raise ModConfigError(
                "mod.compat 'official' reproduces gamma-MoD (strategy gamma, router_weighting prob, one shared "
                f"router); got strategy {self.strategy!r}, router_weighting {self.router_weighting!r}, "
                f"shared_router {self.shared_router}")
        if mode in ("true", "custom") and not self.mod_layers_idx and self.mod_enable:
            raise ModConfigError(f"mod.mod_mode {self.mod_mode!r} implies no layer choice: "
                                 "mod.mod_layers_idx is required")
        if not 0.0 <= self.skip_ratio < 1.0:
            raise ModConfigError(f"mod.skip_ratio (fraction of routable tokens skipped) must be in [0, 1), "
                                 f"got {self.skip_ratio}")
        if self.router_weighting not in ROUTER_WEIGHTINGS:
            raise ModConfigError(f"mod.router_weighting must be one of {ROUTER_WEIGHTINGS}, got {self.router_weighting!r}")
        if self.prefill not in PREFILL_MODES:
            raise ModConfigError(f"mod.prefill must be one of {PREFILL_MODES}, got {self.prefill!r}")
        if self.decode not in DECODE_MODES:
            raise ModConfigError(f"mod.decode must be one of {DECODE_MODES}, got {self.decode!r}")
        from .strategies import ROUTING_STRATEGIES  # the one list of routing strategies

        if self.strategy not in ROUTING_STRATEGIES:
            raise ModConfigError(f"mod.strategy (routing strategy) must be one of {tuple(ROUTING_STRATEGIES)}, "
                                 f"got {self.strategy!r}")
        if self.router_aux_loss_coef < 0:
            raise ModConfigError("mod.router_aux_loss_coef must be >= 0")
        if self.prd_schedule not in PRD_SCHEDULES:
            raise ModConfigError(f"mod.prd_schedule must be one of {PRD_SCHEDULES}, got {self.prd_schedule!r}")
        if self.prd_divisor is not None and self.prd_divisor <= 0:
            raise ModConfigError(f"mod.prd_divisor must be a positive layer count or null, got {self.prd_divisor}")
        self.mod_layers_idx = sorted(int(i) for i in (self.mod_layers_idx or []))
        if len(set(self.mod_layers_idx)) != len(self.mod_layers_idx):
            raise ModConfigError(f"mod.mod_layers_idx has duplicates: {self.mod_layers_idx}")
        # JSON turns int keys into strings; normalise back.
        self.layer_skip_ratios = {int(k): float(v) for k, v in (self.layer_skip_ratios or {}).items()}

    # -- compat -----------------------------------------------------------------------------------
    @property
    def auto_official(self) -> bool:
        """True when `compat` is unset and mod_mode (an official-only value) selects the official mode."""
        return self.compat is None and mod_mode_name(self.mod_mode) not in OUR_MOD_MODES

    @property
    def official(self) -> bool:
        return self.compat == "official" or self.auto_official

    @property
    def keeps_all_tokens(self) -> bool:
        """Our "dense" mode: routers run but nothing is skipped (officially "dense" is only a layer choice)."""
        return not self.official and self.mod_mode == "dense"

    @property
    def region(self) -> int:
        """The official fixed routable region (first N positions); official mode only."""
        if self.official_region is not None:
            return self.official_region
        return OFFICIAL_REGIONS[self.official_layout or "llava_hr"]

    def resolve(self, num_hidden_layers: int, vision_tower_type: str | None = None) -> "ModConfig":
        """A copy with what the model decides filled in: the layer choice an official mod_mode implies
        (when mod_layers_idx is absent) and, in official mode, the layout from the vision tower."""
        changes: dict[str, Any] = {}
        mode = mod_mode_name(self.mod_mode)
        if not self.mod_layers_idx and (self.official or mode not in OUR_MOD_MODES):
            implied = official_layer_choice(mode, num_hidden_layers)
            if implied and 0 in implied:
                raise ModConfigError(
                    f"mod.mod_mode {self.mod_mode!r} without mod_layers_idx means MoD layers {implied} in the "
                    "official code, but layer 0 must stay dense here (it fixes the cache length every dense "
                    "layer sees): give mod.mod_layers_idx explicitly")
            if implied:
                changes["mod_layers_idx"] = implied
        if self.official and self.official_layout is None:
            changes["official_layout"] = "mgm" if vision_tower_type == "mgm" else "llava_hr"
        return dataclasses.replace(self, **changes) if changes else self

    def layer_skip_ratio(self, layer_idx: int) -> float:
        """The fraction of routable tokens layer `layer_idx` skips."""
        if self.official:
            return OFFICIAL_SKIP_RATIO
        if self.keeps_all_tokens:
            return 0.0
        return self.layer_skip_ratios.get(layer_idx, self.skip_ratio)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "ModConfig | None":
        if not data or not data.get("mod_enable", True):
            return None
        data = dict(data)
        for official, ours in OFFICIAL_KEYS.items():  # names used by the released files (and our older folders)
            if official in data:
                value = data.pop(official)
                if ours in data and data[ours] != value:
                    raise ModConfigError(f"the config's mod section gives both {official} ({value!r}) and {ours} "
                                         f"({data[ours]!r}); they are one setting")
                data.setdefault(ours, value)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ModConfigError(f"unknown keys in the config's mod section: {sorted(unknown)}")
        return cls(**data)

    def validate_against(self, num_hidden_layers: int) -> None:
        bad = [i for i in self.mod_layers_idx if not 0 <= i < num_hidden_layers]
        if bad:
            raise ModConfigError(f"mod.mod_layers_idx {bad} out of range for a model with {num_hidden_layers} layers")
        if 0 in self.mod_layers_idx:
            # Layer 0 fixes the cache length and the causal mask the dense layers see; it must stay dense.
            raise ModConfigError("layer 0 must stay dense (mod.mod_layers_idx contains 0)")
