"""Many records tokenized at once, with exactly the ids and labels of preprocess.tokenize_record one by one.

tokenize_record hands the tokenizer ~8 strings per record (the conversation's chunks around `<image>`,
then each round's and each instruction's chunks for LLaVA's round-length masking), one call each; at
665K records the fixed cost of a call (transformers' argument handling, one Rust encode_batch of one
string, the BatchEncoding) is most of the Arrow cache's first start. Here, for a batch of records:

    1. collect every string tokenize_record will hand the tokenizer (same rendering, same split at
       "</s>" and " ASSISTANT: ", same chunking at `<image>`, same leading-space rule:
       tokenizer.llava_text), deduplicated across the batch
    2. encode them in ONE tokenizer call (transformers runs a list and a single string through the
       same _encode_plus, so each string gets the ids it gets alone)
    3. run tokenize_record, unchanged, per record against a stand-in tokenizer that looks those ids
       up; anything not collected (character offsets for the official-masked fallback, a string the
       collector did not foresee) goes to the real tokenizer.

The rules stay in one place (preprocess / tokenizer): a collector that missed a string only costs a
tokenizer call, never a different id (tests/test_data_batched.py pins batched == one by one).
"""

from __future__ import annotations

from typing import Any

from .formats import IMAGE_TAG, DataError
from .preprocess import TokenizedSample, record_turns, tokenize_record
from .templates import ConversationTemplate
from .tokenizer import llava_text


class PreEncodedTokenizer:
    """`tokenizer`, except that a call for one of `table`'s strings (special tokens added, no other
    option) returns the ids already encoded; every other attribute and call is the tokenizer's."""

    def __init__(self, tokenizer, table: dict[str, list[int]]) -> None:
        self._tokenizer = tokenizer
        self._table = table

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tokenizer, name)

    def __call__(self, text, add_special_tokens: bool = True, **kwargs: Any):
        if add_special_tokens and not kwargs and isinstance(text, str):
            ids = self._table.get(text)
            if ids is not None:
                return {"input_ids": list(ids)}  # a copy: callers may extend what they get
        return self._tokenizer(text, add_special_tokens=add_special_tokens, **kwargs)


def record_strings(record: Any, tokenizer, template: ConversationTemplate) -> list[str]:
    """The strings tokenize_record(record) passes to the tokenizer without offsets (see the module
    docstring); [] for a record it would reject before tokenizing anything."""
    try:
        text = template.render_conversation(record_turns(record))
    except (KeyError, TypeError, ValueError, AttributeError):
        return []  # a malformed record: tokenize_record raises its own error for it
    pieces = [text]
    if template.plain:
        pieces.append(IMAGE_TAG)  # the prompt whose length is masked
    else:
        for round_text in text.split(template.sep2):
            pieces.append(round_text)
            parts = round_text.split(template.answer_sep)
            if len(parts) == 2:
                pieces.append(parts[0] + template.answer_sep)
    return [llava_text(tokenizer, chunk)[0] for piece in pieces for chunk in piece.split(IMAGE_TAG)]


def tokenize_records(records: list[dict[str, Any]], tokenizer, template: ConversationTemplate, num_image_tokens: int,
                     max_length: int, on_overlong: str = "error") -> list[TokenizedSample | DataError]:
    """tokenize_record of each record, in order; a record's DataError takes its place in the list
    (other errors, like a bad on_overlong, raise as they do there)."""
    strings = list(dict.fromkeys(s for record in records for s in record_strings(record, tokenizer, template)))
    table = dict(zip(strings, tokenizer(strings, add_special_tokens=True)["input_ids"])) if strings else {}
    stand_in = PreEncodedTokenizer(tokenizer, table)
    out: list[TokenizedSample | DataError] = []
    for record in records:
        try:
            out.append(tokenize_record(record, stand_in, template, num_image_tokens, max_length, on_overlong))
        except DataError as error:
            out.append(error)
    return out
