"""Video frames (gamma_mod.data.video) and the synthetic moving-shapes video set (gamma-mod synth --video)."""

import json
import logging
import os
import random
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from gamma_mod.cli import main as cli_main
from gamma_mod.data.formats import validate_record
from gamma_mod.data.synthetic import COLORS, NUMBERS, SHAPES
from gamma_mod.data.synthetic_video import (BACKGROUND, DIRECTIONS, SYNTHETIC_VIDEO_VOCAB, Clip, ClipShape,
                                            clip_caption, draw_clip, write_synthetic_video_dataset)
from gamma_mod.data.tokenizer import split_words
from gamma_mod.data.video import load_video_frames, sample_indices
from gamma_mod.errors import DataError
from gamma_mod.eval.scorers import synthetic as scorer

T, H, W = 11, 6, 7


@pytest.fixture
def clip():
    return np.random.default_rng(0).integers(0, 256, size=(T, H, W, 3), dtype=np.uint8)


def write_frames(folder, frames, names=None):
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / (names[i] if names else f"{i}.png"))
    return folder


# ---------------------------------------------------------------- loader


def test_every_source_gives_the_same_uint8_clip(clip, tmp_path):
    # Unpadded names: "10.png" must come after "9.png" (digit runs compare as numbers).
    folder = write_frames(tmp_path / "frames", clip)
    np.save(tmp_path / "clip.npy", clip)
    as_float = clip.transpose(0, 3, 1, 2).astype(np.float32) / 255  # (T, 3, H, W) in [0, 1]
    sources = {
        "folder": folder, "folder as str": str(folder), "npy": tmp_path / "clip.npy", "array": clip,
        "tensor uint8": torch.from_numpy(clip), "tensor float": torch.from_numpy(as_float),
        "array float": as_float, "array float64": as_float.astype(np.float64),
        "array uint8 channels first": clip.transpose(0, 3, 1, 2).copy(),
    }
    for name, source in sources.items():
        frames = load_video_frames(source)
        assert frames.dtype == np.uint8 and frames.shape == (T, H, W, 3), name
        assert np.array_equal(frames, clip), name
        assert frames.flags["C_CONTIGUOUS"], name


def test_frames_of_any_pil_mode_become_rgb(tmp_path):
    folder = tmp_path / "gray"
    folder.mkdir()
    for i, value in enumerate((0, 128, 255)):
        Image.new("L", (4, 3), value).save(folder / f"f{i}.png")
    frames = load_video_frames(folder)
    assert frames.shape == (3, 3, 4, 3)
    assert frames[:, 0, 0].tolist() == [[0, 0, 0], [128, 128, 128], [255, 255, 255]]


def test_sample_indices_by_hand():
    # round(linspace(0, total - 1, n)), halves to even (like torch.round in qwen-vl-utils).
    assert sample_indices(10, 4).tolist() == [0, 3, 6, 9]
    assert sample_indices(11, 4).tolist() == [0, 3, 7, 10]  # 0, 3.33, 6.67, 10
    assert sample_indices(8, 3).tolist() == [0, 4, 7]  # 3.5 -> 4
    assert sample_indices(10, 3).tolist() == [0, 4, 9]  # 4.5 -> 4 (half to even)
    assert sample_indices(4, 3).tolist() == [0, 2, 3]  # 1.5 -> 2
    assert sample_indices(5, 2).tolist() == [0, 4]
    assert sample_indices(7, 1).tolist() == [0]
    assert sample_indices(6, 6).tolist() == [0, 1, 2, 3, 4, 5]


def test_num_frames_keeps_the_sampled_frames_from_every_source(clip, tmp_path):
    folder = write_frames(tmp_path / "frames", clip)
    for source in (folder, clip, torch.from_numpy(clip)):
        assert np.array_equal(load_video_frames(source, num_frames=4), clip[[0, 3, 7, 10]])
        assert np.array_equal(load_video_frames(source, num_frames=T), clip)


def test_non_frame_files_are_skipped_with_a_count(clip, tmp_path, caplog):
    folder = write_frames(tmp_path / "frames", clip[:3])
    (folder / "notes.txt").write_text("not a frame")
    (folder / ".DS_Store").write_text("")
    with caplog.at_level(logging.WARNING, logger="gamma_mod.data.video"):
        frames = load_video_frames(folder)
    assert np.array_equal(frames, clip[:3])
    assert f"{folder}: skipped 1 entries that are not frame images" in caplog.text


def error_of(source, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        load_video_frames(source, **kwargs)
    return str(info.value)


def test_errors_name_the_path_and_the_problem(clip, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert error_of(empty) == (f"{empty}: no frame images in the folder "
                               "(looked for .png, .jpg, .jpeg, .bmp, .webp, .tif, .tiff)")

    mixed = write_frames(tmp_path / "mixed", [clip[0], clip[1]], ["a.png", "b.png"])
    Image.new("RGB", (5, 5)).save(mixed / "c.png")
    assert error_of(mixed) == f"{mixed}: frames have different sizes: a.png is 7x6, c.png is 5x5 (W x H)"

    broken = write_frames(tmp_path / "broken", [clip[0]], ["a.png"])
    (broken / "b.png").write_bytes(b"not a png")
    assert error_of(broken).startswith(f"{broken}: cannot read frame b.png")

    video = tmp_path / "clip.mp4"
    video.write_bytes(b"\x00")
    message = error_of(video)
    assert message.startswith(f"{video}: .mp4 files are not decoded (no video decoder in the core install)")
    assert "ffmpeg -i clip.mp4 frames/%05d.png" in message

    text = tmp_path / "clip.txt"
    text.write_text("x")
    assert error_of(text) == f"{text}: a video is a folder of frame images or a .npy array of frames, got a .txt file"
    assert error_of(tmp_path / "nowhere") == f"{tmp_path / 'nowhere'}: no such video folder or .npy file"

    bad_npy = tmp_path / "bad.npy"
    np.save(bad_npy, clip[0])  # one image, 3-D
    assert error_of(bad_npy) == (f"{bad_npy}: expected (T, H, W, 3) uint8 or (T, 3, H, W) float in [0, 1], got 3-D "
                                 f"shape ({H}, {W}, 3) (one image is one frame: add a leading axis)")

    folder = write_frames(tmp_path / "frames", clip)
    assert error_of(folder, num_frames=12) == f"{folder}: asked for 12 frames but the clip has only {T}"
    np.save(tmp_path / "c.npy", clip)
    assert error_of(tmp_path / "c.npy", num_frames=0) == f"{tmp_path / 'c.npy'}: num_frames must be >= 1, got 0"


def test_array_errors():
    accepted = "expected (T, H, W, 3) uint8 or (T, 3, H, W) float in [0, 1]"
    rgba = np.zeros((2, 4, 4, 4), np.uint8)
    assert error_of(rgba) == f"{accepted}: no axis of 3 RGB channels in shape (2, 4, 4, 4)"
    assert error_of(np.zeros((2, 4, 4, 3), np.int64)) == f"{accepted}, got dtype int64"
    assert error_of(np.zeros((0, 4, 4, 3), np.uint8)) == "empty clip, shape (0, 4, 4, 3)"
    assert error_of(torch.full((2, 3, 4, 4), 2.0)) == (
        "float frames must lie in [0, 1], got values in [2, 2] (pass uint8 for 0..255 pixels)")
    assert error_of(torch.full((2, 3, 4, 4), float("nan"))) == "float frames hold NaN or inf"
    assert error_of([[1, 2]]) == "a video is a folder, a .npy file, a numpy array or a torch tensor, got list"
    assert error_of(np.zeros((5, 4, 4, 3), np.uint8), num_frames=6) == "asked for 6 frames but the clip has only 5"


def test_ambiguous_layout_follows_the_dtype():
    # (T, 3, H, 3): uint8 reads channels last, float channels first.
    u8 = np.arange(2 * 3 * 5 * 3, dtype=np.uint8).reshape(2, 3, 5, 3)
    assert np.array_equal(load_video_frames(u8), u8)
    f = u8.astype(np.float32) / 255
    assert np.array_equal(load_video_frames(f), u8.transpose(0, 2, 3, 1))


# ---------------------------------------------------------------- synthetic video set

SIZES = dict(n_captions=8, n_vqa_train=12, n_vqa_test=8, image_size=48, num_frames=5)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_synthetic_video_dataset(tmp_path_factory.mktemp("vsynth") / "a", seed=3, **SIZES)


def read(path):
    return json.loads(path.read_text())


def all_files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def per_clip(records):
    """{video: {question type: answer}}"""
    clips = {}
    for r in records:
        clips.setdefault(r["video"], {})[r["id"].rsplit("-", 1)[1]] = r["conversations"][1]["value"]
    return clips


def test_same_seed_same_bytes_other_seed_differs(data, tmp_path):
    again = write_synthetic_video_dataset(tmp_path / "b", seed=3, **SIZES)
    other = write_synthetic_video_dataset(tmp_path / "c", seed=4, **SIZES)
    files = all_files(data.root)
    assert files == all_files(again.root)
    assert len([f for f in files if f.endswith(".png")]) == (8 + 12 + 8) * 5
    assert all((data.root / f).read_bytes() == (again.root / f).read_bytes() for f in files)
    assert read(other.stage2_train) != read(data.stage2_train)
    assert data.chance_accuracy == again.chance_accuracy


def test_records_are_llava_records_with_a_video_folder(data):
    stage1, train, test = read(data.stage1), read(data.stage2_train), read(data.stage2_test)
    assert (len(stage1), len(train), len(test)) == (8, 36, 24)  # three questions per clip
    for i, record in enumerate(stage1 + train + test):
        validate_record(record, i, "synthetic video")
        assert set(record) == {"id", "video", "conversations"}
        assert load_video_frames(data.root / record["video"]).shape == (5, 48, 48, 3)
    assert all(r["conversations"][0]["value"] == "<video>" for r in stage1)
    assert [r["id"] for r in test[:3]] == ["test-0-direction", "test-0-count", "test-0-color"]
    assert test[0]["video"] == "videos/vqa_test_00000" and stage1[1]["video"] == "videos/cap_00001"
    answers = {"direction": set(DIRECTIONS), "count": set(NUMBERS.values()), "color": set(COLORS)}
    for record in train + test:
        question, answer = (t["value"] for t in record["conversations"])
        assert question.startswith("<video>\n")
        qtype = record["id"].rsplit("-", 1)[1]
        assert answer in answers[qtype], record
        wording = {"count": ["How many shapes appear?"], "color": ["What color is the moving shape?"],
                   "direction": [f"Which way does the {c} {s} move?" for c in COLORS for s in SHAPES]}
        assert question[len("<video>\n"):] in wording[qtype], record
    assert {r["video"] for r in train}.isdisjoint(r["video"] for r in test)
    vocab = set(SYNTHETIC_VIDEO_VOCAB)
    for record in stage1 + train + test:
        for turn in record["conversations"]:
            assert set(split_words(turn["value"].replace("<video>", ""))) <= vocab, record["id"]


def test_every_question_type_is_balanced(data):
    # n // k or n // k + 1 of each class, handed out in class order: 12 train clips, 8 test clips.
    expected = {
        "train": {"direction": {"left": 3, "right": 3, "up": 3, "down": 3}, "count": {"one": 4, "two": 4, "three": 4},
                  "color": {"red": 3, "green": 3, "blue": 3, "yellow": 3}},
        "test": {"direction": {"left": 2, "right": 2, "up": 2, "down": 2}, "count": {"one": 3, "two": 3, "three": 2},
                 "color": {"red": 2, "green": 2, "blue": 2, "yellow": 2}},
    }
    for split, path in (("train", data.stage2_train), ("test", data.stage2_test)):
        clips = per_clip(read(path)).values()
        for qtype, counts in expected[split].items():
            assert Counter(c[qtype] for c in clips) == counts, (split, qtype)
    captions = [r["conversations"][1]["value"] for r in read(data.stage1)]
    assert Counter(c.split(" moves ")[1].split()[0] for c in captions) == {d: 2 for d in DIRECTIONS}
    # The per-type majority a text-only guesser reaches on test: 2 + 3 + 2 of 24.
    assert data.chance_accuracy == 7 / 24


def colour_mask(frame, color):
    return np.all(frame == np.array(COLORS[color], np.uint8), axis=-1)


def centroid(mask):
    ys, xs = np.nonzero(mask)
    return xs.mean(), ys.mean()


def test_the_frames_show_what_the_answers_say(data):
    size = SIZES["image_size"]
    for path in (data.stage2_train, data.stage2_test):
        records = read(path)
        for video, answers in per_clip(records).items():
            frames = load_video_frames(data.root / video)
            direction = next(r for r in records if r["video"] == video and r["id"].endswith("-direction"))
            assert f" {answers['color']} " in direction["conversations"][0]["value"]  # the question names the mover
            # The mover: the answered colour, moving 2 of 3 cells along the answered axis, never off it.
            xs, ys = zip(*(centroid(colour_mask(f, answers["color"])) for f in frames))
            dx, dy = xs[-1] - xs[0], ys[-1] - ys[0]
            along, across = {"right": (dx, dy), "left": (-dx, dy), "down": (dy, dx), "up": (-dy, dx)}[
                answers["direction"]]
            assert along > 0.6 * size and abs(across) < 1, (video, answers, dx, dy)
            steps = np.diff(xs if answers["direction"] in ("left", "right") else ys)
            assert np.all(np.sign(steps) == np.sign(along if answers["direction"] in ("right", "down") else -along))
            # Every other colour present stands still; the count is the number of colours (one per shape).
            present = [c for c in COLORS if colour_mask(frames[0], c).any()]
            assert len(present) == {"one": 1, "two": 2, "three": 3}[answers["count"]], (video, answers)
            for color in present:
                if color != answers["color"]:
                    assert all(np.array_equal(colour_mask(f, color), colour_mask(frames[0], color)) for f in frames)
            other = np.ones(frames.shape[:3], bool)
            for color in present:
                other &= ~np.all(frames == np.array(COLORS[color], np.uint8), axis=-1)
            assert np.all(frames[other] == np.array(BACKGROUND, np.uint8))


def test_draw_clip_by_hand():
    # 48 px, cells of 16: a red square starting in cell (row 1, col 0) moving right over 3 frames has its
    # centre at x = 8, 24, 40 (cell centres 0.5, 1.5, 2.5 cells); y stays near 24 (lane jitter <= 1.3 px).
    clip = Clip(ClipShape("square", "red", 1, 0), "right", (ClipShape("circle", "blue", 0, 2),))
    frames = np.stack([np.asarray(f) for f in draw_clip(clip, 3, 48, random.Random(0))])
    centres = [centroid(colour_mask(f, "red")) for f in frames]
    assert [round(x) for x, _ in centres] == [8, 24, 40]
    assert all(abs(y - 24) <= 1.5 for _, y in centres)
    bx, by = centroid(colour_mask(frames[0], "blue"))
    assert abs(bx - 40) <= 1.5 and abs(by - 8) <= 1.5
    assert clip_caption(clip) == "a red square moves right and a blue circle stays"
    assert clip.mover_end() == (1, 2) and Clip(ClipShape("circle", "red", 2, 1), "up", ()).mover_end() == (0, 1)
    assert set(SHAPES) == {"circle", "square", "triangle"}


def test_complete_dataset_is_reused_and_a_rewrite_leaves_no_stale_frames(data, tmp_path):
    before = os.stat(data.stage1).st_mtime_ns
    assert write_synthetic_video_dataset(data.root, seed=3, **SIZES) == data
    assert os.stat(data.stage1).st_mtime_ns == before
    root = tmp_path / "rewrite"
    write_synthetic_video_dataset(root, seed=0, **{**SIZES, "num_frames": 6})
    fewer = write_synthetic_video_dataset(root, seed=0, **{**SIZES, "num_frames": 3})
    assert sorted(p.name for p in (root / "videos" / "vqa_test_00000").iterdir()) == [
        "frame_000.png", "frame_001.png", "frame_002.png"]
    assert fewer.num_frames == 3
    with pytest.raises(ValueError, match="num_frames must be >= 2"):
        write_synthetic_video_dataset(tmp_path / "one", num_frames=1)


def test_synth_video_command(tmp_path, capsys):
    out = tmp_path / "cli"
    assert cli_main(["synth", "--video", "--out", str(out), "--captions", "2", "--vqa-train", "1", "--vqa-test", "2",
                     "--image-size", "32", "--frames", "6"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"wrote {out}: stage1.json 2 records, stage2_train.json 3 records, stage2_test.json 6 "
                           "records; 6-frame clips in videos/; chance accuracy on stage2_test.json ")
    assert sorted(p.name for p in out.iterdir()) == ["stage1.json", "stage2_test.json", "stage2_train.json",
                                                      "synthetic.json", "videos"]
    assert len(read(out / "stage2_test.json")) == 6
    with Image.open(out / "videos" / "vqa_test_00001" / "frame_005.png") as img:
        assert img.size == (32, 32)
    assert len(list((out / "videos").iterdir())) == 2 + 1 + 2


@pytest.mark.parametrize("args, message", [
    (["--frames", "4"], "--frames applies to the video set only: add --video"),
    (["--video", "--frames", "1"], "--frames must be >= 2 to show motion, got 1"),
    (["--video", "--image-size", "16"], "--image-size must be >= 24 pixels with --video, got 16"),
])
def test_synth_video_usage_errors(args, message, tmp_path, capsys):
    assert cli_main(["synth", "--out", str(tmp_path / "x"), *args]) == 2
    assert capsys.readouterr().err.strip() == f"gamma-mod synth: error: {message}"
    assert not (tmp_path / "x").exists()


def test_synth_video_never_writes_into_an_image_dataset(tmp_path, capsys):
    images = tmp_path / "images_set"
    assert cli_main(["synth", "--out", str(images), "--captions", "1", "--vqa-train", "1", "--vqa-test", "1",
                     "--image-size", "16"]) == 0
    assert cli_main(["synth", "--video", "--out", str(images)]) == 2
    assert capsys.readouterr().err.strip().endswith(
        f"error: --out {images} holds other files than a synthetic video dataset (images, tokenizer): "
        "choose a new or empty folder")


def test_scorer_reads_and_scores_the_video_set(data, tmp_path):
    questions = scorer.read_questions(data.root)
    assert len(questions) == 24
    first = questions[0]
    assert first.question_id == "test-0-direction" and first.image is None
    assert first.text.startswith("<video>\n")
    assert load_video_frames(first.extra["video"]).shape == (5, 48, 48, 3)
    # All right except two direction answers: direction 6/8, count 8/8, colour 8/8.
    wrong = {"test-0-direction", "test-1-direction"}
    with open(tmp_path / "answers.jsonl", "w") as f:
        for q in questions:
            text = "sideways" if q.question_id in wrong else q.extra["answer"].upper() + "."
            f.write(json.dumps({"question_id": q.question_id, "text": text}) + "\n")
    metrics = scorer.score(tmp_path / "answers.jsonl", data.root)
    assert metrics == {"accuracy": 22 / 24, "answered": 24, "total": 24, "accuracy/color": 1.0, "accuracy/count": 1.0,
                       "accuracy/direction": 6 / 8}
