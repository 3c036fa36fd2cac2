"""Batched tokenization (gamma_mod.data.batched) == preprocess.tokenize_record one record at a time.

Same ids, labels, flags and errors on varied records (image first / last, multi-turn, text-only, leading
spaces, empty answer, LLaVA's mismatch case, over-long in both modes, bad records), with the word-level
tokenizer and the Llama sentencepiece one (legacy true and false); and the tokenizer is called once per
batch, plus once per record that needs character offsets.
"""

import pytest
from llama_tokenizer import build_llama_tokenizer

from gamma_mod.data.batched import PreEncodedTokenizer, record_strings, tokenize_records
from gamma_mod.data.formats import DataError
from gamma_mod.data.preprocess import tokenize_record
from gamma_mod.data.processor import LlavaForkProcessor
from gamma_mod.data.templates import get_template
from gamma_mod.data.tokenizer import build_tokenizer, load_tokenizer

VICUNA, PLAIN = get_template("vicuna_v1"), get_template("plain")
WORDS = "a chat what is in the image ? two cats . where on sofa red circle how many shapes are there".split()


def record(rid, *messages, image="a.png"):
    r = {"id": rid, "conversations": [{"from": ("human", "gpt")[i % 2], "value": m} for i, m in enumerate(messages)]}
    return {**r, "image": image} if image else r


TWO_TURN_RECORDS = [
    record("img", "<image>\nWhat is in the image?", "Two cats."),
    record("img-last", "What is in the image?\n<image>", "A red circle.", "How many shapes are there?", "Two."),
    record("text", "Where?", "On a sofa.", "What is in the image?", "Two cats.", image=None),
    record("spaces", "  What is in the image? ", " Two cats. ", " Where?", "On a sofa.", image=None),
    record("empty-answer", "<image>\nWhat is in the image?", "", "Where?", "On a sofa."),
    record("mismatch", "<image>\nWhat is in the image? ASSISTANT: Two.", "A red circle."),  # official_masked
    record("tag-in-answer", "<image>\nWhat is in the image?", "Two <image> cats."),  # DataError
    record("long", "<image>\nWhat is in the image? " * 6, "Two cats. " * 8),  # over-long at max_length 40
    record("img", "<image>\nWhat is in the image?", "Two cats."),  # a duplicate: its strings are shared
]
PLAIN_RECORDS = [
    record("cap", "<image>", "A red circle."),
    record("cap-space", "<image>\nignored", " Two cats. "),
    record("cap-text", "Where?", "On a sofa.", image=None),  # DataError: plain needs an image
    record("cap-turns", "<image>", "Two.", "Where?", "On a sofa."),  # DataError: one turn only
    record("cap-long", "<image>", "Two cats on a sofa. " * 8),
]


@pytest.fixture(scope="module", params=["word", "llama-legacy", "llama"])
def tok(request, tmp_path_factory):
    if request.param == "word":
        return build_tokenizer(WORDS)
    folder = build_llama_tokenizer(tmp_path_factory.mktemp("llama"), legacy=request.param == "llama-legacy")
    return load_tokenizer(str(folder))


def one_by_one(records, *args):
    out = []
    for r in records:
        try:
            out.append(tokenize_record(r, *args))
        except DataError as error:
            out.append(error)
    return out


def assert_same(batched, reference):
    assert len(batched) == len(reference)
    for got, want in zip(batched, reference):
        assert type(got) is type(want)
        if isinstance(want, DataError):
            assert (got.reason, str(got)) == (want.reason, str(want))
        else:
            assert (got.input_ids, got.labels, got.truncated, got.official_masked) == (
                want.input_ids, want.labels, want.truncated, want.official_masked)


@pytest.mark.parametrize("template,records", [(VICUNA, TWO_TURN_RECORDS), (PLAIN, PLAIN_RECORDS)],
                         ids=["vicuna_v1", "plain"])
@pytest.mark.parametrize("tight,on_overlong", [(False, "error"), (True, "error"), (True, "truncate")],
                         ids=["roomy", "tight-error", "tight-truncate"])
def test_batched_equals_one_by_one(tok, template, records, tight, on_overlong):
    max_length = 4096
    if tight:  # every record fits but the "long" ones
        full = one_by_one(records, tok, template, 3, max_length)
        max_length = max(len(s.input_ids) for r, s in zip(records, full)
                         if not isinstance(s, DataError) and "long" not in r["id"])
    args = (tok, template, 3, max_length, on_overlong)
    reference = one_by_one(records, *args)
    assert_same(tokenize_records(records, *args), reference)
    # the cases the records are there for do occur
    kinds = {type(s).__name__ if isinstance(s, DataError) else ("cut" if s.truncated else "ok") for s in reference}
    assert "ok" in kinds and "DataError" in kinds
    if on_overlong == "truncate":
        assert "cut" in kinds
    if template is VICUNA and not tight:
        assert sum(s.official_masked for s in reference if not isinstance(s, DataError)) == 1


def test_the_processor_batches_as_its_tokenize(tok):
    processor = LlavaForkProcessor(tok, VICUNA, 3, max_length=60, on_overlong="truncate")
    good = [r for r in TWO_TURN_RECORDS if r["id"] != "tag-in-answer"]
    assert_same(processor.tokenize_many(good), [processor.tokenize(r) for r in good])


class CountingTokenizer(PreEncodedTokenizer):
    """The tokenizer itself (empty table), counting calls."""

    def __init__(self, tokenizer):
        super().__init__(tokenizer, {})
        self.calls = []

    def __call__(self, text, add_special_tokens=True, **kwargs):
        self.calls.append((type(text).__name__, kwargs.get("return_offsets_mapping", False)))
        return super().__call__(text, add_special_tokens=add_special_tokens, **kwargs)


def test_one_tokenizer_call_per_batch(tok):
    counting = CountingTokenizer(tok)
    tokenize_records(TWO_TURN_RECORDS, counting, VICUNA, 3, 4096)
    # one batch of strings; then only the mismatch record's offsets (LLaVA would mask it: we need characters),
    # one call per chunk around its <image>
    assert counting.calls == [("list", False), ("str", True), ("str", True)]
    counting.calls.clear()
    one_by_one(TWO_TURN_RECORDS, counting, VICUNA, 3, 4096)
    assert len(counting.calls) > 4 * len(TWO_TURN_RECORDS)


def test_record_strings_by_hand():
    tok = build_tokenizer(WORDS)  # no Metaspace: strings are passed as they are
    system = VICUNA.system
    strings = record_strings(record("r", "<image>\nWhere?", "On a sofa.", "Two?", "Cats."), tok, VICUNA)
    assert strings == [
        f"{system} USER: ", "\nWhere? ASSISTANT: On a sofa.</s>USER: Two? ASSISTANT: Cats.</s>",  # the text
        f"{system} USER: ", "\nWhere? ASSISTANT: On a sofa.",  # round 1
        f"{system} USER: ", "\nWhere? ASSISTANT: ",  # instruction 1
        "USER: Two? ASSISTANT: Cats.", "USER: Two? ASSISTANT: ",  # round 2, instruction 2
        "",  # after the last "</s>"
    ]
    assert record_strings({"id": "x"}, tok, VICUNA) == []  # no conversations: tokenize_record reports it


def test_a_leading_space_gets_the_sentencepiece_space_in_the_key(tmp_path):
    tok = load_tokenizer(str(build_llama_tokenizer(tmp_path, legacy=False)))
    assert record_strings(record("c", "<image>", " Two."), tok, PLAIN) == ["", "  Two.\n", "", ""]
