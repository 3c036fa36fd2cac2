"""Training records tokenized and label-masked as LLaVA-1.5's training does, on a Llama-style
sentencepiece tokenizer built in the test (tokenizer.model only, `legacy` true and false).

Expected tokens are written out by hand as sentencepiece pieces, from the official rules
(haotian-liu/LLaVA llava/train/train.py preprocess_multimodal + preprocess_v1 / preprocess_plain,
llava/mm_utils.py tokenizer_image_token, transformers 4.37 slow LlamaTokenizer):
- "<image>" is moved to the front of its turn; each chunk around it is tokenized on its own, so the
  "\\n" after the image is "▁" "<0x0A>" (Llama's 29871 13);
- the conversation is "{system} USER: {q} ASSISTANT: {a}</s>USER: ..."; after "</s>" a legacy
  tokenizer writes "▁" "USER" (the word prefix again), a legacy=false one "USER";
- labels: each answer and its "</s>" ("[x]" below marks a supervised token), the rest -100.
In the strings below, pieces are separated by spaces and "<image>" is the image token.
"""

import json

import pytest
import torch

from gamma_mod.data.dataset import SupervisedDataset
from gamma_mod.data.formats import DataError
from gamma_mod.data.preprocess import IGNORE_INDEX, tokenize_record
from gamma_mod.data.templates import get_template
from gamma_mod.data.tokenizer import encode_with_images, load_tokenizer, model_token_ids
from gamma_mod.mod.routing import routable_token_mask
from llama_tokenizer import build_llama_tokenizer

SYSTEM = ("▁A ▁chat ▁between ▁a ▁curious ▁user ▁and ▁an ▁artificial ▁intelligence ▁assistant . ▁The ▁assistant "
          "▁gives ▁helpful , ▁detailed , ▁and ▁polite ▁answers ▁to ▁the ▁user ' s ▁questions .")
# "... questions. USER: <image>\n" -- the space before USER and the one after ":" are tokens of their own.
IMAGE_TURN = "▁ USER : ▁ <image> ▁ <0x0A>"
VICUNA, PLAIN = get_template("vicuna_v1"), get_template("plain")


def record(rid, *messages, image="a.png"):
    r = {"id": rid, "conversations": [{"from": ("human", "gpt")[i % 2], "value": m} for i, m in enumerate(messages)]}
    return {**r, "image": image} if image else r


@pytest.fixture(scope="module", params=[True, False], ids=["legacy", "non-legacy"])
def tok(request, tmp_path_factory):
    folder = build_llama_tokenizer(tmp_path_factory.mktemp("llama"), legacy=request.param)
    return load_tokenizer(str(folder))


def ids_of(tok, pieces: str) -> list[int]:
    vocab = tok.get_vocab()
    return [vocab[p] for p in pieces.split()]  # KeyError: a piece the hand-written string got wrong


def expect(tok, marked: str) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of a "<s> ▁A ... [▁Two] [.] [</s>]" string: [x] is supervised."""
    pieces = marked.split()
    ids = ids_of(tok, " ".join(p.strip("[]") if p.startswith("[") else p for p in pieces))
    labels = [i if p.startswith("[") else IGNORE_INDEX for i, p in zip(ids, pieces)]
    return ids, labels


def after_eos(tok) -> str:
    """How "USER" is tokenized right after "</s>"."""
    return "▁ USER" if tok.legacy else "USER"


def check(tok, sample, marked, official_masked=False):
    """The sample is `marked`; and LLaVA's own round-length check agrees with its labels (for a
    legacy=false tokenizer only thanks to its "- 1 from the second round" correction)."""
    ids, labels = expect(tok, marked)
    assert tok.convert_ids_to_tokens(sample.input_ids) == tok.convert_ids_to_tokens(ids)
    assert sample.input_ids == ids
    assert sample.labels == labels
    assert sample.official_masked is official_masked


def test_a_sentencepiece_only_folder_loads_as_vicuna_does(tmp_path):
    for legacy in (True, False):
        folder = build_llama_tokenizer(tmp_path / str(legacy), legacy=legacy)
        assert sorted(p.name for p in folder.iterdir()) == ["tokenizer.model", "tokenizer_config.json"]
        tok = load_tokenizer(str(folder))
        assert tok.legacy is legacy
        n = len(tok.get_vocab()) - 1
        assert model_token_ids(tok) == dict(vocab_size=n + 1, image_token_index=n, pad_token_id=0, bos_token_id=1,
                                            eos_token_id=2)  # <image> appended; LLaVA pads with <unk>
        # Llama's layout: byte pieces from id 3, so "\n" is <0x0A> = 13 as in Vicuna.
        assert tok.convert_tokens_to_ids("<0x0A>") == 13
    # A Llama config without "legacy": LLaVA's transformers takes legacy=True, transformers 5 False.
    config = json.loads((folder / "tokenizer_config.json").read_text())
    del config["legacy"]
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    assert load_tokenizer(str(folder)).legacy is True


def test_a_missing_sentencepiece_is_named(tmp_path, monkeypatch):
    import gamma_mod.data.tokenizer as tokenizer_module

    folder = build_llama_tokenizer(tmp_path, legacy=False)

    def no_sentencepiece(*args, **kwargs):
        raise ValueError("tiktoken is required to read a tiktoken file")  # what transformers says then

    monkeypatch.setattr(tokenizer_module.AutoTokenizer, "from_pretrained", no_sentencepiece)
    monkeypatch.setattr(tokenizer_module, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match=rf"{tmp_path}: a sentencepiece tokenizer .* needs the sentencepiece"):
        load_tokenizer(str(folder))


def test_chunk_wise_tokenization_puts_the_word_prefix_after_the_image(tok):
    image = tok.convert_tokens_to_ids("<image>")
    text = "USER: <image>\nWhat is in the image?"
    assert encode_with_images(tok, text) == ids_of(tok, "<s> ▁ USER : ▁ <image> ▁ <0x0A> What ▁is ▁in ▁the ▁image ?")
    # Tokenized in one go, a legacy=false tokenizer puts "\n" right after the image: not what LLaVA trained on.
    if not tok.legacy:
        assert tok(text)["input_ids"] == ids_of(tok, "<s> ▁ USER : ▁ <image> <0x0A> What ▁is ▁in ▁the ▁image ?")
    assert encode_with_images(tok, "<image>") == [1, image]
    # a chunk starting with a space keeps sentencepiece's own word prefix, as the slow tokenizer does
    assert encode_with_images(tok, "<image> A red circle.") == ids_of(tok, "<s> <image> ▁ ▁A ▁red ▁circle .")


def test_multi_turn_image_first(tok):
    sample = tokenize_record(record("multi", "<image>\nWhat is in the image?", "A red circle.",
                                    "How many shapes are there?", "Two."), tok, VICUNA, 1, 4096)
    check(tok, sample, f"<s> {SYSTEM} {IMAGE_TURN} What ▁is ▁in ▁the ▁image ? ▁ASSISTANT : "
                       f"[▁A] [▁red] [▁circle] [.] [</s>] "
                       f"{after_eos(tok)} : ▁How ▁many ▁shapes ▁are ▁there ? ▁ASSISTANT : [▁Two] [.] [</s>]")
    assert not sample.truncated


def test_image_last_is_moved_first_and_its_question_is_not_routable(tok):
    sample = tokenize_record(record("last", "What color is the shape?\n<image>", "Red."), tok, VICUNA, 3, 4096)
    question = "What ▁color ▁is ▁the ▁shape ?"
    check(tok, sample, f"<s> {SYSTEM} ▁ USER : ▁ <image> <image> <image> ▁ <0x0A> {question} ▁ASSISTANT : "
                       f"[▁Red] [.] [</s>]")
    ids = torch.tensor([sample.input_ids])
    routable = routable_token_mask(ids, torch.ones_like(ids), tok.convert_tokens_to_ids("<image>"))[0].tolist()
    prefix = len(f"<s> {SYSTEM} ▁ USER : ▁".split()) + 3
    assert routable == [True] * prefix + [False] * (len(sample.input_ids) - prefix)
    start = prefix + 2  # after "▁" "<0x0A>"
    assert tok.convert_ids_to_tokens(sample.input_ids[start:start + 6]) == question.split()


def test_text_only_multi_turn(tok):
    sample = tokenize_record(record("text", "How many shapes are there?", "Two.", "What color is the shape?", "Red.",
                                    image=None), tok, VICUNA, 576, 4096)
    check(tok, sample, f"<s> {SYSTEM} ▁ USER : ▁How ▁many ▁shapes ▁are ▁there ? ▁ASSISTANT : [▁Two] [.] [</s>] "
                       f"{after_eos(tok)} : ▁What ▁color ▁is ▁the ▁shape ? ▁ASSISTANT : [▁Red] [.] [</s>]")


def test_messages_are_used_verbatim_and_inner_spaces_survive_the_tag_move(tok):
    # Only the image turn is stripped (preprocess_multimodal); the others keep their spaces, and the
    # round masking supervises the answer's leading space token as LLaVA's does.
    sample = tokenize_record(record("spaces", "What is <image> in the image?", " A red circle. ",
                                    "How many shapes are there? ", "Two."), tok, VICUNA, 1, 4096)
    check(tok, sample, f"<s> {SYSTEM} {IMAGE_TURN} What ▁is ▁ ▁in ▁the ▁image ? ▁ASSISTANT : "
                       f"[▁] [▁A] [▁red] [▁circle] [.] [▁] [</s>] "
                       f"{after_eos(tok)} : ▁How ▁many ▁shapes ▁are ▁there ? ▁ ▁ASSISTANT : [▁Two] [.] [</s>]")


def test_plain_template_appends_newline_and_keeps_spaces(tok):
    sample = tokenize_record(record("cap", "What is in the image?\n<image>", "A red circle."), tok, PLAIN, 2, 64)
    check(tok, sample, "<s> <image> <image> [▁A] [▁red] [▁circle] [.] [<0x0A>]")
    sample = tokenize_record(record("cap2", "<image>", " A red circle. "), tok, PLAIN, 1, 64)
    check(tok, sample, "<s> <image> [▁] [▁A] [▁red] [▁circle] [.] [▁] [<0x0A>]")
    with pytest.raises(DataError, match="record text: the plain template takes one human turn with <image>"):
        tokenize_record(record("text", "Hi", "Two.", image=None), tok, PLAIN, 1, 64)


def test_where_llava_would_mask_everything_we_supervise_the_answers(tok):
    # A question holding " ASSISTANT: " splits LLaVA's round in three: its round lengths stop short,
    # the mismatch check masks the whole sample. We keep the answers supervised and flag the sample.
    sample = tokenize_record(record("odd", "<image>\nWhat is in the image? ASSISTANT: Two.", "A red circle."),
                             tok, VICUNA, 1, 4096)
    check(tok, sample, f"<s> {SYSTEM} {IMAGE_TURN} What ▁is ▁in ▁the ▁image ? ▁ASSISTANT : ▁Two . ▁ASSISTANT : "
                       f"[▁A] [▁red] [▁circle] [.] [</s>]", official_masked=True)


def test_over_long_records_error_or_truncate_like_llava(tok, tmp_path, caplog):
    rec = record("long", "<image>\nWhat is in the image?", "A red circle.")
    full = tokenize_record(rec, tok, VICUNA, 4, 4096)
    n = len(full.input_ids)
    with pytest.raises(DataError, match=rf"record long: {n} tokens \({n - 4} text \+ 1 x 4 image\) exceed max_length "
                                        rf"{n - 3} \(data.on_overlong: truncate"):
        tokenize_record(rec, tok, VICUNA, 4, n - 3)
    cut = tokenize_record(rec, tok, VICUNA, 4, n - 3, on_overlong="truncate")
    assert cut.truncated and not full.truncated
    assert cut.input_ids == full.input_ids[:n - 3] and cut.labels == full.labels[:n - 3]
    assert tok.convert_ids_to_tokens([t for t, l in zip(cut.input_ids, cut.labels) if l != IGNORE_INDEX]) == [
        "▁A", "▁red"]  # no "</s>": LLaVA trains the cut sample without it too
    # the dataset counts both kinds of sample in its log
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    odd = record("odd", "<image>\nWhat is in the image? ASSISTANT: Two.", "A red circle.")
    (tmp_path / "d.json").write_text(json.dumps([rec, odd, record("ok", "<image>", "Red.")]))
    with caplog.at_level("WARNING", logger="gamma_mod.data.dataset"):
        dataset = SupervisedDataset(tmp_path / "d.json", tmp_path, tok, lambda im: torch.zeros(3, 8, 8), VICUNA, 4,
                                    n - 3, on_overlong="truncate")
    assert (len(dataset), dataset.truncated, dataset.official_masked) == (3, 2, 1)
    assert "truncated 2 of 3 samples to max_length" in caplog.text
    assert "1 of 3 samples would be fully masked by LLaVA's tokenization-mismatch rule" in caplog.text
