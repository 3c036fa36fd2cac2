"""Experiment tracking (issue 24): report_to, the mod/* metrics, run-folder plots and report.md."""

import importlib
import json
import math
import os

import pytest
import torch
import yaml
from torch import nn

from gamma_mod.config import ConfigError
from gamma_mod.data.synthetic import write_synthetic_dataset
from gamma_mod.mod.config import ModConfig
from gamma_mod.mod.layer import LayerRoutingStats, ModForwardContext
from gamma_mod.mod.strategies import build_strategy
from gamma_mod.train import metrics
from gamma_mod.train.metrics import ModMetrics
from gamma_mod.train.tracking import flat_config, resolve_report_to
from gamma_mod.train.train import run_training

from conftest import MICRO_SPEC
from test_train import config


# -- the metrics, on layers whose router output and routing record are set by hand -------------------
class FixedRouter(nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = logits
        self.calls = 0

    def forward(self, hidden):
        self.calls += 1
        return self.logits


class FakeModLayer(nn.Module):
    """What ModMetrics reads of a MoD layer: router, strategy, layer_idx, mod, and the record in ctx.stats."""

    def __init__(self, idx, router, strategy, record):
        super().__init__()
        self.layer_idx, self.router, self.strategy, self.mod = idx, router, strategy, strategy.mod
        self.record = record  # (step) -> the LayerRoutingStats this forward writes

    def forward(self, hidden, mod_context=None):
        self.router(hidden)
        mod_context.stats[self.layer_idx] = self.record()
        return hidden


class Net(nn.Module):
    def __init__(self, layers):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, ctx):
        h = torch.zeros(1, 4, 2)
        for layer in self.layers:
            h = layer(h, mod_context=ctx)
        return h


def keep_record(keep, loss, as_tensors=False):
    keep = torch.tensor([keep], dtype=torch.bool)
    routable = torch.tensor([[True, True, True, False]])
    r, s = int(routable.sum()), int((routable & ~keep).sum())
    if as_tensors:  # the lazy, tensor-valued form of the record
        r, s = torch.tensor(r), torch.tensor(s)
    return LayerRoutingStats(routable=r, skipped=s, loss=torch.tensor(loss), keep=keep)


def test_mod_metrics_match_hand_computed_values(monkeypatch):
    clock = iter([0.0, 100.0, 104.0, 110.0])  # init, train begin, flush, flush
    monkeypatch.setattr(metrics.time, "perf_counter", lambda: next(clock))
    # gamma: logits [0, x] -> keep probability sigmoid(x): x = 10, -10, ln 3 on the 3 routable tokens.
    logits = torch.tensor([[[0.0, 10.0], [0.0, -10.0], [0.0, math.log(3)], [0.0, 0.0]]])
    shared = FixedRouter(logits)
    strategy = build_strategy(ModConfig(mod_layers_idx=[3, 5]))
    records3 = iter([keep_record([1, 0, 1, 1], 0.7), keep_record([0, 0, 1, 1], 0.5)])
    records5 = iter([keep_record([1, 1, 1, 1], 0.2, True), keep_record([1, 1, 1, 1], 0.4, True)])
    net = Net([FakeModLayer(3, shared, strategy, lambda: next(records3)),
               FakeModLayer(5, shared, strategy, lambda: next(records5))])
    collector = ModMetrics()
    collector.on_train_begin(None, None, None, model=net)  # clock: 100
    assert len(collector._handles) == 3  # two layers, one shared router hooked once
    routable = torch.tensor([[True, True, True, False]])
    for _ in range(2):
        net(ModForwardContext(routable=routable, attention_mask=torch.ones(1, 4)))
        collector.end_step(num_tokens=8)
    # A gradient-checkpointing recompute (after end_step) and an eval forward count for nothing.
    records3, records5 = iter([keep_record([0, 0, 0, 1], 9.0)] * 2), iter([keep_record([0, 0, 0, 1], 9.0)] * 2)
    net(ModForwardContext(routable=routable, attention_mask=torch.ones(1, 4)))
    net.eval()
    net(ModForwardContext(routable=routable, attention_mask=torch.ones(1, 4)))
    logs = collector.flush()  # clock: 104
    expected = {
        "perf/tokens_per_second": 16 / 4,
        "mod/skip/layer_03": 3 / 6, "mod/skip_all/layer_03": 3 / 8,
        "mod/skip/layer_05": 0.0, "mod/skip_all/layer_05": 0.0,
        "mod/routing_loss/layer_03": 0.6, "mod/routing_loss/layer_05": 0.3, "mod/routing_loss/total": 0.9,
        # scores 0.9999546, 0.0000454, 0.75: mean 1.75 / 3, std sqrt(E[s^2] - mean^2)
        "mod/score_mean/layer_03": 0.583333, "mod/score_std/layer_03": 0.424883,
        "mod/score_near0/layer_03": 1 / 3, "mod/score_near1/layer_03": 1 / 3,
        "mod/score_mean/layer_05": 0.583333, "mod/score_std/layer_05": 0.424883,
        "mod/score_near0/layer_05": 1 / 3, "mod/score_near1/layer_05": 1 / 3,
    }
    assert logs.keys() == expected.keys()
    for key, value in expected.items():
        assert logs[key] == pytest.approx(value, abs=2e-6), key
    net.train()
    assert collector.flush() == {}  # the window was reset
    collector.on_train_end(None, None, None)
    assert not collector._handles and not shared._forward_hooks


def test_pmod_metrics_report_logit_spread_and_tanhnorm_range():
    logits = torch.tensor([[0.5, -1.0, 2.0, 3.0]])  # p-MoD: one logit per token; token 3 not routable
    strategy = build_strategy(ModConfig(mod_layers_idx=[1], strategy="pmod"))
    net = Net([FakeModLayer(1, FixedRouter(logits), strategy, lambda: keep_record([1, 0, 1, 1], 0.0))])
    collector = ModMetrics()
    collector.attach(net)
    net(ModForwardContext(routable=torch.tensor([[True, True, True, False]])))
    collector.end_step()
    logs = collector.flush()
    assert logs["mod/score_mean/layer_01"] == pytest.approx(0.5, abs=1e-6)
    assert logs["mod/score_std/layer_01"] == pytest.approx(1.224745, abs=1e-6)  # sqrt(5.25 / 3 - 0.25)
    assert logs["mod/tanhnorm_min/layer_01"] == pytest.approx(1 - 0.2 * 0.761594, abs=1e-6)  # tanh(-1)
    assert logs["mod/tanhnorm_max/layer_01"] == pytest.approx(1 + 0.2 * 0.964028, abs=1e-6)  # tanh(2), not tanh(3)
    assert "mod/score_near0/layer_01" not in logs  # logits are no probabilities


# -- report_to -------------------------------------------------------------------------------------
def test_report_to_values(monkeypatch, tmp_path):
    from gamma_mod.train import tracking

    installed = {"tensorboard": True, "wandb": False, "mlflow": False}
    monkeypatch.setattr(tracking, "installed", lambda name: installed[name])
    assert resolve_report_to(["auto"]) == ["tensorboard"] and resolve_report_to(["none"]) == []
    assert resolve_report_to(["all"]) == ["tensorboard"]
    with pytest.raises(ConfigError, match="wandb is not installed"):
        resolve_report_to(["tensorboard", "wandb"])
    installed["tensorboard"] = False
    assert resolve_report_to(["auto"]) == []
    # wandb without a key or `wandb login` goes offline instead of prompting; a login keeps it online.
    installed["wandb"] = True
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.setenv(name, "x")
        monkeypatch.delenv(name)  # absent now, and absent again after the test
    assert resolve_report_to(["wandb"]) == ["wandb"] and os.environ["WANDB_MODE"] == "offline"
    monkeypatch.delenv("WANDB_MODE")
    (tmp_path / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password k\n")
    assert resolve_report_to(["wandb"]) == ["wandb"] and "WANDB_MODE" not in os.environ


def test_report_to_is_validated(tmp_path):
    from gamma_mod.config import build
    from gamma_mod.train.args import TrainConfig

    with pytest.raises(ValueError, match="report_to must be one of"):
        build(TrainConfig, {"data": {"train_json": "x"}, "report_to": "tensorbord"})
    with pytest.raises(ValueError, match="report_to must be one of"):
        build(TrainConfig, {"data": {"train_json": "x"}, "report_to": "none,wandb"})
    cfg = build(TrainConfig, {"data": {"train_json": "x"}, "report_to": "tensorboard, wandb"})
    assert cfg.trackers() == ["tensorboard", "wandb"]
    assert flat_config(cfg)["optim.lr"] == 2e-5 and flat_config(cfg)["mod"] == "None"


# -- a tiny MoD training run per tracker -----------------------------------------------------------
@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    return write_synthetic_dataset(root, n_captions=8, n_vqa_train=8, n_vqa_test=2, image_size=32, seed=1)


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    path = tmp_path_factory.mktemp("spec") / "micro.yaml"
    path.write_text(yaml.safe_dump(MICRO_SPEC))
    return str(path)


def mod_run(data, spec, out, report_to):
    return run_training(config(data, spec, out, stage="finetune", report_to=report_to, run_name="tiny-mod",
                               **{"mod": {"layers": [1], "skip_ratio": 0.5}, "optim.max_steps": 3}))


def history(out):
    return json.loads((out / "complete.json").read_text())["log_history"]


def test_tensorboard_events_hold_the_mod_metrics_and_the_config(data, spec, tmp_path):
    need("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    out = mod_run(data, spec, tmp_path / "tb", "tensorboard")
    logdirs = [p.parent for p in (out / "runs").rglob("events.out.tfevents.*")]
    assert len(logdirs) == 1
    events = EventAccumulator(str(logdirs[0])).Reload()
    scalars = set(events.Tags()["scalars"])
    logged = [h for h in history(out) if "loss" in h]
    assert len(logged) == 3
    for key in ("mod/skip/layer_01", "mod/skip_all/layer_01", "mod/routing_loss/layer_01", "mod/routing_loss/total",
                "mod/score_mean/layer_01", "mod/score_std/layer_01", "perf/tokens_per_second", "loss"):
        assert f"train/{key}" in scalars, key
        assert [e.value for e in events.Scalars(f"train/{key}")] == pytest.approx([h[key] for h in logged], rel=1e-5)
    # One MoD layer at routing ratio 0.5: top-k skips half of each sample's routable tokens (rounding per sample).
    assert all(0.3 < h["mod/skip/layer_01"] <= 0.5 for h in logged)
    # Single layer: the total is that layer's loss, and it is what the model adds to lm_loss.
    for h in logged:
        assert h["mod/routing_loss/total"] == h["mod/routing_loss/layer_01"] == pytest.approx(h["routing_loss"], rel=1e-5)
    # The resolved config as hyperparameters (TensorBoard's HPARAMS tab).
    start = plugin_data_pb2.HParamsPluginData.FromString(
        events.SummaryMetadata("_hparams_/session_start_info").plugin_data.content).session_start_info
    assert start.hparams["optim.lr"].number_value == pytest.approx(1e-3)
    assert start.hparams["mod.layers"].string_value == "[1]"
    assert start.hparams["report_to"].string_value == "tensorboard"
    # The run folder's pictures and report.md.
    report = (out / "report.md").read_text()
    for name in ("loss.png", "routing_loss.png", "skip_fraction.png"):
        assert (out / name).stat().st_size > 1000 and f"]({name})" in report
    assert "| `mod/skip/layer_01` |" in report


def test_report_to_none_writes_no_tracker_files(data, spec, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # wandb / mlflow would write here (./wandb, ./mlruns, ./mlflow.db)
    for name in ("WANDB_DIR", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    out = mod_run(data, spec, tmp_path / "none", "none")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["none"]
    assert not (out / "runs").exists() and not (out / "wandb").exists() and not (out / "mlruns").exists()
    assert any("mod/skip/layer_01" in h for h in history(out))  # the metrics still reach log_history
    assert (out / "skip_fraction.png").is_file() and (out / "report.md").is_file()


def need(module):
    """A test-extra package: missing in CI (a clean install of the test extra) is an error, elsewhere a skip."""
    if os.environ.get("CI"):
        return importlib.import_module(module)
    return pytest.importorskip(module, reason=f"{module} is not installed (pip install -e '.[test]')")


def wandb_records(run_file):
    """The `Record` protobufs of an offline .wandb file (wandb >= 0.2x ships no Python reader for it): a 7-byte
    header (":W&B", magic 0xBEE1, version 0), then LevelDB-log framing in 32 KiB blocks; each chunk is
    crc32 (IEEE, seeded with the crc of its type byte), length u16, type (1 full, 2 first, 3 middle, 4 last)."""
    import struct
    import zlib

    from wandb.proto import wandb_internal_pb2

    raw, pos, block, chunks, records = run_file.read_bytes(), 7, 32768, b"", []
    assert raw[:4] == b":W&B", raw[:7]
    while pos + 7 <= len(raw):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        crc, length, kind = struct.unpack("<IHB", raw[pos:pos + 7])
        data = raw[pos + 7:pos + 7 + length]
        if kind == 0 and length == 0:  # zero fill at the end of a preallocated block
            pos += block - pos % block
            continue
        assert crc == zlib.crc32(data, zlib.crc32(bytes([kind]))), f"bad chunk crc at byte {pos}"
        chunks += data
        pos += 7 + length
        if kind in (1, 4):
            records.append(wandb_internal_pb2.Record.FromString(chunks))
            chunks = b""
    assert not chunks, "a record cut off at the end of the file"
    return records


def wandb_history(records):
    return [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
            for r in records if r.WhichOneof("record_type") == "history"]


def test_wandb_offline_run_holds_the_mod_metrics(data, spec, tmp_path, monkeypatch):
    wandb = need("wandb")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc login
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    for name in ("WANDB_MODE", "WANDB_API_KEY"):  # our code must pick offline by itself
        monkeypatch.setenv(name, "x")
        monkeypatch.delenv(name)
    out = mod_run(data, spec, tmp_path / "wb", "wandb")
    assert os.environ["WANDB_MODE"] == "offline"
    assert wandb.run is None  # finished at train end: the file is complete, a next stage gets its own run
    runs = list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1
    records = wandb_records(runs[0])
    rows = [r for r in wandb_history(records) if "train/loss" in r]
    logged = [h for h in history(out) if "loss" in h]
    assert len(rows) == len(logged) == 3
    for key in ("mod/skip/layer_01", "mod/skip_all/layer_01", "mod/routing_loss/layer_01", "mod/routing_loss/total",
                "mod/score_mean/layer_01", "mod/score_std/layer_01", "perf/tokens_per_second", "loss"):
        assert [r[f"train/{key}"] for r in rows] == pytest.approx([h[key] for h in logged], rel=1e-5), key
    assert all(0.3 < r["train/mod/skip/layer_01"] <= 0.5 for r in rows)
    # The resolved config under `gamma_mod` in the run's config, and the run name.
    config = {}
    for r in records:
        if r.WhichOneof("record_type") == "config":
            config.update({item.key: json.loads(item.value_json) for item in r.config.update})
    assert config["gamma_mod"]["optim.lr"] == pytest.approx(1e-3)
    assert config["gamma_mod"]["report_to"] == "wandb"
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run.display_name == "tiny-mod"


def test_mlflow_file_store_holds_the_mod_metrics(data, spec, tmp_path, monkeypatch):
    need("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "x")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")  # mlflow >= 3.7 refuses a file store unless our code opts in
    out = mod_run(data, spec, tmp_path / "ml", "mlflow")
    client = MlflowClient(uri)
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.run_name == "tiny-mod" and run.info.status == "FINISHED"
    logged = [h for h in history(out) if "loss" in h]
    assert len(logged) == 3
    for key in ("mod/skip/layer_01", "mod/skip_all/layer_01", "mod/routing_loss/layer_01", "mod/routing_loss/total",
                "mod/score_std/layer_01", "loss"):
        points = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        assert [v for _, v in points] == pytest.approx([h[key] for h in logged], rel=1e-5), key
    assert float(run.data.params["gamma_mod.optim.lr"]) == pytest.approx(1e-3)
    assert run.data.params["gamma_mod.mod.layers"] == "[1]"


def test_mlflow_store_is_checked_before_training(monkeypatch, tmp_path):
    need("mlflow")
    from gamma_mod.train import tracking

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tracking, "sqlalchemy_installed", lambda: False)  # mlflow-skinny: no database store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")
    with pytest.raises(ConfigError, match="needs the full mlflow package"):
        resolve_report_to(["mlflow"])
    monkeypatch.setattr(tracking, "sqlalchemy_installed", lambda: True)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "x")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")
    assert resolve_report_to(["mlflow"]) == ["mlflow"] and "MLFLOW_ALLOW_FILE_STORE" not in os.environ
    for file_uri in ("file:./mlruns", "./mlruns"):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", file_uri)
        assert resolve_report_to(["mlflow"]) == ["mlflow"] and os.environ["MLFLOW_ALLOW_FILE_STORE"] == "true"
        monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "false")  # the user's own choice is kept
    assert resolve_report_to(["mlflow"]) == ["mlflow"] and os.environ["MLFLOW_ALLOW_FILE_STORE"] == "false"
    assert not any(tmp_path.iterdir())  # the check creates no store


# -- plots -----------------------------------------------------------------------------------------
def test_training_report_draws_what_was_logged(tmp_path):
    from gamma_mod.eval.plots import series, write_training_report

    mod = [{"step": s, "loss": 3.0 / s, "mod/skip/layer_02": 0.4 + 0.01 * s, "mod/skip/layer_10": 0.5,
            "mod/routing_loss/total": 0.6} for s in (3, 1, 2)]
    steps, values = series(mod, "mod/skip/layer_02")
    assert steps == [1, 2, 3] and values == pytest.approx([0.41, 0.42, 0.43])  # step order
    (tmp_path / "mod").mkdir()
    write_training_report(tmp_path / "mod", mod)
    report = (tmp_path / "mod" / "report.md").read_text()
    assert "3 logged steps (last: 3)" in report
    for name in ("loss.png", "routing_loss.png", "skip_fraction.png"):
        assert (tmp_path / "mod" / name).stat().st_size > 1000 and f"]({name})" in report
    assert "| `mod/skip/layer_10` | 0.5 |" in report
    # A dense run: only the loss curve, no MoD section.
    (tmp_path / "dense").mkdir()
    write_training_report(tmp_path / "dense", [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}])
    assert sorted(p.name for p in (tmp_path / "dense").iterdir()) == ["loss.png", "report.md"]
    assert "MoD metrics" not in (tmp_path / "dense" / "report.md").read_text()
