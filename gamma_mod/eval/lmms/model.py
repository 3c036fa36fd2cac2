"""`--model gamma_mod`: any gamma-mod model folder (dense or MoD; LLaVA-1.5, LLaVA-HR, MGM-HD) as an
lmms-eval 0.7 model. Needs the `lmms` extra; imported only by lmms-eval's registry.

    python -m lmms_eval --model gamma_mod --model_args pretrained=DIR,batch_size=8 --tasks gqa,pope,mme

Requests arrive as lmms-eval `Instance`s (args layouts from `lmms_eval.api.task.ConfigurableTask.
construct_requests`):
  generate_until              (context, gen_kwargs, doc_to_visual, doc_id, task, split)
  loglikelihood               (context, continuation or doc_to_target, doc_to_visual, doc_id, task, split),
                              or (context, continuation) for unconditional scores (acc_mutual_info)
  generate_until_multi_round  (context, gen_kwargs, doc_to_visual, doc_to_text, doc_id, task, split)
and are answered through `runner.GammaModRunner` (our answer loop), grouped by task and gen_kwargs.

Deviations from lmms-eval's own `llava` model, on purpose:
  - log-likelihood is the SUM of the continuation's token log-probs (the API's contract); `llava`
    returns the mean loss over the whole answer turn (positive, EOS included);
  - `until` stop strings cut the answer (lm-eval's rule); `llava` ignores them;
  - decoding is greedy (our answer loop): a request for sampling (temperature > 0, do_sample) or beam
    search is answered greedily, with a warning giving the count per task and gen_kwargs;
  - one image per prompt (multi-image and video requests are an error naming the document);
  - one process: data-parallel launches (WORLD_SIZE > 1) are refused.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from typing import Any

from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms

from .efficiency import format_table
from .options import PluginOptions
from .runner import GammaModRunner, Prompt

logger = logging.getLogger(__name__)

# Generation kwargs read (max_new_tokens, until) or checked for sampling; any other key is reported.
GREEDY_KEYS = {"max_new_tokens", "until", "temperature", "top_p", "top_k", "num_beams", "do_sample"}
MAX_ROUNDS = 64  # a multi-round task whose doc_to_text never signals the end is an error, not a hang


class GammaModLMMS(lmms):
    is_simple = True

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            # Data-parallel runs need lmms-eval's accelerate/torchrun plumbing (rank, gather), not built here.
            raise RuntimeError("gamma_mod: multi-process runs (accelerate launch / torchrun) are not supported; "
                               "run lmms-eval as one process (one GPU)")
        # lmms-eval passes max_batch_size (for batch_size=auto, which we do not take) to every model.
        kwargs.pop("max_batch_size", None)
        self.options = PluginOptions.from_kwargs(kwargs)
        self.runner = GammaModRunner.from_options(self.options)

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None) -> "GammaModLMMS":
        """lmms-eval's rule, except that `--model_args batch_size=8` wins over the CLI's `--batch_size`
        default of 1 instead of colliding with it (a TypeError in the base class)."""
        from lmms_eval import utils

        extra = {k: v for k, v in (additional_config or {}).items() if v is not None}
        return cls(**{**extra, **utils.simple_parse_args_string(arg_string)})

    # lmms-eval reads these for its logs and batching.
    @property
    def batch_size(self) -> int:
        return self.options.batch_size

    @property
    def device(self):
        return self.runner.device

    @property
    def model(self):
        return self.runner.model

    @property
    def tokenizer(self):
        return self.runner.tokenizer

    # -- requests ---------------------------------------------------------------------------------
    def _doc(self, task: str, split: str, doc_id: int):
        return self.task_dict[task][split][doc_id]

    def _prompt(self, context: str, doc_to_visual, doc_id, task, split) -> Prompt:
        if doc_to_visual is None:
            return Prompt(context, lambda: [], where=f"task {task}")
        return Prompt(context, lambda: doc_to_visual(self._doc(task, split, doc_id)), where=f"task {task} doc {doc_id}")

    def _generation_settings(self, task: str, gen_kwargs: dict[str, Any], count: int) -> tuple[int | None, list[str]]:
        until = gen_kwargs.get("until") or []
        if isinstance(until, str):
            until = [until]
        if not isinstance(until, list):
            raise ValueError(f"gamma_mod: task {task}: gen_kwargs['until'] must be a string or a list, got {until!r}")
        sampling = (gen_kwargs.get("do_sample") or (gen_kwargs.get("temperature") or 0) > 0
                    or (gen_kwargs.get("num_beams") or 1) > 1)
        if sampling:
            logger.warning("gamma_mod: task %s: %d requests ask for sampling or beam search (%s); answered greedily "
                           "(our answer loop)", task, count,
                           {k: gen_kwargs.get(k) for k in ("do_sample", "temperature", "num_beams")})
        ignored = sorted(set(gen_kwargs) - GREEDY_KEYS)
        if ignored:
            logger.warning("gamma_mod: task %s: gen_kwargs %s ignored for %d requests (the answer loop takes "
                           "max_new_tokens and until)", task, ignored, count)
        max_new = gen_kwargs.get("max_new_tokens")
        return (int(max_new) if max_new is not None else None), until

    def generate_until(self, requests: list[Instance]) -> list[str]:
        results: list[str] = [""] * len(requests)
        for (task, _), members in _group(requests, lambda a: (a[4], _key(a[1]))).items():
            gen_kwargs = dict(requests[members[0]].args[1] or {})
            max_new, until = self._generation_settings(task, gen_kwargs, len(members))
            prompts = []
            for i in members:
                context, _, doc_to_visual, doc_id, task_name, split = requests[i].args
                prompts.append(self._prompt(context, doc_to_visual, doc_id, task_name, split))
            for i, text in zip(members, self.runner.generate(prompts, max_new, until, task=task)):
                results[i] = text
        return results

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        items, tasks = [], []
        for request in requests:
            args = request.args
            if len(args) == 2:  # unconditional score of a choice (acc_mutual_info): no document, no image
                context, continuation = args
                items.append((Prompt(context, lambda: [], where=f"task {request.task_name}"), continuation))
                tasks.append(request.task_name)
                continue
            context, target, doc_to_visual, doc_id, task, split = args
            continuation = target if isinstance(target, str) else target(self._doc(task, split, doc_id))
            if not isinstance(continuation, str):
                raise ValueError(f"gamma_mod: task {task} doc {doc_id}: the continuation must be text, got "
                                 f"{type(continuation).__name__} {continuation!r} from doc_to_target")
            items.append((self._prompt(context, doc_to_visual, doc_id, task, split), continuation))
            tasks.append(task)
        results: list[tuple[float, bool]] = [(0.0, True)] * len(requests)
        for task, members in _group(range(len(items)), lambda i: tasks[i]).items():
            for i, result in zip(members, self.runner.loglikelihood([items[i] for i in members], task=task)):
                results[i] = result
        return results

    def generate_until_multi_round(self, requests: list[Instance]) -> list[list[str]]:
        """Round 0 answers the context; each later round asks the task's doc_to_text(doc, previous_output=
        [answers so far], round_idx=r, previous_round_info=...) for (visuals, context, done, round answers,
        info) until it says done (lmms-eval's protocol, as in its llava_onevision model). Documents run in
        batches, round by round; the result per document is its list of round answers."""
        results: list[list[str]] = [[] for _ in requests]
        for (task, _), members in _group(requests, lambda a: (a[5], _key(a[1]))).items():
            gen_kwargs = dict(requests[members[0]].args[1] or {})
            max_new, until = self._generation_settings(task, gen_kwargs, len(members))
            state: dict[int, dict[str, Any]] = {}
            prompts: dict[int, Prompt] = {}
            for i in members:
                context, _, doc_to_visual, doc_to_text, doc_id, _, split = requests[i].args
                state[i] = {"doc": (doc_id, split), "doc_to_text": doc_to_text, "answers": [], "info": None}
                prompts[i] = self._prompt(context, doc_to_visual, doc_id, task, split)
            for round_idx in range(MAX_ROUNDS):
                if round_idx:
                    prompts = {}
                    for i, s in state.items():
                        doc = self._doc(task, s["doc"][1], s["doc"][0])
                        visuals, context, done, answers, info = s["doc_to_text"](
                            doc, previous_output=list(s["answers"]), round_idx=round_idx, previous_round_info=s["info"])
                        s["answers"], s["info"] = list(answers), info
                        if done:
                            results[i] = [str(a) for a in s["answers"]]
                        else:
                            prompts[i] = Prompt(context, lambda v=visuals: v or [],
                                                where=f"task {task} doc {s['doc'][0]}")
                    state = {i: state[i] for i in prompts}
                if not state:
                    break
                order = sorted(prompts)
                for i, text in zip(order, self.runner.generate([prompts[i] for i in order], max_new, until, task=task)):
                    state[i]["answers"].append(text)
            else:
                raise RuntimeError(f"gamma_mod: task {task}: doc_to_text did not end the conversation within "
                                   f"{MAX_ROUNDS} rounds (docs {[s['doc'][0] for s in state.values()]})")
        return results

    # -- end of run -------------------------------------------------------------------------------
    def clean(self) -> None:
        """lmms-eval calls this once every request is answered: write the efficiency report."""
        meter = self.runner.efficiency
        if meter is not None and self.options.log_efficiency:
            path = meter.write(self.options.log_efficiency)
            print(f"gamma_mod efficiency (prefill, paper TFLOPs convention) -> {path}\n{format_table(meter.report())}")
            meter.close()
        super().clean()


def _key(gen_kwargs: dict | None) -> str:
    return json.dumps(gen_kwargs or {}, sort_keys=True, default=str)


def _group(items: Iterable, key) -> dict[Any, list[int]]:
    """Indices grouped by key, in first-seen order. Instances are keyed on their args."""
    groups: dict[Any, list[int]] = {}
    for index, item in enumerate(items):
        groups.setdefault(key(item.args if isinstance(item, Instance) else item), []).append(index)
    return groups
