"""Tokenizers: a word-level one built from a vocabulary (the embedded default), or a local one.

Nothing is downloaded: a real model's tokenizer is read from a local folder.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

IMAGE_TOKEN = "<image>"
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", IMAGE_TOKEN]


def build_tokenizer(words: Iterable[str]) -> PreTrainedTokenizerFast:
    """Word-level tokenizer over `words` (+ specials), splitting on whitespace and punctuation."""
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for word in sorted(set(words)):
        if word not in vocab:
            vocab[word] = len(vocab)
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    core.decoder = decoders.WordPiece(prefix="##")  # joins tokens with spaces
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        additional_special_tokens=[IMAGE_TOKEN],
    )
    return tokenizer


def load_tokenizer(path: str) -> PreTrainedTokenizerBase:
    """A local tokenizer folder (ours, or a real Vicuna/Llama one); `<image>` and a pad token are ensured."""
    tokenizer = AutoTokenizer.from_pretrained(path, use_fast=True)
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    if tokenizer.pad_token is None:
        # LLaVA-v1.5 pads Vicuna with <unk>.
        tokenizer.pad_token = tokenizer.unk_token
    return tokenizer


def model_token_ids(tokenizer: PreTrainedTokenizerBase) -> dict[str, int]:
    """The token ids a model config needs (kwargs of `gamma_mod.model.builder.build_config`)."""
    return dict(
        vocab_size=len(tokenizer),
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
