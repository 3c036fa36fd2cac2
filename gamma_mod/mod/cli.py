"""`gamma-mod convert`: turn a dense model's low-ARank layers into MoD layers and save it (+ tokenizer).

    gamma-mod convert --model STAGE1 --arank arank.json --skip-ratio 0.34 --out DIR [--k-dense 4]
    gamma-mod convert --model STAGE1 --layers 1,2,3 --out DIR            # explicit, no ARank needed
    gamma-mod convert --model STAGE1 --mod-strategy pmod --out DIR       # p-MoD: PRD schedule picks layers

`--strategy` picks the LAYERS (gamma_mod.arank.select); `--mod-strategy` picks the MoD layer kind
(gamma_mod.mod.strategies: gamma or pmod).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from ..arank.select import LAYER_SELECTIONS
from ..errors import DataError, UsageError
from ..model.folder import PROCESSOR_FILES, TOKENIZER_FILES, load_model_folder
from .strategies import ROUTING_STRATEGIES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="dense (stage-1) model folder")
    parser.add_argument("--arank", help="arank.json from `gamma-mod arank` (not needed with --layers or --strategy pmod)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--skip-ratio", "--routing-ratio", dest="skip_ratio", type=float, default=0.5,
                        help="fraction of routable tokens SKIPPED per MoD layer (checkpoint names' 0.34 / 0.5; "
                             "official capacity_factor; --routing-ratio is the old name)")
    parser.add_argument("--selection", default=None, choices=LAYER_SELECTIONS,
                        help="layer selection (default: explicit with --layers, else topk_dense)")
    parser.add_argument("--k-dense", type=int, default=4, help="topk_dense: layers kept dense, first/last included")
    parser.add_argument("--fraction", type=float, help="fraction: share of layers (lowest ARank) made MoD")
    parser.add_argument("--layers", help="comma-separated layer indices (explicit selection)")
    parser.add_argument("--allow-last", action="store_true",
                        help="let the last layer become MoD (layer 0 always stays dense)")
    parser.add_argument("--strategy", "--mod-strategy", dest="strategy", default="gamma", choices=list(ROUTING_STRATEGIES),
                        help="routing strategy of the MoD layers (--mod-strategy is the old name)")
    parser.add_argument("--router-aux-loss-coef", type=float, default=0.01)
    parser.add_argument("--compat", choices=["ours", "official"], default=None,
                        help="MoD behaviour written to the config: ours (default) or official (the released "
                             "gamma-MoD code's rules, README 'Default vs official behaviour')")


def parse_layers(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"--layers must be comma-separated integers, got {text!r}") from None


def choose_layers(args: argparse.Namespace, num_layers: int) -> list[int] | None:
    """The MoD layer indices of a `num_layers`-layer model, or None when the p-MoD schedule picks them."""
    from ..arank.analyze import ARankResult
    from ..arank.select import select_mod_layers

    layers = parse_layers(args.layers) if args.layers else None
    selection = args.selection or ("explicit" if layers else "topk_dense")
    if layers and selection != "explicit":
        raise UsageError(f"--layers goes with --selection explicit, not {selection}")
    if selection == "explicit":
        if not layers:
            raise UsageError("--selection explicit needs --layers")
        return select_mod_layers([0.0] * num_layers, "explicit", layers=layers,
                                 keep_first_last_dense=not args.allow_last)
    if not args.arank:
        if args.strategy == "pmod" and args.selection is None:
            return None  # progressive ratio decay picks them
        raise UsageError("--arank is required (or --layers, or --strategy pmod)")
    try:
        arank = ARankResult.load_json(args.arank).mean
    except FileNotFoundError:
        raise DataError("no such ARank file (--arank)", "missing file", source=args.arank) from None
    except ValueError as e:  # not JSON, or not an ARank result
        raise DataError(f"not an ARank result ({e})", "bad json", source=args.arank) from None
    if len(arank) != num_layers:
        raise UsageError(f"--arank {args.arank} has {len(arank)} layers, the model {num_layers}")
    return select_mod_layers(arank, selection, k_dense=args.k_dense, fraction=args.fraction,
                             keep_first_last_dense=not args.allow_last)


def copy_tokenizer(source: Path, out: Path) -> list[str]:
    copied = []
    for name in TOKENIZER_FILES + PROCESSOR_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, out / name)
            copied.append(name)
    return copied


def run(args: argparse.Namespace) -> int:
    from ..model import LlavaLlamaForCausalLM
    from .convert import convert_to_mod

    if not 0.0 <= args.skip_ratio < 1.0:
        raise UsageError(f"--skip-ratio is the fraction of routable tokens skipped and must be in [0, 1), "
                         f"got {args.skip_ratio}")
    if Path(args.out).is_file():
        raise UsageError(f"--out {args.out} is a file, not a folder")
    # a Hugging Face family folder (llava-hf, OneVision, Qwen2.5-VL, Qwen3-VL) loads as its family's model
    model = load_model_folder(args.model, LlavaLlamaForCausalLM, what="--model")
    existing = model.config.mod_config() if hasattr(model.config, "mod_config") else None
    if existing is not None and existing.mod_layers_idx:
        raise UsageError(f"--model {args.model} already has MoD layers {existing.mod_layers_idx}: "
                         f"convert a dense model")
    num_layers = model.config.get_text_config().num_hidden_layers
    try:
        layers = choose_layers(args, num_layers)
    except (UsageError, DataError):
        raise
    except ValueError as e:  # the layer selection's own checks (k_dense, fraction, layer range)
        raise UsageError(str(e)) from None
    compat = {"compat": args.compat} if args.compat else {}
    convert_to_mod(model, layers, skip_ratio=args.skip_ratio, strategy=args.strategy,
                   router_aux_loss_coef=args.router_aux_loss_coef, **compat)
    out = Path(args.out)
    model.save_pretrained(out)
    copied = copy_tokenizer(Path(args.model), out)
    mod = model.config.mod_config()
    if mod.layer_skip_ratios:  # a per-layer schedule (p-MoD PRD): the fraction each MoD layer keeps
        ratios = "retention " + " ".join(f"{i}:{1.0 - mod.layer_skip_ratio(i):.4f}" for i in mod.mod_layers_idx)
    else:
        ratios = f"skip ratio {mod.skip_ratio}"
    print(f"wrote {out}: {len(mod.mod_layers_idx)} of {num_layers} layers MoD "
          f"{mod.mod_layers_idx}, strategy {mod.strategy}, {ratios}; "
          f"tokenizer files: {', '.join(copied) or 'none found'}")
    return 0
