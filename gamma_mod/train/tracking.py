"""Experiment trackers: resolve `report_to` to HF Trainer integrations, log the resolved config to them.

TensorBoard writes under `output_dir/runs/<date>_<host>/` (the HF default). wandb runs offline with
`WANDB_MODE=offline` and, without an API key (environment or `wandb login`), is switched to offline
here so it never waits on a login prompt; its run goes to `$WANDB_DIR/wandb/` (default: the working
directory). mlflow logs where MLFLOW_TRACKING_URI says, else to mlflow's own default (mlflow >= 3.7:
`sqlite:///mlflow.db` in the working directory, which needs the full `mlflow` package; older: `./mlruns`).
A local file store (`MLFLOW_TRACKING_URI=file:./mlruns`, enough with `mlflow-skinny`) is refused by
mlflow >= 3.7 unless MLFLOW_ALLOW_FILE_STORE=true; asking for one by URI sets that here.

Each training call is one tracker run: the wandb run the Trainer opened is finished at train end (HF
leaves it open, so the pipeline's next stage would otherwise log into the previous stage's run).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import os
import sys

from transformers import TrainerCallback

from ..config import ConfigError

logger = logging.getLogger(__name__)

# Integration -> the module it needs (TensorBoard through torch.utils.tensorboard needs `tensorboard`).
PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


def installed(name: str) -> bool:
    return importlib.util.find_spec(PACKAGES[name]) is not None


def resolve_report_to(trackers: list[str]) -> list[str]:
    """`TrainConfig.trackers()` -> the HF `report_to` list ([]: none). ConfigError when one is missing."""
    if trackers == ["none"]:
        return []
    if trackers == ["auto"]:
        return ["tensorboard"] if installed("tensorboard") else []
    if trackers == ["all"]:
        trackers = [name for name in PACKAGES if installed(name)]  # then checked like a list of names
    missing = [t for t in trackers if not installed(t)]
    if missing:
        raise ConfigError(f"report_to={','.join(trackers)}: {', '.join(missing)} is not installed "
                          f"(pip install {' '.join(PACKAGES[m] for m in missing)}, or report_to=none)")
    if "wandb" in trackers and os.environ.get("WANDB_MODE") is None and not wandb_logged_in():
        # wandb.init() would otherwise ask for a login on a terminal and block the run.
        logger.warning("report_to includes wandb but WANDB_API_KEY is not set: logging offline (WANDB_MODE=offline); "
                       "`wandb sync` uploads the run later")
        os.environ["WANDB_MODE"] = "offline"
    if "mlflow" in trackers:
        check_mlflow_store()
    return list(trackers)


def check_mlflow_store() -> None:
    """Fail before the model is built when mlflow's store cannot open (HF would fail at train start)."""
    import mlflow

    uri = mlflow.get_tracking_uri()
    if uri.startswith("sqlite:") and not sqlalchemy_installed():
        raise ConfigError(f"report_to=mlflow: mlflow's tracking store is {uri}, which needs the full mlflow package "
                          "(pip install mlflow); or log to a local folder with "
                          "MLFLOW_TRACKING_URI=file:./mlruns")
    file_store = uri.startswith("file:") or (":" not in uri.replace("\\", "/").split("/")[0] and uri != "databricks")
    if file_store and os.environ.get("MLFLOW_ALLOW_FILE_STORE") is None:
        # The file store was asked for by URI; mlflow >= 3.7 only refuses it unless opted in.
        logger.info("report_to=mlflow: file store %s (MLFLOW_ALLOW_FILE_STORE=true)", uri)
        os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"


def sqlalchemy_installed() -> bool:
    """mlflow's database stores need SQLAlchemy: the full `mlflow` package has it, `mlflow-skinny` not."""
    return importlib.util.find_spec("sqlalchemy") is not None


def wandb_logged_in() -> bool:
    """An API key in the environment or from `wandb login` (~/.netrc): wandb.init() will not prompt."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = os.path.join(os.path.expanduser("~"), ".netrc")
    try:
        with open(netrc, encoding="utf-8") as f:
            return "api.wandb.ai" in f.read()
    except OSError:
        return False


def flat_config(config) -> dict[str, str | int | float | bool]:
    """A (nested) dataclass config as flat `section.field` hyperparameters (lists and None as strings)."""
    out: dict[str, str | int | float | bool] = {}

    def walk(prefix: str, value) -> None:
        if dataclasses.is_dataclass(value):
            for f in dataclasses.fields(value):
                walk(f"{prefix}{f.name}.", getattr(value, f.name))
            return
        key = prefix[:-1]
        out[key] = value if isinstance(value, (str, int, float, bool)) else str(value)

    walk("", config)
    return out


class ConfigLogger(TrainerCallback):
    """Logs the resolved training config as hyperparameters to every active tracker at train start, and
    finishes the wandb run the Trainer opened at train end (a run the caller opened is left alone).

    Runs after the integrations' own on_train_begin / on_train_end (callbacks passed to the Trainer
    come after them), so their writers / runs exist by then and are done with at the end.
    """

    def __init__(self, config, trainer) -> None:
        self.params = flat_config(config)
        self.trainer = trainer
        wandb = sys.modules.get("wandb")
        self.caller_wandb_run = wandb.run if wandb is not None else None

    def on_train_end(self, args, state, control, **kwargs):
        for callback in self.trainer.callback_handler.callbacks:
            wandb = getattr(callback, "_wandb", None) if type(callback).__name__ == "WandbCallback" else None
            if wandb is None or wandb.run is None or wandb.run is self.caller_wandb_run:
                continue
            try:
                wandb.finish()
                callback._initialized = False  # a later train() on this Trainer opens a new run
            except Exception as e:  # the model is trained; the run file is closed at exit anyway
                logger.warning("could not finish the wandb run: %s", e)

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        for callback in self.trainer.callback_handler.callbacks:
            name = type(callback).__name__
            try:
                if name == "TensorBoardCallback" and getattr(callback, "tb_writer", None) is not None:
                    write_tensorboard_hparams(callback.tb_writer, self.params)
                elif name == "WandbCallback" and getattr(callback, "_wandb", None) is not None:
                    if callback._wandb.run is not None:
                        callback._wandb.config.update({"gamma_mod": self.params}, allow_val_change=True)
                elif name == "MLflowCallback" and getattr(callback, "_ml_flow", None) is not None:
                    callback._ml_flow.log_params({f"gamma_mod.{k}": str(v)[:250] for k, v in self.params.items()})
            except Exception as e:  # a tracker hiccup must not stop training; say so
                logger.warning("could not log the config to %s: %s", name, e)


def write_tensorboard_hparams(writer, params: dict) -> None:
    """The config in TensorBoard's HPARAMS tab, in the run's own event file (add_hparams would open a new one)."""
    from torch.utils.tensorboard.summary import hparams

    experiment, session_start, session_end = hparams(params, {})
    file_writer = writer._get_file_writer()
    for summary in (experiment, session_start, session_end):
        file_writer.add_summary(summary)
    writer.add_text("gamma_mod/config", "\n".join(f"    {k}: {v}" for k, v in params.items()))
    writer.flush()
