"""`gamma-mod convert`: turn a dense model's low-ARank layers into MoD layers and save it."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="dense (stage-1) model folder")
    parser.add_argument("--arank", help="arank.json from `gamma-mod arank` (not needed for --strategy pmod or --layers)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--routing-ratio", type=float, default=0.5, help="fraction of routable tokens skipped")
    parser.add_argument("--select", default="topk_dense", choices=["topk_dense", "fraction", "explicit"])
    parser.add_argument("--k-dense", type=int, default=4)
    parser.add_argument("--fraction", type=float)
    parser.add_argument("--layers", help="comma-separated layer indices (explicit selection)")
    parser.add_argument("--allow-first-last", action="store_true", help="let the last layer become MoD too")
    parser.add_argument("--strategy", default="gamma", choices=["gamma", "pmod"])
    parser.add_argument("--router-aux-loss-coef", type=float, default=0.01)


def choose_layers(args: argparse.Namespace) -> list[int] | None:
    from ..arank.analyze import ARankResult
    from ..arank.select import select_mod_layers

    layers = [int(x) for x in args.layers.split(",")] if args.layers else None
    if args.strategy == "pmod" and not args.arank and not layers:
        return None  # progressive ratio decay picks them
    if layers and args.select == "topk_dense" and not args.arank:
        return layers
    if not args.arank:
        raise SystemExit("gamma-mod convert: --arank is required (or --layers, or --strategy pmod)")
    arank = ARankResult.load_json(args.arank).mean
    return select_mod_layers(arank, strategy="explicit" if layers else args.select, k_dense=args.k_dense,
                             fraction=args.fraction, layers=layers, keep_first_last_dense=not args.allow_first_last)


def run(args: argparse.Namespace) -> int:
    import gamma_mod  # noqa: F401
    from ..model import LlavaLlamaForCausalLM
    from .convert import convert_to_mod

    layers = choose_layers(args)
    model = LlavaLlamaForCausalLM.from_pretrained(args.model)
    convert_to_mod(model, layers, routing_ratio=args.routing_ratio, strategy=args.strategy,
                   router_aux_loss_coef=args.router_aux_loss_coef)
    out = Path(args.out)
    model.save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model"):
        if (Path(args.model) / name).exists():
            shutil.copy2(Path(args.model) / name, out / name)
    mod = model.config.mod_config()
    print(f"wrote {out}: {len(mod.mod_layers_idx)} of {model.config.num_hidden_layers} layers MoD "
          f"{mod.mod_layers_idx}, strategy {mod.strategy}, skip ratio {mod.capacity_factor}")
    return 0
