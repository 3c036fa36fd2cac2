"""Training configuration: one typed dataclass tree, loaded from configs/train/*.yaml + overrides."""

from __future__ import annotations

from dataclasses import dataclass, field

STAGES = ("pretrain", "finetune")
# Named parameter groups a recipe can train (resolved per tower family in gamma_mod/train/trainable.py).
TRAINABLE_GROUPS = ("mm_projector", "llm", "clip", "convnext", "align_stages", "align_stages_latent", "vlm_uni")
# What trains when a config names no `trainable` list: LLaVA-1.5's split.
DEFAULT_TRAINABLE = {"pretrain": ["mm_projector"], "finetune": ["mm_projector", "llm"]}
ASPECT_RATIOS = ("pad", "square")
# Experiment trackers (HF Trainer integrations). auto: tensorboard when installed, else none.
REPORT_TO = ("auto", "none", "tensorboard", "wandb", "mlflow", "all")


@dataclass
class ImageArgs:
    """Model-config fields a recipe sets per stage (None: keep the spec's / `init`'s value).

    Applied to the config before the model is built (spec) or loaded (`init`), so a stage-2 run can
    raise the resolution of a stage-1 model, as the official scripts do.
    """

    input_image_size: int | None = None  # LLaVA-HR: input side in px (stage 1: 384, stage 2: 1024)
    image_aspect_ratio: str | None = None  # pad (letterbox with the mean colour) | square (resize + centre crop)
    image_size_aux: int | None = None  # Mini-Gemini: high-resolution side in px (HD: 1536)
    image_grid: int | None = None  # Mini-Gemini: g x g crops (HD: 2)
    image_global: bool | None = None  # Mini-Gemini: add the whole image as one more view (HD: true)

    def __post_init__(self) -> None:
        if self.image_aspect_ratio is not None and self.image_aspect_ratio not in ASPECT_RATIOS:
            raise ValueError(f"model.image.image_aspect_ratio must be one of {ASPECT_RATIOS}, "
                             f"got {self.image_aspect_ratio!r}")

    def overrides(self) -> dict:
        return {k: v for k, v in vars(self).items() if v is not None}


@dataclass
class ModelArgs:
    spec: str = "tiny"  # configs/model/<spec>.yaml, used when `init` is empty
    init: str | None = None  # a model folder to start from (stage 2 starts from stage 1's output)
    tokenizer: str | None = None  # tokenizer folder (default: `init`, else `llm`)
    # Pretrained components, local paths, loaded over the spec's random init (or over `init`):
    llm: str | None = None  # HF Llama folder (vicuna-7b-v1.5): decoder, embeddings, lm_head
    clip: str | None = None  # HF CLIP folder (openai/clip-vit-large-patch14-336): the ViT
    convnext: str | None = None  # timm / open_clip ConvNeXt checkpoint (file or folder): the trunk
    mm_adapter: str | None = None  # official stage-1 mm_projector.bin (--pretrain_mm_mlp_adapter)
    # A real-size spec (>= 100M decoder parameters) refuses to start with a component left random.
    allow_random_init: bool = False
    image: ImageArgs = field(default_factory=ImageArgs)
    attn_implementation: str = "sdpa"  # sdpa | eager | flash_attention_2 (used only when installed)

    def __post_init__(self) -> None:
        if self.attn_implementation not in ("sdpa", "eager", "flash_attention_2"):
            raise ValueError(f"attn_implementation {self.attn_implementation!r} is not sdpa|eager|flash_attention_2")

    def components(self) -> dict[str, str]:
        named = (("llm", self.llm), ("clip", self.clip), ("convnext", self.convnext), ("mm_adapter", self.mm_adapter))
        return {k: v for k, v in named if v}


@dataclass
class DataArgs:
    train_json: str = ""
    image_folder: str | None = None
    template: str = "vicuna_v1"
    max_length: int = 2048
    on_bad_record: str = "error"  # error | skip (skipped records are counted in the log)
    on_overlong: str = "error"  # error | truncate (LLaVA's behaviour: cut to max_length, counted in the log)
    num_proc: int = 1  # processes tokenizing the records into the Arrow cache (first start only)
    cache_dir: str | None = None  # the Arrow cache's folder; None: .gamma_mod_cache/ next to train_json

    def __post_init__(self) -> None:
        if self.num_proc < 1:
            raise ValueError(f"data.num_proc must be >= 1, got {self.num_proc}")
        if self.on_bad_record not in ("error", "skip"):
            raise ValueError("data.on_bad_record must be 'error' or 'skip'")
        if self.on_overlong not in ("error", "truncate"):
            raise ValueError("data.on_overlong must be 'error' or 'truncate'")


@dataclass
class ModArgs:
    """Turn the model into a MoD model before training, or check that `init` already is this one.

    Layers: `layers` (explicit indices) or `dense_layers` (every other layer becomes MoD; negative
    indices count from the end: the official `arank_mod` is [0, 1, 2, -1] -> 28 of 32 layers).
    """

    layers: list[int] | None = None
    dense_layers: list[int] | None = None
    skip_ratio: float = 0.5  # fraction of routable tokens skipped (official capacity_factor)
    strategy: str = "gamma"
    router_aux_loss_coef: float = 0.01

    def __post_init__(self) -> None:
        if self.layers is not None and self.dense_layers is not None:
            raise ValueError("mod: give `layers` or `dense_layers`, not both")

    def resolve_layers(self, num_layers: int) -> list[int] | None:
        """The MoD layer indices for a `num_layers`-layer model (None: neither field set)."""
        if self.dense_layers is None:
            return sorted(set(self.layers)) if self.layers is not None else None
        bad = [i for i in self.dense_layers if not -num_layers <= i < num_layers]
        if bad:
            raise ValueError(f"mod.dense_layers {bad} out of range for {num_layers} layers")
        dense = {i % num_layers for i in self.dense_layers}
        layers = [i for i in range(num_layers) if i not in dense]
        if not layers:
            raise ValueError(f"mod.dense_layers {self.dense_layers} keeps all {num_layers} layers dense: no MoD layer")
        return layers


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
    # 0 disables clipping (the official stage-2 recipes: their zero3.json sets none and DeepSpeed <= 0.16
    # defaults to 0). scripts/zero*.json say "auto", so DeepSpeed runs use this value too.
    max_grad_norm: float = 1.0
    optimizer: str | None = None  # HF `optim` name (official: adamw_torch); None: the HF default
    bf16: bool = False
    tf32: bool = False  # TF32 matmuls on Ampere+ GPUs; ignored (logged) without CUDA
    gradient_checkpointing: bool = False
    seed: int = 42
    dataloader_workers: int = 0
    # LLaVA's sampler: image and text-only samples in separate batches, lengths grouped (train/sampler.py).
    group_by_modality_length: bool = False

    def __post_init__(self) -> None:
        if self.max_grad_norm < 0:
            raise ValueError(f"optim.max_grad_norm must be >= 0 (0: no clipping), got {self.max_grad_norm}")


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
    stage: str = "finetune"  # pretrain / finetune: the default `trainable` groups (DEFAULT_TRAINABLE)
    output_dir: str = "runs/train"
    model: ModelArgs = field(default_factory=ModelArgs)
    data: DataArgs = field(default_factory=DataArgs)
    mod: ModArgs | None = None
    optim: OptimArgs = field(default_factory=OptimArgs)
    lora: LoraArgs = field(default_factory=LoraArgs)
    # Parameter groups that train (TRAINABLE_GROUPS); None: DEFAULT_TRAINABLE[stage]. Everything else is frozen.
    trainable: list[str] | None = None
    logging_steps: int = 10
    save_steps: int = 0  # 0: no intermediate checkpoints
    save_total_limit: int = 2
    deepspeed: str | None = None  # scripts/zero2.json, zero3.json, zero3_offload.json
    resume: bool = False  # continue from the last complete checkpoint in output_dir
    overwrite: bool = False  # replace a finished run (or an unfinished one's checkpoints) in output_dir
    collapse_patience: int = 50  # warn when a MoD layer keeps all/none of its routable tokens this many steps
    # Where the Trainer logs (loss, lr and the mod/* metrics): REPORT_TO, or several joined by commas
    # ("tensorboard,wandb"). TensorBoard writes under output_dir/runs/; wandb honours WANDB_MODE=offline.
    report_to: str = "auto"
    run_name: str | None = None  # the run's name in wandb / mlflow (default: the output folder's name)

    def __post_init__(self) -> None:
        trackers = self.trackers()
        unknown = [t for t in trackers if t not in REPORT_TO]
        if unknown or not trackers or (len(trackers) > 1 and set(trackers) & {"auto", "none", "all"}):
            raise ValueError(f"report_to must be one of {REPORT_TO} or a comma-separated list of "
                             f"tensorboard/wandb/mlflow, got {self.report_to!r}")
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {self.stage!r}")
        if not self.data.train_json:
            raise ValueError("data.train_json is required")
        if self.trainable is not None:
            unknown = [g for g in self.trainable if g not in TRAINABLE_GROUPS]
            if unknown or not self.trainable:
                raise ValueError(f"trainable: unknown groups {unknown} (known: {list(TRAINABLE_GROUPS)})"
                                 if unknown else "trainable: empty list (nothing would train)")
            if self.lora.enable and set(self.trainable) - {"mm_projector", "llm"}:
                raise ValueError("trainable: with lora.enable only mm_projector and the LLM's LoRA adapters train; "
                                 f"drop {sorted(set(self.trainable) - {'mm_projector', 'llm'})}")

    def trackers(self) -> list[str]:
        """`report_to` split into names ("tensorboard,wandb" -> ["tensorboard", "wandb"])."""
        return [t.strip() for t in str(self.report_to).split(",") if t.strip()]

    def trainable_groups(self) -> list[str]:
        return list(self.trainable) if self.trainable is not None else list(DEFAULT_TRAINABLE[self.stage])
