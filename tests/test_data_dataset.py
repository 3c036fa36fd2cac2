"""SupervisedDataset (validation, skip counts, items) and DataCollator, down to the model's contract."""

import json
import logging

import pytest
import torch
from PIL import Image

from gamma_mod.data.dataset import DataCollator, SupervisedDataset
from gamma_mod.data.formats import DataError
from gamma_mod.data.preprocess import IGNORE_INDEX, tokenize_record
from gamma_mod.data.templates import get_template
from gamma_mod.data.tokenizer import build_tokenizer, model_token_ids
from gamma_mod.model.vision import ImageProcessor

WORDS = "what is in the image ? two cats . where on a sofa".split()
NUM_IMAGE_TOKENS = 4  # (16 / 8) ** 2 for the model test below
GOOD = {"id": "good", "image": "good.png", "conversations": [
    {"from": "human", "value": "<image>\nWhat is in the image?"}, {"from": "gpt", "value": "Two cats."}]}
TEXT_ONLY = {"id": "text", "conversations": [{"from": "human", "value": "Where?"}, {"from": "gpt", "value": "On a sofa."}]}
PROCESSOR = ImageProcessor(16, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def with_(record, **changes):
    new = json.loads(json.dumps(record))
    new.update(changes)
    return new


def turns(*values):
    return [{"from": role, "value": v} for role, v in zip(("human", "gpt", "human", "gpt"), values)]


# (reason counted in skip mode, the bad record). Every case the dataset must reject at construction.
BAD = {
    "missing id": {"image": "good.png", "conversations": GOOD["conversations"]},
    "empty conversations": with_(GOOD, id="r-empty", conversations=[]),
    "bad turns": with_(GOOD, id="r-roles", conversations=[{"from": "gpt", "value": "<image>\nHi"},
                                                          {"from": "human", "value": "Hello"}]),
    "missing image tag": with_(GOOD, id="r-notag", conversations=turns("What is in the image?", "Two cats.")),
    "image tag without image": with_(TEXT_ONLY, id="r-tagonly", conversations=turns("<image>\nWhere?", "On a sofa.")),
    "missing image": with_(GOOD, id="r-nofile", image="absent.png"),
    "corrupt image": with_(GOOD, id="r-corrupt", image="corrupt.png"),
    "too long": with_(GOOD, id="r-long", conversations=turns("<image>\nWhat is in the image?", "Two cats.",
                                                             "Where?", "On a sofa.")),
}


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(WORDS)


@pytest.fixture
def folder(tmp_path):
    Image.new("RGB", (20, 10), (200, 30, 30)).save(tmp_path / "good.png")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return tmp_path


def max_length_for(tokenizer):
    """Room for GOOD (one round) but not for the two-round "too long" record."""
    return len(tokenize_record(GOOD, tokenizer, get_template("vicuna_v1"), NUM_IMAGE_TOKENS, 4096).input_ids) + 2


def make(tokenizer, folder, records, **kwargs):
    path = folder / "data.json"
    path.write_text(json.dumps(records))
    return SupervisedDataset(path, folder, tokenizer, PROCESSOR, get_template("vicuna_v1"), NUM_IMAGE_TOKENS,
                             max_length_for(tokenizer), **kwargs)


@pytest.mark.parametrize("reason", list(BAD))
def test_bad_record_is_an_error_naming_file_and_record(tokenizer, folder, reason):
    record = BAD[reason]
    with pytest.raises(DataError) as info:
        make(tokenizer, folder, [GOOD, record])
    message = str(info.value)
    assert message.startswith(f"{folder / 'data.json'}: record {record.get('id', '#1')}: "), message
    assert info.value.reason == reason
    if reason in ("missing image", "corrupt image"):
        assert str(folder / record["image"]) in message


@pytest.mark.parametrize("reason", list(BAD))
def test_skip_mode_drops_and_counts_each_reason(tokenizer, folder, reason):
    dataset = make(tokenizer, folder, [GOOD, BAD[reason], TEXT_ONLY], on_bad_record="skip")
    assert [e.id for e in dataset.entries] == ["good", "text"]
    assert dataset.skipped == {reason: 1}


def test_truncated_image_is_caught_at_construction(tokenizer, folder):
    whole = (folder / "good.png").read_bytes()
    (folder / "cut.png").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError, match=rf"record r-cut: image file {folder / 'cut.png'} is corrupt"):
        make(tokenizer, folder, [with_(GOOD, id="r-cut", image="cut.png")])


def test_skip_mode_logs_counts_per_reason(tokenizer, folder, caplog):
    records = [GOOD, BAD["missing image"], with_(BAD["missing image"], id="r-nofile2"), BAD["too long"], TEXT_ONLY]
    with caplog.at_level(logging.WARNING, logger="gamma_mod.data.dataset"):
        dataset = make(tokenizer, folder, records, on_bad_record="skip")
    assert len(dataset) == 2
    assert dataset.skipped == {"missing image": 2, "too long": 1}
    assert "skipped 3 of 5 records: 2 missing image, 1 too long" in caplog.text


def test_truncate_mode_keeps_over_long_samples_cut_and_counted(tokenizer, folder, caplog):
    long = BAD["too long"]
    with caplog.at_level(logging.WARNING, logger="gamma_mod.data.dataset"):
        dataset = make(tokenizer, folder, [GOOD, long, TEXT_ONLY], on_overlong="truncate")
    limit = max_length_for(tokenizer)
    full = tokenize_record(long, tokenizer, get_template("vicuna_v1"), NUM_IMAGE_TOKENS, 4096)
    assert len(full.input_ids) > limit
    assert dataset[1]["input_ids"].tolist() == full.input_ids[:limit]
    assert dataset[1]["labels"].tolist() == full.labels[:limit]
    assert (dataset.truncated, dataset.official_masked, dataset.skipped) == (1, 0, {})
    assert f"truncated 1 of 3 samples to max_length {limit}" in caplog.text


def test_file_level_errors_name_the_file(tokenizer, tmp_path):
    path = tmp_path / "dict.json"
    path.write_text(json.dumps({"id": "x"}))
    with pytest.raises(DataError, match=rf"{path}: expected a JSON list of records, got dict"):
        SupervisedDataset(path, tmp_path, tokenizer, PROCESSOR, get_template("vicuna_v1"), 4, 64)
    with pytest.raises(DataError, match="absent.json: no such data file"):
        SupervisedDataset(tmp_path / "absent.json", tmp_path, tokenizer, PROCESSOR, get_template("vicuna_v1"), 4, 64)
    with pytest.raises(ValueError, match="on_bad_record"):
        SupervisedDataset(path, tmp_path, tokenizer, PROCESSOR, get_template("vicuna_v1"), 4, 64, on_bad_record="drop")
    with pytest.raises(ValueError, match="on_overlong"):
        SupervisedDataset(path, tmp_path, tokenizer, PROCESSOR, get_template("vicuna_v1"), 4, 64, on_overlong="cut")


def test_items_lengths_and_images(tokenizer, folder):
    dataset = make(tokenizer, folder, [GOOD, TEXT_ONLY])
    image_item, text_item = dataset[0], dataset[1]
    expected = tokenize_record(GOOD, tokenizer, get_template("vicuna_v1"), NUM_IMAGE_TOKENS, 4096)
    assert image_item["input_ids"].tolist() == expected.input_ids
    assert image_item["labels"].tolist() == expected.labels
    assert image_item["sample_id"] == "good"
    with Image.open(folder / "good.png") as img:
        assert torch.equal(image_item["pixel_values"], PROCESSOR(img))
    assert "pixel_values" not in text_item
    n_image, n_text = len(image_item["input_ids"]), len(text_item["input_ids"])
    assert dataset.lengths == dataset.length == [n_image, n_text]
    assert dataset.modality_lengths == [n_image, -n_text]


def test_collator_right_pads_by_hand():
    items = [
        {"input_ids": torch.tensor([1, 7, 8]), "labels": torch.tensor([-100, -100, 8]), "sample_id": "a"},
        {"input_ids": torch.tensor([1, 4, 4, 9, 2]), "labels": torch.tensor([-100, -100, -100, 9, 2]),
         "pixel_values": torch.full((3, 2, 2), 1.0), "sample_id": "b"},
        {"input_ids": torch.tensor([1, 4]), "labels": torch.tensor([-100, -100]),
         "pixel_values": torch.full((3, 2, 2), 2.0), "sample_id": "c"},
    ]
    batch = DataCollator(pad_token_id=3)(items)
    assert batch["input_ids"].tolist() == [[1, 7, 8, 3, 3], [1, 4, 4, 9, 2], [1, 4, 3, 3, 3]]
    assert batch["labels"].tolist() == [[-100, -100, 8, -100, -100], [-100, -100, -100, 9, 2],
                                        [-100, -100, -100, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]
    assert batch["pixel_values"].shape == (2, 3, 2, 2)  # only b and c, in batch order
    assert batch["pixel_values"][:, 0, 0, 0].tolist() == [1.0, 2.0]
    assert batch["sample_ids"] == ["a", "b", "c"]
    assert "pixel_values" not in DataCollator(3)(items[:1])


def test_batch_feeds_the_model(tokenizer, folder):
    """The contract with the model: image tokens == images x num_image_tokens, a finite loss."""
    from gamma_mod.model import LlavaLlamaConfig, LlavaLlamaForCausalLM

    config = LlavaLlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
        max_position_embeddings=128, mm_projector_type="linear",
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=16, patch_size=8),
        **model_token_ids(tokenizer))
    assert config.num_image_tokens == NUM_IMAGE_TOKENS
    dataset = make(tokenizer, folder, [TEXT_ONLY, GOOD])
    batch = DataCollator(tokenizer.pad_token_id)([dataset[0], dataset[1]])
    batch.pop("sample_ids")
    torch.manual_seed(0)
    out = LlavaLlamaForCausalLM(config)(**batch)
    assert torch.isfinite(out.loss)
    assert int((batch["input_ids"] == config.image_token_index).sum()) == NUM_IMAGE_TOKENS
