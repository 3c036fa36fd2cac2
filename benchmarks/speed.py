"""Dense vs MoD end-to-end efficiency on random-weight models of a chosen shape, in one run.

    python benchmarks/speed.py --shape tiny                      # CPU, seconds
    python benchmarks/speed.py --shape 7b --device cuda --dtype bfloat16   # H100/H200: LLaVA-HR-7B-shaped

The MoD model is the dense model converted in place (same weights) with the paper's layout: every
layer MoD except the first three and the last (28 of 32 on 7B; first and last on shallow models), routing ratio 0.5 by default.
Random weights: the router's choices are arbitrary but the amount of work skipped is what a trained
model at that ratio skips, which is what timing depends on.

After the `gamma-mod speed` table (each model measured on its own), the script times dense and MoD
alternately in each repeat (prefill; decode steps over the KV cache, timed directly), so a change of
machine load hits both alike: those are the ratios to read on a shared machine.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time

import torch

from gamma_mod.eval.flops import tflops_from_config
from gamma_mod.eval.speed import alternating_prefill_times, format_table, random_inputs, speed_report
from gamma_mod.model import LlavaLlamaConfig, LlavaLlamaForCausalLM
from gamma_mod.mod.convert import convert_to_mod

CLIP_L_1024_TOKENS = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                          image_size=448, patch_size=14)  # CLIP-L/14 at 448 px: 32 x 32 = 1024 image tokens

SHAPES = {
    "tiny": dict(text=dict(hidden_size=256, intermediate_size=688, num_hidden_layers=6, num_attention_heads=4),
                 vision=dict(hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
                             image_size=64, patch_size=8), batch=8, text_tokens=32, vocab=512),
    "mid": dict(text=dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=8, num_attention_heads=16),
                vision=dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=2, num_attention_heads=4,
                            image_size=256, patch_size=8), batch=2, text_tokens=64, vocab=32000),
    "7b": dict(text=dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32),
               vision=CLIP_L_1024_TOKENS, batch=8, text_tokens=576, vocab=32000),
}


def build_pair(shape: str, ratio: float, device, dtype):
    spec = SHAPES[shape]
    config = LlavaLlamaConfig(**spec["text"], vocab_size=spec["vocab"], max_position_embeddings=4096,
                              vision_config=spec["vision"], image_token_index=spec["vocab"] - 1, pad_token_id=0,
                              bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    with torch.device(device):
        dense = LlavaLlamaForCausalLM(config).to(dtype).eval()
    n = config.num_hidden_layers
    # The paper's layout: 4 of 32 layers dense (0, 1, 2 and the last), scaled to the depth.
    n_dense = max(2, round(4 * n / 32))
    dense_layers = set(range(n_dense - 1)) | {n - 1}
    mod_layers = [i for i in range(n) if i not in dense_layers]
    mod = convert_to_mod(copy.deepcopy(dense), mod_layers, routing_ratio=ratio).eval()
    return dense, mod


@torch.no_grad()
def alternating_decode(models: dict, inputs, new_tokens: int, repeats: int, warmup: int = 1) -> dict[str, float]:
    """Decode tokens/s per model, timed directly: per repeat each model in turn prefills (untimed), then
    `new_tokens` greedy steps over its KV cache are timed, as generate() runs them. Timing the steps
    themselves (not generate(N) - generate(1)) keeps prefill noise out; alternating keeps load drift fair."""
    times: dict[str, list[float]] = {name: [] for name in models}
    for round_ in range(warmup + repeats):
        for name, model in models.items():
            device = next(model.parameters()).device
            ids, mask = inputs.input_ids.to(device), inputs.attention_mask.to(device)
            extra = {"mod_decode_start": ids.shape[1]} if model.model.mod_layer_indices else {}
            out = model(input_ids=ids, attention_mask=mask, pixel_values=inputs.pixel_values.to(device, model.dtype),
                        use_cache=True, logits_to_keep=1, **extra)
            token = out.logits[:, -1:].argmax(-1)
            ones = torch.ones(ids.shape[0], 1, dtype=mask.dtype, device=device)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            for _ in range(new_tokens):
                mask = torch.cat([mask, ones], dim=1)
                out = model(input_ids=token, attention_mask=mask, cache=out.cache, use_cache=True, logits_to_keep=1,
                            **extra)
                token = out.logits[:, -1:].argmax(-1)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    batch = inputs.input_ids.shape[0]
    return {name: batch * new_tokens / statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="tiny", choices=sorted(SHAPES))
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--batch", type=int)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prefill-repeats", type=int, default=9,
                        help="repeats of the alternating prefill and decode timings")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--threads", type=int, help="CPU threads (default: torch's, i.e. every core)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    dense, mod = build_pair(args.shape, args.ratio, device, dtype)
    spec = SHAPES[args.shape]
    inputs = random_inputs(dense.config, args.batch or spec["batch"], spec["text_tokens"])
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    seq = inputs.input_ids.shape[1]
    print(f"# {args.shape}: {dense.config.num_hidden_layers} layers, {len(mod.model.mod_layer_indices)} MoD at skip "
          f"{args.ratio}, seq {seq} ({dense.config.num_image_tokens} image tokens), batch {inputs.input_ids.shape[0]}, "
          f"{name}, {args.dtype}")
    rows = speed_report({"dense": dense, f"MoD {args.ratio}": mod}, inputs,
                        max_new_tokens=args.max_new_tokens, repeats=args.repeats)
    print(format_table(rows))
    # FLOP ideal for the LLM part at the measured skip (skip rate is of routable tokens = image + prompt).
    ideal = rows[1].tflops / rows[0].tflops
    print(f"LLM-decoder FLOP ratio MoD/dense (measured skips): {ideal:.3f}; measured prefill time ratio: "
          f"{rows[0].prefill_samples_per_s / rows[1].prefill_samples_per_s:.3f}; "
          f"nominal TFLOPs dense {tflops_from_config(dense.config, seq, 0.0):.3g}")
    models = {"dense": dense, f"MoD {args.ratio}": mod}
    prefill = alternating_prefill_times(models, {name: inputs for name in models}, repeats=args.prefill_repeats)
    decode = alternating_decode(models, inputs, args.max_new_tokens, repeats=args.prefill_repeats)
    t_dense, t_mod = prefill["dense"], prefill[f"MoD {args.ratio}"]
    print(f"Alternating, median of {args.prefill_repeats}: prefill dense {1e3 * t_dense:.1f} ms, MoD {1e3 * t_mod:.1f} ms, "
          f"time ratio {t_mod / t_dense:.3f} (FLOP ratio {ideal:.3f}, measured / FLOP {t_mod / t_dense / ideal:.2f}); "
          f"decode ({args.max_new_tokens} steps over the cache) dense {decode['dense']:.1f} tok/s, "
          f"MoD {decode[f'MoD {args.ratio}']:.1f} tok/s (MoD/dense {decode[f'MoD {args.ratio}'] / decode['dense']:.3f})")
    if device.type == "cpu" and hasattr(os, "getloadavg"):
        print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
