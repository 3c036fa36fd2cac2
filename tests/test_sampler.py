"""LLaVA's modality-grouped length sampler: the rule on hand-worked examples, its properties, and its
use in training (image and text-only batches apart, deterministic, resume-exact)."""

import json

import pytest
import torch
import yaml

from gamma_mod.train import sampler as sampler_module
from gamma_mod.train.sampler import (ModalityLengthGroupedSampler, length_grouped_indices,
                                     modality_length_grouped_indices, split_to_even_chunks)

from conftest import MICRO_SPEC


@pytest.fixture
def reversed_shuffles(monkeypatch):
    """Every shuffle returns n-1, ..., 0, so the rule's output can be worked out by hand."""
    monkeypatch.setattr(sampler_module.torch, "randperm", lambda n, generator=None: torch.arange(n - 1, -1, -1))


def test_split_to_even_chunks_by_hand():
    lengths = {0: 10, 1: 8, 2: 3, 3: 1, 4: 5}
    # Greedy: 0 -> chunk 0 (10); 1 -> chunk 1 (8); 2 -> chunk 1 (11), now full; 3 -> chunk 0.
    assert split_to_even_chunks([0, 1, 2, 3], lengths, 2) == [[0, 3], [1, 2]]
    # 5 samples do not divide into 2 chunks: strided.
    assert split_to_even_chunks([0, 1, 2, 3, 4], lengths, 2) == [[0, 2, 4], [1, 3]]


def test_modality_rule_by_hand(reversed_shuffles):
    # images: 0(5) 2(2) 3(7) 5(1) 7(8); text-only: 1(3) 4(4) 6(6) 8(2); batch 1 x world 2 = megabatch 2.
    lengths = [5, -3, 2, 7, -4, 1, -6, 8, -2]
    # images, positions (0..4) shuffled 4 3 2 1 0 -> megabatches [4,3] [2,1] [0] -> by length [4,3] [2,1] [0]
    #   -> chunks [4][3], [2][1], strided [0] -> sample ids 7 5 3 2 0
    # text, positions (0..3) shuffled 3 2 1 0 -> [3,2] [1,0] -> by length [2,3] [1,0] -> ids 6 8 4 1
    # megabatches: [7,5] [3,2] | [0]; [6,8] | [4,1] -> the full ones [7,5] [3,2] [6,8] shuffled (reversed)
    #   -> [6,8] [3,2] [7,5], then the held-back [0] + [4,1] sorted: [0,1,4]
    assert modality_length_grouped_indices(lengths, 1, 2, torch.Generator()) == [6, 8, 3, 2, 7, 5, 0, 1, 4]


def test_single_modality_is_length_grouping_by_hand(reversed_shuffles):
    # shuffled 3 2 1 0 -> megabatches [3,2] [1,0] -> longest first [3(5),2(2)] [0(3),1(1)]
    assert modality_length_grouped_indices([3, 1, 2, 5], 2, 1, torch.Generator()) == [3, 2, 0, 1]
    assert modality_length_grouped_indices([-3, -1, -2, -5], 2, 1, torch.Generator()) == [3, 2, 0, 1]
    assert length_grouped_indices([3, 1, 2, 5], 4, 1, torch.Generator()) == [3, 0, 2, 1]


def random_lengths(n_image=37, n_text=23, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.randint(50, 400, (n_image,), generator=g).tolist()
    text = (-torch.randint(5, 300, (n_text,), generator=g)).tolist()
    lengths = image + text
    order = torch.randperm(len(lengths), generator=g).tolist()
    return [lengths[i] for i in order]


@pytest.mark.parametrize("batch,world", [(4, 1), (2, 3), (3, 2)])
def test_batches_hold_one_modality_and_lengths_are_grouped(batch, world):
    lengths = random_lengths()
    order = list(ModalityLengthGroupedSampler(lengths, batch, world, seed=3))
    assert sorted(order) == list(range(len(lengths)))
    size = batch * world
    n_image, n_text = sum(n > 0 for n in lengths), sum(n < 0 for n in lengths)
    held_back = (n_image % size or size) + (n_text % size or size)
    head, tail = order[:-held_back], order[-held_back:]
    assert tail == sorted(tail)  # the held-back leftovers, by index
    for start in range(0, len(head), size):
        megabatch = head[start:start + size]
        assert len({n > 0 for n in (lengths[i] for i in megabatch)}) == 1  # one modality
        # Each rank's chunk: the megabatch's samples dealt out longest first.
        chunks = [megabatch[k * batch:(k + 1) * batch] for k in range(world)]
        longest_first = sorted(megabatch, key=lambda i: -abs(lengths[i]))
        assert [c[0] for c in chunks] == longest_first[:world] or world == 1
        if world == 1:
            assert [abs(lengths[i]) for i in megabatch] == sorted((abs(lengths[i]) for i in megabatch), reverse=True)


def test_order_is_a_function_of_seed_and_epoch():
    lengths = random_lengths()
    a = ModalityLengthGroupedSampler(lengths, 4, 2, seed=7)
    b = ModalityLengthGroupedSampler(lengths, 4, 2, seed=7)
    torch.manual_seed(123)  # the global RNG plays no part
    first = list(a)
    torch.manual_seed(456)
    assert list(b) == first and list(a) == first
    a.set_epoch(1)
    assert list(a) != first
    b.set_epoch(1)
    assert list(b) == list(a)
    assert list(ModalityLengthGroupedSampler(lengths, 4, 2, seed=8)) != first
    with pytest.raises(ValueError, match="2 samples have length 0"):
        list(ModalityLengthGroupedSampler([3, 0, -2, 0], 2))


# -- in training ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mixed_data(tmp_path_factory):
    """5 image records + 4 text-only ones (the image tag and file dropped)."""
    from gamma_mod.data.synthetic import write_synthetic_dataset

    root = tmp_path_factory.mktemp("mixed")
    data = write_synthetic_dataset(root / "data", n_captions=2, n_vqa_train=5, n_vqa_test=1, image_size=32, seed=4)
    records = json.loads(data.stage2_train.read_text())[:9]
    for record in records[5:]:
        record.pop("image")
        turn = record["conversations"][0]
        turn["value"] = turn["value"].replace("<image>", "").strip()
    (root / "mixed.json").write_text(json.dumps(records))
    (root / "micro.yaml").write_text(yaml.safe_dump(MICRO_SPEC))
    return root, data, {r["id"]: "image" in r for r in records}


def train_recording(root, data, out, monkeypatch, **extra):
    from gamma_mod.config import build
    from gamma_mod.train.args import TrainConfig
    from gamma_mod.train.train import run_training
    from gamma_mod.train.trainer import GammaTrainer

    seen = []
    monkeypatch.undo()  # a previous call's recorder must not stay in the chain
    original = GammaTrainer.compute_loss

    def recording(self, model, inputs, *args, **kwargs):
        if model.training:
            seen.append(list(inputs["sample_ids"]))
        return original(self, model, inputs, *args, **kwargs)

    monkeypatch.setattr(GammaTrainer, "compute_loss", recording)
    raw = {"stage": "finetune", "output_dir": str(out), "logging_steps": 1,
           "model": {"spec": str(root / "micro.yaml"), "tokenizer": str(data.tokenizer)},
           "data": {"train_json": str(root / "mixed.json"), "image_folder": str(data.images), "max_length": 128},
           "optim": {"lr": 1e-3, "batch_size": 2, "epochs": 2, "seed": 5, "warmup_ratio": 0.0,
                     "group_by_modality_length": True}}
    raw.update(extra)
    result = run_training(build(TrainConfig, raw))
    history = json.loads((result / "complete.json").read_text())["log_history"]
    return seen, [h["loss"] for h in history if "loss" in h]


def test_training_batches_apart_and_resumes_exactly(mixed_data, tmp_path, monkeypatch):
    import shutil

    root, data, has_image = mixed_data
    full = tmp_path / "full"
    seen, losses = train_recording(root, data, full, monkeypatch, save_steps=3, save_total_limit=10)
    assert len(seen) == 10 and len(losses) == 10  # 9 samples, batch 2: 5 steps per epoch, 2 epochs
    for epoch in (seen[:5], seen[5:]):
        assert sorted(i for batch in epoch for i in batch) == sorted(has_image)  # every sample once per epoch
        # image megabatches [2] [2] [1 held back], text [2] [2 held back]: the first 3 batches hold one
        # modality each; the 3 held-back samples (1 image, 2 text) come last, by index.
        assert all(len({has_image[i] for i in batch}) == 1 for batch in epoch[:3])
        assert sum(has_image[i] for i in epoch[3] + epoch[4]) == 1 and len(epoch[3] + epoch[4]) == 3
    assert seen[:5] != seen[5:]  # reshuffled per epoch

    # Killed after checkpoint-N: resume continues with the same batches and the same losses, bit for bit.
    for step in (3, 6):  # inside epoch 1, inside epoch 2
        run = tmp_path / f"resumed-{step}"
        shutil.copytree(full, run)
        for later in (p for p in run.glob("checkpoint-*") if int(p.name.split("-")[1]) > step):
            shutil.rmtree(later)
        for name in ("complete.json", "model.safetensors"):
            (run / name).unlink()
        seen_r, losses_r = train_recording(root, data, run, monkeypatch, save_steps=3, save_total_limit=10,
                                           resume=True)
        assert seen_r == seen[step:], step
        assert losses_r[-(10 - step):] == losses[step:], step
