"""The lmms-eval plugin (`--model gamma_mod`) against our own answer loop and hand computations.

Needs lmms-eval importable (`bash scripts/setup_env.sh test` installs it without torchvision).
Every model here is a tiny twin saved to a temporary folder and loaded through lmms-eval's own
registry (the `lmms_eval.models` entry point declared in pyproject.toml) and arg-string path.
"""

import importlib.util
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from gamma_mod.data.preprocess import encode_prompt
from gamma_mod.data.synthetic import write_synthetic_dataset
from gamma_mod.data.templates import get_template
from gamma_mod.data.tokenizer import load_tokenizer, model_token_ids
from gamma_mod.eval.answer import generate_answers
from gamma_mod.eval.cli import build_encoder
from gamma_mod.eval.lmms.options import PluginArgumentError
from gamma_mod.eval.lmms.runner import cut_at_stop
from gamma_mod.eval.questions import Question, read_answers
from gamma_mod.eval.scorers import synthetic
from gamma_mod.mod.convert import convert_to_mod
from gamma_mod.model import LlavaLlamaForCausalLM
from gamma_mod.model.builder import build_config
from gamma_mod.model.vision.image_processing import ImageProcessor

ROOT = Path(__file__).resolve().parents[1]
needs_lmms = pytest.mark.skipif(importlib.util.find_spec("lmms_eval") is None,
                                reason="lmms-eval not installed (bash scripts/setup_env.sh test installs it)")
TASK, SPLIT = "plugin_test", "test"
FAMILIES = ["llava_v1_5_tiny", "llava_hr_tiny", "mgm_hd_tiny"]
ANSWER_WORDS = ["one", "two", "three", "red", "green", "blue", "yellow", "circle", "square", "triangle"]


# -- fixtures -------------------------------------------------------------------------------------
def pyproject_entry_points() -> dict[str, str]:
    """The `[project.entry-points."lmms_eval.models"]` table of pyproject.toml (tomllib is 3.11+)."""
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split('[project.entry-points."lmms_eval.models"]', 1)[1].split("\n[", 1)[0]
    return dict(re.findall(r'^(\S+)\s*=\s*"([^"]+)"', section, flags=re.M))


@pytest.fixture(scope="module")
def entry_point_dir(tmp_path_factory) -> Path:
    """pyproject's entry point as installed metadata, so lmms-eval's importlib.metadata scan finds it
    whether or not this checkout is the installed one (in CI it is; the duplicate is harmless)."""
    folder = tmp_path_factory.mktemp("entry_points")
    info = folder / "gamma_mod_lmms_entry_point-0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: gamma-mod-lmms-entry-point\nVersion: 0.0\n")
    lines = "".join(f"{k} = {v}\n" for k, v in pyproject_entry_points().items())
    (info / "entry_points.txt").write_text(f"[lmms_eval.models]\n{lines}")
    return folder


@pytest.fixture(scope="module")
def registry(entry_point_dir):
    if str(entry_point_dir) not in sys.path:
        sys.path.append(str(entry_point_dir))
    from lmms_eval import models

    # The registry is built when lmms_eval.models is first imported; load the entry points again in
    # case that happened before the folder above was on the path.
    models.MODEL_REGISTRY_V2.load_entrypoint_manifests(overwrite=True)
    return models


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("synth"), n_captions=1, n_vqa_train=1, n_vqa_test=4,
                                   image_size=32)


@pytest.fixture(scope="module")
def tokenizer(data):
    return load_tokenizer(str(data.tokenizer))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer):
    """(family, mod) -> a saved tiny model folder (random weights; MoD layers 1 and 2, skip 0.5)."""
    cache = {}

    def make(family: str = "llava_v1_5_tiny", mod: bool = False) -> Path:
        if (family, mod) not in cache:
            torch.manual_seed(0)
            model = LlavaLlamaForCausalLM(build_config(family, **model_token_ids(tokenizer)))
            if mod:
                convert_to_mod(model, [1, 2], skip_ratio=0.5)
            path = tmp_path_factory.mktemp(f"{family}_{'mod' if mod else 'dense'}")
            model.save_pretrained(path)
            tokenizer.save_pretrained(path)
            cache[family, mod] = path
        return cache[family, mod]

    return make


def make_lm(registry, path, **model_args):
    """As `python -m lmms_eval --model gamma_mod --model_args ...` builds it (evaluator.simple_evaluate)."""
    cls = registry.get_model("gamma_mod")
    arg_string = ",".join(f"{k}={v}" for k, v in {"pretrained": path, **model_args}.items())
    return cls.create_from_arg_string(arg_string, {"batch_size": 1, "max_batch_size": None, "device": None})


def doc_to_visual(doc):
    if doc.get("image") is None:
        return []
    with Image.open(doc["image"]) as image:
        return [image.convert("RGB")]


def synthetic_docs(data, n=None):
    questions = synthetic.read_questions(data.root)[:n]
    return [{"question": q.text.replace("<image>", "").strip(), "image": q.image, "answer": q.extra["answer"]}
            for q in questions]


def instance(request_type, args, doc_id):
    from lmms_eval.api.instance import Instance

    return Instance(request_type=request_type, arguments=args, idx=0,
                    metadata={"task": TASK, "doc_id": doc_id, "repeats": 1})


def reference_answers(lm, docs, tmp_path, max_new_tokens, name="reference"):
    """Our answer loop, one question at a time, with `gamma-mod eval`'s encoder."""
    questions = [Question(i, f"<image>\n{d['question']}" if d["image"] else d["question"], d["image"])
                 for i, d in enumerate(docs)]
    encode = build_encoder(lm.tokenizer, lm.model.config, "vicuna_v1")
    path = generate_answers(lm.model, questions, encode, lm.tokenizer, tmp_path / f"{name}.jsonl", batch_size=1,
                            max_new_tokens=max_new_tokens, progress=False)
    return [row["text"] for row in read_answers(path)]


# -- registration and model args ----------------------------------------------------------------
def test_plugin_modules_import_no_lmms_eval():
    """Only `model` needs lmms-eval: the rest (and `import gamma_mod`) works without the extra."""
    code = ("import sys, gamma_mod, gamma_mod.eval.lmms, gamma_mod.eval.lmms.runner, gamma_mod.eval.lmms.options, "
            "gamma_mod.eval.lmms.efficiency, gamma_mod.eval.lmms.synthetic_task; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('lmms_eval', 'torchvision')]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)


@needs_lmms
def test_entry_point_resolves_our_class(registry):
    from gamma_mod.eval.lmms.model import GammaModLMMS

    assert pyproject_entry_points() == {"gamma_mod": "gamma_mod.eval.lmms:model_manifest"}
    assert registry.get_model("gamma_mod") is GammaModLMMS
    assert registry.get_model("gamma-mod") is GammaModLMMS  # alias
    assert "gamma_mod" in registry.list_available_models()


@needs_lmms
def test_model_args(registry, model_dir):
    dense, mod = model_dir(mod=False), model_dir(mod=True)
    lm = make_lm(registry, dense, batch_size=3, max_new_tokens=7)
    assert lm.batch_size == 3  # model_args win over the CLI's --batch_size default of 1
    assert lm.runner.max_new_tokens == 7 and lm.model.dtype == torch.float32 and lm.device.type == "cpu"
    with pytest.raises(PluginArgumentError, match=r"unknown model_args \['prefil'\]"):
        make_lm(registry, dense, prefil="threshold")
    with pytest.raises(PluginArgumentError, match="prefill must be one of"):
        make_lm(registry, mod, prefill="sometimes")
    with pytest.raises(PluginArgumentError, match="batch_size must be an integer"):
        make_lm(registry, dense, batch_size="auto")
    with pytest.raises(PluginArgumentError, match="no config.json"):
        make_lm(registry, dense / "missing")
    with pytest.raises(PluginArgumentError, match="dense model"):
        make_lm(registry, dense, prefill="threshold")
    with pytest.raises(ValueError, match="unknown conversation template"):
        make_lm(registry, dense, template="chatml")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("WORLD_SIZE", "2")
        with pytest.raises(RuntimeError, match="multi-process runs"):
            make_lm(registry, dense)
    # MoD inference switches reach the layers (a MoD layer reads its ModConfig when it is built).
    lm = make_lm(registry, mod, prefill="threshold", decode="threshold", decode_threshold=0.7,
                 attn_implementation="eager", dtype="bfloat16")
    layer = lm.model.model.layers[1]
    assert (layer.mod.prefill, layer.mod.decode, layer.mod.decode_threshold) == ("threshold", "threshold", 0.7)
    assert lm.model.config._attn_implementation == "eager" and lm.model.dtype == torch.bfloat16


@needs_lmms
def test_compat_switch(registry, model_dir):
    """compat=official needs the `mod.compat` field of the official-compatible mode: applied when this
    gamma-mod has it, otherwise a clear error (never silently ignored)."""
    import dataclasses

    from gamma_mod.mod.config import ModConfig

    mod = model_dir(mod=True)
    with pytest.raises(PluginArgumentError, match="dense model"):
        make_lm(registry, model_dir(mod=False), compat="official")
    if "compat" in {f.name for f in dataclasses.fields(ModConfig)}:
        lm = make_lm(registry, mod, compat="official")
        assert lm.model.config.mod["compat"] == "official"
        assert lm.model.model.layers[1].mod.compat == "official"
    else:
        with pytest.raises(PluginArgumentError, match="official-compat mode"):
            make_lm(registry, mod, compat="official")


# -- generate_until -----------------------------------------------------------------------------
@needs_lmms
@pytest.mark.parametrize("mod", [False, True], ids=["dense", "mod"])
@pytest.mark.parametrize("family", FAMILIES)
def test_generate_until_equals_answer_loop(registry, model_dir, data, tmp_path, family, mod):
    """Batched plugin answers (left padding, longest first, a text-only row among image rows) are
    the answer loop's answers one question at a time, with the `gamma-mod eval` prompt."""
    docs = synthetic_docs(data, 5) + [{"question": "How many shapes are there?", "image": None, "answer": "two"}]
    lm = make_lm(registry, model_dir(family, mod), batch_size=4)
    lm.task_dict = {TASK: {SPLIT: docs}}
    gen_kwargs = {"max_new_tokens": 4, "temperature": 0, "do_sample": False}
    requests = [instance("generate_until", (d["question"], dict(gen_kwargs), doc_to_visual, i, TASK, SPLIT), i)
                for i, d in enumerate(docs)]
    answers = lm.generate_until(requests)
    assert answers == reference_answers(lm, docs, tmp_path, max_new_tokens=4)
    assert all(answers)

    # `until` cuts each answer before its first stop string.
    stop = answers[0].split()[1] if len(answers[0].split()) > 1 else answers[0]
    cut = lm.generate_until([instance("generate_until", (docs[0]["question"], {**gen_kwargs, "until": [stop]},
                                                         doc_to_visual, 0, TASK, SPLIT), 0)])
    assert cut == [answers[0].split(stop)[0].strip()]


def test_cut_at_stop():
    assert cut_at_stop("red ASSISTANT: blue", ["ASSISTANT:"]) == "red"
    assert cut_at_stop("a\n\nb", ["\n\n", "b"]) == "a"
    assert cut_at_stop(" red ", ["", "x"]) == "red"  # empty stop strings are ignored


@needs_lmms
def test_sampling_requests_are_answered_greedily_with_a_count(registry, model_dir, data, tmp_path, caplog):
    docs = synthetic_docs(data, 2)
    lm = make_lm(registry, model_dir())
    lm.task_dict = {TASK: {SPLIT: docs}}
    gen_kwargs = {"max_new_tokens": 3, "temperature": 0.7, "do_sample": True, "image_aspect_ratio": "pad"}
    requests = [instance("generate_until", (d["question"], dict(gen_kwargs), doc_to_visual, i, TASK, SPLIT), i)
                for i, d in enumerate(docs)]
    with caplog.at_level(logging.WARNING, logger="gamma_mod.eval.lmms.model"):
        answers = lm.generate_until(requests)
    assert answers == reference_answers(lm, docs, tmp_path, max_new_tokens=3)
    messages = [r.getMessage() for r in caplog.records]
    assert any("2 requests ask for sampling" in m for m in messages), messages
    assert any("['image_aspect_ratio'] ignored for 2 requests" in m for m in messages), messages


@needs_lmms
def test_unsupported_visuals_are_errors_naming_the_document(registry, model_dir, data):
    docs = synthetic_docs(data, 1)
    lm = make_lm(registry, model_dir())
    lm.task_dict = {TASK: {SPLIT: docs}}

    def two_images(doc):
        return doc_to_visual(doc) * 2

    def video(doc):
        return ["/videos/clip.mp4"]

    for visual, message in ((two_images, "2 images in one prompt"), (video, "must be PIL images")):
        request = instance("generate_until", ("q", {"max_new_tokens": 2}, visual, 0, TASK, SPLIT), 0)
        with pytest.raises(ValueError, match=f"task {TASK} doc 0: .*{message}"):
            lm.generate_until([request])


# -- loglikelihood --------------------------------------------------------------------------------
def hand_loglikelihood(model, tokenizer, question, image, words, decode_start=False):
    """log p(words | prompt) summed, and whether greedy decoding gives them, from one plain forward
    of the unpadded sequence. The word-level vocabulary gives one id per word."""
    text = f"<image>\n{question}" if image else question
    prompt = encode_prompt(tokenizer, get_template("vicuna_v1"), text, model.config.num_image_tokens)
    cont = [tokenizer.convert_tokens_to_ids(w) for w in words]
    kwargs = {}
    if image:
        with Image.open(image) as img:
            kwargs["pixel_values"] = ImageProcessor.from_model_config(model.config)(img.convert("RGB"))[None]
    if decode_start:
        kwargs["mod_decode_start"] = len(prompt)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + cont]), **kwargs).logits[0].double()
    logp = logits.log_softmax(dim=-1)
    total = sum(float(logp[len(prompt) - 1 + j, t]) for j, t in enumerate(cont))
    greedy = all(int(logits[len(prompt) - 1 + j].argmax()) == t for j, t in enumerate(cont))
    return total, greedy


@pytest.mark.parametrize("mod,decode", [(False, None), (True, None), (True, "threshold")],
                         ids=["dense", "mod", "mod-threshold-decode"])
@needs_lmms
def test_loglikelihood_equals_hand_computation(registry, model_dir, data, mod, decode):
    docs = synthetic_docs(data, 3)
    args = {"batch_size": 3}
    if decode:
        # Every continuation token skips the MoD layers (p < 1): the result depends on the plugin
        # marking the continuation as decode tokens.
        args.update(decode="threshold", decode_threshold=1.0)
    lm = make_lm(registry, model_dir(mod=mod), **args)
    lm.task_dict = {TASK: {SPLIT: docs}}
    cases = [  # (doc, continuation words); mixed lengths in one batch, a multiple-choice style triple
        (0, ["red"]), (0, ["blue"]), (0, ["green"]), (1, ["a", "red", "circle"]), (2, ["two"]), (1, ["square"])]
    requests = [instance("loglikelihood", (docs[d]["question"], " " + " ".join(words), doc_to_visual, d, TASK, SPLIT),
                         d) for d, words in cases]
    # doc_to_target as a function of the document (output_type loglikelihood) ...
    requests.append(instance("loglikelihood", (docs[2]["question"], lambda doc: " " + doc["answer"], doc_to_visual, 2,
                                               TASK, SPLIT), 2))
    # ... and the unconditional score of a choice (acc_mutual_info): no document, no image.
    requests.append(instance("loglikelihood", ("", " red"), 0))
    got = lm.loglikelihood(requests)

    expected = [hand_loglikelihood(lm.model, lm.tokenizer, docs[d]["question"], docs[d]["image"], words, bool(decode))
                for d, words in cases]
    expected.append(hand_loglikelihood(lm.model, lm.tokenizer, docs[2]["question"], docs[2]["image"],
                                       [docs[2]["answer"]], bool(decode)))
    expected.append(hand_loglikelihood(lm.model, lm.tokenizer, "", None, ["red"], bool(decode)))
    assert [g for _, g in got] == [g for _, g in expected]
    torch.testing.assert_close(torch.tensor([s for s, _ in got]), torch.tensor([s for s, _ in expected]),
                               rtol=1e-5, atol=1e-4)
    assert all(s < 0 for s, _ in got)  # a sum of log-probs (lmms-eval's llava returns a positive mean loss)
    if decode:
        # A continuation token only conditions the tokens after it: the 3-word case is the one where
        # treating the continuation as decode tokens changes the result.
        plain = hand_loglikelihood(lm.model, lm.tokenizer, docs[1]["question"], docs[1]["image"],
                                   ["a", "red", "circle"])
        assert abs(plain[0] - got[3][0]) > 1e-3, "the decode rule must matter here, or this case tests nothing"


# -- generate_until_multi_round ----------------------------------------------------------------------
@needs_lmms
def test_generate_until_multi_round(registry, model_dir, data, tmp_path):
    """lmms-eval's protocol: round 0 answers the context; later rounds ask doc_to_text for the next
    (visuals, context, done, round answers, info) with the answers so far."""
    docs = synthetic_docs(data, 2)
    lm = make_lm(registry, model_dir(mod=True), batch_size=2)
    lm.task_dict = {TASK: {SPLIT: docs}}
    follow_up = "What shape is on the left?"
    calls = []

    def doc_to_text(doc, lmms_eval_specific_kwargs=None, previous_output=None, round_idx=None,
                    previous_round_info=None):
        calls.append((doc["question"], round_idx, list(previous_output), previous_round_info))
        if round_idx == 1:
            return None, follow_up, False, previous_output, {"asked": follow_up}
        return None, None, True, previous_output, None

    gen_kwargs = {"max_new_tokens": 3, "until": ["</s>"]}
    requests = [instance("generate_until_multi_round",
                         (d["question"], dict(gen_kwargs), doc_to_visual, doc_to_text, i, TASK, SPLIT), i)
                for i, d in enumerate(docs)]
    results = lm.generate_until_multi_round(requests)

    first = reference_answers(lm, docs, tmp_path, 3, "first")
    second = reference_answers(lm, [{"question": follow_up, "image": None}] * 2, tmp_path, 3, "second")
    assert results == [[first[0], second[0]], [first[1], second[1]]]
    assert calls == [(docs[0]["question"], 1, [first[0]], None), (docs[1]["question"], 1, [first[1]], None),
                     (docs[0]["question"], 2, [first[0], second[0]], {"asked": follow_up}),
                     (docs[1]["question"], 2, [first[1], second[1]], {"asked": follow_up})]


# -- efficiency report ----------------------------------------------------------------------------
def layer_flops(tokens, hidden, ffn, kv_dim):
    """Paper convention (gamma-MoD eval/cal_flops.py) with K/V at GQA width (issue #14), written out again:
    4Td^2 (Q, O) + 4Td·d_kv (K, V) + 4T^2d + 6Tdf; d_q = d here (the fork's heads · head_dim = hidden)."""
    return 4 * tokens * hidden**2 + 4 * tokens * hidden * kv_dim + 4 * tokens**2 * hidden + 6 * tokens * hidden * ffn


@needs_lmms
def test_log_efficiency_report(registry, model_dir, data, tokenizer, tmp_path):
    docs = synthetic_docs(data, 3)
    report_path = tmp_path / "efficiency.json"
    lm = make_lm(registry, model_dir(mod=True), batch_size=1, log_efficiency=report_path)
    lm.task_dict = {TASK: {SPLIT: docs}}
    requests = [instance("generate_until", (d["question"], {"max_new_tokens": 3}, doc_to_visual, i, TASK, SPLIT), i)
                for i, d in enumerate(docs)]
    lm.generate_until(requests)
    lm.clean()
    report = json.loads(report_path.read_text())[TASK]

    config = lm.model.config
    template = get_template("vicuna_v1")
    prompts = [encode_prompt(tokenizer, template, f"<image>\n{d['question']}", config.num_image_tokens) for d in docs]
    # Routable = every token up to the last image token; top-k keeps routable - int(0.5 * routable).
    routable = [max(i for i, t in enumerate(p) if t == config.image_token_index) + 1 for p in prompts]
    skipped = [int(0.5 * r) for r in routable]
    assert report["samples"] == 3  # prefills only: decode steps are not samples
    assert report["skipped_of_routable"] == {"1": sum(skipped) / sum(routable), "2": sum(skipped) / sum(routable)}
    assert report["skipped_of_tokens"]["1"] == pytest.approx(sum(skipped) / sum(map(len, prompts)))
    d, f, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    kv = config.num_key_value_heads * (d // config.num_attention_heads)
    mod_tflops = [(2 * layer_flops(len(p), d, f, kv) + 2 * layer_flops(len(p) - s, d, f, kv)) / 1e12
                  for p, s in zip(prompts, skipped)]  # layers 0 and 3 dense, 1 and 2 MoD
    dense_tflops = [layers * layer_flops(len(p), d, f, kv) / 1e12 for p in prompts]
    assert report["tflops_per_sample"] == pytest.approx(sum(mod_tflops) / 3, rel=1e-9)
    assert report["dense_tflops_per_sample"] == pytest.approx(sum(dense_tflops) / 3, rel=1e-9)
    assert report["prefill_tokens_per_sample"] == pytest.approx(sum(map(len, prompts)) / 3)


# -- the lmms-eval CLI on the offline task --------------------------------------------------------
def craft_answer_head(folder: Path, questions: list[Question], designed: list[str]) -> None:
    """Rewrite lm_head so that greedy decoding answers question j with the word designed[j].

    The last prompt position's hidden states h_j (N of them, N < hidden size) are independent, so
    rows R solving H R^T = 30 * onehot(designed) exist: every designed word scores 30 where it is
    meant, 0 elsewhere, and every other token scores 0.
    """
    tokenizer = load_tokenizer(str(folder))
    model = LlavaLlamaForCausalLM.from_pretrained(folder).eval()
    encode = build_encoder(tokenizer, model.config, "vicuna_v1")
    with torch.no_grad():
        hidden = []
        for q in questions:
            ids, pixels = encode(q)
            out = model.model(input_ids=torch.tensor([ids]), pixel_values=pixels[None])
            hidden.append(out.last_hidden_state[0, -1])
        h = torch.stack(hidden).double()  # (N, C)
        words = sorted(set(designed))
        target = torch.zeros(len(questions), len(words), dtype=torch.double)
        for j, word in enumerate(designed):
            target[j, words.index(word)] = 30.0
        rows = (torch.linalg.pinv(h) @ target).T  # (W, C)
        weight = torch.zeros_like(model.lm_head.weight)
        weight[tokenizer.convert_tokens_to_ids(words)] = rows.float()
        model.lm_head.weight.copy_(weight)
    model.save_pretrained(folder)


@needs_lmms
def test_lmms_eval_cli_on_offline_task_matches_gamma_mod_eval(entry_point_dir, model_dir, data, tmp_path):
    """`python -m lmms_eval --model gamma_mod` on the shipped offline task scores what
    `gamma-mod eval --benchmark synthetic` scores for the same model and settings, answer by answer;
    the model is made to answer 8 of the 12 questions right, so the score is not a trivial 0."""
    from gamma_mod.cli import main
    from gamma_mod.eval.lmms.synthetic_task import write_task

    folder = tmp_path / "model"
    source = model_dir(mod=True)
    folder.mkdir()
    for item in source.iterdir():
        (folder / item.name).write_bytes(item.read_bytes())
    questions = synthetic.read_questions(data.root)
    truths = [q.extra["answer"] for q in questions]
    designed = [t if j % 3 != 2 else next(w for w in ANSWER_WORDS if w != t) for j, t in enumerate(truths)]
    craft_answer_head(folder, questions, designed)

    assert main(["eval", "--model", str(folder), "--benchmark", "synthetic", "--data", str(data.root),
                 "--out", str(tmp_path / "ours"), "--batch-size", "4", "--max-new-tokens", "1"]) == 0
    ours = json.loads((tmp_path / "ours" / "metrics.json").read_text())
    our_answers = {row["question_id"]: row["text"] for row in read_answers(tmp_path / "ours" / "answers.jsonl")}
    assert [our_answers[q.question_id] for q in questions] == designed
    assert ours["accuracy"] == pytest.approx(8 / 12)

    task_dir = write_task(data.root, tmp_path / "task").parent
    env = dict(os.environ, HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), str(entry_point_dir),
                                                        os.environ.get("PYTHONPATH")])))
    report = tmp_path / "efficiency.json"
    cmd = [sys.executable, "-m", "lmms_eval", "--model", "gamma_mod",
           "--model_args", f"pretrained={folder},batch_size=4,log_efficiency={report}",
           "--tasks", "gamma_synthetic", "--include_path", str(task_dir), "--gen_kwargs", "max_new_tokens=1",
           "--output_path", str(tmp_path / "lmms"), "--log_samples"]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    log = run.stdout[-4000:] + run.stderr[-4000:]
    results = sorted((tmp_path / "lmms").glob("*/*_results.json"))
    assert results, f"lmms-eval wrote no results (rc {run.returncode}):\n{log}"
    score = json.loads(results[0].read_text())["results"]["gamma_synthetic"]["accuracy,none"]
    assert score == pytest.approx(ours["accuracy"])
    samples = [json.loads(line) for line in next((tmp_path / "lmms").glob("*/*_samples_gamma_synthetic.jsonl"))
               .read_text().splitlines()]
    assert [s["filtered_resps"] for s in sorted(samples, key=lambda s: s["doc_id"])] == designed
    # The efficiency report sits next to the scores: printed before lmms-eval's table, and as JSON.
    assert "gamma_mod efficiency" in run.stdout and "| gamma_synthetic | 12 |" in run.stdout, log
    assert json.loads(report.read_text())["gamma_synthetic"]["skipped_of_routable"]["1"] > 0
