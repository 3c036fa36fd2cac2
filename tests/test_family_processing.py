"""HFFamilyProcessor on tiny processor folders against the plain HF models of each family (tiny, random init).

What is pinned: the image/video token counts the processor writes are the counts the model's own forward checks
(a mismatch raises inside transformers); the label mask of a short conversation written out by hand per family
(from each family's official fine-tuning rule, see gamma_mod/families/processing.py); a left-padded batch gives
the same logits as one sample at a time.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import (
    AutoProcessor,
    AutoTokenizer,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2Config,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
    SiglipVisionConfig,
)

from gamma_mod.errors import DataError
from gamma_mod.families.processing import (
    FAMILY_NAMES,
    IGNORE_INDEX,
    TINY_TOKEN_IDS,
    HFFamilyProcessor,
    build_tiny_processor,
)

VOCAB = 512
TEXT = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2)


def tiny_config(family: str):
    if family == "llava_hf":
        return LlavaConfig(
            vision_config=CLIPVisionConfig(image_size=32, patch_size=8, hidden_size=16, intermediate_size=32,
                                           num_hidden_layers=1, num_attention_heads=2),
            text_config=LlamaConfig(**TEXT, pad_token_id=3, bos_token_id=1, eos_token_id=2),
            image_token_index=510, vision_feature_layer=-1, vision_feature_select_strategy="default")
    if family == "llava_onevision":
        return LlavaOnevisionConfig(
            vision_config=SiglipVisionConfig(image_size=32, patch_size=8, hidden_size=16, intermediate_size=32,
                                             num_hidden_layers=1, num_attention_heads=2),
            text_config=Qwen2Config(**TEXT, pad_token_id=0, eos_token_id=2),
            image_token_index=510, video_token_index=511, vision_feature_layer=-1,
            vision_feature_select_strategy="full", image_grid_pinpoints=[[32, 32], [32, 64], [64, 32], [64, 64]])
    special = dict(image_token_id=510, video_token_id=511, vision_start_token_id=508, vision_end_token_id=509)
    if family == "qwen2_5_vl":
        return Qwen2_5_VLConfig(
            text_config=dict(**TEXT, pad_token_id=0, eos_token_id=2,
                             rope_parameters={"rope_type": "default", "mrope_section": [2, 1, 1]}),
            vision_config=dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=32,
                               patch_size=8, spatial_merge_size=2, temporal_patch_size=2, window_size=16,
                               fullatt_block_indexes=[0]),
            **special)
    return Qwen3VLConfig(
        text_config=dict(**TEXT, head_dim=8, pad_token_id=0, eos_token_id=2,
                         rope_parameters={"rope_type": "default", "mrope_section": [2, 1, 1],
                                          "mrope_interleaved": True}),
        vision_config=dict(depth=2, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=32,
                           patch_size=8, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=16,
                           deepstack_visual_indexes=[0]),
        **special)


MODEL_CLASSES = {"llava_hf": LlavaForConditionalGeneration,
                 "llava_onevision": LlavaOnevisionForConditionalGeneration,
                 "qwen2_5_vl": Qwen2_5_VLForConditionalGeneration, "qwen3_vl": Qwen3VLForConditionalGeneration}
VIDEO_FAMILIES = ("llava_onevision", "qwen2_5_vl", "qwen3_vl")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_processors")
    return {family: build_tiny_processor(family, root / family) for family in FAMILY_NAMES}


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    out = {}
    for family, cls in MODEL_CLASSES.items():
        model = cls(tiny_config(family)).eval()
        model.config._attn_implementation = "eager"
        out[family] = model
    return out


def rng_image(h, w, seed):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def rng_video(t, h, w, seed):
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def record(rid, image=None, video=None, question="What color is the shape?", answer="red"):
    tags = ("<image>\n" if image is not None else "") + ("<video>\n" if video is not None else "")
    rec = {"id": rid, "conversations": [{"from": "human", "value": tags + question}, {"from": "gpt", "value": answer}]}
    if image is not None:
        rec["image"] = image
    if video is not None:
        rec["video"] = video
    return rec


# ------------------------------------------------------------------------------------------------- tiny folders
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_tiny_folder_loads_offline_with_fixed_ids(folders, family):
    tok = AutoTokenizer.from_pretrained(folders[family])
    assert len(tok) == VOCAB
    for token, token_id in TINY_TOKEN_IDS[family].items():
        assert tok.convert_tokens_to_ids(token) == token_id
    proc = HFFamilyProcessor.from_pretrained(folders[family])
    assert proc.family == family and proc.image_token_id == 510
    assert proc.video_token_id == (511 if family in VIDEO_FAMILIES else None)
    if family == "llava_hf":  # the others need torchvision for AutoProcessor in transformers 5.24
        auto = AutoProcessor.from_pretrained(folders[family])
        assert type(auto).__name__ == "LlavaProcessor"
        assert auto.tokenizer.convert_tokens_to_ids("<image>") == 510


# --------------------------------------------------------------------------------------------------- label masks
# The tokens of one conversation, "What color is the shape?" -> "red", with each family's supervised tokens (the
# answer + end of turn) marked; everything else must be IGNORE_INDEX. Image tokens left out of the listing.
EXPECTED_SUPERVISED = {
    # LLaVA-1.5 preprocess_v1: " red</s>" after "ASSISTANT:"
    "llava_hf": " red</s>",
    # qwen-vl-finetune preprocess_qwen_visual: answer, <|im_end|> and the "\n" after it
    "qwen2_5_vl": "red<|im_end|>\n",
    "qwen3_vl": "red<|im_end|>\n",
    "llava_onevision": "red<|im_end|>\n",
}
EXPECTED_TEXT = {
    "llava_hf": "<s>USER: {img}\nWhat color is the shape? ASSISTANT: red</s>",
    "qwen2_5_vl": "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                  "<|vision_start|>{img}<|vision_end|>What color is the shape?<|im_end|>\n"
                  "<|im_start|>assistant\nred<|im_end|>\n",
    "qwen3_vl": "<|im_start|>user\n<|vision_start|>{img}<|vision_end|>What color is the shape?<|im_end|>\n"
                "<|im_start|>assistant\nred<|im_end|>\n",
    "llava_onevision": "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                       "{img}\nWhat color is the shape?<|im_end|>\n<|im_start|>assistant\nred<|im_end|>\n",
}


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_label_mask_of_one_conversation(folders, family):
    proc = HFFamilyProcessor.from_pretrained(folders[family])
    feats = proc.encode_conversation(record("c1", image=rng_image(32, 32, 1)))
    ids, labels = feats["input_ids"].tolist(), feats["labels"].tolist()
    n_img = ids.count(510)
    assert proc.tokenizer.decode(ids) == EXPECTED_TEXT[family].format(img=proc.image_token * n_img)
    supervised = [i for i, label in zip(ids, labels) if label != IGNORE_INDEX]
    assert [label for label in labels if label != IGNORE_INDEX] == supervised  # labels are the tokens themselves
    assert proc.tokenizer.decode(supervised) == EXPECTED_SUPERVISED[family]
    # the supervised tokens are exactly the trailing ones: everything before the answer is masked
    k = len(supervised)
    assert labels[-k:] == ids[-k:] and all(label == IGNORE_INDEX for label in labels[:-k])


def test_two_answers_each_supervised_qwen(folders):
    proc = HFFamilyProcessor.from_pretrained(folders["qwen2_5_vl"])
    rec = {"id": "m", "conversations": [
        {"from": "human", "value": "Is there a circle?"}, {"from": "gpt", "value": "yes"},
        {"from": "human", "value": "How many shapes appear?"}, {"from": "gpt", "value": "two"}]}
    feats = proc.encode_conversation(rec)
    ids, labels = feats["input_ids"].tolist(), feats["labels"].tolist()
    runs, current = [], []
    for i, label in zip(ids, labels):
        if label != IGNORE_INDEX:
            current.append(i)
        elif current:
            runs.append(current)
            current = []
    runs.append(current)
    assert [proc.tokenizer.decode(r) for r in runs if r] == ["yes<|im_end|>\n", "two<|im_end|>\n"]


# ------------------------------------------------------------------------------------- counts = the model's forward
def forward(model, batch):
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        return model(**inputs).logits


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_image_tokens_match_the_model_and_batching_equals_one_at_a_time(folders, models, family):
    proc = HFFamilyProcessor.for_model(models[family], folders[family])
    model = models[family]
    # two different sizes: dynamic resolution (Qwen grids differ; OneVision anyres patch counts differ)
    feats = [proc.encode_conversation(record("a", image=rng_image(32, 48, 2))),
             proc.encode_conversation(record("b", image=rng_image(64, 32, 3), question="Is there a circle?",
                                             answer="no"))]
    counts = [int((f["input_ids"] == 510).sum()) for f in feats]
    if family == "qwen2_5_vl" or family == "qwen3_vl":
        grids = [f["image_grid_thw"][0] for f in feats]
        assert counts == [int(g.prod()) // 4 for g in grids] and grids[0].tolist() != grids[1].tolist()
    elif family == "llava_hf":
        assert counts == [16, 16]  # (32 / 8) ** 2 patches (CLS dropped by the "default" strategy)
    batch = proc.collate(feats, padding_side="left")
    batched = forward(model, batch)  # transformers checks #image tokens == #image features
    for row, f in enumerate(feats):
        single = forward(model, proc.collate([f], padding_side="left"))
        n = len(f["input_ids"])
        torch.testing.assert_close(batched[row, -n:], single[0], atol=1e-5, rtol=1e-4)
    right = proc.collate(feats, padding_side="right")
    assert right["labels"].shape == batch["labels"].shape
    assert (right["labels"] != IGNORE_INDEX).sum() == (batch["labels"] != IGNORE_INDEX).sum()


@pytest.mark.parametrize("family", VIDEO_FAMILIES)
def test_video_tokens_match_the_model(folders, models, family):
    proc = HFFamilyProcessor.for_model(models[family], folders[family])
    video = rng_video(4, 32, 32, 4)
    feats = [proc.encode_conversation(record("v", video=video, question="Which way does the red square move?",
                                             answer="left")),
             proc.encode_conversation(record("w", video=rng_video(4, 32, 32, 5), question="How many shapes appear?",
                                             answer="two"))]
    n_video = int((feats[0]["input_ids"] == 511).sum())
    if family == "llava_onevision":
        assert feats[0]["pixel_values_videos"].shape == (1, 4, 3, 32, 32)
        assert n_video == 4 * 2 * 2 + 1  # frames * pooled (ceil(4 / 2))**2 + newline
    else:
        grid = feats[0]["video_grid_thw"][0].tolist()
        assert grid == [2, 4, 4]  # 4 frames / temporal patch 2; 32 / patch 8
        assert n_video == 2 * 4 * 4 // 4
        assert (feats[0]["mm_token_type_ids"] == 2).sum() == n_video
    batch = proc.collate(feats, padding_side="left")
    batched = forward(models[family], batch)
    single = forward(models[family], proc.collate([feats[0]], padding_side="left"))
    n = len(feats[0]["input_ids"])
    torch.testing.assert_close(batched[0, -n:], single[0], atol=1e-5, rtol=1e-4)


def test_qwen3_video_placeholder_has_per_frame_timestamps(folders):
    proc = HFFamilyProcessor.from_pretrained(folders["qwen3_vl"])
    feats = proc.encode_conversation({**record("t", video=rng_video(4, 32, 32, 6)), "fps": 2.0})
    text = proc.tokenizer.decode(feats["input_ids"])
    block = "<|vision_start|>" + "<|video_pad|>" * 4 + "<|vision_end|>"
    # frames 0,1 -> (0 + 0.5) / 2 = 0.25 s; frames 2,3 -> 1.25 s
    assert f"<|im_start|>user\n<0.2 seconds>{block}<1.2 seconds>{block}" in text


def test_video_patches_match_transformers_layout(folders):
    """Our numpy patchify equals transformers' Qwen2VLVideoProcessor.patchify layout, rebuilt here by hand from
    its view/permute: patch k of temporal group t = frames [2t, 2t+1] at merge-window-major spatial order."""
    proc = HFFamilyProcessor.from_pretrained(folders["qwen2_5_vl"])
    video = rng_video(3, 32, 32, 7)  # 3 frames: padded to 4 by repeating the last one
    feats = proc.encode_conversation(record("p", video=video))
    patches, grid = feats["pixel_values_videos"], feats["video_grid_thw"][0].tolist()
    assert grid == [2, 4, 4] and patches.shape == (2 * 16, 3 * 2 * 8 * 8)
    mean = torch.tensor(proc.image_processor.image_mean).view(3, 1, 1)
    std = torch.tensor(proc.image_processor.image_std).view(3, 1, 1)
    frames = (torch.from_numpy(video).permute(0, 3, 1, 2).float() / 255 - mean) / std  # 32x32 needs no resize
    frames = torch.cat([frames, frames[-1:]])
    # temporal group 1, merge window (row 1, col 0), inner (0, 1): rows 16..23, cols 8..15 of frames 2, 3
    k = 1 * 16 + (1 * 2 + 0) * 4 + (0 * 2 + 1)
    expected = frames[2:4, :, 16:24, 8:16].permute(1, 0, 2, 3).reshape(-1)
    torch.testing.assert_close(patches[k], expected, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------ prompts, decode, errors
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_encode_prompt_opens_the_assistant_turn(folders, models, family):
    proc = HFFamilyProcessor.for_model(models[family], folders[family])
    feats = proc.encode_prompt("What color is the shape?", image=rng_image(32, 32, 8))
    assert "labels" not in feats
    text = proc.tokenizer.decode(feats["input_ids"])
    assert text.endswith("ASSISTANT:" if family == "llava_hf" else "<|im_start|>assistant\n")
    batch = proc.collate([feats], padding_side="left")
    out = models[family].generate(**batch, max_new_tokens=3, do_sample=False)
    assert isinstance(proc.decode(out[0, batch["input_ids"].shape[1]:]), str)
    assert proc.decode(proc.tokenizer("red", add_special_tokens=False)["input_ids"]) == "red"


def test_errors_name_the_record(folders, tmp_path):
    proc = HFFamilyProcessor.from_pretrained(folders["qwen2_5_vl"])
    with pytest.raises(DataError, match="record r9: 1 <image> tag"):
        proc.encode_conversation(record("r9", image=None, question="<image>\nWhat?"))
    with pytest.raises(DataError, match="record r8: image not found"):
        proc.encode_conversation(record("r8", image="missing.png"), media_root=tmp_path)
    with pytest.raises(DataError, match="record r7: turn 1"):
        proc.encode_conversation({"id": "r7", "conversations": [{"from": "human", "value": "a"},
                                                                {"from": "human", "value": "b"}]})
    llava = HFFamilyProcessor.from_pretrained(folders["llava_hf"])
    with pytest.raises(DataError, match="record r6: .*no video input"):
        llava.encode_conversation(record("r6", video=rng_video(2, 32, 32, 0)))


def test_for_model_rejects_mismatched_token_ids(folders):
    config = tiny_config("qwen2_5_vl")
    config.image_token_id = 400
    with pytest.raises(ValueError, match="image token id is 510 but the model config says 400"):
        HFFamilyProcessor.for_model(config, folders["qwen2_5_vl"])
