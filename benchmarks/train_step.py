"""One whole training step, dense vs MoD, in one run: vision tower -> projector -> LLM -> lm_head, the
LM loss (plus the routing loss for MoD), backward and an AdamW step.

    python benchmarks/train_step.py                                   # CPU, the scaled 7B layout
    python benchmarks/train_step.py --device cuda --dtype bfloat16 --layout 7b   # GPU: LLaVA-1.5-7B-shaped

Layouts (gamma-MoD's SFT step: vision tower frozen, projector + LLM + lm_head trained):
  scaled7b  LLM 8 layers x hidden 1024 (ffn 2816, 16 heads), layers 0 and 7 dense, 1..6 MoD; CLIP-like
            tower 4 x 256 at 336 px / 14 = 576 image tokens; vocab 32000; batch 4
  7b        LLM 32 x 4096 (ffn 11008), layers 0, 1, 2, 31 dense (the paper's 28 MoD); CLIP-L/14-336; batch 2
            (both models with bf16 weights, gradients and AdamW states: ~2 x 55 GB, an H200)
  tiny      a seconds-long smoke run of the same code
A sample is [bos, 34 system tokens, 576 image tokens, 32 question tokens, 32 answer tokens]; routable =
bos + system + image; only the answer carries labels.

The analytic ideal of the whole step (FLOPs; multiply-add = 2; backward = 2 x forward for trained matmuls):
    step = V + 3 * (P + sum over LLM layers L(t_l) + H)
    V    vision tower forward only (frozen): per layer 8 N dv^2 + 4 N^2 dv + 4 N dv dv_ff, N = patches + cls,
         plus the patch embedding 2 * patches * 3 p^2 * dv
    P    projector (2 linears): 2 * n_img * (dv d + d d)
    L(t) the paper's decoder layer count 8 t d^2 + 4 t^2 d + 6 t d d_ff; dense layers t = T, MoD layers
         t = tokens kept (T - int(skip * routable)) plus the router 4 T d
    H    lm_head 2 T d V
MoD changes only the MoD layers' t; V, P, H, the two dense layers, the embeddings and everything that is
not a matmul (norms, the loss, AdamW's per-parameter update, which has the same parameters to update
in both models) are the same in both, so the measured ratio can only approach the ideal from above.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from dataclasses import dataclass

import torch

from clock import add_clock_arguments, apply_clock_arguments, clock_note, describe_machine
from model_flops import decoder_flops, head_flops, projector_flops, vision_flops
from gamma_mod.model import LlavaLlamaConfig, LlavaLlamaForCausalLM
from gamma_mod.mod.convert import convert_to_mod

IGNORE_INDEX = -100


@dataclass
class Layout:
    text: dict
    vision: dict
    dense_layers: tuple[int, ...]
    batch: int
    vocab: int = 32000
    system_tokens: int = 34
    question_tokens: int = 32
    answer_tokens: int = 32


LAYOUTS = {
    "scaled7b": Layout(text=dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=8, num_attention_heads=16),
                       vision=dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4,
                                   image_size=336, patch_size=14),
                       dense_layers=(0, 7), batch=4),
    "7b": Layout(text=dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32),
                 vision=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                             image_size=336, patch_size=14),
                 dense_layers=(0, 1, 2, 31), batch=2),
    "tiny": Layout(text=dict(hidden_size=128, intermediate_size=344, num_hidden_layers=4, num_attention_heads=4),
                   vision=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                               image_size=64, patch_size=8),
                   dense_layers=(0, 3), batch=2, vocab=512, system_tokens=6, question_tokens=8, answer_tokens=8),
}


def build_models(layout: Layout, ratio: float, device, dtype):
    config = LlavaLlamaConfig(**layout.text, vocab_size=layout.vocab, max_position_embeddings=4096,
                              vision_config=layout.vision, image_token_index=layout.vocab - 1, pad_token_id=0,
                              bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    with torch.device(device):
        dense = LlavaLlamaForCausalLM(config).to(dtype)
    n = config.num_hidden_layers
    mod_layers = [i for i in range(n) if i not in layout.dense_layers]
    mod = convert_to_mod(copy.deepcopy(dense), mod_layers, skip_ratio=ratio)
    for model in (dense, mod):
        model.train()
        model.model.vision_tower.requires_grad_(False)  # gamma-MoD SFT: the vision tower stays frozen
    return dense, mod, mod_layers


def make_batch(layout: Layout, config, device, dtype, seed: int = 0) -> dict:
    """[bos, system, image x n_img, question, answer]; labels on the answer only."""
    g = torch.Generator().manual_seed(seed)
    b, n_img = layout.batch, config.num_image_tokens
    image = config.image_token_index

    def text(n):
        ids = torch.randint(3, layout.vocab - 1, (b, n), generator=g)
        return ids.masked_fill(ids == image, 3)

    ids = torch.cat([torch.full((b, 1), 1), text(layout.system_tokens), torch.full((b, n_img), image),
                     text(layout.question_tokens), text(layout.answer_tokens)], dim=1)
    labels = ids.clone()
    labels[:, : ids.shape[1] - layout.answer_tokens] = IGNORE_INDEX
    size = config.image_input_size
    pixels = torch.randn(b, 3, size, size, generator=g)
    return dict(input_ids=ids.to(device), attention_mask=torch.ones_like(ids).to(device), labels=labels.to(device),
                pixel_values=pixels.to(device=device, dtype=dtype))


def step_flops(layout: Layout, config, seq: int, routable: int, mod_layers: list[int], ratio: float) -> dict:
    """Analytic FLOPs of one training step per sample, by part (see the module docstring)."""
    d, d_ff, n_layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    vision = vision_flops(layout.vision)
    projector = projector_flops(config.num_image_tokens, layout.vision["hidden_size"], d)
    head = head_flops(seq, d, config.vocab_size)
    kept = seq - int(routable * ratio)
    layers = {"dense": decoder_flops(seq, d, d_ff, n_layers, {}),
              "mod": decoder_flops(seq, d, d_ff, n_layers, {i: kept for i in mod_layers})}
    parts = {name: vision + 3 * (projector + llm + head) for name, llm in layers.items()}
    parts.update(vision=vision, projector=3 * projector, head=3 * head, llm_dense=3 * layers["dense"],
                 llm_mod=3 * layers["mod"], kept=kept)
    return parts


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def alternating_steps(models: dict, batch: dict, repeats: int, warmup: int, device,
                      clock=time.perf_counter) -> dict[str, dict]:
    """Median seconds per full step for each model, the models stepped in turn in every repeat."""
    optimizers = {name: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-5)
                  for name, m in models.items()}
    times: dict[str, list[float]] = {name: [] for name in models}
    peak: dict[str, float | None] = {name: None for name in models}
    for round_ in range(warmup + repeats):
        for name, model in models.items():
            opt = optimizers[name]
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            sync(device)
            start = clock()
            loss = model(**batch).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            sync(device)
            if round_ >= warmup:
                times[name].append(clock() - start)
            if device.type == "cuda":
                peak[name] = torch.cuda.max_memory_allocated(device) / 2**30
    return {name: dict(seconds=statistics.median(t), all=t, peak_gib=peak[name]) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layout", default="scaled7b", choices=sorted(LAYOUTS))
    parser.add_argument("--ratio", type=float, default=0.5, help="fraction of routable tokens skipped")
    parser.add_argument("--batch", type=int)
    parser.add_argument("--vocab", type=int)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    add_clock_arguments(parser)
    args = parser.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    clock = apply_clock_arguments(args, device)
    layout = copy.deepcopy(LAYOUTS[args.layout])
    layout.batch = args.batch or layout.batch
    layout.vocab = args.vocab or layout.vocab
    dense, mod, mod_layers = build_models(layout, args.ratio, device, dtype)
    batch = make_batch(layout, dense.config, device, dtype)
    seq = batch["input_ids"].shape[1]
    routable = 1 + layout.system_tokens + dense.config.num_image_tokens
    flops = step_flops(layout, dense.config, seq, routable, mod_layers, args.ratio)
    ideal = flops["mod"] / flops["dense"]
    measured = alternating_steps({"dense": dense, "MoD": mod}, batch, args.repeats, args.warmup, device, clock)
    ratio = measured["MoD"]["seconds"] / measured["dense"]["seconds"]

    cfg = dense.config
    print(f"# Training step, {args.layout}: LLM {cfg.num_hidden_layers} x {cfg.hidden_size} (ffn {cfg.intermediate_size}), "
          f"MoD layers {mod_layers} at skip {args.ratio}, vision {layout.vision['num_hidden_layers']} x "
          f"{layout.vision['hidden_size']} (frozen), {cfg.num_image_tokens} image tokens, seq {seq} ({routable} routable, "
          f"{flops['kept']} kept per MoD layer), vocab {cfg.vocab_size}, batch {layout.batch}, "
          f"{describe_machine(device)}, {args.dtype}, torch {torch.__version__}, {clock_note(args)}")
    print(f"`python benchmarks/train_step.py --layout {args.layout} --ratio {args.ratio} --batch {layout.batch} "
          f"--vocab {layout.vocab} --repeats {args.repeats} --device {device.type} --dtype {args.dtype}"
          + (f" --threads {args.threads}" if args.threads else "") + f" --clock {args.clock}`")
    print("| model | s / step (median) | all repeats s | peak GPU GiB | analytic TFLOPs / sample |")
    print("|---|---|---|---|---|")
    for name, key in (("dense", "dense"), ("MoD", "mod")):
        m = measured[name]
        peak = f"{m['peak_gib']:.1f}" if m["peak_gib"] is not None else "n/a (CPU)"
        print(f"| {name} | {m['seconds']:.3f} | {', '.join(f'{t:.3g}' for t in m['all'])} | {peak} "
              f"| {flops[key] / 1e12:.4g} |")
    share = {k: flops[k] / flops["dense"] for k in ("vision", "projector", "head", "llm_dense")}
    print(f"Dense step FLOPs by part: vision {100 * share['vision']:.1f}%, projector {100 * share['projector']:.1f}%, "
          f"LLM decoder {100 * share['llm_dense']:.1f}%, lm_head {100 * share['head']:.1f}%")
    print(f"Whole-step time ratio MoD/dense: {ratio:.3f}; analytic ideal {ideal:.3f}; measured / ideal "
          f"{ratio / ideal:.2f}; MoD step speed-up {1 / ratio:.2f}x (ideal {1 / ideal:.2f}x)")
    if device.type == "cpu" and hasattr(os, "getloadavg"):
        print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
