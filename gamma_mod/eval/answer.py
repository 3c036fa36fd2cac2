"""The one answer-generation loop every benchmark goes through.

Batched greedy `generate()` with a KV cache and LEFT padding (the model derives positions from the
2D mask), a progress bar, and resumable output: each answer is appended and flushed to a JSONL
file, and question ids already there are skipped on restart.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm


@dataclass
class Question:
    question_id: str
    text: str
    image: str | None = None  # path
    extra: dict[str, Any] = field(default_factory=dict)


# question -> (prompt input_ids, pixel_values (3, S, S) or None)
Encoder = Callable[[Question], tuple[list[int], torch.Tensor | None]]


def answered_ids(path: Path) -> set[str]:
    if not path.exists():
        return set()
    done = set()
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                done.add(str(json.loads(line)["question_id"]))
            except (json.JSONDecodeError, KeyError):
                continue  # a line cut by a kill mid-write: that question is answered again
    return done


def left_pad(prompts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):] = torch.tensor(prompt)
        mask[row, width - len(prompt):] = 1
    return ids, mask


@torch.no_grad()
def generate_answers(model, questions: Iterable[Question], encode: Encoder, tokenizer, out_jsonl: str | Path,
                     batch_size: int = 8, max_new_tokens: int = 16, progress: bool = True) -> Path:
    out = Path(out_jsonl)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = answered_ids(out)
    todo = [q for q in questions if str(q.question_id) not in done]
    model.eval()
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    with out.open("a") as sink, tqdm(total=len(todo), desc="answering", unit="q", disable=not progress) as bar:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            encoded = [encode(q) for q in chunk]
            ids, mask = left_pad([e[0] for e in encoded], pad_id)
            images = [e[1] for e in encoded if e[1] is not None]
            kwargs = dict(input_ids=ids.to(device), attention_mask=mask.to(device))
            if images:
                kwargs["pixel_values"] = torch.stack(images).to(device=device, dtype=model.dtype)
            generated = model.generate(**kwargs, max_new_tokens=max_new_tokens, do_sample=False,
                                       pad_token_id=pad_id, eos_token_id=tokenizer.eos_token_id)
            for q, row in zip(chunk, generated[:, ids.shape[1]:]):
                text = tokenizer.decode(row, skip_special_tokens=True).strip()
                sink.write(json.dumps({"question_id": q.question_id, "prompt": q.text, "text": text, **q.extra}) + "\n")
            sink.flush()
            bar.update(len(chunk))
    return out
