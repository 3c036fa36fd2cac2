"""The LLaVA-style model: HF equivalence, image merging, generate, save/load."""

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

import gamma_mod  # noqa: F401  (registers the Auto classes)
from gamma_mod.model import LlavaLlamaConfig, LlavaLlamaForCausalLM

from conftest import IMAGE_TOKEN, NUM_IMAGE_TOKENS, multimodal_batch, tiny_config


def test_text_path_equals_hf_llama():
    llama_cfg = dict(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    torch.manual_seed(0)
    reference = LlamaForCausalLM(LlamaConfig(**llama_cfg)).eval()
    ours = LlavaLlamaForCausalLM(LlavaLlamaConfig(**llama_cfg)).eval()
    result = ours.load_state_dict(reference.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    ids = torch.randint(3, 64, (2, 17))
    mask = torch.ones_like(ids)
    mask[1, 12:] = 0  # right padding
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=mask).logits
        got = ours(input_ids=ids, attention_mask=mask).logits
    real = mask.bool()
    assert (got[real] - expected[real]).abs().max() < 1e-5


def test_image_features_replace_image_tokens(tiny_model):
    ids, mask, pixels = multimodal_batch()
    embeds = tiny_model.model.embed_inputs(ids, pixels)
    features = tiny_model.model.encode_images(pixels)  # (B, 16, C)
    for b in range(ids.shape[0]):
        positions = (ids[b] == IMAGE_TOKEN).nonzero().squeeze(1)
        assert len(positions) == NUM_IMAGE_TOKENS
        assert torch.allclose(embeds[b, positions], features[b])
        text = (ids[b] != IMAGE_TOKEN).nonzero().squeeze(1)
        assert torch.allclose(embeds[b, text], tiny_model.model.embed_tokens(ids[b, text]))


def test_image_token_count_mismatch_is_an_error(tiny_model):
    ids, mask, pixels = multimodal_batch()
    import pytest

    with pytest.raises(ValueError, match="image tokens"):
        tiny_model(input_ids=ids, attention_mask=mask, pixel_values=pixels[:1])
    with pytest.raises(ValueError, match="no pixel_values"):
        tiny_model(input_ids=ids, attention_mask=mask)


def test_forward_backward_reaches_every_trainable_part(tiny_model):
    tiny_model.train()
    ids, mask, pixels = multimodal_batch()
    labels = ids.masked_fill(ids == IMAGE_TOKEN, -100).masked_fill(mask == 0, -100)
    out = tiny_model(input_ids=ids, attention_mask=mask, pixel_values=pixels, labels=labels)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert tiny_model.model.mm_projector[0].weight.grad.abs().sum() > 0
    assert tiny_model.model.vision_tower.vision_tower.vision_model.embeddings.patch_embedding.weight.grad.abs().sum() > 0
    assert tiny_model.model.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0


def test_generate_with_image_cache_equals_no_cache(tiny_model):
    ids, mask, pixels = multimodal_batch(padding_side="left")
    kwargs = dict(input_ids=ids, attention_mask=mask, pixel_values=pixels, max_new_tokens=6, do_sample=False)
    with_cache = tiny_model.generate(**kwargs)
    without_cache = tiny_model.generate(**kwargs, use_cache=False)
    assert with_cache.shape == (2, ids.shape[1] + 6)
    assert torch.equal(with_cache, without_cache)


def test_batched_generation_equals_single(tiny_model):
    ids, mask, pixels = multimodal_batch(padding_side="left")
    batched = tiny_model.generate(input_ids=ids, attention_mask=mask, pixel_values=pixels, max_new_tokens=5, do_sample=False)
    for b in range(2):
        real = mask[b].bool()
        single = tiny_model.generate(input_ids=ids[b:b + 1, real], pixel_values=pixels[b:b + 1], max_new_tokens=5,
                                     do_sample=False)
        assert torch.equal(single[0, -5:], batched[b, -5:])


def test_save_load_round_trip_identical_logits(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is LlavaLlamaForCausalLM
    ids, mask, pixels = multimodal_batch()
    with torch.no_grad():
        a = tiny_model(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits
        b = loaded(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits
    assert torch.equal(a, b)


def test_config_rejects_bad_projector():
    import pytest

    with pytest.raises(ValueError, match="mm_projector_type"):
        tiny_config(mm_projector_type="qformer")
