"""Training samples tokenized and label-masked as LLaVA-1.5 / LLaVA-HR training builds them.

Reproduces, from haotian-liu/LLaVA llava/train/train.py (the same functions in Yaxin9Luo/Gamma-MOD
gamma_mod/train/train.py), for one record:

1. preprocess_multimodal (records with an image): every message holding `<image>` becomes
   "<image>\\n" + the message without the tag, stripped; the tag is always moved to the front.
2. preprocess_v1 (`vicuna_v1` / `llava_v1`): the whole conversation rendered once
   ("{system} USER: {q1} ASSISTANT: {a1}</s>USER: ..."), tokenized once, chunk-wise around `<image>`
   (gamma_mod.data.tokenizer.encode_with_images); labels = ids, then masked by LLaVA's round
   lengths: rounds = text.split("</s>"), each split at " ASSISTANT: "; BOS masked; per round
   the first len(ids(instruction + " ASSISTANT: ")) - 2 tokens masked, the round advancing by
   len(ids(round)); with a `legacy: false` tokenizer both shrink by 1 from the second round on
   (LLaVA's tokenizers >= 0.14 correction: "USER" right after "</s>" has no word prefix there);
   everything after the last round masked.
   preprocess_plain (`plain`): "<image>" + caption + "\\n" (caption not stripped), all but the
   tokens of "<image>" alone (BOS and the image) supervised.
3. Over-long samples: LLaVA's collator and model cut every sample to model_max_length (the cut
   sample has no final `</s>`). on_overlong="truncate" does the same; "error" (our default, for
   hand-made data) raises a DataError naming the record.

Deliberate deviation: where LLaVA's round lengths do not add up to the sample's length (its
"tokenization mismatch" check: only when shorter than model_max_length) it masks EVERY label and
the sample trains nothing, silently. We supervise such a sample correctly (the tokens overlapping
each answer and its "</s>", from the tokenizer's character offsets) and flag it
(`TokenizedSample.official_masked`); the dataset logs how many, so runs can be compared.
Other deviations: `<image>` becomes num_image_tokens copies of the tokenizer's `<image>` id here
(LLaVA inserts -200 and expands it to features in the model: the same positions); a record that
breaks LLaVA's asserts (plain template with several turns or no image) is a DataError.
A tokenizer without a `legacy` attribute (our word-level one) counts as legacy: it has no word
prefix to lose after "</s>".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .convert import image_first
from .formats import IMAGE_TAG, DataError
from .templates import ConversationTemplate
from .tokenizer import encode_with_images, image_token_id

IGNORE_INDEX = -100
OVERLONG_MODES = ("error", "truncate")


@dataclass
class TokenizedSample:
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX, or the token itself where it is supervised
    truncated: bool = False  # cut to max_length (on_overlong="truncate")
    official_masked: bool = False  # LLaVA's mismatch check would have masked every label of this sample


def record_turns(record: dict[str, Any]) -> list[tuple[str, str]]:
    """(question, answer) pairs as LLaVA's preprocessing sees them (image tags moved first)."""
    messages = [turn["value"] for turn in record["conversations"]]
    if record.get("image"):
        messages = [image_first(m) if IMAGE_TAG in m else m for m in messages]
    return list(zip(messages[0::2], messages[1::2]))


def expand_image_tokens(ids: list[int], image_token_id: int, num_image_tokens: int) -> list[int]:
    """One `<image>` id -> `num_image_tokens` copies: the model writes one image feature into each."""
    return _expand_at(ids, _positions(ids, image_token_id), image_token_id, num_image_tokens)


def _positions(ids: list[int], token: int) -> list[int]:
    """Where `token` occurs in `ids` (list.index: a C scan, not a Python loop over every id)."""
    out: list[int] = []
    try:
        while True:
            out.append(ids.index(token, out[-1] + 1 if out else 0))
    except ValueError:
        return out


def _expand_at(values: list[int], positions: list[int], fill: int, n: int) -> list[int]:
    """`values` with the entry at each of `positions` replaced by `n` copies of `fill`."""
    out: list[int] = []
    start = 0
    for k in positions:
        out += values[start:k]
        out += [fill] * n
        start = k + 1
    out += values[start:]
    return out


def tokenize_record(record: dict[str, Any], tokenizer, template: ConversationTemplate, num_image_tokens: int,
                    max_length: int, on_overlong: str = "error") -> TokenizedSample:
    """input_ids and labels of one LLaVA-format record (see the module docstring)."""
    if on_overlong not in OVERLONG_MODES:
        raise ValueError(f"on_overlong must be one of {OVERLONG_MODES}, got {on_overlong!r}")
    rid = str(record.get("id", "?"))
    if tokenizer.eos_token_id is None:
        raise ValueError("tokenizer has no eos token: answers could not be terminated")
    image_id = image_token_id(tokenizer)
    turns = record_turns(record)
    if any(IMAGE_TAG in answer for _, answer in turns):
        raise DataError(f"an answer contains {IMAGE_TAG}", "image tag in answer", record_id=rid)
    if template.plain:
        has_tag = bool(turns) and IMAGE_TAG in turns[0][0]
        if len(turns) != 1 or not has_tag:
            raise DataError(f"the {template.name} template takes one human turn with {IMAGE_TAG} and one caption "
                            f"(LLaVA's preprocess_plain), got {len(turns)} turn(s)"
                            + ("" if has_tag else f" and no {IMAGE_TAG}"), "bad turns", record_id=rid)
        ids = encode_with_images(tokenizer, template.render_conversation(turns), image_id)
        prompt_len = len(encode_with_images(tokenizer, IMAGE_TAG, image_id))
        labels = [IGNORE_INDEX] * prompt_len + ids[prompt_len:]
        official_masked = False
    else:
        ids, labels, official_masked = _tokenize_two(rid, tokenizer, template, turns, image_id, max_length)

    tags = _positions(ids, image_id)
    n_tags = len(tags)
    input_ids = _expand_at(ids, tags, image_id, num_image_tokens)
    labels = _expand_at(labels, tags, IGNORE_INDEX, num_image_tokens)
    truncated = len(input_ids) > max_length
    if truncated:
        if on_overlong == "error":
            raise DataError(f"{len(input_ids)} tokens ({len(input_ids) - n_tags * num_image_tokens} text + "
                            f"{n_tags} x {num_image_tokens} image) exceed max_length {max_length} "
                            f"(data.on_overlong: truncate cuts it, as LLaVA does)", "too long", record_id=rid)
        input_ids, labels = input_ids[:max_length], labels[:max_length]
    return TokenizedSample(input_ids, labels, truncated=truncated, official_masked=official_masked)


def _tokenize_two(rid: str, tokenizer, template: ConversationTemplate, turns: list[tuple[str, str]], image_id: int,
                  max_length: int) -> tuple[list[int], list[int], bool]:
    """(ids, labels, official_masked) by preprocess_v1's rules, ids not yet image-expanded."""
    text = template.render_conversation(turns)
    ids = encode_with_images(tokenizer, text, image_id)
    labels = list(ids)
    # LLaVA's round-length masking, step for step (positions count one id per image).
    legacy = getattr(tokenizer, "legacy", True)
    cur_len = 1
    labels[:cur_len] = [IGNORE_INDEX] * min(cur_len, len(labels))
    for i, round_text in enumerate(text.split(template.sep2)):
        if round_text == "":
            break
        parts = round_text.split(template.answer_sep)
        if len(parts) != 2:
            break
        round_len = len(encode_with_images(tokenizer, round_text, image_id))
        instruction_len = len(encode_with_images(tokenizer, parts[0] + template.answer_sep, image_id)) - 2
        if i != 0 and not legacy:
            round_len -= 1
            instruction_len -= 1
        end = min(cur_len + max(instruction_len, 0), len(labels))
        labels[cur_len:end] = [IGNORE_INDEX] * max(0, end - cur_len)
        cur_len += round_len
    labels[cur_len:] = [IGNORE_INDEX] * max(0, len(labels) - cur_len)
    pad = tokenizer.pad_token_id
    total_len = sum(1 for token in ids if token != pad)  # LLaVA counts non-pad ids; its pad is <unk>
    if cur_len < max_length and cur_len != total_len:
        return ids, _answer_labels(rid, tokenizer, template, turns, text, image_id, ids), True
    return ids, labels, False


def _answer_labels(rid: str, tokenizer, template: ConversationTemplate, turns: list[tuple[str, str]], text: str,
                   image_id: int, ids: list[int]) -> list[int]:
    """Labels that supervise exactly the tokens overlapping each answer and its "</s>"."""
    spans = []
    for k, (_, answer) in enumerate(turns):
        if not answer:
            continue  # LLaVA renders an empty answer as an open role: nothing to supervise
        messages = [m for turn in turns[:k] for m in turn] + [turns[k][0], None]
        start = len(template.render(messages)) + 1  # after "ASSISTANT:" and its space
        end = start + len(answer) + len(template.sep2)
        if text[start:end] != answer + template.sep2:
            raise DataError(f"tokenization mismatch: answer {k + 1} not found where the template puts it",
                            "tokenization mismatch", record_id=rid)
        spans.append((start, end))
    try:
        again, offsets = encode_with_images(tokenizer, text, image_id, with_offsets=True)
    except (NotImplementedError, TypeError, ValueError, KeyError) as e:
        raise DataError(f"tokenization mismatch (LLaVA would mask the whole sample) and the tokenizer gives no "
                        f"character offsets to mask it correctly ({e})", "tokenization mismatch",
                        record_id=rid) from None
    if again != ids:
        raise DataError("tokenization mismatch: the tokenizer is not deterministic", "tokenization mismatch",
                        record_id=rid)
    return [token if any(a < end and b > start for start, end in spans) and b > a else IGNORE_INDEX
            for token, (a, b) in zip(ids, offsets)]


def encode_prompt(tokenizer, template: ConversationTemplate, question: str, num_image_tokens: int) -> list[int]:
    """Prompt ids for generation, as LLaVA's eval scripts build them: the template's prompt for
    `question` (used verbatim), tokenized chunk-wise; `<image>` becomes `num_image_tokens` image tokens."""
    image_id = image_token_id(tokenizer)
    ids = encode_with_images(tokenizer, template.render_prompt(question), image_id)
    return expand_image_tokens(ids, image_id, num_image_tokens)
