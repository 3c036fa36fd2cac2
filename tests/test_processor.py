"""The one prompt + image encoder (gamma_mod.data.processor), pinned against hand-written ids.

Expected tokens are sentencepiece pieces written out by hand from LLaVA's rules (see
test_official_tokenization.py for the tokenizer and the rules): training conversations as
preprocess_v1 / preprocess_plain build them, generation prompts as the model_vqa* scripts pose them.
The processor must give exactly what the dataset and `gamma-mod eval` built before it existed.
"""

import base64
import io
import json
import sys
import types

import pytest
import torch
from PIL import Image

from gamma_mod.data.dataset import DataCollator, SupervisedDataset
from gamma_mod.data.formats import DataError
from gamma_mod.data.processor import (IGNORE_INDEX, LlavaForkProcessor, MultimodalProcessor, collate_features,
                                      get_processor, pose_question)
from gamma_mod.data.templates import get_template
from gamma_mod.data.tokenizer import load_tokenizer, model_token_ids
from gamma_mod.eval.answer import left_pad, question_encoder
from gamma_mod.eval.cli import build_encoder
from gamma_mod.eval.questions import Question
from gamma_mod.model import LlavaLlamaConfig
from gamma_mod.model.vision import ImageProcessor
from llama_tokenizer import build_llama_tokenizer

SYSTEM = ("▁A ▁chat ▁between ▁a ▁curious ▁user ▁and ▁an ▁artificial ▁intelligence ▁assistant . ▁The ▁assistant "
          "▁gives ▁helpful , ▁detailed , ▁and ▁polite ▁answers ▁to ▁the ▁user ' s ▁questions .")
HUMAN_SYSTEM = SYSTEM.replace("▁user ▁and", "▁human ▁and").replace("▁the ▁user '", "▁the ▁human '")
SYSTEM_TEXT = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
               "detailed, and polite answers to the user's questions.")
SHORT = "Answer the question using a single word or phrase."
SHORT_PIECES = "Answer ▁the ▁question ▁using ▁a ▁single ▁word ▁or ▁phrase ."
VICUNA, PLAIN = get_template("vicuna_v1"), get_template("plain")
PIXELS = ImageProcessor(8, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
N_IMAGE = 2  # image tokens per image in these tests


def images(n: int = N_IMAGE) -> str:
    return " ".join(["<image>"] * n)


@pytest.fixture(scope="module", params=[True, False], ids=["legacy", "non-legacy"])
def tok(request, tmp_path_factory):
    return load_tokenizer(str(build_llama_tokenizer(tmp_path_factory.mktemp("llama"), legacy=request.param)))


def processor(tok, template=VICUNA, **kwargs) -> LlavaForkProcessor:
    return LlavaForkProcessor(tok, template, N_IMAGE, PIXELS, **kwargs)


def ids_of(tok, pieces: str) -> list[int]:
    vocab = tok.get_vocab()
    return [vocab[p] for p in pieces.split()]


def expect(tok, marked: str) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of a "<s> ... [▁Two] [.] [</s>]" string: [x] is supervised."""
    pieces = marked.split()
    ids = ids_of(tok, " ".join(p.strip("[]") if p.startswith("[") else p for p in pieces))
    return ids, [i if p.startswith("[") else IGNORE_INDEX for i, p in zip(ids, pieces)]


def write_image(path, colour=(200, 30, 10), size=(12, 8)):
    Image.new("RGB", size, colour).save(path)
    return path


def record(rid, *messages, image="a.png"):
    r = {"id": rid, "conversations": [{"from": ("human", "gpt")[i % 2], "value": m} for i, m in enumerate(messages)]}
    return {**r, "image": image} if image else r


def test_the_fork_processor_is_a_multimodal_processor(tok):
    p = processor(tok)
    assert isinstance(p, MultimodalProcessor)
    assert p.family == "llava_fork" and p.tokenizer is tok and p.has_vision


# -- encode_conversation == the dataset's encoding ------------------------------------------------
def test_encode_conversation_equals_the_dataset_id_for_id(tok, tmp_path):
    write_image(tmp_path / "a.png")
    multi = record("multi", "What is in the image?\n<image>", "A red circle.", "How many shapes are there?", "Two.")
    text = record("text", "How many shapes are there?", "Two.", image=None)
    after_eos = "▁ USER" if tok.legacy else "USER"  # "USER" right after "</s>" (LLaVA's legacy correction)
    expected = {
        "multi": f"<s> {SYSTEM} ▁ USER : ▁ {images()} ▁ <0x0A> What ▁is ▁in ▁the ▁image ? ▁ASSISTANT : "
                 f"[▁A] [▁red] [▁circle] [.] [</s>] "
                 f"{after_eos} : ▁How ▁many ▁shapes ▁are ▁there ? ▁ASSISTANT : [▁Two] [.] [</s>]",
        "text": f"<s> {SYSTEM} ▁ USER : ▁How ▁many ▁shapes ▁are ▁there ? ▁ASSISTANT : [▁Two] [.] [</s>]",
    }
    (tmp_path / "d.json").write_text(json.dumps([multi, text]))
    dataset = SupervisedDataset(tmp_path / "d.json", tmp_path, tok, PIXELS, VICUNA, N_IMAGE, 4096)
    p = processor(tok)
    for i, rec in enumerate((multi, text)):
        features = p.encode_conversation(rec, media_root=tmp_path)
        ids, labels = expect(tok, expected[rec["id"]])
        assert features["input_ids"].tolist() == ids
        assert features["labels"].tolist() == labels
        assert features["sample_id"] == rec["id"]
        item = dataset[i]  # what training fed the model before the processor existed
        assert torch.equal(item["input_ids"], features["input_ids"])
        assert torch.equal(item["labels"], features["labels"])
        if rec.get("image"):
            assert features["pixel_values"].shape == (1, 3, 8, 8)
            assert torch.equal(features["pixel_values"][0], item["pixel_values"])
            # a 12x8 red image padded to a square with the mean colour, then normalised
            assert torch.allclose(features["pixel_values"][0, :, 4, 4], torch.tensor([200, 30, 10]) / 127.5 - 1)
        else:
            assert "pixel_values" not in features and "pixel_values" not in item


def test_encode_conversation_plain_template(tok, tmp_path):
    write_image(tmp_path / "a.png")
    features = processor(tok, PLAIN).encode_conversation(record("cap", "<image>", " A red circle. "),
                                                         media_root=tmp_path)
    ids, labels = expect(tok, f"<s> {images()} [▁] [▁A] [▁red] [▁circle] [.] [▁] [<0x0A>]")
    assert (features["input_ids"].tolist(), features["labels"].tolist()) == (ids, labels)


# -- encode_prompt == what eval built ---------------------------------------------------------------
def test_encode_prompt_equals_the_eval_prompt(tok, tmp_path):
    question = f"<image>\nWhat color is the shape?\n{SHORT}"  # model_vqa_loader's user turn (GQA)
    want = ids_of(tok, f"<s> {SYSTEM} ▁ USER : ▁ {images()} ▁ <0x0A> What ▁color ▁is ▁the ▁shape ? <0x0A> "
                       f"{SHORT_PIECES} ▁ASSISTANT :")
    image = Image.new("RGB", (12, 8), (200, 30, 10))
    p = processor(tok)
    assert p.prompt_text(question, n_images=1) == f"{SYSTEM_TEXT} USER: {question} ASSISTANT:"
    features = p.encode_prompt(question, image=image)
    assert features["input_ids"].tolist() == want
    assert "labels" not in features
    assert torch.equal(features["pixel_values"], PIXELS(image).unsqueeze(0))
    # the question without a tag: "<image>\n" first (model_vqa's layout; skip maps, lmms-eval)
    assert p.encode_prompt(question.removeprefix("<image>\n"), image=image)["input_ids"].tolist() == want
    assert pose_question("Look: <image> what is it?", 1) == "Look: <image> what is it?"  # placed by the caller
    # no image: the tag goes and the text is stripped (a text-only question, or a model without a tower)
    text_only = p.encode_prompt(question)
    assert "pixel_values" not in text_only
    assert text_only["input_ids"].tolist() == ids_of(
        tok, f"<s> {SYSTEM} ▁ USER : ▁What ▁color ▁is ▁the ▁shape ? <0x0A> {SHORT_PIECES} ▁ASSISTANT :")
    # another system prompt (here llava_v1's wording)
    human = p.encode_prompt(question, image=image, system=get_template("llava_v1").system)
    assert human["input_ids"].tolist() == ids_of(
        tok, f"<s> {HUMAN_SYSTEM} ▁ USER : ▁ {images()} ▁ <0x0A> What ▁color ▁is ▁the ▁shape ? <0x0A> "
             f"{SHORT_PIECES} ▁ASSISTANT :")
    with pytest.raises(ValueError, match="2 <image> tags for one image"):
        p.encode_prompt("<image> <image> What?", image=image)
    with pytest.raises(ValueError, match="no video"):
        p.encode_prompt(question, video=torch.zeros(2, 8, 8, 3))
    with pytest.raises(ValueError, match="no vision tower"):
        LlavaForkProcessor(tok, VICUNA, 0).encode_prompt(question, image=image)


def tiny_config(tok) -> LlavaLlamaConfig:
    return LlavaLlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=16, patch_size=8),
        **model_token_ids(tok))


def test_eval_encoders_pose_questions_through_the_processor(tok, tmp_path):
    """`gamma-mod eval`'s Encoder: (prompt ids, (3, S, S) pixels) from a file or MMBench's base64 column."""
    config = tiny_config(tok)
    assert config.num_image_tokens == 4  # (16 / 8)^2 patches
    write_image(tmp_path / "q.png")
    buffer = io.BytesIO()
    Image.new("RGB", (12, 8), (200, 30, 10)).save(buffer, format="PNG")
    question = f"<image>\nWhat color is the shape?\n{SHORT}"
    want = ids_of(tok, f"<s> {SYSTEM} ▁ USER : ▁ {images(4)} ▁ <0x0A> What ▁color ▁is ▁the ▁shape ? <0x0A> "
                       f"{SHORT_PIECES} ▁ASSISTANT :")
    encode = build_encoder(tok, config, "vicuna_v1")
    from_file = encode(Question(1, question, image=str(tmp_path / "q.png")))
    from_base64 = encode(Question(2, question, extra={"_image_base64": base64.b64encode(buffer.getvalue())}))
    for ids, pixels in (from_file, from_base64):
        assert ids == want
        assert pixels.shape == (3, 16, 16)
    assert torch.equal(from_file[1], from_base64[1])
    # a model without a vision tower is asked the text alone
    no_tower = config.to_dict() | {"vision_config": None}
    ids, pixels = build_encoder(tok, LlavaLlamaConfig(**no_tower), "vicuna_v1")(
        Question(3, question, image=str(tmp_path / "q.png")))
    assert pixels is None
    assert ids == ids_of(tok, f"<s> {SYSTEM} ▁ USER : ▁What ▁color ▁is ▁the ▁shape ? <0x0A> {SHORT_PIECES} "
                              "▁ASSISTANT :")


# -- collate ----------------------------------------------------------------------------------------
def test_collate_pads_right_for_training_and_left_for_generation(tok):
    P = tok.pad_token_id
    red, blue = torch.zeros(1, 3, 2, 2), torch.ones(3, 2, 2)  # encode_* give (1, 3, S, S), dataset items (3, S, S)
    features = [
        {"input_ids": torch.tensor([5, 6, 7]), "labels": torch.tensor([IGNORE_INDEX, 6, 7]), "pixel_values": red,
         "sample_id": "a"},
        {"input_ids": torch.tensor([8]), "labels": torch.tensor([8]), "sample_id": "b"},  # text only
        {"input_ids": torch.tensor([9, 10]), "labels": torch.tensor([IGNORE_INDEX, 10]), "pixel_values": blue,
         "sample_id": "c"},
    ]
    p = processor(tok)
    right = p.collate(features)
    assert right["input_ids"].tolist() == [[5, 6, 7], [8, P, P], [9, 10, P]]
    assert right["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0], [1, 1, 0]]
    assert right["labels"].tolist() == [[IGNORE_INDEX, 6, 7], [8, IGNORE_INDEX, IGNORE_INDEX],
                                        [IGNORE_INDEX, 10, IGNORE_INDEX]]
    assert right["sample_ids"] == ["a", "b", "c"]
    # images of the rows that have one, in row order: the model fills image tokens row by row
    assert torch.equal(right["pixel_values"], torch.cat([red, blue[None]]))
    left = p.collate(features, padding_side="left")
    assert left["input_ids"].tolist() == [[5, 6, 7], [P, P, 8], [P, 9, 10]]
    assert left["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1], [0, 1, 1]]
    assert left["labels"].tolist() == [[IGNORE_INDEX, 6, 7], [IGNORE_INDEX, IGNORE_INDEX, 8],
                                       [IGNORE_INDEX, IGNORE_INDEX, 10]]
    # the training collator and the answer loop's left padding are this collate
    assert all(torch.equal(DataCollator(P)(features)[k], right[k]) for k in ("input_ids", "labels", "attention_mask"))
    ids, mask = left_pad([[5, 6, 7], [8], [9, 10]], P)
    assert torch.equal(ids, left["input_ids"]) and torch.equal(mask, left["attention_mask"])
    # prompts: no labels, no images
    prompts = collate_features([{"input_ids": [1, 2]}, {"input_ids": [3]}], None, "left")
    assert set(prompts) == {"input_ids", "attention_mask"}
    assert prompts["input_ids"].tolist() == [[1, 2], [0, 3]]  # no pad id: 0
    with pytest.raises(ValueError, match="padding_side must be one of"):
        p.collate(features, padding_side="middle")


# -- errors name the record -----------------------------------------------------------------------
def test_bad_records_are_errors_naming_the_record(tok, tmp_path):
    p = processor(tok)
    write_image(tmp_path / "a.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    cases = [
        (record("r1", "<image>\nWhat?", "Red.", image="absent.png"), "record r1: image file .*absent.png not found",
         "missing image"),
        (record("r2", "<image>\nWhat?", "Red.", image="broken.png"), "record r2: image file .*broken.png is corrupt",
         "corrupt image"),
        (record("r3", "What?", "Red <image>", image=None), "record r3: has an <image> tag but no image",
         "image tag without image"),
        ({"id": "r4", "conversations": [{"from": "gpt", "value": "Hi"}]}, "record r4: turn 0 must be", "bad turns"),
        ({**record("r5", "What?", "Red.", image=None), "video": "clip.npy"}, "record r5: has a video",
         "video unsupported"),
        ({"conversations": []}, "record #0: missing 'id'", "missing id"),
    ]
    for rec, message, reason in cases:
        with pytest.raises(DataError, match=message) as info:
            p.encode_conversation(rec, media_root=tmp_path)
        assert info.value.reason == reason
    with pytest.raises(DataError, match="record r6: has an image but no image folder"):
        p.encode_conversation(record("r6", "<image>\nWhat?", "Red."))
    with pytest.raises(DataError, match="record r7: has an image but the model has no vision tower"):
        LlavaForkProcessor(tok, VICUNA, 0).encode_conversation(record("r7", "<image>\nWhat?", "Red."),
                                                                media_root=tmp_path)
    with pytest.raises(DataError, match=r"record r8: \d+ tokens .* exceed max_length 8"):
        processor(tok, max_length=8).encode_conversation(record("r8", "<image>\nWhat?", "Red."), media_root=tmp_path)
    cut = processor(tok, max_length=8, on_overlong="truncate").encode_conversation(
        record("r8", "<image>\nWhat?", "Red."), media_root=tmp_path)
    assert len(cut["input_ids"]) == 8


# -- get_processor ----------------------------------------------------------------------------------
def test_get_processor_picks_the_fork_for_our_model_types(tok, tmp_path):
    config = tiny_config(tok)
    config.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    write_image(tmp_path / "q.png")
    from_folder = get_processor(tmp_path, template="llava_v1", max_length=64)
    from_config = get_processor(config, tokenizer=tok, template="llava_v1", max_length=64)
    for p in (from_folder, from_config):
        assert isinstance(p, LlavaForkProcessor)
        assert (p.template.name, p.num_image_tokens, p.max_length, p.on_overlong) == ("llava_v1", 4, 64, "error")
        assert p.image_processor == ImageProcessor(16, tuple(config.image_mean), tuple(config.image_std),
                                                   config.image_aspect_ratio)
    a = from_folder.encode_prompt("What?", image=tmp_path / "q.png")
    b = from_config.encode_prompt("What?", image=tmp_path / "q.png")
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["pixel_values"], b["pixel_values"])
    with pytest.raises(ValueError, match="needs tokenizer"):
        get_processor(config)
    with pytest.raises(DataError, match="no config.json"):
        get_processor(tmp_path / "absent")


def test_get_processor_hands_other_model_types_to_the_hf_families(tmp_path, monkeypatch):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2_5_vl"}))
    monkeypatch.setitem(sys.modules, "gamma_mod.families.processing", None)  # the families layer absent
    with pytest.raises(ValueError, match="model_type 'qwen2_5_vl' is not one of our LLaVA-fork types"):
        get_processor(tmp_path)


def test_get_processor_of_a_family_folder_and_of_a_loaded_family_model(tmp_path):
    """The one entry point serves the Hugging Face families too: the folder's own tokenizer and chat template,
    its token ids checked against the model config."""
    from gamma_mod.families import load_family_model
    from gamma_mod.families.processing import HFFamilyProcessor, build_tiny_processor
    from gamma_mod.families.specs import build_family_model

    proc_dir = build_tiny_processor("qwen2_5_vl", tmp_path / "proc")
    tiny = HFFamilyProcessor.from_pretrained(proc_dir)
    model = build_family_model("qwen2_5_vl_tiny")
    model.config.image_token_id, model.config.video_token_id = tiny.image_token_id, tiny.video_token_id
    folder = tmp_path / "qwen"
    model.save_pretrained(folder)
    HFFamilyProcessor.for_model(model, proc_dir).save_pretrained(folder)

    from_folder = get_processor(folder)
    assert isinstance(from_folder, HFFamilyProcessor) and from_folder.family == "qwen2_5_vl"
    assert from_folder.image_token_id == model.config.image_token_id
    prompt = from_folder.encode_prompt("What color is the shape?")
    assert "What color is the shape?" in from_folder.decode(prompt["input_ids"].reshape(-1).tolist())
    loaded = load_family_model(folder)
    assert get_processor(loaded).image_token_id == model.config.image_token_id  # folder from _name_or_path
    with pytest.raises(TypeError, match="tokenizer= is for the LLaVA fork"):
        get_processor(folder, tokenizer="tok")
    with pytest.raises(ValueError, match="needs folder="):
        get_processor(model.config)
