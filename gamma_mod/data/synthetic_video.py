"""The bundled synthetic video set (`gamma-mod synth --video`): one shape moves, the others stay.

Each clip is `num_frames` PNG frames (`videos/<clip>/frame_000.png`, ...) of a square canvas cut into a 3x3
grid. One shape (the mover, its own colour) crosses the whole canvas in a straight line: from the centre of
the first cell of its lane to the centre of the last (two cells, ~2/3 of the frame), left/right along a row
or up/down along a column, evenly over the frames. 0-2 still shapes of other colours sit in cells off that
lane, so nothing ever overlaps the mover and pixel colours stay exact (no anti-aliasing). Questions, with
single-word answers from a closed set:

    direction  "Which way does the red square move?"  left | right | up | down
    count      "How many shapes appear?"              one | two | three
    color      "What color is the moving shape?"      red | green | blue | yellow

Every clip gets all three. Within a split the mover's direction, the shape count and the mover's colour
are each exactly balanced (class counts differ by at most one) and drawn independently, so a text-only
model cannot beat the majority rate (`chance_accuracy`). Stage 1 gets captions ("a red square moves left
and a blue circle stays"). Records are LLaVA-format with `"video": "videos/<clip>"` relative to the
dataset folder and `<video>` in the human turn; question ids are `{split}-{clip}-{type}` like the image
set, so `eval.scorers.synthetic` scores them per type. Deterministic for a seed.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from .synthetic import COLORS, NUMBERS, SHAPES, chance_accuracy
from .tokenizer import split_words

VIDEO_TAG = "<video>"
DIRECTIONS = ("left", "right", "up", "down")
GRID = 3
BACKGROUND = (245, 245, 245)
VIDEO_QUESTIONS = {
    "direction": "Which way does the {color} {shape} move?",
    "count": "How many shapes appear?",
    "color": "What color is the moving shape?",
}
# What write_synthetic_video_dataset puts in its folder (the CLI refuses folders holding anything else).
VIDEO_DATASET_NAMES = {"videos", "stage1.json", "stage2_train.json", "stage2_test.json", "synthetic.json"}
FRAME_NAME = "frame_{:03d}.png"


@dataclass(frozen=True)
class ClipShape:
    shape: str
    color: str
    row: int  # grid cell; for the mover, the cell it starts in
    col: int


@dataclass(frozen=True)
class Clip:
    mover: ClipShape
    direction: str
    still: tuple[ClipShape, ...]

    @property
    def count(self) -> int:
        return 1 + len(self.still)

    def mover_end(self) -> tuple[int, int]:
        """The (row, col) cell the mover ends in: two cells along its direction."""
        d_row, d_col = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}[self.direction]
        return self.mover.row + d_row * (GRID - 1), self.mover.col + d_col * (GRID - 1)


@dataclass
class SyntheticVideoDataset:
    root: Path
    videos: Path
    stage1: Path
    stage2_train: Path
    stage2_test: Path
    num_frames: int
    chance_accuracy: float


def balanced(classes: tuple, n: int, rng: random.Random) -> list:
    """`n` labels with each class `n // k` or `n // k + 1` times, in random order."""
    labels = [classes[i % len(classes)] for i in range(n)]
    rng.shuffle(labels)
    return labels


def make_clip(direction: str, count: int, color: str, rng: random.Random) -> Clip:
    lane = rng.randrange(GRID)
    first, last = 0, GRID - 1
    start = {"right": (lane, first), "left": (lane, last), "down": (first, lane), "up": (last, lane)}[direction]
    horizontal = direction in ("left", "right")
    # Still shapes stay off the mover's lane (its row, or its column), so they never touch its path.
    free = [(r, c) for r in range(GRID) for c in range(GRID) if (r if horizontal else c) != lane]
    cells = rng.sample(free, count - 1)
    colors = rng.sample([c for c in COLORS if c != color], count - 1)
    still = tuple(ClipShape(rng.choice(SHAPES), c, r, col) for (r, col), c in zip(cells, colors))
    return Clip(ClipShape(rng.choice(SHAPES), color, *start), direction, still)


def _draw(draw: ImageDraw.ImageDraw, shape: str, color: str, cx: float, cy: float, radius: float) -> None:
    box = [cx - radius, cy - radius, cx + radius, cy + radius]
    fill = COLORS[color]
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([(cx, cy - radius), (cx - radius, cy + radius), (cx + radius, cy + radius)], fill=fill)


def draw_clip(clip: Clip, num_frames: int, size: int, rng: random.Random) -> list[Image.Image]:
    """The clip's frames. Sizes and offsets are jittered a little (at most 0.44 cell from a cell centre:
    shapes in different cells never overlap); the mover keeps its size and lane offset for the whole clip."""
    cell = size / GRID

    def centre(row: float, col: float) -> tuple[float, float]:
        return (col + 0.5) * cell, (row + 0.5) * cell

    def jitter() -> float:
        return rng.uniform(-0.08, 0.08) * cell

    still = [(s, *centre(s.row, s.col), rng.uniform(0.28, 0.36) * cell, jitter(), jitter()) for s in clip.still]
    radius, offset = rng.uniform(0.28, 0.36) * cell, jitter()
    (r0, c0), (r1, c1) = (clip.mover.row, clip.mover.col), clip.mover_end()
    frames = []
    for t in range(num_frames):
        f = t / (num_frames - 1)
        cx, cy = centre(r0 + (r1 - r0) * f, c0 + (c1 - c0) * f)
        if clip.direction in ("left", "right"):
            cy += offset
        else:
            cx += offset
        image = Image.new("RGB", (size, size), BACKGROUND)
        draw = ImageDraw.Draw(image)
        for s, x, y, r, dx, dy in still:
            _draw(draw, s.shape, s.color, x + dx, y + dy, r)
        _draw(draw, clip.mover.shape, clip.mover.color, cx, cy, radius)
        frames.append(image)
    return frames


def clip_caption(clip: Clip) -> str:
    parts = [f"a {clip.mover.color} {clip.mover.shape} moves {clip.direction}"]
    return " and ".join(parts + [f"a {s.color} {s.shape} stays" for s in clip.still])


def clip_questions(clip: Clip) -> list[tuple[str, str, str]]:
    """(type, question, answer) for one clip: direction, count and colour."""
    return [
        ("direction", VIDEO_QUESTIONS["direction"].format(color=clip.mover.color, shape=clip.mover.shape),
         clip.direction),
        ("count", VIDEO_QUESTIONS["count"], NUMBERS[clip.count]),
        ("color", VIDEO_QUESTIONS["color"], clip.mover.color),
    ]


def synthetic_video_vocabulary() -> list[str]:
    """Every word of every record (questions, answers, captions), split as `build_tokenizer` splits.

    Without a chat template's words or `<video>`: a family's tokenizer brings those.
    """
    texts = list(NUMBERS.values()) + list(DIRECTIONS)
    for shape in SHAPES:
        for color in COLORS:
            clip = Clip(ClipShape(shape, color, 0, 0), "right", (ClipShape(shape, color, 1, 1),))
            texts += [clip_caption(clip)] + [q for _, q, _ in clip_questions(clip)]
    texts += [clip_caption(Clip(ClipShape("square", "red", 0, 0), d, ())) for d in DIRECTIONS]
    return sorted({word for text in texts for word in split_words(text)})


SYNTHETIC_VIDEO_VOCAB: tuple[str, ...] = tuple(synthetic_video_vocabulary())


def _record(rid: str, video: str, question: str, answer: str) -> dict:
    return {"id": rid, "video": video, "conversations": [{"from": "human", "value": f"{VIDEO_TAG}\n{question}"},
                                                         {"from": "gpt", "value": answer}]}


def write_synthetic_video_dataset(out_dir: str | Path, n_captions: int = 2000, n_vqa_train: int = 1500,
                                  n_vqa_test: int = 200, image_size: int = 64, num_frames: int = 4,
                                  seed: int = 0) -> SyntheticVideoDataset:
    """Write videos/, stage1.json, stage2_train.json and stage2_test.json into `out_dir`.

    n_* count clips; each VQA clip gives three questions. Rewrites nothing if a complete dataset with
    the same parameters is already there.
    """
    if num_frames < 2:
        raise ValueError(f"num_frames must be >= 2 to show motion, got {num_frames}")
    root = Path(out_dir)
    videos = root / "videos"
    params = dict(kind="video", n_captions=n_captions, n_vqa_train=n_vqa_train, n_vqa_test=n_vqa_test,
                  image_size=image_size, num_frames=num_frames, seed=seed, vocab=list(SYNTHETIC_VIDEO_VOCAB))
    meta_path = root / "synthetic.json"
    paths = dict(root=root, videos=videos, stage1=root / "stage1.json", stage2_train=root / "stage2_train.json",
                 stage2_test=root / "stage2_test.json", num_frames=num_frames)
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("params") == params:
            return SyntheticVideoDataset(**paths, chance_accuracy=meta["chance_accuracy"])
    rng = random.Random(seed)

    def make(name: str, count: int) -> list[Clip]:
        """`count` balanced clips written to videos/<name>_<i>; returns them."""
        labels = zip(balanced(DIRECTIONS, count, rng), balanced(tuple(NUMBERS), count, rng),
                     balanced(tuple(COLORS), count, rng))
        clips = [make_clip(d, n, c, rng) for d, n, c in labels]
        for i, clip in enumerate(clips):
            folder = videos / f"{name}_{i:05d}"
            folder.mkdir(parents=True, exist_ok=True)
            for stale in folder.glob("frame_*.png"):  # a rewrite with fewer frames must not leave extra ones
                stale.unlink()
            for t, frame in enumerate(draw_clip(clip, num_frames, image_size, rng)):
                frame.save(folder / FRAME_NAME.format(t))
        return clips

    stage1 = [{"id": f"cap-{i}", "video": f"videos/cap_{i:05d}", "conversations": [
        {"from": "human", "value": VIDEO_TAG}, {"from": "gpt", "value": clip_caption(clip)}]}
        for i, clip in enumerate(make("cap", n_captions))]
    splits: dict[str, tuple[list[dict], list[str]]] = {}
    for split, count in (("train", n_vqa_train), ("test", n_vqa_test)):
        records, types = [], []
        for i, clip in enumerate(make(f"vqa_{split}", count)):
            for qtype, question, answer in clip_questions(clip):
                records.append(_record(f"{split}-{i}-{qtype}", f"videos/vqa_{split}_{i:05d}", question, answer))
                types.append(qtype)
        splits[split] = (records, types)
    paths["stage1"].write_text(json.dumps(stage1))
    paths["stage2_train"].write_text(json.dumps(splits["train"][0]))
    paths["stage2_test"].write_text(json.dumps(splits["test"][0]))
    chance = chance_accuracy(*splits["test"])
    meta_path.write_text(json.dumps({"params": params, "chance_accuracy": chance}))
    return SyntheticVideoDataset(**paths, chance_accuracy=chance)
