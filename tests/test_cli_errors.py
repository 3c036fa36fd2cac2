"""Expected errors are one clear line with a stable exit code, and run folders are never damaged.

The bad-input matrix runs every sub-command in-process through `gamma_mod.cli.main` (the entry that
applies the error rule) and checks the exit code, the one `gamma-mod CMD: error: ...` line (naming
the file / record / question and the cause), that no traceback is printed, and that the output
folder is neither created nor changed. The `test_issueN_*` tests pin the numbered cases of issue 13.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

from gamma_mod.cli import COMMANDS, main
from gamma_mod.config import ConfigError, build
from gamma_mod.data.formats import DataError
from gamma_mod.errors import ModelFolderError
from gamma_mod.train.args import OptimArgs, TrainConfig
from gamma_mod.train.train import run_training

from conftest import MICRO_SPEC

ROOT = Path(__file__).resolve().parents[1]
NO_MODEL = "(a model folder holds config.json and *.safetensors or pytorch_model*.bin)"


# -- fixtures -------------------------------------------------------------------------------------
@dataclass
class Env:
    root: Path
    data: object  # SyntheticDataset
    spec: Path
    train_yaml: Path  # a micro stage-2 recipe on the synthetic data (output_dir set per test)
    dense: Path  # random micro model + tokenizer
    mod: Path  # the same, layer 1 made MoD
    bad_image_json: Path  # stage2_train.json with one record's image absent
    bad_record: str
    eval_missing: Path  # synthetic eval folder with one question's image deleted
    eval_truncated: Path  # ... with one image cut in half
    missing_qid: str
    truncated_qid: str
    truncated_png: Path
    a_file: Path
    finished: Path  # a finished training run


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Env:
    from gamma_mod.data.synthetic import write_synthetic_dataset
    from gamma_mod.data.tokenizer import load_tokenizer, model_token_ids
    from gamma_mod.model.builder import build_model
    from gamma_mod.mod.convert import convert_to_mod

    root = tmp_path_factory.mktemp("errors")
    data = write_synthetic_dataset(root / "data", n_captions=4, n_vqa_train=2, n_vqa_test=2, image_size=32, seed=1)
    spec = root / "micro.yaml"
    spec.write_text(yaml.safe_dump(MICRO_SPEC))
    tokenizer = load_tokenizer(str(data.tokenizer))
    torch.manual_seed(0)
    model = build_model(str(spec), **model_token_ids(tokenizer))
    model.save_pretrained(root / "dense")
    tokenizer.save_pretrained(root / "dense")
    convert_to_mod(model, [1], skip_ratio=0.5).save_pretrained(root / "mod")
    tokenizer.save_pretrained(root / "mod")

    train_yaml = root / "train.yaml"
    train_yaml.write_text(yaml.safe_dump({
        "stage": "finetune", "model": {"spec": str(spec), "tokenizer": str(data.tokenizer)},
        "data": {"train_json": str(data.stage2_train), "image_folder": str(data.images), "max_length": 128},
        "optim": {"lr": 1e-3, "batch_size": 2, "max_steps": 2, "seed": 0, "warmup_ratio": 0.0},
        "logging_steps": 1,
    }))
    records = json.loads(data.stage2_train.read_text())
    records[1] = {**records[1], "image": "absent.png"}
    bad_image_json = root / "bad_image.json"
    bad_image_json.write_text(json.dumps(records))

    test_records = json.loads(data.stage2_test.read_text())
    folders = {}
    # Three questions per image: record 3 is the first question on the second image.
    for name, victim, damage in (("eval_missing", 3, Path.unlink), ("eval_truncated", 3, truncate)):
        folder = root / name
        shutil.copytree(data.root, folder, ignore=shutil.ignore_patterns("tokenizer"))
        damage(folder / "images" / test_records[victim]["image"])
        folders[name] = (folder, test_records[victim]["id"])
    truncated_png = root / "truncated.png"
    shutil.copy(data.images / test_records[0]["image"], truncated_png)
    truncate(truncated_png)
    a_file = root / "a_file.txt"
    a_file.write_text("not a folder")
    env = Env(root, data, spec, train_yaml, root / "dense", root / "mod", bad_image_json, records[1]["id"],
              folders["eval_missing"][0], folders["eval_truncated"][0], folders["eval_missing"][1],
              folders["eval_truncated"][1], truncated_png, a_file, root / "finished")
    run_training(train_config(env, env.finished, **{"optim.max_steps": 1}))
    return env


def snapshot(path: Path):
    """Every file and folder under `path` with its content hash and mtime (None: nothing there)."""
    if not path.exists():
        return None
    if path.is_file():
        return {".": (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)}
    return {str(p.relative_to(path)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir",
                                       p.stat().st_mtime_ns) for p in sorted(path.rglob("*"))}


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def assert_one_error_line(err: str, command: str, pattern: str) -> str:
    """The error is ONE line, the last one on stderr, after `gamma-mod COMMAND: error: `; no traceback."""
    prefix = f"gamma-mod {command}: error: " if command else "gamma-mod: error: "
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err[-3000:]
    assert [line for line in lines if "error: " in line and line.startswith("gamma-mod")] == lines[-1:], err[-3000:]
    assert lines[-1].startswith(prefix), err[-3000:]
    assert re.search(pattern, lines[-1]), f"{pattern!r} not in {lines[-1]!r}"
    return lines[-1]


# -- the bad-input matrix -------------------------------------------------------------------------
# (case id, exit code, argv builder env -> (argv, folder that must stay as it was), message regex builder)
def _train(env: Env, out: Path, *overrides: str) -> list:
    return ["train", env.train_yaml, f"output_dir={out}", *overrides]


CASES = {
    # synth
    "synth-zero-captions": (2, lambda e: (["synth", "--out", e.root / "o", "--captions", "0"], e.root / "o"),
                            lambda e: r"--captions must be >= 1, got 0"),
    "synth-bad-int": (2, lambda e: (["synth", "--out", e.root / "o", "--captions", "x"], e.root / "o"),
                      lambda e: r"argument --captions: invalid int value: 'x'"),
    "synth-out-is-a-file": (2, lambda e: (["synth", "--out", e.a_file], e.a_file),
                            lambda e: rf"--out {re.escape(str(e.a_file))} is a file"),
    "synth-out-is-a-run-folder": (2, lambda e: (["synth", "--out", e.dense], e.dense),
                                  lambda e: rf"--out {re.escape(str(e.dense))} holds other files than a synthetic "
                                            r"dataset \(config.json"),
    # train
    "train-missing-data-file": (1, lambda e: (_train(e, e.root / "o", f"data.train_json={e.root / 'nope.json'}"),
                                              e.root / "o"),
                                lambda e: rf"{re.escape(str(e.root / 'nope.json'))}: no such data file"),
    "train-record-without-its-image": (
        1, lambda e: (_train(e, e.root / "o", f"data.train_json={e.bad_image_json}"), e.root / "o"),
        lambda e: rf"{re.escape(str(e.bad_image_json))}: record {e.bad_record}: image file .*absent.png not found"),
    "train-unknown-key": (2, lambda e: (_train(e, e.root / "o", "optim.lrr=1"), e.root / "o"),
                          lambda e: r"optim: unknown keys \['lrr'\]"),
    "train-bad-value": (2, lambda e: (_train(e, e.root / "o", "optim.lr=fast"), e.root / "o"),
                        lambda e: r"optim.lr: expected float, got 'fast'"),
    "train-routing-ratio": (2, lambda e: (_train(e, e.root / "o", "mod.layers=[1]", "mod.skip_ratio=1.5"),
                                          e.root / "o"),
                            lambda e: r"mod.skip_ratio .* must be in \[0, 1\), got 1.5"),
    "train-missing-model-folder": (2, lambda e: (_train(e, e.root / "o", f"model.init={e.root / 'nosuch'}"),
                                                 e.root / "o"),
                                   lambda e: rf"model.init: no model folder at {re.escape(str(e.root / 'nosuch'))} "
                                             rf"{re.escape(NO_MODEL)}"),
    "train-missing-tokenizer": (2, lambda e: (_train(e, e.root / "o", f"model.tokenizer={e.root / 'nosuch'}"),
                                              e.root / "o"),
                                lambda e: rf"model.tokenizer: no tokenizer folder at "
                                          rf"{re.escape(str(e.root / 'nosuch'))}"),
    "train-unknown-recipe": (2, lambda e: (["train", "no_such_recipe", f"output_dir={e.root / 'o'}"], e.root / "o"),
                             lambda e: r"train config 'no_such_recipe': no such file"),
    "train-bad-scheduler": (2, lambda e: (_train(e, e.root / "o", "optim.lr_scheduler=cosinee"), e.root / "o"),
                            lambda e: r"cosinee is not a valid SchedulerType"),
    "train-resume-and-overwrite": (2, lambda e: (_train(e, e.root / "o", "resume=true", "overwrite=true"),
                                                 e.root / "o"),
                                   lambda e: r"resume=true and overwrite=true contradict"),
    "train-into-a-finished-run": (2, lambda e: (_train(e, e.finished, "optim.lr=5e-4"), e.finished),
                                  lambda e: rf"output_dir {re.escape(str(e.finished))} holds a finished run "
                                            r"\(complete.json\); it is never modified: set overwrite=true"),
    "train-bad-flag": (2, lambda e: (_train(e, e.root / "o", "--nope"), e.root / "o"),
                       lambda e: r"unrecognized arguments: --nope"),
    # arank
    "arank-missing-model-folder": (2, lambda e: (["arank", "--model", e.root / "nosuch", "--data", e.data.stage2_train,
                                                  "--out", e.root / "o" / "a.json"], e.root / "o"),
                                   lambda e: rf"--model: no model folder at .*nosuch {re.escape(NO_MODEL)}"),
    "arank-missing-data-file": (1, lambda e: (["arank", "--model", e.dense, "--data", e.root / "nope.json",
                                               "--out", e.root / "o" / "a.json"], e.root / "o"),
                                lambda e: rf"{re.escape(str(e.root / 'nope.json'))}: no such data file"),
    "arank-no-usable-record": (1, lambda e: (["arank", "--model", e.dense, "--data", e.data.stage2_train, "--images",
                                              e.root / "o2", "--out", e.root / "o" / "a.json"], e.root / "o"),
                               lambda e: rf"{re.escape(str(e.data.stage2_train))}: no usable records to compute ARank "
                                         r"on \(6 missing image\)"),
    "arank-zero-samples": (2, lambda e: (["arank", "--model", e.dense, "--data", e.data.stage2_train, "--num-samples",
                                          "0", "--out", e.root / "o" / "a.json"], e.root / "o"),
                           lambda e: r"--num-samples must be >= 1, got 0"),
    # convert
    "convert-missing-model-folder": (2, lambda e: (["convert", "--model", e.root / "nosuch", "--layers", "1", "--out",
                                                    e.root / "o"], e.root / "o"),
                                     lambda e: rf"--model: no model folder at .*nosuch {re.escape(NO_MODEL)}"),
    "convert-routing-ratio": (2, lambda e: (["convert", "--model", e.dense, "--layers", "1", "--skip-ratio", "1.5",
                                             "--out", e.root / "o"], e.root / "o"),
                              lambda e: r"--skip-ratio .* must be in \[0, 1\), got 1.5"),
    "convert-bad-layers": (2, lambda e: (["convert", "--model", e.dense, "--layers", "1,x", "--out", e.root / "o"],
                                         e.root / "o"),
                           lambda e: r"--layers must be comma-separated integers, got '1,x'"),
    "convert-last-layer": (2, lambda e: (["convert", "--model", e.dense, "--layers", "2", "--out", e.root / "o"],
                                         e.root / "o"),
                           lambda e: r"layer 2 is the last layer"),
    "convert-missing-arank": (1, lambda e: (["convert", "--model", e.dense, "--arank", e.root / "nope.json", "--out",
                                             e.root / "o"], e.root / "o"),
                              lambda e: rf"{re.escape(str(e.root / 'nope.json'))}: no such ARank file"),
    "convert-arank-not-json": (1, lambda e: (["convert", "--model", e.dense, "--arank", e.a_file, "--out",
                                              e.root / "o"], e.root / "o"),
                               lambda e: rf"{re.escape(str(e.a_file))}: not an ARank result"),
    "convert-already-mod": (2, lambda e: (["convert", "--model", e.mod, "--layers", "1", "--out", e.root / "o"],
                                          e.root / "o"),
                            lambda e: r"already has MoD layers \[1\]: convert a dense model"),
    # eval
    "eval-missing-model-folder": (2, lambda e: (["eval", "--model", e.root / "nosuch", "--benchmark", "synthetic",
                                                 "--data", e.data.root], e.root / "nosuch"),
                                  lambda e: rf"--model: no model folder at .*nosuch {re.escape(NO_MODEL)}"),
    "eval-missing-data-folder": (1, lambda e: (["eval", "--model", e.dense, "--benchmark", "synthetic", "--data",
                                                e.root / "nodata", "--out", e.root / "o"], e.root / "o"),
                                 lambda e: r"no benchmark data folder at .*nodata"),
    "eval-missing-question-file": (1, lambda e: (["eval", "--model", e.dense, "--benchmark", "synthetic", "--data",
                                                  e.dense, "--out", e.root / "o"], e.root / "o"),
                                   lambda e: r"stage2_test.json: no such file: the synthetic data folder"),
    "eval-missing-image": (1, lambda e: (["eval", "--model", e.dense, "--benchmark", "synthetic", "--data",
                                          e.eval_missing, "--out", e.root / "o"], e.root / "o"),
                           lambda e: rf"question {e.missing_qid}: image file {re.escape(str(e.eval_missing))}/images/"
                                     r"\S+\.png not found"),
    "eval-truncated-image": (1, lambda e: (["eval", "--model", e.dense, "--benchmark", "synthetic", "--data",
                                            e.eval_truncated, "--out", e.root / "o", "--batch-size", "8"],
                                           e.root / "o"),
                             lambda e: rf"question {e.truncated_qid}: image file "
                                       rf"{re.escape(str(e.eval_truncated))}/images/\S+\.png is corrupt or truncated"),
    "eval-score-only-without-answers": (1, lambda e: (["eval", "--model", e.dense, "--benchmark", "synthetic",
                                                       "--data", e.data.root, "--out", e.root / "o", "--score-only"],
                                                      e.root / "o"),
                                        lambda e: r"no answers to score at .*answers.jsonl"),
    "eval-unknown-benchmark": (2, lambda e: (["eval", "--model", e.dense, "--benchmark", "mmlu", "--data",
                                              e.data.root, "--out", e.root / "o"], e.root / "o"),
                               lambda e: r"argument --benchmark: invalid choice: 'mmlu'"),
    # speed (prints a table, writes nothing: the whole scratch root must stay as it was)
    "speed-missing-dense-folder": (2, lambda e: (["speed", "--dense", e.root / "nosuch", "--mod", e.mod], e.root),
                                   lambda e: rf"--dense: no model folder at .*nosuch {re.escape(NO_MODEL)}"),
    "speed-missing-mod-folder": (2, lambda e: (["speed", "--dense", e.dense, "--mod", e.mod, e.root / "nosuch"],
                                               e.root),
                                 lambda e: rf"--mod: no model folder at .*nosuch {re.escape(NO_MODEL)}"),
    "speed-missing-data-file": (1, lambda e: (["speed", "--dense", e.dense, "--mod", e.mod, "--data",
                                               e.root / "nope.json"], e.root),
                                lambda e: rf"{re.escape(str(e.root / 'nope.json'))}: no such data file"),
    "speed-record-without-its-image": (1, lambda e: (["speed", "--dense", e.dense, "--mod", e.mod, "--data",
                                                      e.bad_image_json, "--images", e.data.images,
                                                      "--num-samples", "2", "--repeats", "1"], e.root),
                                       lambda e: rf"{re.escape(str(e.bad_image_json))}: record {e.bad_record}: "
                                                 r"image file .*absent.png not found"),
    "speed-zero-samples": (2, lambda e: (["speed", "--dense", e.dense, "--mod", e.mod, "--num-samples", "0"], e.root),
                           lambda e: r"--num-samples must be >= 1, got 0"),
    # compare (answers into --out: nothing may appear there)
    "compare-missing-base-folder": (2, lambda e: (["compare", "--base", e.root / "nosuch", "--data", e.data.root,
                                                   "--out", e.root / "o"], e.root),
                                    lambda e: rf"--base: no model folder at .*nosuch {re.escape(NO_MODEL)}"),
    "compare-missing-mod-folder": (2, lambda e: (["compare", "--base", e.dense, "--mod", e.root / "nosuch", "--data",
                                                  e.data.root, "--out", e.root / "o"], e.root),
                                   lambda e: rf"--mod: no model folder at .*nosuch {re.escape(NO_MODEL)}"),
    "compare-missing-data-folder": (1, lambda e: (["compare", "--base", e.dense, "--data", e.root / "nodata",
                                                   "--out", e.root / "o"], e.root),
                                    lambda e: r"no benchmark data folder at .*nodata \(--data\)"),
    "compare-bad-fastv": (2, lambda e: (["compare", "--base", e.dense, "--data", e.data.root, "--fastv", "K=0,R=0.5",
                                         "--out", e.root / "o"], e.root),
                          lambda e: r"fastv: K must be an integer >= 1"),
    "compare-server-scored-benchmark": (2, lambda e: (["compare", "--base", e.dense, "--data", e.data.root,
                                                       "--benchmark", "vqav2", "--out", e.root / "o"], e.root),
                                        lambda e: r"--benchmark vqav2: scored by its server"),
    # skipmap
    "skipmap-missing-model-folder": (2, lambda e: (["skipmap", "--model", e.root / "nosuch", "--image",
                                                    e.data.images / "cap_00000.png", "--question", "what?", "--out",
                                                    e.root / "s.png"], e.root),
                                     lambda e: rf"--model: no model folder at .*nosuch {re.escape(NO_MODEL)}"),
    "skipmap-missing-image": (1, lambda e: (["skipmap", "--model", e.mod, "--image", e.root / "nope.png",
                                             "--question", "what?", "--out", e.root / "s.png"], e.root),
                              lambda e: rf"image file {re.escape(str(e.root / 'nope.png'))} not found"),
    "skipmap-truncated-image": (1, lambda e: (["skipmap", "--model", e.mod, "--image", e.truncated_png,
                                               "--question", "what?", "--out", e.root / "s.png"], e.root),
                                lambda e: rf"image file {re.escape(str(e.truncated_png))} is corrupt or not an image"),
    "skipmap-dense-model": (2, lambda e: (["skipmap", "--model", e.dense, "--image", e.data.images / "cap_00000.png",
                                           "--question", "what?", "--out", e.root / "s.png"], e.root),
                            lambda e: r"--model .*dense has no MoD layers"),
    "skipmap-out-folder-missing": (2, lambda e: (["skipmap", "--model", e.mod, "--image",
                                                  e.data.images / "cap_00000.png", "--question", "what?", "--out",
                                                  e.root / "nodir" / "s.png"], e.root),
                                   lambda e: r"--out .*nodir/s.png: needs an existing folder"),
    # pipeline
    "pipeline-routing-ratio": (2, lambda e: (["pipeline", "--out", e.root / "o", "--skip-ratio", "1.5"],
                                             e.root / "o"),
                               lambda e: r"--skip-ratio .* must be in \[0, 1\), got 1.5"),
    "pipeline-unknown-model-spec": (2, lambda e: (["pipeline", "--out", e.root / "o", "--model", "no_such_spec"],
                                                  e.root / "o"),
                                    lambda e: r"--model: model config 'no_such_spec': no such file"),
    "pipeline-k-dense": (2, lambda e: (["pipeline", "--out", e.root / "o", "--k-dense", "1"], e.root / "o"),
                         lambda e: r"--k-dense must be >= 2"),
    "pipeline-out-is-a-file": (2, lambda e: (["pipeline", "--out", e.a_file], e.a_file),
                               lambda e: rf"--out {re.escape(str(e.a_file))} is a file"),
    "pipeline-bad-flag": (2, lambda e: (["pipeline", "--out", e.root / "o", "--strategy", "fastv"], e.root / "o"),
                          lambda e: r"argument --strategy: invalid choice: 'fastv'"),
    # the entry itself
    "unknown-command": (2, lambda e: (["serve"], e.root), lambda e: r"unknown command 'serve'"),
}


def check_case(case: str, env: Env, capsys) -> None:
    code, make, pattern = CASES[case]
    argv, watched = make(env)
    before = snapshot(watched)
    got, err = run_cli(argv, capsys)
    command = argv[0] if argv[0] in COMMANDS else ""
    assert got == code, err[-3000:]
    assert_one_error_line(err, command, pattern(env))
    assert snapshot(watched) == before, f"{watched} was created or changed"


def cases(command: str) -> list[str]:
    return sorted(case for case in CASES if case.startswith(f"{command}-"))


@pytest.mark.parametrize("case", cases("compare"))
def test_compare_bad_input(case, env, capsys):
    check_case(case, env, capsys)


@pytest.mark.parametrize("case", cases("synth"))
def test_synth_bad_input(case, env, capsys):
    check_case(case, env, capsys)


@pytest.mark.parametrize("case", cases("train"))
def test_train_bad_input(case, env, capsys):
    check_case(case, env, capsys)


@pytest.mark.parametrize("case", cases("arank"))
def test_arank_bad_input(case, env, capsys):
    check_case(case, env, capsys)


@pytest.mark.parametrize("case", cases("convert"))
def test_convert_bad_input(case, env, capsys):
    check_case(case, env, capsys)


@pytest.mark.parametrize("case", cases("eval"))
def test_eval_bad_input(case, env, capsys):
    check_case(case, env, capsys)


@pytest.mark.parametrize("case", cases("speed"))
def test_speed_bad_input(case, env, capsys):
    check_case(case, env, capsys)


@pytest.mark.parametrize("case", cases("skipmap"))
def test_skipmap_bad_input(case, env, capsys):
    check_case(case, env, capsys)


@pytest.mark.parametrize("case", cases("pipeline"))
def test_pipeline_bad_input(case, env, capsys):
    check_case(case, env, capsys)


def test_unknown_command(env, capsys):
    check_case("unknown-command", env, capsys)


def test_every_case_belongs_to_a_test():
    assert set(CASES) == {c for command in COMMANDS for c in cases(command)} | {"unknown-command"}
    assert all(cases(command) for command in COMMANDS), "a sub-command without bad-input cases"


# -- issue 13, case by case -----------------------------------------------------------------------
def train_config(env: Env, out: Path, **overrides) -> TrainConfig:
    raw = yaml.safe_load(env.train_yaml.read_text())
    raw["output_dir"] = str(out)
    for key, value in overrides.items():
        node = raw
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return build(TrainConfig, raw)


def complete(out: Path) -> dict:
    return json.loads((out / "complete.json").read_text())


def step_losses(out: Path) -> list[float]:
    return [h["loss"] for h in complete(out)["log_history"] if "loss" in h]


def test_issue1_resume_on_a_finished_run_is_a_noop(env, tmp_path, caplog):
    out = tmp_path / "run"
    cfg = train_config(env, out, **{"optim.max_steps": 4, "optim.lr_scheduler": "constant", "save_steps": 2})
    run_training(cfg)
    before = snapshot(out)
    assert {"checkpoint-2", "checkpoint-4", "model.safetensors", "complete.json"} <= set(before)
    with caplog.at_level(logging.INFO, logger="gamma_mod.train"):
        assert run_training(dataclasses.replace(cfg, resume=True)) == out
    assert snapshot(out) == before, "weights, checkpoints or complete.json changed"
    said = [r.getMessage() for r in caplog.records if r.name == "gamma_mod.train"]
    assert said == [f"resume=true: {out} holds a finished run (step 4); nothing to do (a new run into it needs "
                    f"overwrite=true)"]


def test_issue2_failed_train_into_a_finished_folder_leaves_it_untouched(env, tmp_path):
    out = tmp_path / "run"
    cfg = train_config(env, out, save_steps=1)
    run_training(cfg)
    before = snapshot(out)
    # A new run into it is refused before anything is read or written.
    with pytest.raises(ConfigError, match=rf"output_dir {re.escape(str(out))} holds a finished run \(complete.json\); "
                                          r"it is never modified: set overwrite=true"):
        run_training(dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, lr=5e-4)))
    # overwrite=true, but a record misses its image: the data check fails before the folder is touched.
    bad = train_config(env, out, overwrite=True, **{"data.train_json": str(env.bad_image_json)})
    with pytest.raises(DataError, match=rf"{re.escape(str(env.bad_image_json))}: record {env.bad_record}: "
                                        r"image file .*absent.png not found"):
        run_training(bad)
    assert snapshot(out) == before, "complete.json, train_config.yaml or the weights changed"
    # overwrite=true with good data replaces the run: the old checkpoints go, the new run finishes.
    run_training(train_config(env, out, overwrite=True, **{"optim.max_steps": 1}))
    assert complete(out)["global_step"] == 1
    assert not list(out.glob("checkpoint-*")) and not (out / ".staging").exists()
    assert yaml.safe_load((out / "train_config.yaml").read_text())["optim"]["max_steps"] == 1


COMMANDS_WITH_A_MODEL = {
    "train": lambda e, p: _train(e, e.root / "o", f"model.init={p}"),
    "eval": lambda e, p: ["eval", "--model", p, "--benchmark", "synthetic", "--data", e.data.root],
    "convert": lambda e, p: ["convert", "--model", p, "--layers", "1", "--out", e.root / "o"],
    "arank": lambda e, p: ["arank", "--model", p, "--data", e.data.stage2_train, "--out", e.root / "o" / "a.json"],
    "speed": lambda e, p: ["speed", "--dense", p, "--mod", e.mod],
    "skipmap": lambda e, p: ["skipmap", "--model", p, "--image", e.data.images / "cap_00000.png", "--question", "q",
                             "--out", e.root / "s.png"],
}
FLAG = {"train": "model.init", "speed": "--dense"}


@pytest.mark.parametrize("command", sorted(COMMANDS_WITH_A_MODEL))
def test_issue3_missing_model_folder_is_one_line(command, env, tmp_path, capsys):
    flag = FLAG.get(command, "--model")
    before = snapshot(env.root)
    absent = tmp_path / "no-such-model"
    code, err = run_cli(COMMANDS_WITH_A_MODEL[command](env, absent), capsys)
    assert code == 2
    line = assert_one_error_line(err, command, "")
    assert line == f"gamma-mod {command}: error: {flag}: no model folder at {absent} {NO_MODEL}"
    assert "Repo id" not in err
    # A folder without weights is not a model folder either (it says what is missing).
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    code, err = run_cli(COMMANDS_WITH_A_MODEL[command](env, empty), capsys)
    assert code == 2
    assert_one_error_line(err, command, rf"{flag}: no model folder at {re.escape(str(empty))}: no weights "
                                        r"\(\*.safetensors or pytorch_model\*.bin\) there")
    assert snapshot(env.root) == before and not absent.exists()  # eval's default --out is inside the model folder


def test_model_folder_with_truncated_weights_does_not_load(env, tmp_path):
    from gamma_mod.model.folder import load_model_folder

    broken = tmp_path / "broken"
    shutil.copytree(env.dense, broken)
    truncate(broken / "model.safetensors")
    with pytest.raises(ModelFolderError, match=rf"--model: model folder {re.escape(str(broken))} does not load: "):
        load_model_folder(broken, what="--model")


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_issue4_eval_names_the_question_and_the_image(damage, env, tmp_path, capsys):
    folder, qid = ((env.eval_missing, env.missing_qid) if damage == "missing"
                   else (env.eval_truncated, env.truncated_qid))
    record = next(r for r in json.loads((folder / "stage2_test.json").read_text()) if r["id"] == qid)
    image = folder / "images" / record["image"]
    out = tmp_path / "eval"
    code, err = run_cli(["eval", "--model", env.dense, "--benchmark", "synthetic", "--data", folder, "--out", out],
                        capsys)
    assert code == 1
    cause = "not found" if damage == "missing" else "is corrupt or truncated"
    assert_one_error_line(err, "eval", rf"^gamma-mod eval: error: question {qid}: image file {re.escape(str(image))} "
                                       rf"{cause}")
    assert not out.exists()


def _subprocess(args: list[str], **env_vars) -> subprocess.CompletedProcess:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {k: v for k, v in os.environ.items() if k != "GAMMA_MOD_DEBUG"}
    env.update(PYTHONPATH=path, **env_vars)
    return subprocess.run(args, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def test_issue5_no_traceback_unless_debug(env, tmp_path, capsys, monkeypatch):
    """The real process prints one line and no traceback; --debug (anywhere) or GAMMA_MOD_DEBUG=1 adds it."""
    out = tmp_path / "o"
    argv = [str(a) for a in _train(env, out, f"data.train_json={env.bad_image_json}")]
    message = (f"gamma-mod train: error: {env.bad_image_json}: record {env.bad_record}: image file "
               f"{env.data.images / 'absent.png'} not found")
    plain = _subprocess([sys.executable, "-m", "gamma_mod.cli", *argv])
    assert plain.returncode == 1, plain.stderr[-3000:]
    assert "Traceback" not in plain.stderr and plain.stderr.strip().splitlines()[-1] == message

    # The same rule in-process (gamma_mod.cli.main is the console script's entry).
    monkeypatch.delenv("GAMMA_MOD_DEBUG", raising=False)
    code, err = run_cli(argv + ["--debug"], capsys)
    assert code == 1 and "Traceback" in err and "DataError" in err
    assert err.strip().splitlines()[-1] == message
    ratio = ["convert", "--model", env.dense, "--layers", "1", "--skip-ratio", "1.5", "--out", out]
    code, err = run_cli(["--debug", *ratio], capsys)
    assert code == 2 and "Traceback" in err and "UsageError" in err
    monkeypatch.setenv("GAMMA_MOD_DEBUG", "1")
    code, err = run_cli(ratio, capsys)
    assert code == 2 and "Traceback" in err
    assert err.strip().splitlines()[-1].startswith("gamma-mod convert: error: --skip-ratio is the fraction")
    monkeypatch.setenv("GAMMA_MOD_DEBUG", "0")
    code, err = run_cli(ratio, capsys)
    assert code == 2 and "Traceback" not in err
    assert not out.exists()


def test_issue5_the_v1_5_scripts_follow_the_rule(env, tmp_path):
    """scripts/v1_5 launch `python -m gamma_mod.train.train` directly: the same one line, exit 2."""
    script = ROOT / "scripts" / "v1_5" / "pretrain.sh"
    out = tmp_path / "o"
    result = _subprocess(["bash", str(script), "optim.lrr=1"], PYTHON=sys.executable, CONFIG=str(env.train_yaml),
                         OUTPUT_DIR=str(out), DATA_DIR=str(env.data.root))
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    known = sorted(f.name for f in dataclasses.fields(OptimArgs))
    assert result.stderr.strip().splitlines() == [
        f"gamma-mod train: error: {env.train_yaml}.optim: unknown keys ['lrr']; known: {known}"]
    missing = _subprocess(["bash", str(script)], PYTHON=str(tmp_path / "no-python"))
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        f"pretrain.sh: error: no executable {tmp_path / 'no-python'} (set PYTHON=/path/to/no-python)"]
    assert not out.exists()


def test_issue5_unexpected_errors_keep_their_traceback(monkeypatch):
    import gamma_mod.data.cli as synth

    def broken(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(synth, "run", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["synth"])


def test_issue6_train_loss_covers_the_whole_run_after_resume(env, tmp_path, caplog):
    cfg = {"save_steps": 3, "optim.max_steps": 6}
    full = run_training(train_config(env, tmp_path / "full", **cfg))
    # logging_steps=1: each logged loss is one step's, so the whole run's train_loss is their mean.
    assert len(step_losses(full)) == 6
    assert complete(full)["train_loss"] == pytest.approx(sum(step_losses(full)) / 6, rel=1e-6)

    partial = tmp_path / "partial"
    run_training(train_config(env, partial, **cfg))
    # A kill right after step 3: everything past the step-3 checkpoint is gone.
    shutil.rmtree(partial / "checkpoint-6")
    for name in ("complete.json", "model.safetensors"):
        (partial / name).unlink()
    legacy = tmp_path / "legacy"
    shutil.copytree(partial, legacy)
    (legacy / "checkpoint-3" / "run_loss.json").unlink(missing_ok=True)  # as written before run_loss.json existed

    resumed = run_training(train_config(env, partial, resume=True, **cfg))
    assert step_losses(resumed) == step_losses(full)  # the resume is exact, so the means must agree
    assert complete(resumed)["train_loss"] == pytest.approx(complete(full)["train_loss"], rel=1e-6)
    for run in (full, resumed):
        assert not (run / ".staging").exists(), "an empty .staging left in a finished run"

    with caplog.at_level(logging.WARNING, logger="gamma_mod.train"):
        run_training(train_config(env, legacy, resume=True, **cfg))
    assert complete(legacy)["train_loss"] == pytest.approx(sum(step_losses(full)[3:]) / 3, rel=1e-6)
    assert any("has no run_loss.json" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("overrides, message", [
    (["model.tokenizer=null"], r"model.tokenizer is required when neither model.init nor model.llm is set"),
    (["mod.layers=[1]", "mod.skip_ratio=1.5"], r"mod.skip_ratio .* got 1.5"),
    (["optim.lr_scheduler=cosinee"], r"cosinee is not a valid SchedulerType"),
    (["stage=sft"], r"stage must be one of"),
])
def test_issue6_a_run_rejected_at_config_validation_creates_no_folder(overrides, message, env, tmp_path, capsys):
    out = tmp_path / "nested" / "run"
    code, err = run_cli(_train(env, out, *overrides), capsys)
    assert code == 2
    assert_one_error_line(err, "train", message)
    assert not (tmp_path / "nested").exists()


def test_unfinished_run_with_checkpoints_needs_resume_or_overwrite(env, tmp_path):
    out = tmp_path / "run"
    run_training(train_config(env, out, save_steps=1))
    (out / "complete.json").unlink()  # killed after its last checkpoint
    before = snapshot(out)
    with pytest.raises(ConfigError, match=r"holds checkpoints of an unfinished run \(checkpoint-2\): set resume=true"):
        run_training(train_config(env, out, save_steps=1))
    assert snapshot(out) == before
