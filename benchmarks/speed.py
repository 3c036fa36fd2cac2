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
from clock import add_clock_arguments, apply_clock_arguments, clock_note
from model_flops import decoder_flops, head_flops, projector_flops, vision_flops
from gamma_mod.eval.speed import format_table, measured_tflops, random_inputs, speed_report
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
    mod = convert_to_mod(copy.deepcopy(dense), mod_layers, skip_ratio=ratio).eval()
    return dense, mod


def whole_prefill_ideal(config, inputs, stats: dict) -> float:
    """MoD/dense FLOPs of a whole prefill (vision tower, projector, decoder, lm_head on the last position),
    MoD layers at the tokens they really kept (`stats`: {layer: (routable, skipped)} over the batch)."""
    batch, seq = inputs.input_ids.shape
    d, d_ff, n = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    fixed = (vision_flops(config.vision_config) + projector_flops(config.num_image_tokens, config.mm_hidden_size, d)
             + head_flops(1, d, config.vocab_size))
    kept = {i: seq - skipped / batch for i, (_, skipped) in stats.items()}
    return (fixed + decoder_flops(seq, d, d_ff, n, kept)) / (fixed + decoder_flops(seq, d, d_ff, n, {}))


def step_inputs(model, inputs, device) -> dict:
    extra = {"mod_decode_start": inputs.input_ids.shape[1]} if model.model.mod_layer_indices else {}
    return dict(input_ids=inputs.input_ids.to(device), attention_mask=inputs.attention_mask.to(device),
                pixel_values=inputs.pixel_values.to(device, model.dtype), use_cache=True, logits_to_keep=1, **extra)


@torch.no_grad()
def alternating_prefill_decode(models: dict, inputs, new_tokens: int, repeats: int, warmup: int = 1,
                               clock=time.perf_counter) -> dict[str, tuple[float, float]]:
    """(prefill seconds, decode tokens/s) per model, medians; in every repeat each model in turn prefills
    (timed), then runs `new_tokens` greedy steps over its KV cache (timed), as generate() runs them.
    Timing the steps themselves (not generate(N) - generate(1)) keeps prefill noise out of decode, and
    alternating the models keeps a drift of machine load fair to both."""
    prefill: dict[str, list[float]] = {name: [] for name in models}
    decode: dict[str, list[float]] = {name: [] for name in models}
    for round_ in range(warmup + repeats):
        for name, model in models.items():
            device = next(model.parameters()).device
            kwargs = step_inputs(model, inputs, device)
            sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
            sync()
            start = clock()
            out = model(**kwargs)
            sync()
            prefill_s = clock() - start
            token = out.logits[:, -1:].argmax(-1)
            mask = kwargs["attention_mask"]
            ones = torch.ones(mask.shape[0], 1, dtype=mask.dtype, device=device)
            extra = {k: v for k, v in kwargs.items() if k == "mod_decode_start"}
            start = clock()
            for _ in range(new_tokens):
                mask = torch.cat([mask, ones], dim=1)
                out = model(input_ids=token, attention_mask=mask, cache=out.cache, use_cache=True, logits_to_keep=1,
                            **extra)
                token = out.logits[:, -1:].argmax(-1)
            sync()
            if round_ >= warmup:
                prefill[name].append(prefill_s)
                decode[name].append(clock() - start)
    batch = inputs.input_ids.shape[0]
    return {name: (statistics.median(prefill[name]), batch * new_tokens / statistics.median(decode[name]))
            for name in models}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="tiny", choices=sorted(SHAPES))
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--batch", type=int)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--alternating-repeats", type=int, default=9,
                        help="repeats of the alternating prefill and decode timings")
    parser.add_argument("--skip-report", action="store_true", help="only the alternating timings")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    add_clock_arguments(parser)
    args = parser.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    clock = apply_clock_arguments(args, device)
    dense, mod = build_pair(args.shape, args.ratio, device, dtype)
    spec = SHAPES[args.shape]
    inputs = random_inputs(dense.config, args.batch or spec["batch"], spec["text_tokens"])
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    seq = inputs.input_ids.shape[1]
    print(f"# {args.shape}: {dense.config.num_hidden_layers} layers, {len(mod.model.mod_layer_indices)} MoD at skip "
          f"{args.ratio}, seq {seq} ({dense.config.num_image_tokens} image tokens), batch {inputs.input_ids.shape[0]}, "
          f"{name}, {args.dtype}")
    if not args.skip_report:
        rows = speed_report({"dense": dense, f"MoD {args.ratio}": mod}, inputs,
                            max_new_tokens=args.max_new_tokens, repeats=args.repeats)
        print(format_table(rows))
    # FLOP ideal for the LLM decoder at the skips the MoD model really made (of routable = image + prompt).
    with torch.no_grad():
        mod(**{k: v for k, v in step_inputs(mod, inputs, device).items() if k != "mod_decode_start"})
    stats = dict(mod.last_routing_stats)
    ideal = measured_tflops(mod, inputs, stats) / measured_tflops(dense, inputs, {})
    whole = whole_prefill_ideal(dense.config, inputs, stats)
    print(f"LLM-decoder FLOP ratio MoD/dense (measured skips, paper convention): {ideal:.3f}; whole prefill incl. "
          f"vision tower, projector and lm_head: {whole:.3f}; nominal TFLOPs dense {tflops_from_config(dense.config, seq, 0.0):.3g}")
    name = f"MoD {args.ratio}"
    timed = alternating_prefill_decode({"dense": dense, name: mod}, inputs, args.max_new_tokens,
                                       repeats=args.alternating_repeats, clock=clock)
    (t_dense, tok_dense), (t_mod, tok_mod) = timed["dense"], timed[name]
    print(f"Alternating ({clock_note(args)}, median of {args.alternating_repeats}): prefill dense {1e3 * t_dense:.1f} ms, "
          f"MoD {1e3 * t_mod:.1f} ms, time ratio {t_mod / t_dense:.3f} (measured / decoder FLOP ratio "
          f"{t_mod / t_dense / ideal:.2f}, / whole-prefill FLOP ratio {t_mod / t_dense / whole:.2f}); decode ({args.max_new_tokens} steps over the cache) dense {tok_dense:.1f} "
          f"tok/s, MoD {tok_mod:.1f} tok/s (MoD/dense {tok_mod / tok_dense:.3f})")
    if device.type == "cpu" and hasattr(os, "getloadavg"):
        print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
