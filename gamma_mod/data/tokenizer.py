"""Tokenizers: a word-level one built from a vocabulary (the embedded default), or a local one.

Nothing is downloaded: a real model's tokenizer is read from a local folder.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

IMAGE_TOKEN = "<image>"
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", IMAGE_TOKEN]


def word_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    """Whitespace, then punctuation as separate tokens ("USER:" -> "USER", ":"); shared with the
    synthetic vocabulary so the two can never disagree on what a word is."""
    return pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])


def split_words(text: str) -> list[str]:
    """The words `build_tokenizer` sees in `text` (lower-cased, like its normalizer)."""
    return [piece for piece, _ in word_pre_tokenizer().pre_tokenize_str(text.lower())]


def build_tokenizer(words: Iterable[str]) -> PreTrainedTokenizerFast:
    """Word-level tokenizer over `words` (+ specials), splitting on whitespace and punctuation.

    Lower-cases its input: the embedded vocabulary stays small and "What"/"what" share an id.
    """
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for word in sorted({w.lower() for w in words}):
        if word not in vocab:
            vocab[word] = len(vocab)
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = word_pre_tokenizer()
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
    """The token ids a model config needs (kwargs of `gamma_mod.model.builder.build_config`).

    vocab_size is len(tokenizer), which counts added tokens (`<image>` on a Vicuna tokenizer), so a
    real checkpoint's embeddings must be resized to it.
    """
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    if image_id is None or image_id == tokenizer.unk_token_id:
        raise ValueError(f"tokenizer has no {IMAGE_TOKEN} token; load it with load_tokenizer()")
    ids = dict(
        vocab_size=len(tokenizer),
        image_token_index=image_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    missing = [k for k, v in ids.items() if v is None]
    if missing:
        raise ValueError(f"tokenizer lacks {missing}; load it with load_tokenizer() (it adds a pad token)")
    return ids
