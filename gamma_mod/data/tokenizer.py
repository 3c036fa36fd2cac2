"""Tokenizers (a word-level one built from a vocabulary, the embedded default, or a local folder) and
LLaVA's chunk-wise encoding of text that holds `<image>`.

Nothing is downloaded: a real model's tokenizer is read from a local folder (a Vicuna folder ships
only `tokenizer.model`: sentencepiece converts it).

`encode_with_images` reproduces `tokenizer_image_token` of haotian-liu/LLaVA llava/mm_utils.py (the
same in Yaxin9Luo/Gamma-MOD gamma_mod/mm_utils.py), which every LLaVA training sample and eval
prompt goes through: the text is split at each `<image>`, each chunk is tokenized on its own WITH the
tokenizer's special tokens (so each starts a new sentencepiece "sentence": on Llama the chunk
"\nWhat" after an image becomes "▁" (29871) "<0x0A>" "What"), the first chunk's BOS is kept, the
first token of every chunk is dropped when the first chunk started with BOS, and one image token
joins the chunks. Deviations: the image token is the tokenizer's own `<image>` id (LLaVA uses -200
and swaps features in by that value); and one correction so transformers 5 tokenizes a chunk as
LLaVA's slow sentencepiece tokenizer (transformers 4.37, use_fast=False) does: a Metaspace
pre-tokenizer adds its "▁" only when the text does not already start with a space, while
sentencepiece always adds it, so a chunk that starts with a space gets one more space first.
Known limit: the same difference for text right after a special token inside a chunk ("</s> x")
with `legacy: true` is not corrected (LLaVA's templates never put a space there).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from importlib.util import find_spec
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from .formats import IMAGE_TAG

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
    # BOS first, as a Llama tokenizer does: LLaVA's chunk-wise encoding and round-length masking
    # count on every tokenized chunk starting with it.
    core.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        additional_special_tokens=[IMAGE_TOKEN],
    )
    return tokenizer


def load_tokenizer(path: str) -> PreTrainedTokenizerBase:
    """A local tokenizer folder (ours, or a real Vicuna/Llama one); `<image>` and a pad token are ensured.

    A Llama folder whose config does not set `legacy` is loaded with legacy=True: LLaVA's
    transformers (4.31 / 4.37) defaults to it, transformers 5 to False, and the two tokenize the
    text after `</s>` differently.
    """
    kwargs = {}
    config_file = Path(path) / "tokenizer_config.json"
    if config_file.is_file():
        config = json.loads(config_file.read_text())
        if str(config.get("tokenizer_class", "")).startswith("LlamaTokenizer") and "legacy" not in config:
            kwargs["legacy"] = True
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, use_fast=True, **kwargs)
    except (ValueError, ImportError, OSError) as error:
        # transformers' own message for this case names tiktoken, not the missing package.
        if (Path(path) / "tokenizer.model").is_file() and find_spec("sentencepiece") is None:
            raise ImportError(f"{path}: a sentencepiece tokenizer (tokenizer.model) needs the sentencepiece and "
                              f"protobuf packages (pip install sentencepiece protobuf)") from error
        raise
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


def image_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    if image_id is None or image_id == tokenizer.unk_token_id:
        raise ValueError(f"tokenizer has no {IMAGE_TOKEN} token; load it with gamma_mod.data.tokenizer.load_tokenizer")
    return image_id


def _prepends_space_marker(tokenizer) -> bool:
    """True for a Metaspace pre-tokenizer that adds "▁" at the start (transformers 5's Llama tokenizer)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    pre = getattr(backend, "pre_tokenizer", None)
    return isinstance(pre, pre_tokenizers.Metaspace) and pre.prepend_scheme in ("always", "first")


def llava_text(tokenizer, text: str) -> tuple[str, int]:
    """(what `encode_text` hands the tokenizer for `text`, how many characters it put in front)."""
    if text.startswith(" ") and _prepends_space_marker(tokenizer):
        return " " + text, 1
    return text, 0


def encode_text(tokenizer, text: str, *, add_special_tokens: bool = True, with_offsets: bool = False):
    """`tokenizer(text).input_ids` as LLaVA's slow sentencepiece tokenizer gives them (see the module
    docstring); with_offsets: also each token's (start, end) characters in `text`."""
    text, shift = llava_text(tokenizer, text)
    if not with_offsets:
        return tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"]
    encoded = tokenizer(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
    offsets = [(max(0, a - shift), max(0, b - shift)) for a, b in encoded["offset_mapping"]]
    return encoded["input_ids"], offsets


def encode_with_images(tokenizer, text: str, image_id: int | None = None, *, with_offsets: bool = False):
    """LLaVA's tokenizer_image_token: ids of `text` with one `image_id` per `<image>` (see the module
    docstring). with_offsets: also (start, end) characters in `text` per id, for label masking."""
    image_id = image_token_id(tokenizer) if image_id is None else image_id
    chunks = text.split(IMAGE_TAG)
    encoded, start = [], 0
    for chunk in chunks:
        if with_offsets:
            ids, offsets = encode_text(tokenizer, chunk, with_offsets=True)
            offsets = [(a + start, b + start) if b > a else (a, b) for a, b in offsets]
        else:
            ids, offsets = encode_text(tokenizer, chunk), []
        encoded.append((ids, offsets, start))
        start += len(chunk) + len(IMAGE_TAG)
    first = encoded[0][0]
    drop = 1 if first and first[0] == tokenizer.bos_token_id else 0
    ids_out = first[:drop]
    offsets_out = encoded[0][1][:drop]
    for i, (ids, offsets, chunk_start) in enumerate(encoded):
        if i:
            ids_out.append(image_id)
            offsets_out.append((chunk_start - len(IMAGE_TAG), chunk_start))
        ids_out.extend(ids[drop:])
        offsets_out.extend(offsets[drop:])
    return (ids_out, offsets_out) if with_offsets else ids_out
