"""What the model is asked: each benchmark's prompts and generation length as the official answer
scripts build them, and real prompts for the speed report.

The reference is γ-MoD's answer scripts (Yaxin9Luo/Gamma-MOD gamma_mod/eval/, run by
scripts/v1_5/eval_full/*.sh with `--conv-mode vicuna_v1 --temperature 0`), forks of LLaVA-1.5's
(haotian-liu/LLaVA llava/eval/ + scripts/v1_5/eval/*.sh):

- model_vqa_loader (GQA, VQAv2, VizWiz, TextVQA, POPE, MME, SEED): "<image>\\n" + the question
  file's text, verbatim. max_new_tokens 6 (γ-MoD, hard-coded) / 128 (LLaVA-1.5's default).
- model_vqa_science (ScienceQA, `--single-pred-prompt`): "<image>\\n" + the first human turn
  without its tag, stripped, + "\\n" + the letter instruction. γ-MoD skips the questions that have
  no image (`continue`) and generates 1 token; LLaVA-1.5 answers all, up to 1024 tokens.
- model_vqa_mmbench (MMBench): hint + "\\n" + question (no hint when it is empty / NaN / "none"),
  then "\\nA. ..." per option up to the first absent one, values verbatim (pandas' read_table
  strips nothing); the letter instruction only with `--single-pred-prompt`, which γ-MoD's documented
  eval_full/mmbench.sh does not pass (its older eval/mmbench.sh and LLaVA-1.5's do). 1024 tokens.
- model_vqa (MM-Vet): "<image>\\n" + the text, verbatim. 64 tokens (γ-MoD) / 1024 (LLaVA-1.5).

Every prompt then goes through the `vicuna_v1` template and LLaVA's chunk-wise tokenization
(the model's processor, gamma_mod.data.processor); greedy decoding, 1 beam. Deliberate deviation: γ-MoD's
scripts stop after the first 20000 questions (`max_samples`; VQAv2 test-dev has 107394); we answer
all. MMBench's `--all-rounds` (circular rotation) and the Chinese instruction are not reproduced
(no official script passes them for MMBench-en).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .questions import Question
from .scorers import mmbench, scienceqa

LETTER_INSTRUCTION = mmbench.PROMPT_SUFFIX
MAX_NEW_TOKENS_PRESETS = ("gamma-mod", "llava-1.5")


@dataclass(frozen=True)
class AnswerScript:
    """The official script that answers a benchmark, and the answer length each codebase allows."""

    script: str
    gamma_mod_max_new_tokens: int  # hard-coded in γ-MoD's copy of the script
    llava_max_new_tokens: int  # LLaVA-1.5's value (model_vqa_loader's --max_new_tokens default: 128)


_LOADER = AnswerScript("model_vqa_loader", 6, 128)
ANSWER_SCRIPTS: dict[str, AnswerScript] = {
    "gqa": _LOADER, "vqav2": _LOADER, "vizwiz": _LOADER, "textvqa": _LOADER, "pope": _LOADER, "mme": _LOADER,
    "seed_bench": _LOADER,
    "scienceqa": AnswerScript("model_vqa_science", 1, 1024),
    "mmbench": AnswerScript("model_vqa_mmbench", 1024, 1024),
    "mm-vet": AnswerScript("model_vqa", 64, 1024),
    "synthetic": AnswerScript("(ours: one-word answers)", 8, 8),
}


@dataclass(frozen=True)
class PromptOptions:
    """Switches between the documented γ-MoD scripts (defaults) and their other official variants."""

    mmbench_single_pred_prompt: bool = False  # True: eval/mmbench.sh and LLaVA-1.5's mmbench.sh
    scienceqa_all_questions: bool = False  # True: LLaVA-1.5's model_vqa_science (text-only ones too)


def max_new_tokens_for(benchmark: str, preset: str = "gamma-mod", default: int | None = None) -> int:
    """The benchmark's answer length under `preset`; `default` for a benchmark with no official script."""
    if preset not in MAX_NEW_TOKENS_PRESETS:
        raise ValueError(f"unknown max_new_tokens preset {preset!r}; known: {MAX_NEW_TOKENS_PRESETS}")
    script = ANSWER_SCRIPTS.get(benchmark)
    if script is None:
        if default is None:
            raise ValueError(f"no answer script known for benchmark {benchmark!r}; known: {sorted(ANSWER_SCRIPTS)}")
        return default
    return script.gamma_mod_max_new_tokens if preset == "gamma-mod" else script.llava_max_new_tokens


def read_benchmark_questions(benchmark, data_dir: str | Path, options: PromptOptions = PromptOptions()
                             ) -> list[Question]:
    """`benchmark`'s questions (a gamma_mod.eval.scorers.Benchmark) with the official prompts: the
    scorer module's one reader, with the switches of `options`."""
    root = Path(data_dir)
    if benchmark.name == "mmbench":
        return mmbench.read_questions(root, single_pred_prompt=options.mmbench_single_pred_prompt)
    if benchmark.name == "scienceqa":
        return scienceqa.read_questions(root, all_questions=options.scienceqa_all_questions)
    return benchmark.read_questions(root)


# The readers live with their scorers (one reader per benchmark); these names stay for callers.
read_scienceqa_questions = scienceqa.read_question_file
mmbench_is_none = mmbench.is_none
mmbench_prompt = mmbench.prompt


def read_mmbench_questions(tsv: str | Path, single_pred_prompt: bool = False) -> list[Question]:
    return mmbench.read_questions(None, tsv, single_pred_prompt)


def prompts_from_dataset(model_dir: str, data_json: str, image_folder: str | None, num_samples: int,
                         template: str = "vicuna_v1"):
    """Real prompts for the speed report: the first questions of a LLaVA-format file (their image
    tag moved first, as training sees them), posed by the model's processor, left-padded. Returns SpeedInputs.

    torch and the model stack are imported here: the question readers above stay light."""
    from ..data.formats import DataError, read_records, record_id
    from ..data.images import open_image
    from ..data.preprocess import record_turns
    from ..data.processor import get_processor
    from .speed import SpeedInputs

    processor = get_processor(model_dir, template=template)
    records = [(i, r) for i, r in enumerate(read_records(data_json)) if isinstance(r, dict) and r.get("image")]
    records = records[:num_samples]
    if not records:
        raise DataError("no records with an image", "no usable records", source=data_json)
    features = []
    for i, r in records:
        try:
            image = open_image(Path(image_folder or ".") / r["image"], record_id(r, i))
        except DataError as e:
            raise e.located(data_json) from None
        features.append(processor.encode_prompt(record_turns(r)[0][0], image=image))
    return SpeedInputs.from_batch(processor.collate(features, padding_side="left"))
