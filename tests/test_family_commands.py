"""The commands on a local Hugging Face-format folder of a family's tiny twin (plain model written by
save_pretrained, its processor beside it): convert, arank, train, eval, speed, skipmap.

Each command goes through the one loader (gamma_mod.model.folder.load_model_folder -> the family's Auto class)
and the family's own processor. ARank's attention maps are checked against the model's own eager attention
weights (M-RoPE positions, Qwen3's q/k norms), so a wrong rotation or a missing norm fails here.
"""

from __future__ import annotations

import json

import pytest
import torch

from gamma_mod.arank.capture import capture_attention
from gamma_mod.cli import main
from gamma_mod.data.synthetic import write_synthetic_dataset
from gamma_mod.families import get_family, load_family_model
from gamma_mod.families.processing import HFFamilyProcessor, build_tiny_processor
from gamma_mod.families.specs import build_family_model


def write_family_folder(folder, family: str, seed: int = 0):
    """The plain tiny twin of `family` with its tiny processor, as an HF model folder."""
    proc_dir = build_tiny_processor(family, folder.parent / f"{folder.name}_processor")
    processor = HFFamilyProcessor.from_pretrained(proc_dir, family=family)
    torch.manual_seed(seed)
    model = build_family_model(f"{family}_tiny", **processor.config_token_ids())
    model.save_pretrained(folder)
    HFFamilyProcessor.for_model(model, proc_dir).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("data"), n_captions=1, n_vqa_train=4, n_vqa_test=2)


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    return write_family_folder(tmp_path_factory.mktemp("q") / "plain", "qwen2_5_vl")


@pytest.fixture(scope="module")
def qwen_mod(tmp_path_factory, qwen):
    out = tmp_path_factory.mktemp("qm") / "mod"
    assert main(["convert", "--model", str(qwen), "--layers", "1,2", "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("family", ["qwen2_5_vl", "llava_hf"])
def test_convert_family_folder(tmp_path, family):
    plain = write_family_folder(tmp_path / "plain", family)
    out = tmp_path / "mod"
    assert main(["convert", "--model", str(plain), "--layers", "1,2", "--skip-ratio", "0.5", "--out", str(out)]) == 0
    model, source = load_family_model(out), load_family_model(plain)
    adapter = get_family(model.config)
    assert adapter.name == family and model.config.model_type == adapter.mod_model_type
    assert model.mod_layer_indices == [1, 2]
    assert model.config.mod_config().skip_ratio == 0.5
    # every weight of the plain model is in the MoD twin unchanged; the routers are the only new parameters
    ours, theirs = model.state_dict(), source.state_dict()
    assert {k for k in ours if k not in theirs} == {k for k in ours if ".router." in k} != set()
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    for name in ("tokenizer.json", "processor_config.json", "chat_template.jinja"):
        assert (out / name).is_file(), name


def test_convert_refuses_official_compat_for_a_family(tmp_path, qwen):
    assert main(["convert", "--model", str(qwen), "--layers", "1,2", "--compat", "official",
                 "--out", str(tmp_path / "x")]) != 0


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl", "llava_hf"])
def test_arank_capture_equals_eager_attention(tmp_path, family, data):
    """The maps ARank ranks are the family's own attention probabilities (eager output_attentions)."""
    folder = write_family_folder(tmp_path / "plain", family)
    model = load_family_model(folder, attn_implementation="eager").eval()
    processor = HFFamilyProcessor.for_model(model, folder)
    record = json.loads(data.stage2_train.read_text())[0]
    batch = processor.collate([processor.encode_conversation(record, media_root=data.images)])
    batch.pop("labels")
    captured = {}
    with torch.no_grad(), capture_attention(model, lambda layer, b, probs: captured.__setitem__(layer, probs)):
        out = model(**batch, use_cache=False, output_attentions=True)
    assert sorted(captured) == [0, 1, 2, 3]
    for layer, reference in enumerate(out.attentions):
        assert torch.allclose(captured[layer], reference[0].float(), atol=1e-5), layer


def test_arank_cli_family_folder(tmp_path, qwen, data):
    out = tmp_path / "arank.json"
    assert main(["arank", "--model", str(qwen), "--data", str(data.stage2_train), "--images", str(data.images),
                 "--num-samples", "3", "--batch-size", "2", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["num_samples"] == 3 and len(result["mean"]) == 4
    # a rank of a causal t x t probability map lies in [1, t]
    assert all(1.0 <= v for v in result["mean"])


def test_train_cli_family_folder(tmp_path, qwen, data):
    out = tmp_path / "sft"
    assert main(["train", "family_sft_tiny", f"model.init={qwen}", f"data.train_json={data.stage2_train}",
                 f"data.image_folder={data.images}", f"output_dir={out}", "optim.max_steps=2", "optim.batch_size=2",
                 "trainable=[mm_projector,llm]", "mod.layers=[1,2]"]) == 0
    assert (out / "complete.json").is_file() and (out / "processor_config.json").is_file()
    trained, before = load_family_model(out), load_family_model(qwen)
    assert trained.mod_layer_indices == [1, 2]  # the `mod` section converted the plain init
    adapter = get_family(trained.config)
    vision = {n for n, p in trained.named_parameters()
              if any(p is q for q in adapter.vision_parameters(trained))}
    old, new = before.state_dict(), trained.state_dict()
    assert vision and all(torch.equal(old[n], new[n]) for n in vision)  # the vision encoder is frozen
    merger = [n for n in new if ".merger." in n]
    assert any(not torch.equal(old[n], new[n]) for n in merger)  # the projector trained
    assert not torch.equal(old["lm_head.weight"], new["lm_head.weight"])  # the LLM trained


@pytest.mark.parametrize("family", ["qwen2_5_vl", "llava_hf"])
def test_eval_cli_family_folder(tmp_path, family, data):
    folder = write_family_folder(tmp_path / "plain", family)
    out = tmp_path / "eval"
    assert main(["eval", "--model", str(folder), "--benchmark", "synthetic", "--data", str(data.root),
                 "--limit", "4", "--batch-size", "2", "--max-new-tokens", "2", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["answered"] == 4
    lines = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    assert [line["question_id"] for line in lines] == [r["id"] for r in json.loads(data.stage2_test.read_text())[:4]]


def test_speed_cli_family_folders(tmp_path, qwen, qwen_mod, data, capsys):
    assert main(["speed", "--dense", str(qwen), "--mod", str(qwen_mod), "--data", str(data.stage2_test),
                 "--images", str(data.images), "--num-samples", "2", "--repeats", "1", "--max-new-tokens", "2"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| dense") or
            line.startswith("| MoD")]
    assert len(rows) == 2
    assert rows[0].split("|")[7].strip() == "0.0%"
    # half of each row's routable tokens skipped in the MoD layers (rounded down per row: odd counts skip fewer)
    assert 45.0 <= float(rows[1].split("|")[7].strip().rstrip("%")) <= 50.0


def test_skipmap_cli_family_folder(tmp_path, qwen_mod, data, capsys):
    out = tmp_path / "skip.png"
    image = sorted(data.images.glob("vqa_test_*.png"))[0]
    assert main(["skipmap", "--model", str(qwen_mod), "--image", str(image), "--question", "What color is it?",
                 "--out", str(out)]) == 0
    assert out.is_file()
    printed = capsys.readouterr().out
    assert "layer   1:" in printed and "layer   2:" in printed
