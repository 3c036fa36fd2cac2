"""The bundled synthetic dataset: PIL-drawn shapes a tiny model can learn in minutes on a CPU.

Each 64x64 image has 1-3 shapes (circle/square/triangle, four colours) in some of three slots
(left/center/right). Stage 1 gets captions ("a red circle on the left and a blue square on the
right"); stage 2 gets single-word VQA ("How many shapes are there?" -> "two", "What color is the
shape on the left?" -> "red", "What shape is on the right?" -> "square") split into train and a
held-out test set. Deterministic for a seed.

`multi_turn_train=True` writes each training image's three questions as ONE conversation (three
human/gpt rounds, order shuffled per image), LLaVA's own layout for several questions about one
image: the image tokens are encoded once per image instead of once per question, so an epoch costs
about 2.3x less at the same supervision. The held-out split stays one question per record.
"""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from .templates import TEMPLATES
from .tokenizer import IMAGE_TOKEN, SPECIAL_TOKENS, build_tokenizer, split_words

COLORS = {"red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 60, 220), "yellow": (230, 200, 20)}
SHAPES = ("circle", "square", "triangle")
SLOTS = ("left", "center", "right")
NUMBERS = {1: "one", 2: "two", 3: "three"}
QUESTIONS = {
    "count": "How many shapes are there?",
    "color": "What color is the shape on the {slot}?",
    "shape": "What shape is on the {slot}?",
}


@dataclass
class SceneObject:
    shape: str
    color: str
    slot: str


@dataclass
class SyntheticDataset:
    root: Path
    images: Path
    stage1: Path
    stage2_train: Path
    stage2_test: Path
    tokenizer: Path
    chance_accuracy: float


def draw_scene(objects: list[SceneObject], size: int, rng: random.Random) -> Image.Image:
    image = Image.new("RGB", (size, size), (245, 245, 245))
    draw = ImageDraw.Draw(image)
    slot_width = size / len(SLOTS)
    for obj in objects:
        radius = rng.uniform(0.28, 0.42) * slot_width
        cx = (SLOTS.index(obj.slot) + 0.5) * slot_width + rng.uniform(-0.08, 0.08) * slot_width
        cy = size / 2 + rng.uniform(-0.2, 0.2) * size
        box = [cx - radius, cy - radius, cx + radius, cy + radius]
        fill = COLORS[obj.color]
        if obj.shape == "circle":
            draw.ellipse(box, fill=fill)
        elif obj.shape == "square":
            draw.rectangle(box, fill=fill)
        else:
            draw.polygon([(cx, cy - radius), (cx - radius, cy + radius), (cx + radius, cy + radius)], fill=fill)
    return image


def random_scene(rng: random.Random) -> list[SceneObject]:
    slots = sorted(rng.sample(SLOTS, rng.randint(1, 3)), key=SLOTS.index)
    return [SceneObject(rng.choice(SHAPES), rng.choice(list(COLORS)), slot) for slot in slots]


def caption(objects: list[SceneObject]) -> str:
    return " and ".join(f"a {o.color} {o.shape} on the {o.slot}" for o in objects)


def questions_for(objects: list[SceneObject], rng: random.Random) -> list[tuple[str, str, str]]:
    """(type, question, answer) for one image: the count plus one colour and one shape question."""
    obj = rng.choice(objects)
    other = rng.choice(objects)
    return [
        ("count", QUESTIONS["count"], NUMBERS[len(objects)]),
        ("color", QUESTIONS["color"].format(slot=obj.slot), obj.color),
        ("shape", QUESTIONS["shape"].format(slot=other.slot), other.shape),
    ]


def synthetic_vocabulary() -> list[str]:
    """Every word any synthetic record or template can produce, split exactly as the tokenizer splits.

    Built by running the generators' own text functions over every shape/colour/slot, so a new
    question or caption wording cannot silently become `<unk>`.
    """
    every_object = [SceneObject(shape, color, slot) for shape in SHAPES for color in COLORS for slot in SLOTS]
    texts = [caption(every_object), *NUMBERS.values()]
    texts += [q.format(slot=slot) for q in QUESTIONS.values() for slot in SLOTS]
    for template in TEMPLATES.values():
        texts.append(template.render_prompt("").replace(IMAGE_TOKEN, " "))
    words = {word for text in texts for word in split_words(text)}
    return sorted(words - set(SPECIAL_TOKENS))


SYNTHETIC_VOCAB: tuple[str, ...] = tuple(synthetic_vocabulary())
# Bumped when build_tokenizer changes behaviour (2: BOS added like Llama's), so a cached dataset's
# tokenizer is rebuilt.
TOKENIZER_VERSION = 2


def _record(rid: str, image: str, question: str, answer: str) -> dict:
    return {"id": rid, "image": image,
            "conversations": [{"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": answer}]}


def _conversation(rid: str, image: str, turns: list[tuple[str, str]]) -> dict:
    """One record, several rounds; the image tag opens the first question (LLaVA's layout)."""
    conversations = []
    for i, (question, answer) in enumerate(turns):
        conversations += [{"from": "human", "value": f"<image>\n{question}" if i == 0 else question},
                          {"from": "gpt", "value": answer}]
    return {"id": rid, "image": image, "conversations": conversations}


def chance_accuracy(records: list[dict], types: list[str]) -> float:
    """Accuracy of a blind guesser that always gives the most frequent answer of each question type.

    The floor a model must beat to show it reads the image: answers are uniform per type (count
    1/3, colour 1/4, shape 1/3), so about 0.31, a little more on a small split by sampling noise.
    """
    by_type: dict[str, Counter] = defaultdict(Counter)
    for record, qtype in zip(records, types):
        by_type[qtype][record["conversations"][1]["value"]] += 1
    return sum(c.most_common(1)[0][1] for c in by_type.values()) / max(1, len(records))


def write_synthetic_dataset(out_dir: str | Path, n_captions: int = 2000, n_vqa_train: int = 1500, n_vqa_test: int = 200,
                            image_size: int = 64, seed: int = 0, multi_turn_train: bool = False) -> SyntheticDataset:
    """Write images, stage1.json, stage2_train.json, stage2_test.json and a tokenizer into `out_dir`.

    n_vqa_* count images; each gives three questions (with `multi_turn_train`, one three-round training
    record per image). Rewrites nothing if a complete dataset with the same parameters is already there.
    """
    root = Path(out_dir)
    images = root / "images"
    # The vocabulary is part of the key: a changed wording must not reuse a stale tokenizer.
    params = dict(n_captions=n_captions, n_vqa_train=n_vqa_train, n_vqa_test=n_vqa_test, image_size=image_size, seed=seed,
                  multi_turn_train=multi_turn_train, vocab=list(SYNTHETIC_VOCAB), tokenizer_version=TOKENIZER_VERSION)
    meta_path = root / "synthetic.json"
    paths = dict(root=root, images=images, stage1=root / "stage1.json", stage2_train=root / "stage2_train.json",
                 stage2_test=root / "stage2_test.json", tokenizer=root / "tokenizer")
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("params") == params:
            return SyntheticDataset(**paths, chance_accuracy=meta["chance_accuracy"])
    images.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)

    def make_image(name: str) -> list[SceneObject]:
        objects = random_scene(rng)
        draw_scene(objects, image_size, rng).save(images / name)
        return objects

    stage1 = []
    for i in range(n_captions):
        name = f"cap_{i:05d}.png"
        stage1.append({"id": f"cap-{i}", "image": name, "conversations": [
            {"from": "human", "value": "<image>"}, {"from": "gpt", "value": caption(make_image(name))}]})
    splits: dict[str, tuple[list[dict], list[str]]] = {}
    for split, count in (("train", n_vqa_train), ("test", n_vqa_test)):
        records, types = [], []
        for i in range(count):
            name = f"vqa_{split}_{i:05d}.png"
            asked = questions_for(make_image(name), rng)
            if split == "train" and multi_turn_train:
                rng.shuffle(asked)
                records.append(_conversation(f"{split}-{i}", name, [(q, a) for _, q, a in asked]))
                types.append("+".join(t for t, _, _ in asked))
                continue
            for qtype, question, answer in asked:
                records.append(_record(f"{split}-{i}-{qtype}", name, question, answer))
                types.append(qtype)
        splits[split] = (records, types)
    paths["stage1"].write_text(json.dumps(stage1))
    paths["stage2_train"].write_text(json.dumps(splits["train"][0]))
    paths["stage2_test"].write_text(json.dumps(splits["test"][0]))
    build_tokenizer(SYNTHETIC_VOCAB).save_pretrained(paths["tokenizer"])
    chance = chance_accuracy(*splits["test"])
    meta_path.write_text(json.dumps({"params": params, "chance_accuracy": chance}))
    return SyntheticDataset(**paths, chance_accuracy=chance)
