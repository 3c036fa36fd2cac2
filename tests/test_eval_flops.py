import pytest
import torch

from gamma_mod.eval.flops import (DecoderShape, decoder_shape, decoder_tflops, layer_flops, per_sample_tflops,
                                  tflops_from_config, tflops_from_layer_tokens)
from gamma_mod.families.specs import build_family_config

from conftest import tiny_config


def test_paper_llava_hr_7b_figures():
    # T=1400, d=4096, d_ff=11008; 4 dense + 28 MoD layers (γ-MoD Table: 19.2 -> 12.6 / 9.3 TFLOPs)
    args = dict(seq_len=1400, hidden=4096, ffn=11008, num_layers=32, mod_layers=list(range(3, 31)))
    assert decoder_tflops(**args, skip=0.0) == pytest.approx(19.2, abs=0.1)
    assert decoder_tflops(**args, skip=0.379) == pytest.approx(12.6, abs=0.1)
    assert decoder_tflops(**args, skip=0.577) == pytest.approx(9.3, abs=0.1)


def test_small_case_by_hand():
    # T=10, d=2, d_ff=3: 8*10*4 + 4*100*2 + 6*10*2*3 = 320 + 800 + 360 = 1480 per dense layer.
    assert layer_flops(10, 2, 3) == 1480
    # One MoD layer skipping half: T=5 -> 8*5*4 + 4*25*2 + 6*5*2*3 = 160 + 200 + 180 = 540.
    assert decoder_tflops(10, 2, 3, num_layers=2, mod_layers=[1], skip=0.5) * 1e12 == pytest.approx(1480 + 540)


def test_from_config_uses_configured_ratio():
    # The tiny fork config has GQA (4 heads, 2 K/V heads of 16): d=64, d_q=64, d_kv=32, d_ff=128.
    # Before issue #14 K/V were counted at full width (8·T·d²); now 4·T·d·d_q + 4·T·d·d_kv.
    config = tiny_config(mod=dict(mod_layers_idx=[1, 2], capacity_factor=0.5))
    # T=100: 4·100·64·64 + 4·100·64·32 + 4·100²·64 + 6·100·64·128 = 1638400 + 819200 + 2560000 + 4915200
    # T=50:  4·50·64·64 + 4·50·64·32 + 4·50²·64 + 6·50·64·128 = 819200 + 409600 + 640000 + 2457600
    expected = 2 * 9_932_800 + 2 * 4_326_400
    assert tflops_from_config(config, 100) * 1e12 == pytest.approx(expected)


def test_layer_count_and_per_layer_skips_match_explicit_indices():
    # Only token counts matter: 28 MoD layers given as a count == given as indices 3..30.
    explicit = decoder_tflops(1400, 4096, 11008, 32, list(range(3, 31)), 0.5)
    assert decoder_tflops(1400, 4096, 11008, 32, 28, 0.5) == pytest.approx(explicit)
    # Per-layer skips: T=10, d=2, d_ff=3; layer 0 dense (1480), layer 1 skips 0.5 (540),
    # layer 2 skips 0.8 -> T=int(10·0.2)=2: 8·2·4 + 4·4·2 + 6·2·2·3 = 64 + 32 + 72 = 168.
    assert decoder_tflops(10, 2, 3, 3, [1, 2], {1: 0.5, 2: 0.8}) * 1e12 == pytest.approx(1480 + 540 + 168)


def test_bad_arguments():
    with pytest.raises(ValueError, match="outside"):
        decoder_tflops(10, 2, 3, 2, [2], 0.5)
    with pytest.raises(ValueError, match="skip"):
        decoder_tflops(10, 2, 3, 2, [1], 1.5)


# -- GQA and the model families (issue #14 item 5) ---------------------------------------------------------------

def test_gqa_layer_by_hand():
    # T=10, d=8, d_q=8 (2 heads of 4), d_kv=4 (1 K/V head of 4), d_ff=12:
    #   Q+O 4·10·8·8 = 2560, K+V 4·10·8·4 = 1280, attention 4·100·8 = 3200, MLP 6·10·8·12 = 5760.
    assert layer_flops(10, 8, 12, q_dim=8, kv_dim=4) == 2560 + 1280 + 3200 + 5760
    # Full-width K/V is the paper's formula: 8·10·64 + 4·100·8 + 6·10·8·12 = 5120 + 3200 + 5760.
    assert layer_flops(10, 8, 12, q_dim=8, kv_dim=8) == layer_flops(10, 8, 12) == 14080
    # head_dim·heads != hidden (d_q=16 on d=8): Q+O 4·10·8·16 = 5120, K+V 4·10·8·4 = 1280, attention 4·100·16.
    assert layer_flops(10, 8, 12, q_dim=16, kv_dim=4) == 5120 + 1280 + 6400 + 5760
    # The GQA width reaches every entry point.
    one = layer_flops(10, 8, 12, q_dim=8, kv_dim=4)
    assert decoder_tflops(10, 8, 12, 2, [], 0.0, q_dim=8, kv_dim=4) * 1e12 == pytest.approx(2 * one)
    assert tflops_from_layer_tokens([10, 10], 8, 12, q_dim=8, kv_dim=4) * 1e12 == pytest.approx(2 * one)
    assert per_sample_tflops(torch.tensor([[10, 10]]), 8, 12, q_dim=8, kv_dim=4).item() * 1e12 == pytest.approx(2 * one)


# Hand-read from the tiny twins' YAML (gamma_mod/configs/model/*_tiny.yaml): every one has d=64, d_ff=128,
# 4 layers, 4 query heads and 2 K/V heads of 16 (Qwen3-VL: head_dim 16 given explicitly).
TINY_SHAPES = {name: DecoderShape(hidden=64, ffn=128, num_layers=4, q_dim=64, kv_dim=32)
               for name in ("llava_hf_tiny", "llava_onevision_tiny", "qwen2_5_vl_tiny", "qwen3_vl_tiny")}


@pytest.mark.parametrize("name", sorted(TINY_SHAPES))
def test_tiny_twins_shape_and_tflops(name):
    config = build_family_config(name)
    assert decoder_shape(config) == TINY_SHAPES[name]
    # T=100 per layer: Q+O 4·100·64·64 = 1638400, K+V 4·100·64·32 = 819200, attention 4·100²·64 = 2560000,
    # MLP 6·100·64·128 = 4915200 -> 9932800; 4 dense layers (a plain HF model has no MoD layers).
    assert tflops_from_config(config, 100) * 1e12 == pytest.approx(4 * 9_932_800)
    assert tflops_from_config(config, 100, skip=0.5) * 1e12 == pytest.approx(4 * 9_932_800)  # still no MoD layers
    # Two MoD layers skipping half, T=50: 819200 + 409600 + 640000 + 2457600 = 4326400.
    shape = decoder_shape(config)
    assert decoder_tflops(100, shape.hidden, shape.ffn, shape.num_layers, [2, 3], 0.5, q_dim=shape.q_dim,
                          kv_dim=shape.kv_dim) * 1e12 == pytest.approx(2 * 9_932_800 + 2 * 4_326_400)


def test_real_size_family_shapes():
    # From the published config.json values (gamma_mod/configs/model/*.yaml): d, d_ff, layers, d_q, d_kv.
    expected = {
        "llava_hf_7b": DecoderShape(4096, 11008, 32, 4096, 4096),               # 32 heads, MHA
        "llava_onevision_qwen2_7b": DecoderShape(3584, 18944, 28, 3584, 512),   # 28 / 4 heads of 128
        "qwen2_5_vl_7b": DecoderShape(3584, 18944, 28, 3584, 512),              # 28 / 4 heads of 128
        "qwen3_vl_8b": DecoderShape(4096, 12288, 36, 4096, 1024),               # 32 / 8 heads of 128
    }
    for name, shape in expected.items():
        assert decoder_shape(build_family_config(name)) == shape, name
    # Qwen2.5-VL-7B at T=1000, one layer: Q+O 4·1000·3584·3584, K+V 4·1000·3584·512, attention 4·1000²·3584,
    # MLP 6·1000·3584·18944 = 51380224000 + 7340032000 + 14336000000 + 407371776000 = 480428032000.
    assert tflops_from_config(build_family_config("qwen2_5_vl_7b"), 1000) == pytest.approx(28 * 0.480428032)


def test_fork_config_shape_is_its_own():
    # Our LLaVA-fork config is its own text config: 4 heads, 2 K/V heads of 16 (tests/conftest.py tiny_config).
    assert decoder_shape(tiny_config()) == DecoderShape(hidden=64, ffn=128, num_layers=4, q_dim=64, kv_dim=32)
