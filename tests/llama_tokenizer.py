"""A Llama-style sentencepiece tokenizer folder trained in the test, for pinning LLaVA's tokenization.

Built like Llama's tokenizer.model (BPE, byte fallback, digits split, a "▁" word prefix, no
whitespace normalisation; unk 0, bos 1, eos 2) from the words of the test texts, so every word is one
piece and the expected ids can be written out by hand as piece strings. Each word is learned with the
"▁" prefix (as after a space) and without it (as after "\\n" or "</s>"), except "USER": only its bare
form, so " USER" is "▁" "USER" (2 tokens) while "USER" right after "</s>" is 1 — the count difference
Vicuna's vocabulary has ("▁US" "ER" vs "USER"), which LLaVA's legacy=False round correction is for.
The folder holds only tokenizer.model + tokenizer_config.json, as Vicuna-v1.5 ships.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

WORDS_FROM = [
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the user's questions.",
    "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the human's questions.",
    "ASSISTANT What is in the image? A red circle. How many shapes are there? Two. What color is the shape? Red.",
    "Answer the question using a single word or phrase. Answer with the option's letter from the given choices "
    "directly.",
    "When the provided information is insufficient, respond with 'Unanswerable'. Reference OCR token: STOP",
    "Is there a dog? Please answer yes or no. Context: Question: Options: (A) sun (B) moon Which is bigger? "
    "The sun is a star. What is the man doing? A. B. C. D.",
]
PUNCTUATION = ": ? . , ' ( ) -"
BARE_ONLY = {"USER"}


def words() -> list[str]:
    return sorted({w for t in WORDS_FROM for w in re.findall(r"[A-Za-z]+", t)} | BARE_ONLY)


def build_llama_tokenizer(folder: str | Path, legacy: bool) -> Path:
    import sentencepiece as spm

    lines = [PUNCTUATION]
    for word in words():
        if word not in BARE_ONLY:
            lines.append(word)  # learned as "▁word"
        lines.append("9" + word)  # digits are split off, so this teaches the bare "word"
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines * 10), model_writer=model, model_type="bpe", vocab_size=2000,
        hard_vocab_limit=False, byte_fallback=True, split_digits=True, add_dummy_prefix=True,
        remove_extra_whitespaces=False, normalization_rule_name="identity", allow_whitespace_only_pieces=True,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, character_coverage=1.0, minloglevel=2)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.model").write_bytes(model.getvalue())
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "legacy": legacy, "add_bos_token": True, "add_eos_token": False,
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "clean_up_tokenization_spaces": False,
        "model_max_length": 4096}))
    return folder
