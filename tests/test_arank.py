"""ARank: rank of hand-built attention maps, hook capture against eager attention, padding, layer selection, CLIs."""

import copy
import doctest
import json

import pytest
import torch

from gamma_mod.arank import select as select_module
from gamma_mod.arank.analyze import ARankResult, compute_arank, plot_arank, sample_aranks
from gamma_mod.arank.capture import capture_attention
from gamma_mod.arank.rank import attention_rank, sample_arank
from gamma_mod.arank.select import select_mod_layers

IMAGE = 5
N_IMAGE_TOKENS = 4  # (16 / 8) ** 2


def config(**overrides):
    from gamma_mod.model import LlavaLlamaConfig

    kwargs = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=2,
                  vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                     image_size=16, patch_size=8),
                  image_token_index=IMAGE, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    kwargs.update(overrides)
    return LlavaLlamaConfig(**kwargs)


def model(**overrides):
    from gamma_mod.model import LlavaLlamaForCausalLM

    torch.manual_seed(0)
    return LlavaLlamaForCausalLM(config(**overrides)).eval()


# Two samples: A with an image (bos, image x4, 5 words = 10 tokens), B text only (7 tokens).
ROW_A = [1, *[IMAGE] * N_IMAGE_TOKENS, 11, 23, 37, 41, 52]
ROW_B = [1, 12, 19, 33, 47, 58, 60]
PIXELS_A = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def batch_of(rows, padding_side="right", pixels=PIXELS_A):
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for b, r in enumerate(rows):
        span = slice(0, len(r)) if padding_side == "right" else slice(width - len(r), width)
        ids[b, span] = torch.tensor(r)
        mask[b, span] = 1
    out = {"input_ids": ids, "attention_mask": mask}
    if any(IMAGE in r for r in rows):
        out["pixel_values"] = pixels
    return out


# -- rank of hand-built maps -------------------------------------------------------------------

def map_of_rank(r: int, t: int, diag: float = 0.5) -> torch.Tensor:
    """Causal probabilities whose off-diagonal part has rank exactly r (needs t >= 2r).

    Row 0 reads only itself (zero after diagonal removal); rows 1..r-1 put 1 - diag on token 0;
    row i >= r puts 1 - diag on token i mod r (< i, so causal). The off-diagonal rows are multiples
    of e_0..e_{r-1}, each of which occurs once t >= 2r: rank r.
    """
    a = torch.zeros(t, t)
    a[0, 0] = 1.0
    for i in range(1, t):
        a[i, i] = diag
        a[i, 0 if i < r else i % r] = 1 - diag
    return a


def test_constructed_maps_have_their_rank():
    maps = torch.stack([map_of_rank(r, 10) for r in (1, 2, 3, 5)])  # (H=4, 10, 10)
    assert torch.allclose(maps.sum(-1), torch.ones(4, 10)) and torch.equal(maps, maps.tril())
    # With its diagonal the map is full rank, which is why ARank removes it.
    assert torch.linalg.matrix_rank(maps).tolist() == [10] * 4
    assert attention_rank(maps).tolist() == [1.0, 2.0, 3.0, 5.0]
    assert sample_arank(maps) == pytest.approx((1 + 2 + 3 + 5) / 4)
    assert attention_rank(maps.to(torch.bfloat16)).tolist() == [1.0, 2.0, 3.0, 5.0]  # ranked in fp32


def test_uniform_causal_attention_is_rank_t_minus_1_not_1():
    # Row i = 1/(i+1) on tokens 0..i. Without the diagonal, row 0 is zero and row i (i >= 1) is
    # 1/(i+1) times the indicator of 0..i-1: prefix indicators of lengths 1..T-1 form a triangular,
    # hence independent, set -> rank T-1. (Uniform attention WITHOUT the causal mask, ones/T, is the rank-1 case.)
    t = 7
    uniform = torch.tril(torch.ones(t, t)) / torch.arange(1, t + 1).unsqueeze(1)
    assert attention_rank(uniform.unsqueeze(0)).tolist() == [t - 1]
    # The low-rank case is every token reading the same token: an attention sink at token 0.
    sink = torch.zeros(t, t)
    sink[:, 0] = 0.9
    sink += 0.1 * torch.eye(t)
    sink[0, 0] = 1.0
    assert attention_rank(sink.unsqueeze(0)).tolist() == [1]


def test_tolerance_is_relative_and_drops_faint_patterns():
    # Sink map (rows 1..7 = 0.5 e_0 off the diagonal) with row 2 moving eps of its weight to token 1.
    # Off-diagonal rows: six times 0.5 e_0 and once (0.5 - eps) e_0 + eps e_1. On span(e_0, e_1) the Gram
    # matrix has det = 6 * 0.25 * eps^2 and trace ~ 1.75, so eps * sqrt(1.5 / 1.75) <= s2 <= sqrt(2) * eps,
    # s1 ~ 1.32. eps = 1e-4: s2 ~ 1e-4 is far above torch's default 8 * 1.2e-7 * s1 ~ 1.3e-6 (rank 2)
    # and far below tol * s1 = 1.3e-2 for tol = 1e-2 (rank 1).
    eps = 1e-4
    a = map_of_rank(1, 8)
    a[2, 0] -= eps
    a[2, 1] += eps
    s = torch.linalg.svdvals(a - torch.diag(a.diagonal()))
    assert 0.9 * eps < s[1] < 1.5 * eps
    assert attention_rank(a.unsqueeze(0)).tolist() == [2]
    assert attention_rank(a.unsqueeze(0), tol=1e-2).tolist() == [1]
    assert attention_rank(a.unsqueeze(0), tol=0.0).tolist() == [2]
    with pytest.raises(ValueError, match="tol"):
        attention_rank(a.unsqueeze(0), tol=-1.0)
    with pytest.raises(ValueError, match="heads, T, T"):
        attention_rank(a)


# -- capture on a model ------------------------------------------------------------------------

def eager_weights(m, inputs) -> dict[int, torch.Tensor]:
    """Reference: the probabilities eager attention itself computes, (B, H, T, T) per layer."""
    ref = copy.deepcopy(m)
    ref.set_attn_implementation("eager")
    out, handles = {}, []
    for i, layer in enumerate(ref.model.layers):
        handles.append(layer.self_attn.register_forward_hook(lambda mod, a, o, i=i: out.__setitem__(i, o[1])))
    with torch.no_grad():
        ref(**inputs)
    for h in handles:
        h.remove()
    return out


def captured(m, inputs) -> dict[tuple[int, int], torch.Tensor]:
    maps = {}
    with torch.no_grad(), capture_attention(m, lambda layer, b, probs: maps.__setitem__((layer, b), probs.clone())):
        m(**inputs)
    return maps


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_capture_equals_eager_attention_probabilities(padding_side):
    m = model(num_key_value_heads=1)  # grouped-query attention: one k shared by both heads
    assert m.config._attn_implementation == "sdpa"
    inputs = batch_of([ROW_A, ROW_B], padding_side)
    maps, ref = captured(m, inputs), eager_weights(m, inputs)
    for (layer, b), probs in maps.items():
        row = inputs["attention_mask"][b].bool()
        expected = ref[layer][b][:, row][:, :, row]  # real queries x real keys
        assert probs.shape == (2, int(row.sum()), int(row.sum())) and probs.dtype == torch.float32
        assert torch.allclose(probs, expected, atol=1e-5), (layer, b)
    assert len(maps) == 4 * 2


def test_capture_leaves_the_forward_unchanged_and_removes_its_hooks():
    m = model()
    inputs = batch_of([ROW_A, ROW_B])
    with torch.no_grad():
        before = m(**inputs).logits
        with capture_attention(m, lambda *a: None):
            during = m(**inputs).logits
        after = m(**inputs).logits
    assert torch.equal(before, during) and torch.equal(before, after)

    def failing_sink(*a):
        raise RuntimeError("sink failed")

    with pytest.raises(RuntimeError, match="sink failed"), torch.no_grad(), capture_attention(m, failing_sink):
        m(**inputs)
    assert not m.model._forward_pre_hooks
    assert all(not layer.self_attn._forward_pre_hooks for layer in m.model.layers)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_uniform_layer_gives_length_minus_one_per_sample(dtype):
    # q_proj = 0 in layer 1: every score is 0, attention is uniform over the prefix -> rank T_b - 1
    # for every head (see the uniform test above); samples of 10 and 7 tokens -> 9 and 6. In bf16 too:
    # the images are cast to the model's dtype and the map is formed in fp32.
    m = model().to(dtype)
    with torch.no_grad():
        m.model.layers[1].self_attn.q_proj.weight.zero_()
    result = compute_arank(m, [batch_of([ROW_A, ROW_B])], num_samples=2, progress=False)
    assert result.mean[1] == pytest.approx(7.5)
    assert result.std[1] == pytest.approx(torch.tensor([9.0, 6.0]).std().item())  # sqrt(4.5), Bessel
    assert result.num_samples == 2 and len(result.mean) == 4


def test_identical_heads_give_the_single_heads_rank():
    m = model()
    attn = m.model.layers[2].self_attn
    d = attn.head_dim
    with torch.no_grad():  # head 1's query and key rows := head 0's -> identical attention maps
        attn.q_proj.weight[d:] = attn.q_proj.weight[:d]
        attn.k_proj.weight[d:] = attn.k_proj.weight[:d]
    inputs = batch_of([ROW_A, ROW_B])
    ranks = sample_aranks(m, inputs)  # (2, 4)
    ref = eager_weights(m, inputs)[2]
    for b in range(2):
        row = inputs["attention_mask"][b].bool()
        head0 = attention_rank(ref[b, :1][:, row][:, :, row]).item()
        assert ranks[b, 2].item() == head0  # the mean of two equal integers: no fractional part


def test_padded_batch_gives_each_samples_own_ranks():
    m = model()
    alone = torch.cat([sample_aranks(m, batch_of([ROW_A])), sample_aranks(m, batch_of([ROW_B]))])
    maps_alone = {**{(l, 0): p for (l, _), p in captured(m, batch_of([ROW_A])).items()},
                  **{(l, 1): p for (l, _), p in captured(m, batch_of([ROW_B])).items()}}
    for side in ("right", "left"):
        inputs = batch_of([ROW_A, ROW_B], side)
        assert torch.equal(sample_aranks(m, inputs), alone), side
        for key, probs in captured(m, inputs).items():
            assert torch.allclose(probs, maps_alone[key], atol=1e-5), (side, key)


def test_compute_arank_stops_at_num_samples_and_routes_images():
    m = model()
    batches = [batch_of([ROW_A, ROW_B]), batch_of([ROW_B, ROW_A])]  # second batch: only B is taken
    result = compute_arank(m, batches, num_samples=3, progress=False)
    rows = torch.cat([sample_aranks(m, batch_of([ROW_A, ROW_B])), sample_aranks(m, batch_of([ROW_B]))]).double()
    assert result.num_samples == 3
    assert result.mean == pytest.approx(rows.mean(0).tolist())
    assert result.std == pytest.approx(rows.std(0).tolist())
    assert m.training is False
    with pytest.raises(ValueError, match="no samples"):
        compute_arank(m, [], num_samples=2, progress=False)


def test_mod_model_is_refused():
    from gamma_mod.mod.convert import convert_to_mod

    m = convert_to_mod(model(), [1, 2], skip_ratio=0.5)
    with pytest.raises(ValueError, match="dense"), capture_attention(m, lambda *a: None):
        pass


def test_result_json_roundtrip_and_plot(tmp_path):
    result = ARankResult(mean=[3.0, 1.5], std=[0.5, 0.0], num_samples=2, tol=1e-3)
    result.save_json(tmp_path / "a.json")
    assert ARankResult.load_json(tmp_path / "a.json") == result
    (tmp_path / "bad.json").write_text(json.dumps({"mean": [1.0]}))
    with pytest.raises(ValueError, match="not an ARank result"):
        ARankResult.load_json(tmp_path / "bad.json")
    plot_arank(result, tmp_path / "a.png", mod_layers=[1])
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"


# -- layer selection ---------------------------------------------------------------------------

def test_selection_docstring_examples():
    assert doctest.testmod(select_module, verbose=False).failed == 0


def test_selection_paper_rule_on_32_layers():
    # Vicuna-7B-like profile: layers 1 and 2 have the highest ARank; 0 and 31 are forced dense and
    # count toward k_dense=4 -> dense {0, 1, 2, 31}, 28 MoD layers (the paper's count).
    arank = [20.0, 30.0, 29.0] + [10.0 + (i % 5) for i in range(28)] + [5.0]
    chosen = select_mod_layers(arank, k_dense=4)
    assert chosen == list(range(3, 31)) and len(chosen) == 28
    # Last layer allowed: only 0 is forced, 3 slots go to the highest ARank: 1 (30), 2 (29) and the first
    # of the 14.0 ties (layer 7 = 3 + 4); the last layer (5.0) becomes MoD.
    assert select_mod_layers(arank, k_dense=4, keep_first_last_dense=False) == [i for i in range(3, 32) if i != 7]


def test_selection_fraction_explicit_and_errors():
    arank = [9.0, 3.0, 8.0, 2.0, 1.0, 7.0]
    assert select_mod_layers(arank, "fraction", fraction=1.0) == [1, 2, 3, 4]  # capped by the allowed layers
    assert select_mod_layers(arank, "fraction", fraction=0.5, keep_first_last_dense=False) == [1, 3, 4]
    assert select_mod_layers(arank, "fraction", fraction=0.34) == [3, 4]  # round(2.04) = 2 lowest
    assert select_mod_layers(arank, k_dense=0) == [1, 2, 3, 4]  # forced layers stay dense anyway
    assert select_mod_layers(arank, "explicit", layers=[5, 1], keep_first_last_dense=False) == [1, 5]
    for kwargs, message in [
        (dict(selection="explicit", layers=[0, 1]), "layer 0"),
        (dict(selection="explicit", layers=[5]), "last layer"),
        (dict(selection="explicit", layers=[6]), "out of range"),
        (dict(selection="explicit"), "needs `layers`"),
        (dict(selection="fraction"), "fraction"),
        (dict(k_dense=7), "k_dense"),
        (dict(selection="lowest"), "unknown layer selection"),
    ]:
        with pytest.raises(ValueError, match=message):
            select_mod_layers(arank, **kwargs)


# -- command line ------------------------------------------------------------------------------

WORDS = "what is in the image ? two cats . where on a sofa".split()


@pytest.fixture
def model_folder(tmp_path):
    """A saved tiny dense model with our word-level tokenizer, plus a 3-record dataset with one image."""
    from PIL import Image

    from gamma_mod.data.tokenizer import build_tokenizer, model_token_ids
    from gamma_mod.model import LlavaLlamaForCausalLM

    tokenizer = build_tokenizer(WORDS)
    ids = model_token_ids(tokenizer)
    torch.manual_seed(0)
    m = LlavaLlamaForCausalLM(config(**ids))
    m.save_pretrained(tmp_path / "dense")
    tokenizer.save_pretrained(tmp_path / "dense")
    Image.new("RGB", (20, 10), (200, 30, 30)).save(tmp_path / "cats.png")
    turns = [{"from": "human", "value": "<image>\nWhat is in the image?"}, {"from": "gpt", "value": "Two cats."}]
    records = [{"id": "a", "image": "cats.png", "conversations": turns},
               {"id": "b", "conversations": [{"from": "human", "value": "Where?"}, {"from": "gpt", "value": "On a sofa."}]},
               {"id": "c", "image": "cats.png", "conversations": turns}]
    (tmp_path / "data.json").write_text(json.dumps(records))
    return tmp_path


def test_arank_cli_writes_json_and_plot(model_folder):
    from gamma_mod.cli import main

    out = model_folder / "res" / "arank.json"
    assert main(["arank", "--model", str(model_folder / "dense"), "--data", str(model_folder / "data.json"),
                 "--images", str(model_folder), "--num-samples", "3", "--batch-size", "2", "--device", "cpu",
                 "--out", str(out)]) == 0
    result = ARankResult.load_json(out)
    assert result.num_samples == 3 and len(result.mean) == 4 and result.tol is None
    assert all(0 < v for v in result.mean)
    assert (model_folder / "res" / "arank.png").exists()


def test_convert_cli_output_loads_with_mod_layers(model_folder, capsys):
    from gamma_mod.cli import main
    from gamma_mod.mod.layer import MoDDecoderLayer
    from gamma_mod.model import LlavaLlamaForCausalLM

    ARankResult(mean=[9.0, 2.0, 8.0, 7.0], std=[0.0] * 4, num_samples=1).save_json(model_folder / "arank.json")
    dense, out = model_folder / "dense", model_folder / "mod"
    # k_dense=3: 0 and 3 forced, then the highest of {1: 2.0, 2: 8.0} -> layer 1 alone becomes MoD.
    assert main(["convert", "--model", str(dense), "--arank", str(model_folder / "arank.json"),
                 "--skip-ratio", "0.34", "--k-dense", "3", "--out", str(out)]) == 0
    loaded = LlavaLlamaForCausalLM.from_pretrained(out)
    assert loaded.model.mod_layer_indices == [1]
    assert isinstance(loaded.model.layers[1], MoDDecoderLayer)
    assert loaded.config.mod_config().skip_ratio == pytest.approx(0.34)
    source = LlavaLlamaForCausalLM.from_pretrained(dense)
    assert torch.equal(loaded.model.layers[1].mlp.up_proj.weight, source.model.layers[1].mlp.up_proj.weight)
    assert (out / "tokenizer.json").exists() and (out / "tokenizer_config.json").exists()

    assert main(["convert", "--model", str(dense), "--layers", "1,2", "--out", str(model_folder / "mod2")]) == 0
    assert LlavaLlamaForCausalLM.from_pretrained(model_folder / "mod2").model.mod_layer_indices == [1, 2]
    # Usage errors: one line on stderr, exit code 2 (gamma_mod.errors), nothing written.
    capsys.readouterr()
    assert main(["convert", "--model", str(dense), "--layers", "3", "--out", str(model_folder / "mod3")]) == 2
    assert "gamma-mod convert: error: layer 3 is the last layer" in capsys.readouterr().err
    assert main(["convert", "--model", str(dense), "--out", str(model_folder / "mod4")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "gamma-mod convert: error: --arank is required (or --layers, or --strategy pmod)")
    assert not (model_folder / "mod3").exists() and not (model_folder / "mod4").exists()


def test_arank_loader_reads_only_a_pool_of_leading_records(model_folder):
    from gamma_mod.arank.cli import build_loader, load_model, record_pool

    records = json.loads((model_folder / "data.json").read_text())
    many = [{**records[i % 3], "id": f"r{i}"} for i in range(record_pool(1) + 5)]
    many[-1] = {**many[-1], "image": "absent.png"}  # outside the pool: never even checked
    (model_folder / "many.json").write_text(json.dumps(many))
    m = load_model(str(model_folder / "dense"), device="cpu")
    loader = build_loader(m, str(model_folder / "dense"), str(model_folder / "many.json"), str(model_folder),
                          "vicuna_v1", 4096, 2, num_samples=1)
    assert len(loader.dataset) == record_pool(1) == 65 and not loader.dataset.skipped
    batch = next(iter(loader))
    assert batch["input_ids"].shape[0] == 2 and batch["pixel_values"].shape[0] == 1  # records a (image), b (text)
