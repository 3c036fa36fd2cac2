import os

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

# A model small enough for multi-step training tests (configs/model-style spec dict).
MICRO_SPEC = {
    "text": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                 max_position_embeddings=256),
    "vision": dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                   image_size=32, patch_size=8),
}

IMAGE_TOKEN = 5
NUM_IMAGE_TOKENS = 16  # (32 / 8) ** 2


def tiny_config(**overrides):
    from gamma_mod.model import LlavaLlamaConfig

    kwargs = dict(
        vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256,
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        image_token_index=IMAGE_TOKEN, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    kwargs.update(overrides)
    return LlavaLlamaConfig(**kwargs)


def multimodal_batch(batch=2, question_lengths=(4, 6), system_len=3, seed=0, padding_side="right"):
    """input_ids [bos, system..., image x16, question...] with padding, plus pixel_values."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for b in range(batch):
        q = question_lengths[b % len(question_lengths)]
        system = torch.randint(10, 64, (system_len,), generator=g).tolist()
        question = torch.randint(10, 64, (q,), generator=g).tolist()
        rows.append([1] + system + [IMAGE_TOKEN] * NUM_IMAGE_TOKENS + question)
    width = max(len(r) for r in rows)
    ids = torch.zeros(batch, width, dtype=torch.long)
    mask = torch.zeros(batch, width, dtype=torch.long)
    for b, r in enumerate(rows):
        if padding_side == "right":
            ids[b, : len(r)] = torch.tensor(r)
            mask[b, : len(r)] = 1
        else:
            ids[b, width - len(r):] = torch.tensor(r)
            mask[b, width - len(r):] = 1
    pixels = torch.randn(batch, 3, 32, 32, generator=g)
    return ids, mask, pixels


@pytest.fixture
def tiny_model():
    from gamma_mod.model import LlavaLlamaForCausalLM

    torch.manual_seed(0)
    return LlavaLlamaForCausalLM(tiny_config()).eval()
