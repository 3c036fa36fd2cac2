"""Tokenization with label masking: only assistant answers (and their `</s>`) are supervised.

Each piece (system prompt, question, answer) is tokenized separately, so the mask is exact by
construction; the result is then checked against tokenizing the whole conversation at once. A
disagreement (a tokenizer that merges across piece boundaries) is a DataError naming the record,
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
    labels: list[int]


def _encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []


def expand_image_tokens(ids: list[int], image_token_id: int, num_image_tokens: int) -> list[int]:
    """One `<image>` id -> `num_image_tokens` copies: the model writes one feature into each."""
    out: list[int] = []
    for token in ids:
        out.extend([token] * num_image_tokens if token == image_token_id else [token])
    return out


def tokenize_record(record: dict[str, Any], tokenizer, template: ConversationTemplate, num_image_tokens: int,
                    max_length: int) -> TokenizedSample:
    rid = record.get("id", "?")
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TAG)
    pieces: list[tuple[str, bool]] = [(template.prompt_prefix().rstrip(), False)]
    turns = record["conversations"]
    for i in range(0, len(turns), 2):
        question = turns[i]["value"].strip()
        pieces.append((template.question_text(question), False))
        pieces.append((turns[i + 1]["value"].strip(), True))
    input_ids = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    labels = [IGNORE_INDEX] * len(input_ids)
    expected_answers: list[int] = []
    for text, supervised in pieces:
        ids = _encode(tokenizer, text)
        if supervised:
            ids = ids + [tokenizer.eos_token_id]
            expected_answers.extend(ids)
        input_ids.extend(ids)
        labels.extend(ids if supervised else [IGNORE_INDEX] * len(ids))

    # Check: the pieces equal the whole conversation tokenized in one go.
    whole_text = " ".join(t for t, _ in pieces if t)
    whole = _encode(tokenizer, whole_text)
    flat = [t for t in input_ids if t not in (tokenizer.bos_token_id, tokenizer.eos_token_id)]
    if whole != flat:
        raise DataError(f"record {rid}: tokenization mismatch: the conversation tokenized whole differs from its "
                        f"pieces ({len(whole)} vs {len(flat)} tokens); label masking would be wrong",
                        "tokenization mismatch")
    supervised = [t for t in labels if t != IGNORE_INDEX]
    if not supervised or supervised != expected_answers:
        raise DataError(f"record {rid}: no supervised answer tokens after masking", "tokenization mismatch")

    if image_id in input_ids:
        positions = [i for i, t in enumerate(input_ids) if t == image_id]
        expanded_labels: list[int] = []
        for i, label in enumerate(labels):
            expanded_labels.extend([IGNORE_INDEX] * num_image_tokens if i in positions else [label])
        input_ids = expand_image_tokens(input_ids, image_id, num_image_tokens)
        labels = expanded_labels
    if len(input_ids) > max_length:
        raise DataError(f"record {rid}: {len(input_ids)} tokens (with {num_image_tokens} per image) exceed "
                        f"max_length {max_length}", "too long")
    return TokenizedSample(input_ids, labels)


def encode_prompt(tokenizer, template: ConversationTemplate, question: str, num_image_tokens: int) -> list[int]:
    """Prompt ids for generation; `<image>` in `question` becomes `num_image_tokens` image tokens."""
    ids = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    ids += _encode(tokenizer, template.render_prompt(question.strip()))
    return expand_image_tokens(ids, tokenizer.convert_tokens_to_ids(IMAGE_TAG), num_image_tokens)
