"""`gamma-mod eval`: answer one benchmark with a local model folder, then score it.

    gamma-mod eval --model PATH --benchmark NAME --data DIR [--out DIR]

`--data` is the benchmark's folder in LLaVA-v1.5's `playground/data/eval/<benchmark>` layout (the
bundled synthetic dataset's folder for `synthetic`). Answers go to `<out>/answers.jsonl` (resumable:
rerun the same command after an interruption), metrics or the submission file beside them.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from ..errors import DataError, UsageError
from .prompts import MAX_NEW_TOKENS_PRESETS, PromptOptions, max_new_tokens_for, read_benchmark_questions
from .scorers import SCORERS, get_benchmark

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="local model folder (config, weights, tokenizer)")
    parser.add_argument("--benchmark", required=True, choices=sorted(SCORERS))
    parser.add_argument("--data", required=True, help="the benchmark's data folder")
    parser.add_argument("--out", default=None, help="default: <model>/eval/<benchmark>")
    parser.add_argument("--template", default="vicuna_v1", help="conversation template (LLaVA-v1.5: vicuna_v1)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="default: the benchmark's official value (see --max-new-tokens-preset)")
    parser.add_argument("--max-new-tokens-preset", default="gamma-mod", choices=MAX_NEW_TOKENS_PRESETS,
                        help="gamma-mod: the values γ-MoD's answer scripts hard-code (6 short-answer, 1 ScienceQA, "
                             "1024 MMBench, 64 MM-Vet); llava-1.5: LLaVA-1.5's (128, 1024, 1024, 1024)")
    parser.add_argument("--mmbench-single-pred-prompt", action="store_true",
                        help="append the letter instruction to MMBench prompts (eval/mmbench.sh; the documented "
                             "eval_full/mmbench.sh does not)")
    parser.add_argument("--scienceqa-all-questions", action="store_true",
                        help="also answer ScienceQA's text-only questions (LLaVA-1.5; γ-MoD skips them)")
    parser.add_argument("--limit", type=int, default=None, help="answer only the first N questions (smoke runs)")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                        help="default: bfloat16 on cuda, float32 on cpu")
    parser.add_argument("--score-only", action="store_true", help="score an existing answers.jsonl, generate nothing")
    parser.add_argument("--compat", choices=["ours", "official"], default=None,
                        help="MoD behaviour: official reproduces the released gamma-MoD code (use with --batch-size 1); "
                             "default: the config's")
    parser.add_argument("--score-option", action="append", default=[], metavar="KEY=VALUE",
                        help="a scorer choice, repeatable (e.g. lenient=true for seed_bench/mmbench, rule=llava-hr "
                             "for scienceqa); the defaults reproduce the official scripts")
    parser.add_argument("--prune", default=None, metavar="SPEC",
                        help="token pruner (gamma_mod.prune): fastv:K=2,R=0.5, pdrop:layers=8,16,24,lambda=0.5, or none; "
                             "default: the config's `prune` section")
    parser.add_argument("--save-prune", action="store_true",
                        help="also write --prune into the model folder's config.json (later runs use it by default)")


def build_encoder(tokenizer, config, template_name: str):
    """The answer loop's Encoder for a model with `config`: its LLaVA-fork processor (gamma_mod.data.processor)
    poses each question with its image."""
    from ..data.processor import LlavaForkProcessor
    from .answer import question_encoder

    return question_encoder(LlavaForkProcessor.from_config(config, tokenizer, template_name))


def save_prune(folder: Path, prune: dict | None) -> None:
    """Write only the `prune` section of `folder`/config.json (the rest stays as written)."""
    path = folder / "config.json"
    data = json.loads(path.read_text())
    data["prune"] = prune
    path.write_text(json.dumps(data, indent=2) + "\n")
    logger.info("wrote prune=%s into %s", prune, path)


def run(args: argparse.Namespace) -> int:
    from ..prune import build_pruner  # torch-heavy: only when the command runs

    benchmark = get_benchmark(args.benchmark)
    score_options = benchmark.parse_options(args.score_option)  # before generating: a typo fails fast
    data = Path(args.data)
    pruner = build_pruner(args.prune)  # checked before anything is loaded
    # A pruned run answers into its own folder: the resumable answers of the unpruned run are not its own.
    tag = "" if args.prune is None else "_" + (pruner.describe().lower().replace(" ", "_").replace("=", "")
                                                if pruner is not None else "noprune")
    out = Path(args.out) if args.out else Path(args.model) / "eval" / (benchmark.name + tag)
    answers = out / "answers.jsonl"
    if not data.is_dir():
        raise DataError(f"no benchmark data folder at {data} (--data)", "missing file")
    if args.score_only and not answers.is_file():
        raise DataError(f"no answers to score at {answers} (--score-only scores an earlier run's answers)",
                        "missing file")
    if not args.score_only:
        import torch

        from ..data.processor import get_processor
        from ..data.tokenizer import load_tokenizer
        from ..model.configuration import load_config
        from ..model.folder import check_model_folder, family_folder, load_model_folder
        from .answer import check_images, generate_answers, question_encoder

        questions = read_questions(benchmark, data, PromptOptions(
            mmbench_single_pred_prompt=args.mmbench_single_pred_prompt,
            scienceqa_all_questions=args.scienceqa_all_questions))
        if args.limit is not None:
            questions = questions[:args.limit]
        check_images(questions)  # every input is checked before anything is written
        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = getattr(torch, args.dtype or ("bfloat16" if device.startswith("cuda") else "float32"))
        check_model_folder(args.model, tokenizer=True, what="--model")
        if family_folder(args.model):
            generate_family_answers(args, benchmark, questions, answers, device, dtype)
            out.mkdir(parents=True, exist_ok=True)
            metrics = benchmark.run(answers, data, out, score_options)
            (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
            print(json.dumps({"benchmark": benchmark.name, **metrics}, indent=2))
            return 0
        config = load_config(args.model, args.compat)
        if args.prune is not None:
            config.set_prune(args.prune)
            if args.save_prune:
                save_prune(Path(args.model), config.prune)
        if config.prune is not None:
            logger.info("token pruner: %s", config.prune_config().describe())
        model = load_model_folder(args.model, tokenizer=True, what="--model", config=config,
                                  dtype=dtype).to(device).eval()
        mod = config.mod_config() if hasattr(config, "mod_config") else None
        if mod is not None and mod.official and args.batch_size > 1:
            logger.warning("official compat mode with --batch-size %d: the official decode rule follows batch row 0, "
                           "so answers depend on the batch; the official numbers use --batch-size 1", args.batch_size)
        processor = get_processor(model, tokenizer=load_tokenizer(args.model), template=args.template)
        logger.info("%s: %d questions -> %s", benchmark.name, len(questions), answers)
        generate_answers(model, questions, question_encoder(processor), processor.tokenizer, answers,
                         batch_size=args.batch_size,
                         max_new_tokens=args.max_new_tokens or max_new_tokens_for(
                             benchmark.name, args.max_new_tokens_preset, default=benchmark.max_new_tokens))
    out.mkdir(parents=True, exist_ok=True)
    metrics = benchmark.run(answers, data, out, score_options)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(json.dumps({"benchmark": benchmark.name, **metrics}, indent=2))
    return 0


def generate_family_answers(args: argparse.Namespace, benchmark, questions, answers: Path, device: str, dtype) -> None:
    """Answers of a Hugging Face family folder (plain or MoD twin): its own processor and chat template pose the
    questions (--template is the LLaVA fork's), the batch carries the family's vision fields."""
    from ..families.processing import HFFamilyProcessor
    from ..model.folder import load_model_folder
    from .answer import feature_encoder, generate_answers

    if args.prune is not None:
        raise UsageError("--prune: the training-free token pruners run inside the LLaVA fork's decoder only, not in "
                         f"a Hugging Face family model ({args.model})")
    model = load_model_folder(args.model, tokenizer=True, what="--model", compat=args.compat,
                              dtype=dtype).to(device).eval()
    processor = HFFamilyProcessor.for_model(model, args.model)
    logger.info("%s: %d questions -> %s (%s processor)", benchmark.name, len(questions), answers, processor.family)
    generate_answers(model, questions, feature_encoder(processor), processor.tokenizer, answers,
                     batch_size=args.batch_size, collate=processor.collate,
                     max_new_tokens=args.max_new_tokens or max_new_tokens_for(
                         benchmark.name, args.max_new_tokens_preset, default=benchmark.max_new_tokens))


def read_questions(benchmark, data: Path, options: PromptOptions):
    """The benchmark's questions as the official answer script builds them; a missing or unreadable
    question file is a DataError naming it."""
    try:
        return read_benchmark_questions(benchmark, data, options)
    except FileNotFoundError as e:
        raise DataError(f"no such file: the {benchmark.name} data folder {data} lacks it", "missing file",
                        source=e.filename) from None
    except json.JSONDecodeError as e:
        raise DataError(f"a question file in {data} is not valid JSON ({e})", "bad json") from None
