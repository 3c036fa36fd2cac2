"""Data pipeline: templates + label masking on real-format records, bad input, collator, synthetic data."""

import json
import logging
import subprocess
import sys

import pytest
import torch
from PIL import Image

from gamma_mod.data.convert import move_image_to_front
from gamma_mod.data.dataset import DataCollator, SupervisedDataset
from gamma_mod.data.formats import DataError
from gamma_mod.data.preprocess import IGNORE_INDEX, encode_prompt, tokenize_record
from gamma_mod.data.synthetic import synthetic_vocabulary, write_synthetic_dataset
from gamma_mod.data.templates import get_template
from gamma_mod.data.tokenizer import build_tokenizer, load_tokenizer, model_token_ids
from gamma_mod.model.vision import ImageProcessor

WORDS = ("a chat between curious human and an artificial intelligence assistant the gives helpful detailed polite "
         "answers to s questions user what is in image there are two cats yes where sit on sofa . , ? : '").split()
RECORD = {
    "id": "000000033471", "image": "img.png",
    "conversations": [
        {"from": "human", "value": "<image>\nWhat is in the image?"},
        {"from": "gpt", "value": "There are two cats."},
        {"from": "human", "value": "Where?"},
        {"from": "gpt", "value": "On a sofa."},
    ],
}


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(WORDS)


def ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_label_masking_multi_turn_by_hand(tokenizer):
    template = get_template("vicuna_v1")
    sample = tokenize_record(RECORD, tokenizer, template, num_image_tokens=3, max_length=512)
    image = tokenizer.convert_tokens_to_ids("<image>")
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    system = ids(tokenizer, template.system)
    expected = ([bos] + system + ids(tokenizer, "USER:") + [image] * 3 + ids(tokenizer, "What is in the image? ASSISTANT:")
                + ids(tokenizer, "There are two cats.") + [eos] + ids(tokenizer, "USER: Where? ASSISTANT:")
                + ids(tokenizer, "On a sofa.") + [eos])
    assert sample.input_ids == expected
    supervised = [t for t, l in zip(sample.input_ids, sample.labels) if l != IGNORE_INDEX]
    assert supervised == ids(tokenizer, "There are two cats.") + [eos] + ids(tokenizer, "On a sofa.") + [eos]
    # every label is either -100 or the token itself
    assert all(l in (IGNORE_INDEX, t) for t, l in zip(sample.input_ids, sample.labels))
    assert sample.input_ids.count(image) == 3


def test_plain_template_supervises_caption_only(tokenizer):
    record = {"id": "c1", "image": "x.png", "conversations": [{"from": "human", "value": "<image>"},
                                                                {"from": "gpt", "value": "two cats on a sofa"}]}
    sample = tokenize_record(record, tokenizer, get_template("plain"), num_image_tokens=4, max_length=64)
    supervised = [t for t, l in zip(sample.input_ids, sample.labels) if l != IGNORE_INDEX]
    assert supervised == ids(tokenizer, "two cats on a sofa") + [tokenizer.eos_token_id]
    assert len(sample.input_ids) == 1 + 4 + len(supervised)


def test_unknown_words_and_too_long_are_errors(tokenizer):
    with pytest.raises(DataError, match="000000033471.*exceed max_length"):
        tokenize_record(RECORD, tokenizer, get_template("vicuna_v1"), num_image_tokens=64, max_length=50)


def test_encode_prompt_ends_at_assistant(tokenizer):
    prompt = encode_prompt(tokenizer, get_template("vicuna_v1"), "<image>\nWhat is in the image?", 5)
    assert prompt[0] == tokenizer.bos_token_id
    assert tokenizer.decode(prompt[-2:]) == "assistant :"
    assert prompt.count(tokenizer.convert_tokens_to_ids("<image>")) == 5


def test_tokenizer_round_trip(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    loaded = load_tokenizer(str(tmp_path))
    text = "USER: what is in the image? ASSISTANT: two cats"
    assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert model_token_ids(loaded) == model_token_ids(tokenizer)


def write_dataset(tmp_path, records, images=("img.png",)):
    for name in images:
        Image.new("RGB", (20, 10), (10, 200, 30)).save(tmp_path / name)
    path = tmp_path / "data.json"
    path.write_text(json.dumps(records))
    return path


def make_dataset(tokenizer, path, folder, **kwargs):
    processor = ImageProcessor(16, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    return SupervisedDataset(path, folder, tokenizer, processor, get_template("vicuna_v1"), 4, kwargs.pop("max_length", 128),
                             **kwargs)


def bad_records():
    good = json.loads(json.dumps(RECORD))
    missing_image = dict(good, id="r-missing", image="nope.png")
    (tmp_corrupt := dict(good, id="r-corrupt", image="corrupt.png"))
    no_tag = json.loads(json.dumps(good))
    no_tag["id"] = "r-notag"
    no_tag["conversations"][0]["value"] = "What is in the image?"
    empty = {"id": "r-empty", "conversations": []}
    long = json.loads(json.dumps(good))
    long["id"] = "r-long"
    long["conversations"] += [{"from": "human", "value": "Where?"}, {"from": "gpt", "value": "On a sofa."}]
    return {"missing image": missing_image, "corrupt image": tmp_corrupt, "missing image tag": no_tag,
            "empty conversations": empty, "too long": long}


@pytest.mark.parametrize("reason", ["missing image", "corrupt image", "missing image tag", "empty conversations",
                                    "too long"])
def test_bad_record_is_an_error_naming_the_record(tokenizer, tmp_path, reason):
    record = bad_records()[reason]
    path = write_dataset(tmp_path, [RECORD, record])
    (tmp_path / "corrupt.png").write_bytes(b"not a png")
    max_length = 70 if reason == "too long" else 128
    with pytest.raises(DataError, match=record["id"]) as info:
        make_dataset(tokenizer, path, tmp_path, max_length=max_length)
    assert str(path) in str(info.value)


def test_skip_mode_counts_every_dropped_record(tokenizer, tmp_path, caplog):
    records = [RECORD] + [r for k, r in bad_records().items() if k != "too long"]
    path = write_dataset(tmp_path, records)
    (tmp_path / "corrupt.png").write_bytes(b"not a png")
    with caplog.at_level(logging.WARNING):
        dataset = make_dataset(tokenizer, path, tmp_path, on_bad_record="skip")
    assert len(dataset) == 1
    assert dict(dataset.skipped) == {"missing image": 1, "corrupt image": 1, "missing image tag": 1,
                                     "empty conversations": 1}
    assert "skipped 4 of 5 records" in caplog.text


def test_collator_pads_right_and_stacks_images(tokenizer, tmp_path):
    text_only = {"id": "t", "conversations": [{"from": "human", "value": "Where?"}, {"from": "gpt", "value": "On a sofa."}]}
    dataset = make_dataset(tokenizer, write_dataset(tmp_path, [RECORD, text_only]), tmp_path)
    batch = DataCollator(tokenizer.pad_token_id)([dataset[0], dataset[1]])
    n0, n1 = len(dataset[0]["input_ids"]), len(dataset[1]["input_ids"])
    assert batch["input_ids"].shape == (2, max(n0, n1))
    assert batch["attention_mask"].sum(1).tolist() == [n0, n1]
    assert (batch["labels"][1, n1:] == IGNORE_INDEX).all()
    assert (batch["input_ids"][1, n1:] == tokenizer.pad_token_id).all()
    assert batch["pixel_values"].shape == (1, 3, 16, 16)  # only the sample with an image
    assert batch["sample_ids"] == ["000000033471", "t"]


def test_move_image_to_front():
    records = [
        {"id": "a", "image": "x", "conversations": [{"from": "human", "value": "What is this?\n<image>"},
                                                     {"from": "gpt", "value": "A cat."}]},
        {"id": "b", "image": "x", "conversations": [{"from": "human", "value": "<image>\nWhat is this?"},
                                                     {"from": "gpt", "value": "A dog."}]},
        {"id": "c", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello."}]},
    ]
    new, changed = move_image_to_front(records)
    assert changed == 1
    assert new[0]["conversations"][0]["value"] == "<image>\nWhat is this?"
    assert new[1] == records[1] and new[2] == records[2]
    assert records[0]["conversations"][0]["value"] == "What is this?\n<image>", "input not mutated"


def test_modify_data_config_cli(tmp_path):
    src = tmp_path / "in.json"
    src.write_text(json.dumps([{"id": "a", "image": "x", "conversations": [
        {"from": "human", "value": "Describe.\n<image>"}, {"from": "gpt", "value": "ok"}]}]))
    result = subprocess.run([sys.executable, "modify_data_config.py", str(src), str(tmp_path / "out.json")],
                            capture_output=True, text=True, check=True)
    assert "changed 1 of 1 records" in result.stdout
    assert json.loads((tmp_path / "out.json").read_text())[0]["conversations"][0]["value"] == "<image>\nDescribe."


def test_synthetic_dataset_is_deterministic_and_covered(tmp_path):
    a = write_synthetic_dataset(tmp_path / "a", n_captions=6, n_vqa_train=4, n_vqa_test=3, seed=3)
    b = write_synthetic_dataset(tmp_path / "b", n_captions=6, n_vqa_train=4, n_vqa_test=3, seed=3)
    assert a.stage2_train.read_text() == b.stage2_train.read_text()
    assert (a.images / "vqa_test_00002.png").read_bytes() == (b.images / "vqa_test_00002.png").read_bytes()
    tokenizer = load_tokenizer(str(a.tokenizer))
    unk = tokenizer.unk_token_id
    template = get_template("vicuna_v1")
    for path, tpl in ((a.stage1, get_template("plain")), (a.stage2_train, template), (a.stage2_test, template)):
        for record in json.loads(path.read_text()):
            sample = tokenize_record(record, tokenizer, tpl, 4, 512)
            assert unk not in sample.input_ids, record["id"]
    test = json.loads(a.stage2_test.read_text())
    assert len(test) == 9 and 0 < a.chance_accuracy < 1
    assert set(synthetic_vocabulary()) >= {"red", "circle", "left", "three"}
