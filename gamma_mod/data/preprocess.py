"""Tokenization with label masking: only assistant answers (and their `</s>`) are supervised.

Each piece (system prompt, question, answer) is tokenized separately, so the mask follows the piece
boundaries exactly. The result is then verified three ways before it is used: the pieces must equal
the conversation tokenized in one go (a tokenizer that merges across a boundary would shift the
mask), the unmasked tokens must equal the answers tokenized on their own + `</s>`, and there must
be `num_image_tokens` image tokens per `<image>`. Any failure is a DataError naming the record,
never a silently all-masked sample (LLaVA's "tokenization mismatch" warning + zero loss).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .formats import IMAGE_TAG, DataError
from .templates import ConversationTemplate

IGNORE_INDEX = -100


@dataclass
class TokenizedSample:
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX, or the token itself where it is supervised


def _encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []


def _special_ids(tokenizer) -> tuple[int | None, int, int]:
    """(bos or None, eos, image id); a tokenizer without eos or `<image>` cannot make training data."""
    eos = tokenizer.eos_token_id
    image = tokenizer.convert_tokens_to_ids(IMAGE_TAG)
    if eos is None:
        raise ValueError("tokenizer has no eos token: answers could not be terminated")
    if image is None or image == tokenizer.unk_token_id:
        raise ValueError(f"tokenizer has no {IMAGE_TAG} token; load it with gamma_mod.data.tokenizer.load_tokenizer")
    return tokenizer.bos_token_id, eos, image


def expand_image_tokens(ids: list[int], image_token_id: int, num_image_tokens: int) -> list[int]:
    """One `<image>` id -> `num_image_tokens` copies: the model writes one image feature into each."""
    out: list[int] = []
    for token in ids:
        out.extend([token] * num_image_tokens if token == image_token_id else [token])
    return out


def tokenize_record(record: dict[str, Any], tokenizer, template: ConversationTemplate, num_image_tokens: int,
                    max_length: int) -> TokenizedSample:
    """input_ids = [bos] system, then per turn question ids (masked) and answer ids + eos (supervised)."""
    rid = str(record.get("id", "?"))
    bos, eos, image_id = _special_ids(tokenizer)
    turns = record["conversations"]
    pieces: list[tuple[str, bool]] = [(template.prompt_prefix().strip(), False)]
    answers: list[str] = []
    for i in range(0, len(turns), 2):
        pieces.append((template.question_text(turns[i]["value"]), False))
        answers.append(turns[i + 1]["value"].strip())
        pieces.append((answers[-1], True))

    input_ids = [bos] if bos is not None else []
    labels = [IGNORE_INDEX] * len(input_ids)
    text_ids: list[int] = []  # the pieces' ids before eos and image expansion, for the whole-text check
    for text, supervised in pieces:
        ids = _encode(tokenizer, text)
        text_ids.extend(ids)
        if supervised:
            if image_id in ids:
                raise DataError(f"an answer contains {IMAGE_TAG}", "image tag in answer", record_id=rid)
            ids = ids + [eos]
            labels.extend(ids)
        else:
            ids = expand_image_tokens(ids, image_id, num_image_tokens)
            labels.extend([IGNORE_INDEX] * len(ids))
        input_ids.extend(ids)

    _verify(rid, tokenizer, pieces, text_ids, input_ids, labels, answers, eos, image_id, num_image_tokens)
    if len(input_ids) > max_length:
        n_tags = text_ids.count(image_id)
        raise DataError(f"{len(input_ids)} tokens ({len(input_ids) - n_tags * num_image_tokens} text + "
                        f"{n_tags} x {num_image_tokens} image) exceed max_length {max_length}", "too long",
                        record_id=rid)
    return TokenizedSample(input_ids, labels)


def _verify(rid: str, tokenizer, pieces, text_ids, input_ids, labels, answers, eos, image_id,
            num_image_tokens) -> None:
    def mismatch(what: str) -> DataError:
        return DataError(f"tokenization mismatch: {what}; label masking would be wrong", "tokenization mismatch",
                         record_id=rid)

    whole = _encode(tokenizer, " ".join(text for text, _ in pieces if text))
    if whole != text_ids:
        raise mismatch(f"the conversation tokenized whole ({len(whole)} tokens) differs from its pieces "
                       f"({len(text_ids)} tokens)")
    if any(label not in (IGNORE_INDEX, token) for token, label in zip(input_ids, labels, strict=True)):
        raise mismatch("a supervised label differs from its input token")
    supervised = [token for token, label in zip(input_ids, labels) if label != IGNORE_INDEX]
    expected = [t for answer in answers for t in _encode(tokenizer, answer) + [eos]]
    if supervised != expected:
        raise mismatch(f"{len(supervised)} supervised tokens, expected the {len(expected)} answer tokens "
                       f"({tokenizer.decode(supervised)!r} vs {tokenizer.decode(expected)!r})")
    if input_ids.count(image_id) != text_ids.count(image_id) * num_image_tokens:
        raise mismatch(f"{input_ids.count(image_id)} image tokens for {text_ids.count(image_id)} {IMAGE_TAG} "
                       f"x {num_image_tokens}")


def encode_prompt(tokenizer, template: ConversationTemplate, question: str, num_image_tokens: int) -> list[int]:
    """Prompt ids for generation: [bos] + the template's prompt ending with "ASSISTANT:";
    `<image>` in `question` becomes `num_image_tokens` image tokens."""
    bos, _, image_id = _special_ids(tokenizer)
    ids = [bos] if bos is not None else []
    ids += _encode(tokenizer, template.render_prompt(question.strip()))
    return expand_image_tokens(ids, image_id, num_image_tokens)
