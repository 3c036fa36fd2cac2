"""The one answer-generation loop every benchmark goes through.

Batched greedy `generate()` with a KV cache and LEFT padding (the model derives positions from the
2D mask, so a padded row generates what it would alone), a progress bar, and resumable output:
each batch's answers are appended and flushed to a JSONL file, and question ids already there are
skipped on restart. Only the new tokens are decoded.

Prompts come from the model's processor (gamma_mod.data.processor): `question_encoder(processor)` is
the Encoder every command passes here; `left_pad` is the processor's left-padding collate.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..data.processor import collate_features
from ..errors import DataError
from .questions import Question

# question -> (prompt input_ids, pixel_values (3, S, S) or None)
Encoder = Callable[[Question], tuple[list[int], torch.Tensor | None]]

__all__ = ["Encoder", "Question", "answer_line", "answered_ids", "check_images", "encode_question", "feature_encoder",
           "generate_answers",
           "left_pad", "load_image", "question_encoder", "question_features"]


def load_image(question: Question):
    """The question's image as RGB PIL: a file, or MMBench's base64 column (kept out of the answers)."""
    from PIL import Image

    if "_image_base64" in question.extra:
        return Image.open(io.BytesIO(base64.b64decode(question.extra["_image_base64"]))).convert("RGB")
    if question.image is None:
        return None
    with Image.open(question.image) as img:
        return img.convert("RGB")


def question_features(processor, question: Question) -> dict[str, Any]:
    """`processor.encode_prompt` of the question with its image; a model without a vision tower is
    asked the text alone (the processor then drops the `<image>` tag)."""
    image = load_image(question) if getattr(processor, "has_vision", True) else None
    return processor.encode_prompt(question.text, image=image)


def question_encoder(processor) -> Encoder:
    """The answer loop's Encoder over a LLaVA-fork processor: (prompt ids, pixel values (3, S, S) or None)."""
    def encode(question: Question) -> tuple[list[int], torch.Tensor | None]:
        features = question_features(processor, question)
        pixels = features.get("pixel_values")
        return features["input_ids"].tolist(), (pixels[0] if pixels is not None else None)

    return encode


def feature_encoder(processor) -> Callable[[Question], dict[str, Any]]:
    """The answer loop's encoder over any MultimodalProcessor (a Hugging Face family's): the prompt's whole
    feature dict (input_ids and the family's vision fields); a question's video is `extra["video"]` (a frame
    folder, as the synthetic video set's reader gives it). generate_answers batches these with `collate`."""
    def encode(question: Question) -> dict[str, Any]:
        video = question.extra.get("video")
        return processor.encode_prompt(question.text, image=load_image(question), video=video)

    return encode


def _suppressed_tokens(model) -> list[int]:
    """Placeholder ids a model must never generate: a generated image/video token would be read as a media slot
    on the next step (no features for it), and an under-trained model can emit one."""
    config = model.config
    try:
        from ..families import get_family

        adapter = get_family(config)
    except (ImportError, ValueError):
        adapter = None
    if adapter is not None and adapter.name != "llava_fork":
        vocab = config.get_text_config().vocab_size
        return [i for i in adapter.media_token_ids(config) if 0 <= i < vocab]
    image_token = getattr(config, "image_token_index", None)
    return [image_token] if image_token is not None and 0 <= image_token < config.vocab_size else []  # not LLaVA's -200


def check_images(questions: list[Question]) -> None:
    """Every question's image file exists (for encoders that read `question.image` from disk): the eval
    command checks this before anything is written."""
    missing = [q for q in questions if q.image is not None and not Path(q.image).is_file()]
    if missing:
        more = f" ({len(missing)} of {len(questions)} questions' images are missing)" if len(missing) > 1 else ""
        raise DataError(f"question {missing[0].question_id}: image file {missing[0].image} not found{more}",
                        "missing image")


def encode_question(encode: Encoder, question: Question) -> tuple[list[int], torch.Tensor | None]:
    """`encode(question)`; an image that does not open is a DataError naming the question and the file."""
    try:
        return encode(question)
    except FileNotFoundError as e:
        raise DataError(f"question {question.question_id}: image file {e.filename or question.image} not found",
                        "missing image") from None
    except (OSError, SyntaxError) as e:  # PIL: not an image, truncated or corrupt
        raise DataError(f"question {question.question_id}: image file {question.image or '(embedded in the question)'} "
                        f"is corrupt or truncated ({e})", "corrupt image") from None
    except DataError:
        raise
    except ValueError as e:  # the processor's: e.g. two image tags for one image
        raise DataError(f"question {question.question_id}: {e}", "bad question") from None


def answered_ids(path: Path) -> set[str]:
    """Ids already answered in `path`. A line cut by a kill mid-write is dropped from the file so the
    next append starts on a fresh line (that question is answered again)."""
    if not path.exists():
        return set()
    kept, done, dropped = [], set(), False
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            done.add(str(json.loads(line)["question_id"]))
            kept.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            dropped = True
    if dropped or (kept and not path.read_text().endswith("\n")):
        path.write_text("".join(k + "\n" for k in kept))
    return done


def left_pad(prompts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) ids and attention mask, real tokens right-aligned so every row's next token is at -1."""
    batch = collate_features([{"input_ids": p} for p in prompts], pad_id, padding_side="left")
    return batch["input_ids"], batch["attention_mask"]


def answer_line(question: Question, text: str) -> dict[str, Any]:
    """The JSONL record: public extras first so they can never overwrite id, prompt or text."""
    extra = {k: v for k, v in question.extra.items() if not k.startswith("_")}
    return {**extra, "question_id": question.question_id, "prompt": question.text, "text": text}


class _AppendOnFirstWrite:
    """The answer file, opened for appending only when the first answers are written: a run that fails
    on its first batch (an unreadable image) creates no output folder. A clean exit always leaves the file."""

    def __init__(self, path: Path) -> None:
        self.path, self.file = path, None

    def write(self, text: str) -> None:
        if self.file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.file = self.path.open("a")
        self.file.write(text)

    def flush(self) -> None:
        if self.file is not None:
            self.file.flush()

    def __enter__(self) -> "_AppendOnFirstWrite":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if self.file is not None:
            self.file.close()
        elif exc_type is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.touch()


@torch.no_grad()
def generate_answers(model, questions: Iterable[Question], encode: Encoder, tokenizer, out_jsonl: str | Path,
                     batch_size: int = 8, max_new_tokens: int = 128, progress: bool = True,
                     collate: Callable[..., dict[str, Any]] | None = None, **generate_kwargs: Any) -> Path:
    """Answer every question not yet in `out_jsonl`; returns its path. `generate_kwargs` go to
    `model.generate` (e.g. `mod_decode_start`). With `collate` (a processor's `collate`), `encode` returns
    feature dicts (`feature_encoder`) that `collate(features, padding_side="left")` batches: the Hugging
    Face families' vision fields (grids, image sizes, videos) go to generate() as the processor joins them."""
    out = Path(out_jsonl)
    questions = list(questions)
    ids_seen = [str(q.question_id) for q in questions]
    if len(set(ids_seen)) != len(ids_seen):
        # Resume keys on the id: a duplicate would be silently skipped.
        raise DataError(f"question ids must be unique; {len(ids_seen) - len(set(ids_seen))} duplicates",
                        "duplicate ids")
    done = answered_ids(out)
    todo = [q for q in questions if str(q.question_id) not in done]
    model.eval()
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    # A generated image token would be read as an image slot on the next step (no features for it):
    # an under-trained model can emit one, so it is never sampled.
    suppressed = _suppressed_tokens(model)
    gen_options: dict[str, Any] = {"suppress_tokens": suppressed} if suppressed else {}
    gen_options.update(generate_kwargs)
    with _AppendOnFirstWrite(out) as sink, tqdm(total=len(questions), initial=len(questions) - len(todo),
                                                desc="answering", unit="q", disable=not progress) as bar:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            encoded = [encode_question(encode, q) for q in chunk]
            if collate is not None:
                batch = collate(encoded, padding_side="left")
                ids = batch["input_ids"]
                kwargs = {k: v.to(device=device, dtype=model.dtype if v.is_floating_point() else v.dtype)
                          for k, v in batch.items() if isinstance(v, torch.Tensor)}
            else:
                ids, mask = left_pad([e[0] for e in encoded], pad_id)  # (B, T)
                kwargs = dict(input_ids=ids.to(device), attention_mask=mask.to(device))
                # Image features fill the image tokens row by row, so the images of the rows that have
                # one are stacked in row order; text-only rows contribute none.
                images = [e[1] for e in encoded if e[1] is not None]
                if images:
                    kwargs["pixel_values"] = torch.stack(images).to(device=device, dtype=model.dtype)
            generated = model.generate(**kwargs, **gen_options, max_new_tokens=max_new_tokens, do_sample=False,
                                       use_cache=True, pad_token_id=pad_id, eos_token_id=tokenizer.eos_token_id)
            for q, row in zip(chunk, generated[:, ids.shape[1]:].tolist()):  # new tokens only
                if tokenizer.eos_token_id in row:
                    # Rows that finished early are padded to the batch's longest answer: cut at EOS.
                    row = row[:row.index(tokenizer.eos_token_id)]
                text = tokenizer.decode(row, skip_special_tokens=True).strip()
                sink.write(json.dumps(answer_line(q, text)) + "\n")
            sink.flush()
            bar.update(len(chunk))
    return out
