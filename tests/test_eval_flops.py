import pytest

from gamma_mod.eval.flops import decoder_tflops, layer_flops, tflops_from_config

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
    config = tiny_config(mod=dict(mod_layers_idx=[1, 2], capacity_factor=0.5))
    d, f = config.hidden_size, config.intermediate_size
    expected = (2 * layer_flops(100, d, f) + 2 * layer_flops(50, d, f)) / 1e12
    assert tflops_from_config(config, 100) == pytest.approx(expected)


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
