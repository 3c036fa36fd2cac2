"""The torch side of the lmms-eval plugin: load a model folder, turn (context, images) into our
prompt, generate through our answer loop, score continuations. Knows nothing of lmms-eval.

Prompts are built exactly as `gamma-mod eval` builds them, by the model's processor
(`data.processor.LlavaForkProcessor.encode_prompt`): the question gets LLaVA's `<image>\\n` in front
when it has an image and does not name one itself (lmms-eval's LLaVA model does the same), the
conversation template wraps it, and each image goes through the tower's own image processing (CLIP,
LLaVA-HR or Mini-Gemini-HD input). Generation IS the answer loop (`eval.answer.generate_answers`):
greedy, KV cache, left padding, the image token suppressed, answers cut at EOS — so a task scores
the same answers our own scorers would.

Log-likelihood of a continuation: the prompt ids + the continuation's ids as they tokenize after
the prompt text, one forward, the sum of log p(token | prefix) over the continuation (no EOS).
Rows of one batch share the continuation length, so with left padding the continuation starts at
one column: it is passed as `mod_decode_start`, and MoD decode rules treat the continuation exactly
as generated tokens.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ...data.formats import IMAGE_TAG
from ...data.processor import LlavaForkProcessor
from ...data.templates import ConversationTemplate, get_template
from ..answer import generate_answers, left_pad
from ..questions import Question, read_answers
from .efficiency import EfficiencyMeter
from .options import PluginArgumentError, PluginOptions

logger = logging.getLogger(__name__)


@dataclass
class Prompt:
    """One request: the task's text, its images (fetched when the batch is encoded), and where it
    comes from (for error messages)."""

    context: str
    visuals: Callable[[], Sequence[Any] | None]
    where: str = "request"


class GammaModRunner:
    def __init__(self, model, tokenizer, template: ConversationTemplate, batch_size: int = 1,
                 max_new_tokens: int = 1024, efficiency: EfficiencyMeter | None = None) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.template = template
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.processor = LlavaForkProcessor.from_config(model.config, tokenizer, template)
        self.has_mod_layers = bool(model.model.mod_layer_indices)
        self.efficiency = efficiency

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # -- loading ------------------------------------------------------------------------------------
    @classmethod
    def from_options(cls, options: PluginOptions) -> "GammaModRunner":
        from transformers import AutoConfig, AutoModelForCausalLM

        import gamma_mod  # noqa: F401  registers our model types with the Auto classes
        from ...data.tokenizer import load_tokenizer

        template = get_template(options.template)
        folder = Path(options.pretrained)
        if not (folder / "config.json").is_file():
            raise PluginArgumentError(f"gamma_mod: pretrained={options.pretrained}: no config.json there "
                                      "(a local model folder is needed; nothing is downloaded)")
        config = AutoConfig.from_pretrained(folder)
        apply_mod_overrides(config, options.mod_overrides(), folder)
        device = options.device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = getattr(torch, options.dtype or ("bfloat16" if device.startswith("cuda") else "float32"))
        kwargs: dict[str, Any] = {"config": config, "dtype": dtype}
        if options.attn_implementation:
            kwargs["attn_implementation"] = options.attn_implementation
        model = AutoModelForCausalLM.from_pretrained(folder, **kwargs).to(device)
        tokenizer = load_tokenizer(str(folder))
        meter = EfficiencyMeter(model) if options.log_efficiency else None
        logger.info("gamma_mod: %s on %s (%s), MoD layers %s, template %s", folder, device, dtype,
                    model.model.mod_layer_indices or "none", template.name)
        return cls(model, tokenizer, template, batch_size=options.batch_size,
                   max_new_tokens=options.max_new_tokens, efficiency=meter)

    # -- prompts ------------------------------------------------------------------------------------
    def images_of(self, prompt: Prompt) -> list[Image.Image]:
        visuals = [v for v in (prompt.visuals() or []) if v is not None]
        bad = [type(v).__name__ for v in visuals if not isinstance(v, Image.Image)]
        if bad:
            raise ValueError(f"gamma_mod: {prompt.where}: visuals must be PIL images, got {bad} "
                             "(video and audio inputs are not supported by LLaVA-style image models)")
        if len(visuals) > 1:
            # The answer loop stacks one image per prompt (eval.answer.Encoder).
            raise ValueError(f"gamma_mod: {prompt.where}: {len(visuals)} images in one prompt; "
                             "the answer loop takes one image per prompt")
        if visuals and not self.processor.has_vision:
            raise ValueError(f"gamma_mod: {prompt.where}: the model has no vision tower but the request has an image")
        return visuals

    def question_text(self, context: str, n_images: int, where: str) -> str:
        """The user turn as `gamma-mod eval` would pose it: `<image>\\n` first when there is an image."""
        tags = context.count(IMAGE_TAG)
        if n_images == 0:
            return context.replace(IMAGE_TAG, "").strip()
        if tags == 0:
            return " ".join([IMAGE_TAG] * n_images) + "\n" + context
        if tags != n_images:
            raise ValueError(f"gamma_mod: {where}: the context names {tags} {IMAGE_TAG} but {n_images} images came")
        return context

    def encode(self, prompt: Prompt) -> tuple[list[int], torch.Tensor | None]:
        """(prompt ids with image tokens expanded, pixel values (3, S, S) or None)."""
        images = self.images_of(prompt)
        text = self.question_text(prompt.context, len(images), prompt.where)
        features = self.processor.encode_prompt(text, image=images[0] if images else None)
        return features["input_ids"].tolist(), (features["pixel_values"][0] if images else None)

    def _text_ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def continuation_ids(self, context: str, continuation: str, where: str) -> list[int]:
        """The continuation's tokens as they follow the rendered prompt (a tokenizer may join a
        leading space to the next word, so it is tokenized in place, not on its own)."""
        prompt_text = self.processor.template.render_prompt(context.strip())  # as LLaVA renders it, tags kept
        head = self._text_ids(prompt_text)
        whole = self._text_ids(prompt_text + continuation)
        if whole[:len(head)] != head:
            raise ValueError(f"gamma_mod: {where}: the continuation {continuation!r} merges into the prompt's "
                             "last token; its log-likelihood would not be of the continuation alone")
        return whole[len(head):]

    # -- generation ---------------------------------------------------------------------------------
    def generate(self, prompts: Sequence[Prompt], max_new_tokens: int | None = None,
                 until: Sequence[str] = (), task: str | None = None) -> list[str]:
        """Greedy answers through the answer loop, in the order given; cut at the first stop string."""
        if not prompts:
            return []
        # Longest first: a batch pads to its first row, and running out of memory happens at once.
        order = sorted(range(len(prompts)), key=lambda i: -len(self._text_ids(prompts[i].context)))
        questions = [Question(question_id=rank, text=prompts[i].context) for rank, i in enumerate(order)]

        def encode(question: Question):
            return self.encode(prompts[order[int(question.question_id)]])

        with tempfile.TemporaryDirectory(prefix="gamma_mod_lmms_") as tmp, self._measured(task):
            path = generate_answers(self.model, questions, encode, self.tokenizer, Path(tmp) / "answers.jsonl",
                                    batch_size=self.batch_size, max_new_tokens=max_new_tokens or self.max_new_tokens,
                                    progress=False)
            answers = {int(row["question_id"]): row["text"] for row in read_answers(path)}
        out = [""] * len(prompts)
        for rank, i in enumerate(order):
            out[i] = cut_at_stop(answers[rank], until)
        return out

    # -- log-likelihood -----------------------------------------------------------------------------
    @torch.no_grad()
    def loglikelihood(self, items: Sequence[tuple[Prompt, str]], task: str | None = None) -> list[tuple[float, bool]]:
        """(sum of the continuation's token log-probs, whether greedy decoding would produce it)."""
        conts = [self.continuation_ids(p.context, c, p.where) for p, c in items]
        results: list[tuple[float, bool]] = [(0.0, True)] * len(items)  # an empty continuation: log 1
        order = sorted((i for i in range(len(items)) if conts[i]),
                       key=lambda i: (len(conts[i]), -len(self._text_ids(items[i][0].context))))
        groups: dict[int, list[int]] = {}
        for i in order:
            groups.setdefault(len(conts[i]), []).append(i)
        with self._measured(task):
            for length, members in groups.items():
                for start in range(0, len(members), self.batch_size):
                    chunk = members[start:start + self.batch_size]
                    for i, result in zip(chunk, self._score_batch([items[i][0] for i in chunk],
                                                                  [conts[i] for i in chunk], length)):
                        results[i] = result
        return results

    def _score_batch(self, prompts: list[Prompt], conts: list[list[int]], length: int) -> list[tuple[float, bool]]:
        encoded = [self.encode(p) for p in prompts]
        ids, mask = left_pad([e[0] + c for e, c in zip(encoded, conts)], self._pad_id())  # (B, T)
        kwargs: dict[str, Any] = dict(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                      logits_to_keep=length + 1)
        images = [e[1] for e in encoded if e[1] is not None]
        if images:
            kwargs["pixel_values"] = torch.stack(images).to(device=self.device, dtype=self.model.dtype)
        if self.has_mod_layers:
            kwargs["mod_decode_start"] = ids.shape[1] - length
        logits = self.model(**kwargs).logits[:, :-1].float()  # (B, L, V): position t predicts token t + 1
        logprobs = logits.log_softmax(dim=-1)
        targets = torch.tensor(conts, device=logits.device)  # (B, L)
        picked = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        greedy = (logits.argmax(dim=-1) == targets).all(dim=-1)
        return [(float(s), bool(g)) for s, g in zip(picked.sum(dim=-1).tolist(), greedy.tolist())]

    def _pad_id(self) -> int:
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    def _measured(self, task: str | None):
        from contextlib import nullcontext

        return self.efficiency.task(task or "unnamed") if self.efficiency is not None else nullcontext()


def cut_at_stop(text: str, until: Sequence[str]) -> str:
    """Everything before the first stop string (lm-eval's rule); empty stop strings are ignored."""
    for stop in until:
        if stop:
            text = text.split(stop)[0]
    return text.strip()


def apply_mod_overrides(config, overrides: dict[str, Any], folder: Path) -> None:
    """Write inference switches into the config's `mod` section before the model is built."""
    if not overrides:
        return
    if config.mod_config() is None:
        raise PluginArgumentError(f"gamma_mod: {folder} is a dense model (no MoD layers); "
                                  f"{sorted(overrides)} apply to MoD models only")
    from ...mod.config import ModConfig

    known = {f.name for f in dataclasses.fields(ModConfig)}
    if "compat" in overrides and "compat" not in known:
        raise PluginArgumentError("gamma_mod: compat= needs the official-compat mode (the `mod.compat` config "
                                  "field), which this gamma-mod version does not have")
    config.mod = {**config.mod, **overrides}
    try:
        config.mod_config()
    except ValueError as err:
        raise PluginArgumentError(f"gamma_mod: {folder}: {err}") from None
