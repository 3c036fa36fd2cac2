"""The scorer registry, its options and readers, and the GQA, MM-Vet and synthetic scorers; the other
benchmarks are in tests/test_scorers_*.py. Expected values by hand from the official rules."""

import argparse
import base64
import io
import json

import pytest
from scorer_fixtures import write_answers, write_jsonl

from gamma_mod.eval import cli
from gamma_mod.eval.scorers import SCORERS, get_benchmark, gqa, mmvet, synthetic


# -- GQA ----------------------------------------------------------------------------------------
def test_gqa_exact_match_after_the_official_conversion(tmp_path):
    root = tmp_path / "gqa"
    (root / "data").mkdir(parents=True)
    truth = {  # id: (answer, structural, semantic)
        "1": ("yes", "verify", "rel"), "2": ("table", "query", "obj"), "3": ("yes", "logical", "obj"),
        "4": ("dark blue", "query", "attr"), "5": ("man", "query", "cat"), "6": ("2", "query", "attr"),
        "7": ("table", "query", "obj"), "8": ("no", "compare", "attr"),
    }
    (root / "data" / "testdev_balanced_questions.json").write_text(json.dumps({
        qid: {"answer": a, "isBalanced": True, "types": {"structural": s, "semantic": m}}
        for qid, (a, s, m) in truth.items()}))
    answers = write_answers(tmp_path / "a.jsonl", [
        {"question_id": "1", "text": "Yes."},  # "yes": right
        {"question_id": "2", "text": "the table"},  # no article removal: wrong
        {"question_id": "3", "text": "yes!"},  # no punctuation removal: wrong
        {"question_id": "4", "text": "dark-blue"},  # wrong
        {"question_id": "5", "text": "a man"},  # wrong
        {"question_id": "6", "text": "two"},  # no number words: wrong
        {"question_id": 7, "text": "Table.."},  # every trailing period stripped, lower-cased: right; an int id
        # 8 unanswered: wrong, counted
    ])
    metrics = gqa.evaluate(answers, root, tmp_path / "out")
    assert metrics["accuracy"] == pytest.approx(2 / 8)
    assert metrics["accuracy/binary"] == pytest.approx(1 / 3)  # verify, logical, compare: 1 of 3
    assert metrics["accuracy/open"] == pytest.approx(1 / 5)  # query: 7 of 2, 4, 5, 6, 7
    assert metrics["accuracy/semantic/obj"] == pytest.approx(1 / 3)
    assert (metrics["total"], metrics["missing"]) == (8, 1)
    # The eval.py input: ids exactly as in the answer file (7 stays an int), text lower-cased, periods stripped.
    predictions = json.loads((tmp_path / "out" / gqa.PREDICTIONS).read_text())
    assert predictions[0] == {"questionId": "1", "prediction": "yes"}
    assert predictions[6] == {"questionId": 7, "prediction": "table"}
    assert [p["prediction"] for p in predictions[1:6]] == ["the table", "yes!", "dark-blue", "a man", "two"]


# -- MM-Vet -------------------------------------------------------------------------------------
def test_mmvet_submission_as_the_official_converter(tmp_path):
    answers = write_answers(tmp_path / "a.jsonl", [{"question_id": 0, "text": "A cat, sitting."},
                                                   {"question_id": "v1_7", "text": "42"}])
    path = mmvet.write_submission(answers, tmp_path / "results.json")
    assert path.read_text() == '{\n  "v1_0": "A cat, sitting.",\n  "v1_v1_7": "42"\n}'


# -- synthetic split ----------------------------------------------------------------------------
def test_synthetic_exact_match_ignores_case_and_punctuation(tmp_path):
    split = tmp_path / "stage2_test.json"
    split.write_text(json.dumps([
        {"id": f"test-0-{t}", "image": "vqa_test_00000.png",
         "conversations": [{"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": a}]}
        for t, a in (("color", "red"), ("shape", "circle"), ("count", "2"))]))
    answers = write_answers(tmp_path / "a.jsonl", [
        {"question_id": "test-0-color", "text": "Red."},  # right
        {"question_id": "test-0-shape", "text": "circle square"},  # not a whole-answer match
        {"question_id": "test-0-count", "text": "2"},  # right
    ])
    metrics = synthetic.score(answers, split)
    assert metrics["accuracy"] == pytest.approx(2 / 3)
    assert (metrics["accuracy/color"], metrics["accuracy/shape"]) == (1.0, 0.0)
    questions = synthetic.read_questions(tmp_path)  # the dataset folder works too
    assert questions[0].image == str(tmp_path / "images" / "vqa_test_00000.png")


# -- registry, options ------------------------------------------------------------------------------
def test_every_scorer_names_the_official_script_it_reproduces():
    import sys

    for name, bench in SCORERS.items():
        if name == "synthetic":  # our own dataset
            continue
        doc = sys.modules[bench.evaluate.__module__].__doc__
        assert "Reproduces" in doc or "reproduce" in doc, name
        assert ".py" in doc, name  # names the official file


def test_score_options_parse_into_typed_dataclasses():
    seed = get_benchmark("seed_bench")
    assert seed.parse_options([]) == seed.options()
    assert seed.parse_options(["lenient=true"]).lenient is True
    assert get_benchmark("scienceqa").parse_options(["rule=llava-hr"]).rule == "llava-hr"
    assert get_benchmark("mmmu").parse_options(["seed=7"]).seed == 7
    assert get_benchmark("gqa").parse_options([]) is None
    with pytest.raises(ValueError, match="KEY in \\['data_type', 'lenient'\\]"):
        seed.parse_options(["lenent=true"])
    with pytest.raises(ValueError, match="true/false"):
        seed.parse_options(["lenient=maybe"])
    with pytest.raises(ValueError, match="no scoring options"):
        get_benchmark("gqa").parse_options(["lenient=true"])
    with pytest.raises(ValueError, match="rule must be"):
        get_benchmark("scienceqa").parse_options(["rule=loose"])


def test_eval_cli_passes_score_options(tmp_path):
    annotation = tmp_path / "SEED-Bench.json"
    annotation.write_text(json.dumps({"question_type": {"T": 1}, "questions": [
        {"question_id": "1", "answer": "A", "question_type_id": 1, "data_type": "image"},
        {"question_id": "2", "answer": "B", "question_type_id": 1, "data_type": "image"}]}))
    out = tmp_path / "out"
    out.mkdir()
    write_answers(out / "answers.jsonl", [{"question_id": 1, "text": "A"}, {"question_id": 2, "text": "B."}])
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    base = ["--model", str(tmp_path), "--benchmark", "seed_bench", "--data", str(tmp_path), "--out", str(out),
            "--score-only"]
    assert cli.run(parser.parse_args(base)) == 0
    assert json.loads((out / "metrics.json").read_text())["accuracy"] == pytest.approx(1 / 2)  # exact match
    assert cli.run(parser.parse_args(base + ["--score-option", "lenient=true"])) == 0
    assert json.loads((out / "metrics.json").read_text())["accuracy"] == 1.0
    with pytest.raises(ValueError, match="bad scoring option"):
        cli.run(parser.parse_args(base + ["--score-option", "strict"]))


# -- readers ------------------------------------------------------------------------------------
def test_registry_readers_follow_llava_layout(tmp_path):
    assert {"gqa", "scienceqa", "textvqa", "pope", "mme", "mmbench", "seed_bench", "vqav2", "vizwiz", "mm-vet",
            "mmmu", "mathvista", "okvqa", "coco_caption", "synthetic"} <= set(SCORERS)
    write_jsonl(tmp_path / "llava_gqa_testdev_balanced.jsonl", [
        {"question_id": "201", "image": "n1.jpg", "category": "default",
         "text": "Is it red?\nAnswer the question using a single word or phrase."}])
    [q] = SCORERS["gqa"].read_questions(tmp_path)
    assert q.text == "<image>\nIs it red?\nAnswer the question using a single word or phrase."
    assert q.image == str(tmp_path / "data" / "images" / "n1.jpg")
    assert q.extra == {"category": "default", "image": "n1.jpg"}


def test_mmmu_reader_builds_the_official_prompt_from_parquet(tmp_path):
    import pyarrow as pa  # a dependency of `datasets`, installed with gamma-mod
    import pyarrow.parquet as pq
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), "red").save(buffer, format="PNG")
    png = {"bytes": buffer.getvalue(), "path": "x.png"}
    rows = [
        {"id": "validation_Art_1", "question": "Which style is <image 1>?", "options": "['Baroque', 'Cubism']",
         "answer": "B", "question_type": "multiple-choice", "image_1": png},
        {"id": "validation_Art_2", "question": "Which one?", "options": "[\"<img='a.png'>\", \"<img='b.png'>\"]",
         "answer": "A", "question_type": "multiple-choice", "image_1": png},  # images in the options: no image
    ]
    (tmp_path / "Art").mkdir()
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "Art" / "validation-00000-of-00001.parquet")
    first, second = get_benchmark("mmmu").read_questions(tmp_path)
    assert first.question_id == "validation_Art_1"
    assert first.text == ("<image>\nWhich style is <image 1>?\n(A) Baroque\n(B) Cubism\n\n"
                          "Answer with the option's letter from the given choices directly.")
    assert base64.b64decode(first.extra["_image_base64"]) == png["bytes"]
    assert first.extra["options"] == ["Baroque", "Cubism"] and first.extra["answer"] == "B"
    assert "_image_base64" not in second.extra and not second.text.startswith("<image>")


def test_mathvista_okvqa_caption_readers(tmp_path):
    (tmp_path / "testmini.json").write_text(json.dumps({"5": {
        "question": "Find x", "image": "images/5.jpg", "choices": None, "unit": None, "precision": None,
        "answer": "3", "question_type": "free_form", "answer_type": "integer"}}))
    [q] = get_benchmark("mathvista").read_questions(tmp_path)
    assert q.question_id == "5" and q.image == str(tmp_path / "images" / "5.jpg")
    assert q.text.startswith("<image>\nQuestion: Find x\nHint: ")
    assert q.text.endswith("Solution:\nAnswer the question using a single word or phrase.")
    # OK-VQA without LLaVA-HR's jsonl: the official question file, LLaVA's short-answer prompt.
    (tmp_path / "OpenEnded_mscoco_val2014_questions.json").write_text(json.dumps({"questions": [
        {"question_id": 2971475, "image_id": 297147, "question": "What sport can you use this for?"}]}))
    [q] = get_benchmark("okvqa").read_questions(tmp_path)
    assert q.image == str(tmp_path / "val2014" / "COCO_val2014_000000297147.jpg")
    assert q.text == "<image>\nWhat sport can you use this for?\nAnswer the question using a single word or phrase."
    write_jsonl(tmp_path / "llava_caption_mscoco_test.jsonl", [{"id": 391895, "image": "a.jpg", "text": "Describe."}])
    [q] = get_benchmark("coco_caption").read_questions(tmp_path)
    assert (q.question_id, q.text) == (391895, "<image>\nDescribe.")
