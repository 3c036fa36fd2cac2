"""A thin `transformers.Trainer` subclass: MoD-aware logging, divergence and router-collapse guards,
atomic checkpoints, LLaVA's modality-grouped length sampler."""

from __future__ import annotations

import logging
import math
import warnings
from collections import defaultdict

import torch
from transformers import Trainer
from transformers.trainer_pt_utils import nested_gather

from . import checkpoint
from .metrics import ModMetrics
from .sampler import ModalityLengthGroupedSampler

logger = logging.getLogger(__name__)


class TrainingDivergedError(RuntimeError):
    pass


class GammaTrainer(Trainer):
    def __init__(self, *args, collapse_patience: int = 50, group_by_modality_length: bool = False, **kwargs) -> None:
        self.mod_metrics = ModMetrics()  # per-layer MoD metrics, merged into every log (train/metrics.py)
        kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), self.mod_metrics]
        super().__init__(*args, **kwargs)
        self.collapse_patience = collapse_patience
        self.group_by_modality_length = group_by_modality_length
        self._sums: dict[str, float] = defaultdict(float)
        self._counts: dict[str, int] = defaultdict(int)
        self._collapse_streak: dict[int, int] = defaultdict(int)
        self._collapse_warned: set[int] = set()
        self._staging_dir: str | None = None
        # Sum of the per-step losses before this train() call (a resumed run's earlier steps).
        self.loss_sum_before_resume = 0.0

    # -- data order ---------------------------------------------------------------------------
    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if not self.group_by_modality_length or dataset is None:
            return super()._get_train_sampler(train_dataset)
        lengths = getattr(dataset, "modality_lengths", None)
        if lengths is None:
            raise ValueError(f"group_by_modality_length needs a dataset with `modality_lengths`; "
                             f"{type(dataset).__name__} has none")
        # LLaVA's world size: ranks x accumulation steps, so one megabatch is one optimizer step.
        return ModalityLengthGroupedSampler(
            lengths, self.args.train_batch_size, self.args.world_size * self.args.gradient_accumulation_steps,
            seed=self.args.data_seed if self.args.data_seed is not None else self.args.seed)

    # -- loss, logging and guards ---------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        sample_ids = inputs.pop("sample_ids", None)
        outputs = model(**inputs)
        loss = outputs.loss
        if not torch.isfinite(loss).all():
            step = self.state.global_step + 1
            ids = f" (samples {', '.join(map(str, sample_ids))})" if sample_ids else ""
            raise TrainingDivergedError(f"non-finite loss {loss.item()} at step {step}{ids}; stopping training")
        # a plain Hugging Face family model's output has neither (its MoD twin's has both)
        if getattr(outputs, "lm_loss", None) is not None:
            self._accumulate("lm_loss", outputs.lm_loss)
        if getattr(outputs, "routing_loss", None) is not None:
            self._accumulate("routing_loss", outputs.routing_loss)
        self._track_routing(model)
        if self.model.training:
            self.mod_metrics.end_step(outputs.logits.shape[0] * outputs.logits.shape[1])
        return (loss, outputs) if return_outputs else loss

    def _accumulate(self, name: str, value: torch.Tensor) -> None:
        self._sums[name] += float(value.detach())
        self._counts[name] += 1

    def _track_routing(self, model) -> None:
        stats = getattr(self.accelerator.unwrap_model(model), "last_routing_stats", None) or {}
        if not self.model.training or not stats:
            return
        for layer, (routable, skipped) in stats.items():
            collapsed = routable > 0 and skipped in (0, routable)
            self._collapse_streak[layer] = self._collapse_streak[layer] + 1 if collapsed else 0
            if self._collapse_streak[layer] >= self.collapse_patience and layer not in self._collapse_warned:
                self._collapse_warned.add(layer)
                message = (f"router collapse in MoD layer {layer}: it kept all or none of its routable tokens "
                           f"for {self._collapse_streak[layer]} consecutive steps")
                warnings.warn(message, stacklevel=2)
                logger.warning(message)

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        for name, total in self._sums.items():
            if self._counts[name]:
                logs[name] = round(total / self._counts[name], 6)
        self._sums.clear()
        self._counts.clear()
        if "loss" in logs or "train_runtime" in logs:  # training logs and the final summary (the last window)
            logs.update(self.mod_metrics.flush())
        super().log(logs, *args, **kwargs)

    def run_loss_sum(self) -> float:
        """Sum of the per-step losses of the whole run so far, during training.

        The Trainer drains its on-device accumulator into `_total_loss_scalar` at each logging step;
        what is not logged yet is still in `_tr_loss`. Collective under distributed training (the
        mean over processes, as the Trainer logs it): every process must call it.
        """
        pending = nested_gather(self._tr_loss, self.args.parallel_mode).mean().item()
        return self.loss_sum_before_resume + self._total_loss_scalar + pending

    # -- atomic checkpoints -------------------------------------------------------------------
    def _get_output_dir(self, trial) -> str:
        if self._staging_dir is not None:
            return self._staging_dir
        return super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial) -> None:
        run_dir = super()._get_output_dir(trial)
        staging = checkpoint.staging_dir(run_dir)
        if self.args.should_save and staging.exists():
            import shutil

            shutil.rmtree(staging)  # leftovers of a save that was killed
        self._staging_dir = str(staging)
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging_dir = None
        loss_sum = self.run_loss_sum()
        if self.args.should_save:
            staged = staging / f"checkpoint-{self.state.global_step}"
            checkpoint.write_run_loss(staged, self.state.global_step, loss_sum)
            final = checkpoint.publish(staged, run_dir)
            checkpoint.rotate(run_dir, self.args.save_total_limit or 0)
            logger.info("checkpoint written atomically: %s", final)
        if self.args.world_size > 1:
            torch.distributed.barrier()


