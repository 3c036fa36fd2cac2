"""Training configuration: one typed dataclass tree, loaded from configs/train/*.yaml + overrides."""

from __future__ import annotations

from dataclasses import dataclass, field

STAGES = ("pretrain", "finetune")


@dataclass
class ModelArgs:
    spec: str = "tiny"  # configs/model/<spec>.yaml, used when `init` is empty (random init)
    init: str | None = None  # a model folder to start from (stage 2 starts from stage 1's output)
    tokenizer: str | None = None  # tokenizer folder (default: `init`, else required)
    vision_weights: str | None = None  # a local CLIP folder to load the vision tower from
    attn_implementation: str = "sdpa"  # sdpa | eager | flash_attention_2 (used only when installed)

    def __post_init__(self) -> None:
        if self.attn_implementation not in ("sdpa", "eager", "flash_attention_2"):
            raise ValueError(f"attn_implementation {self.attn_implementation!r} is not sdpa|eager|flash_attention_2")


@dataclass
class DataArgs:
    train_json: str = ""
    image_folder: str | None = None
    template: str = "vicuna_v1"
    max_length: int = 2048
    on_bad_record: str = "error"  # error | skip (skipped records are counted in the log)

    def __post_init__(self) -> None:
        if self.on_bad_record not in ("error", "skip"):
            raise ValueError("data.on_bad_record must be 'error' or 'skip'")


@dataclass
class ModArgs:
    """Turn the model into a MoD model before training (skipped when it already is one)."""

    layers: list[int] | None = None
    routing_ratio: float = 0.5
    strategy: str = "gamma"
    router_aux_loss_coef: float = 0.01


@dataclass
class OptimArgs:
    lr: float = 2e-5
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.03
    epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 16  # per device
    grad_accum: int = 1
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    bf16: bool = False
    gradient_checkpointing: bool = False
    seed: int = 42
    dataloader_workers: int = 0


@dataclass
class LoraArgs:
    enable: bool = False
    r: int = 64
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj",
                                                               "gate_proj", "up_proj", "down_proj"])


@dataclass
class TrainConfig:
    stage: str = "finetune"  # pretrain: only mm_projector trains; finetune: projector + LLM (+ routers)
    output_dir: str = "runs/train"
    model: ModelArgs = field(default_factory=ModelArgs)
    data: DataArgs = field(default_factory=DataArgs)
    mod: ModArgs | None = None
    optim: OptimArgs = field(default_factory=OptimArgs)
    lora: LoraArgs = field(default_factory=LoraArgs)
    logging_steps: int = 10
    save_steps: int = 0  # 0: no intermediate checkpoints
    save_total_limit: int = 2
    deepspeed: str | None = None  # scripts/zero2.json, zero3.json, zero3_offload.json
    resume: bool = False  # continue from the last complete checkpoint in output_dir
    overwrite: bool = False  # replace a finished run (or an unfinished one's checkpoints) in output_dir
    collapse_patience: int = 50  # warn when a MoD layer keeps all/none of its routable tokens this many steps

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {self.stage!r}")
        if not self.data.train_json:
            raise ValueError("data.train_json is required")
