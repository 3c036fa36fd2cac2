"""Tokenizer, templates and label masking on our word-level tokenizer, pinned against ids built by
hand from the vocabulary layout (the Llama sentencepiece case: test_official_tokenization.py)."""

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from gamma_mod.data.formats import DataError
from gamma_mod.data.preprocess import IGNORE_INDEX, encode_prompt, tokenize_record
from gamma_mod.data.templates import TEMPLATES, get_template
from gamma_mod.data.tokenizer import IMAGE_TOKEN, build_tokenizer, load_tokenizer, model_token_ids

SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
SYSTEM = ("a chat between a curious user and an artificial intelligence assistant . the assistant gives helpful , "
          "detailed , and polite answers to the user ' s questions .").split()
# The first record of llava_v1_5_mix665k.json (two of its three rounds); the tag is AFTER the question there.
RECORD = {
    "id": "000000033471",
    "image": "coco/train2017/000000033471.jpg",
    "conversations": [
        {"from": "human", "value": "What are the colors of the bus in the image?\n<image>"},
        {"from": "gpt", "value": "The bus in the image is white and red."},
        {"from": "human", "value": "What feature can be seen on the back of the bus?"},
        {"from": "gpt", "value": "The back of the bus features an advertisement."},
    ],
}
Q1 = "what are the colors of the bus in the image ?".split()
A1 = "the bus in the image is white and red .".split()
Q2 = "what feature can be seen on the back of the bus ?".split()
A2 = "the back of the bus features an advertisement .".split()
WORDS = SYSTEM + ["user", ":"] + Q1 + A1 + Q2 + A2 + "two cats on a sofa render clear concise summary photo".split()
VOCAB = {tok: i for i, tok in enumerate(SPECIALS + sorted(set(WORDS)))}  # the layout build_tokenizer promises
UNK, BOS, EOS, PAD, IMG = range(5)


def hand(words):
    return [VOCAB[w] for w in words]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(WORDS)


def test_vocabulary_layout_and_word_splitting(tokenizer):
    assert tokenizer.get_vocab() == VOCAB
    ids = tokenizer("USER: What are the colors?\n<image> zebra", add_special_tokens=False)["input_ids"]
    assert ids == hand(["user", ":", "what", "are", "the", "colors", "?"]) + [IMG, UNK]
    assert tokenizer("USER:")["input_ids"] == [BOS] + hand(["user", ":"])  # BOS first, as Llama's
    assert model_token_ids(tokenizer) == dict(vocab_size=len(VOCAB), image_token_index=IMG, pad_token_id=PAD,
                                              bos_token_id=BOS, eos_token_id=EOS)


def test_tokenizer_round_trips_through_save_pretrained(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    text = "USER: What are the colors of the bus?\n<image> ASSISTANT: red"
    for loaded in (AutoTokenizer.from_pretrained(str(tmp_path)), load_tokenizer(str(tmp_path))):
        assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
        assert model_token_ids(loaded) == model_token_ids(tokenizer)
        assert len(loaded) == len(tokenizer)  # load_tokenizer adds nothing to ours


def test_load_tokenizer_adds_image_and_pad_to_a_foreign_tokenizer(tmp_path):
    """A Vicuna-like folder: bos/eos/unk but no <image> and no pad (LLaVA pads Vicuna with <unk>)."""
    core = Tokenizer(models.WordLevel(vocab={"<unk>": 0, "<s>": 1, "</s>": 2, "hello": 3}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", bos_token="<s>",
                            eos_token="</s>").save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="<image>"):
        model_token_ids(AutoTokenizer.from_pretrained(str(tmp_path)))
    loaded = load_tokenizer(str(tmp_path))
    assert model_token_ids(loaded) == dict(vocab_size=5, image_token_index=4, pad_token_id=0, bos_token_id=1,
                                           eos_token_id=2)
    assert loaded("hello <image>", add_special_tokens=False)["input_ids"] == [3, 4]


def test_templates():
    vicuna, llava = get_template("vicuna_v1"), get_template("llava_v1")
    assert set(TEMPLATES) == {"vicuna_v1", "llava_v1", "plain"}
    # LLaVA's conv_vicuna_v1 (what LLaVA-1.5 trained with and every eval script passes) vs conv_llava_v1.
    assert vicuna.render_prompt("<image>\nWhat is it?") == (
        "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
        "detailed, and polite answers to the user's questions. USER: <image>\nWhat is it? ASSISTANT:")
    assert llava.render_prompt(" x ") == (
        "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
        "detailed, and polite answers to the human's questions. USER:  x  ASSISTANT:")  # verbatim
    # sep2 "</s>" ends an answer, the next "USER" follows it without a space
    assert vicuna.render_conversation([("Hi", "Hello."), ("Bye", " Bye. ")]).endswith(
        "questions. USER: Hi ASSISTANT: Hello.</s>USER: Bye ASSISTANT:  Bye. </s>")
    assert vicuna.render(["Hi", ""]).endswith(" USER: Hi ASSISTANT:")  # an empty message leaves the role open
    plain = get_template("plain")
    assert plain.render_prompt("<image>\nDescribe it.") == "<image>\nDescribe it.\n"
    # stage 1 drops the instruction, keeps the caption as it is and ends it with "\n"
    assert plain.render_conversation([("Describe it.\n<image>", " two cats ")]) == "<image> two cats \n"
    with pytest.raises(ValueError, match="takes one .image, caption. pair"):
        plain.render_conversation([("<image>", "a"), ("b", "c")])
    with pytest.raises(ValueError, match="unknown conversation template 'llama_2'"):
        get_template("llama_2")


def test_label_masking_multi_turn_vicuna_by_hand(tokenizer):
    sample = tokenize_record(RECORD, tokenizer, get_template("vicuna_v1"), num_image_tokens=3, max_length=512)
    user, assistant, colon = hand(["user", ":"]), hand(["assistant"]), hand([":"])
    # The image tag is moved before the question (LLaVA's preprocess_multimodal). LLaVA masks each
    # instruction as len(tokens of "... ASSISTANT: ") - 2, counting on a token for the trailing space
    # ("▁" on Llama); a word-level tokenizer has none, so the ":" before each answer is supervised.
    prompt1 = [BOS] + hand(SYSTEM) + user + [IMG] * 3 + hand(Q1) + assistant
    prompt2 = user + hand(Q2) + assistant
    answer1, answer2 = colon + hand(A1) + [EOS], colon + hand(A2) + [EOS]
    assert sample.input_ids == prompt1 + answer1 + prompt2 + answer2
    assert sample.labels == ([IGNORE_INDEX] * len(prompt1) + answer1 + [IGNORE_INDEX] * len(prompt2) + answer2)
    assert not sample.official_masked


def test_plain_template_supervises_the_caption_only(tokenizer):
    record = {"id": "GCC_train_002582585", "image": "00258/002582585.jpg", "conversations": [
        {"from": "human", "value": "Render a clear and concise summary of the photo.\n<image>"},
        {"from": "gpt", "value": "two cats on a sofa"}]}
    sample = tokenize_record(record, tokenizer, get_template("plain"), num_image_tokens=4, max_length=64)
    caption = hand("two cats on a sofa".split())  # + "\n", which a word-level tokenizer drops; no </s>
    assert sample.input_ids == [BOS] + [IMG] * 4 + caption
    assert sample.labels == [IGNORE_INDEX] * 5 + caption


@pytest.mark.parametrize("num_image_tokens", [1, 64, 576])
def test_one_image_tag_becomes_num_image_tokens_contiguous_masked_tokens(tokenizer, num_image_tokens):
    sample = tokenize_record(RECORD, tokenizer, get_template("vicuna_v1"), num_image_tokens, max_length=2048)
    positions = [i for i, t in enumerate(sample.input_ids) if t == IMG]
    assert len(positions) == num_image_tokens
    assert positions == list(range(positions[0], positions[0] + num_image_tokens))
    assert positions[0] == 1 + len(SYSTEM) + 2  # right after "USER:", before the question
    assert all(sample.labels[i] == IGNORE_INDEX for i in positions)


def test_text_only_record(tokenizer):
    record = {"id": "t1", "conversations": [{"from": "human", "value": "What feature can be seen?"},
                                            {"from": "gpt", "value": "An advertisement."}]}
    sample = tokenize_record(record, tokenizer, get_template("vicuna_v1"), num_image_tokens=64, max_length=64)
    assert IMG not in sample.input_ids
    assert [t for t, l in zip(sample.input_ids, sample.labels) if l != IGNORE_INDEX] == hand(
        [":", "an", "advertisement", "."]) + [EOS]


def test_over_long_sample_names_record_and_lengths(tokenizer):
    full = tokenize_record(RECORD, tokenizer, get_template("vicuna_v1"), 10, 4096)
    n = len(full.input_ids)
    assert tokenize_record(RECORD, tokenizer, get_template("vicuna_v1"), 10, max_length=n).input_ids  # fits exactly
    with pytest.raises(DataError, match=rf"record 000000033471: {n} tokens .*1 x 10 image.* exceed max_length {n - 1}"
                       ) as info:
        tokenize_record(RECORD, tokenizer, get_template("vicuna_v1"), 10, max_length=n - 1)
    assert info.value.reason == "too long"
    cut = tokenize_record(RECORD, tokenizer, get_template("vicuna_v1"), 10, max_length=n - 1, on_overlong="truncate")
    assert (cut.input_ids, cut.labels, cut.truncated) == (full.input_ids[:-1], full.labels[:-1], True)
    with pytest.raises(ValueError, match="on_overlong must be one of"):
        tokenize_record(RECORD, tokenizer, get_template("vicuna_v1"), 10, n, on_overlong="drop")


def test_image_tag_in_an_answer_is_an_error(tokenizer):
    record = {"id": "bad-answer", "conversations": [{"from": "human", "value": "What?"},
                                                    {"from": "gpt", "value": "the <image>"}]}
    with pytest.raises(DataError, match="record bad-answer: an answer contains <image>"):
        tokenize_record(record, tokenizer, get_template("vicuna_v1"), 4, 64)


class MergingTokenizer:
    """A tokenizer that merges ". </s>" into one token when it sees them together, as a BPE tokenizer
    can merge across a boundary: LLaVA's round lengths (counted without the "</s>") no longer add up."""

    legacy = True

    def __init__(self, inner):
        self.inner = inner
        self.bos_token_id, self.eos_token_id, self.unk_token_id = inner.bos_token_id, inner.eos_token_id, UNK
        self.pad_token_id = inner.pad_token_id

    def convert_tokens_to_ids(self, token):
        return self.inner.convert_tokens_to_ids(token)

    def __call__(self, text, add_special_tokens=True, return_offsets_mapping=False):
        if return_offsets_mapping:
            raise NotImplementedError("no offsets")
        ids = self.inner(text, add_special_tokens=add_special_tokens)["input_ids"]
        merged, i = [], 0
        pattern = hand(["."]) + [EOS]
        while i < len(ids):
            if ids[i:i + 2] == pattern:
                merged.append(EOS)
                i += 2
            else:
                merged.append(ids[i])
                i += 1
        return {"input_ids": merged}


def test_where_llava_would_mask_everything_we_supervise_the_answers(tokenizer):
    """LLaVA masks a whole sample when its round lengths miss; we keep the answers, flagged."""
    record = {"id": "odd", "image": "x.jpg", "conversations": [
        {"from": "human", "value": "<image>\nWhat are the colors? ASSISTANT: the bus"},
        {"from": "gpt", "value": "The bus in the image is white and red."}]}
    sample = tokenize_record(record, tokenizer, get_template("vicuna_v1"), 1, 512)
    assert sample.official_masked
    # the answer (whose first token carries no space here) and its </s>; not the ":" LLaVA's rule would add
    assert [t for t, l in zip(sample.input_ids, sample.labels) if l != IGNORE_INDEX] == hand(A1) + [EOS]


def test_a_mismatch_without_character_offsets_is_an_error_not_a_masked_sample(tokenizer):
    with pytest.raises(DataError, match="record 000000033471: tokenization mismatch .*no character offsets") as info:
        tokenize_record(RECORD, MergingTokenizer(tokenizer), get_template("vicuna_v1"), 2, 512)
    assert info.value.reason == "tokenization mismatch"


def test_encode_prompt_for_generation(tokenizer):
    ids = encode_prompt(tokenizer, get_template("vicuna_v1"), "<image>\nWhat are the colors of the bus?", 5)
    assert ids == ([BOS] + hand(SYSTEM) + hand(["user", ":"]) + [IMG] * 5
                   + hand("what are the colors of the bus ?".split()) + hand(["assistant", ":"]))
    assert encode_prompt(tokenizer, get_template("plain"), "<image>", 2) == [BOS, IMG, IMG]
