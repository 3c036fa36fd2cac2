"""Each benchmark scorer on a hand-written answer + annotation fixture; expected values by hand."""

import csv
import json

import pytest

from gamma_mod.eval.scorers import SCORERS, gqa, mmbench, mme, mmvet, pope, scienceqa, seed, synthetic, textvqa, \
    vizwiz, vqav2
from gamma_mod.eval.scorers.options import parse_option_letter
from gamma_mod.eval.scorers.vqa_normalize import normalize_answer


def write_answers(path, rows):
    """Answer lines as the generic loop writes them."""
    path.write_text("".join(json.dumps({"prompt": "", **r}) + "\n" for r in rows))
    return path


# -- shared VQA normalisation -------------------------------------------------------------------
@pytest.mark.parametrize("raw, expected", [
    ("Two dogs.", "2 dogs"),  # number word -> digit; final period dropped
    ("The Cat!", "cat"),  # lower-case; article dropped; "!" glued to a word is removed
    ("an apple", "apple"),
    ("none", "0"),
    ("dont know", "don't know"),  # apostrophe restored
    ("man's hat", "man 's hat"),  # "'s" split off its word
    ("3.5", "3.5"),  # a period inside a number stays
    ("1,000", "1000"),  # comma between digits removed
    ("black-and-white", "black and white"),  # "-" between words -> space
    ("yes, it is", "yes it is"),
    ("left - right", "left right"),  # "-" next to a space is removed, spaces collapse
])
def test_vqa_normalisation(raw, expected):
    assert normalize_answer(raw) == expected


# -- TextVQA ------------------------------------------------------------------------------------
def test_textvqa_accuracy_over_ten_leave_one_out_subsets():
    # 3 of 10 humans said "cat". Leaving out one of those 3 (3 subsets): 2 match -> 2/3;
    # leaving out any of the 7 others: 3 match -> min(3/3, 1) = 1. (3·2/3 + 7·1) / 10 = 0.9
    assert textvqa.vqa_accuracy("The cat.", ["cat"] * 3 + ["dog"] * 7) == pytest.approx(0.9)
    # One human said "2 dogs": 9 subsets keep that answer -> 1/3 each, 1 subset drops it -> 0. 9/30 = 0.3
    humans = ["two dogs"] + ["dogs"] * 9
    assert textvqa.vqa_accuracy("2 dogs", humans) == pytest.approx(0.3)
    # 4+ matches: every subset has >= 3 -> 1.0 ("two", "2", "Two." all normalise to "2")
    assert textvqa.vqa_accuracy("2", ["two", "2", "Two.", "2"] + ["3"] * 6) == pytest.approx(1.0)


def test_textvqa_score_file(tmp_path):
    annotation = tmp_path / "TextVQA_0.5.1_val.json"
    annotation.write_text(json.dumps({"data": [
        {"question_id": 1, "answers": ["cat"] * 3 + ["dog"] * 7},
        {"question_id": 2, "answers": ["two dogs"] + ["dogs"] * 9},
    ]}))
    answers = write_answers(tmp_path / "a.jsonl", [{"question_id": 1, "text": "The cat."},
                                                   {"question_id": 2, "text": "2 dogs"}])
    metrics = textvqa.score(answers, annotation)
    assert metrics["accuracy"] == pytest.approx((0.9 + 0.3) / 2)
    assert metrics["answered"] == 2


# -- GQA ----------------------------------------------------------------------------------------
def test_gqa_exact_match_after_normalisation_and_predictions_file(tmp_path):
    root = tmp_path / "gqa"
    (root / "data").mkdir(parents=True)
    (root / "data" / "testdev_balanced_questions.json").write_text(json.dumps({
        "1": {"answer": "yes", "types": {"structural": "verify", "semantic": "obj"}},
        "2": {"answer": "table", "types": {"structural": "query", "semantic": "obj"}},
        "3": {"answer": "blue", "types": {"structural": "query", "semantic": "attr"}},
    }))
    answers = write_answers(tmp_path / "a.jsonl", [
        {"question_id": "1", "text": "Yes."},  # "yes" == "yes"
        {"question_id": "2", "text": "The table"},  # article dropped -> "table"
        {"question_id": "3", "text": "red"},  # wrong
    ])
    metrics = gqa.evaluate(answers, root, tmp_path / "out")
    assert metrics["accuracy"] == pytest.approx(2 / 3)
    assert metrics["accuracy/structural/verify"] == 1.0
    assert metrics["accuracy/structural/query"] == 0.5  # table right, blue wrong
    assert metrics["accuracy/semantic/attr"] == 0.0
    # The official eval.py input: lower-cased, trailing period stripped (LLaVA's convert_gqa_for_eval).
    assert json.loads((tmp_path / "out" / "testdev_balanced_predictions.json").read_text()) == [
        {"questionId": "1", "prediction": "yes"}, {"questionId": "2", "prediction": "the table"},
        {"questionId": "3", "prediction": "red"}]


# -- ScienceQA ----------------------------------------------------------------------------------
@pytest.mark.parametrize("text, n, expected", [
    ("A", 3, "A"),
    ("B. The moon", 3, "B"),  # "X. " prefix
    ("The answer is C.", 3, "C"),
    ("Because of gravity. The answer is B.", 4, "B"),
    ("The answer is A. The answer is B.", 4, None),  # two answers -> FAILED
    ("I think A or B", 3, None),
    ("E", 3, None),  # not one of the 3 options
])
def test_scienceqa_official_option_parsing(text, n, expected):
    assert scienceqa.parse_answer(text, n) == expected


def test_scienceqa_image_split_accuracy(tmp_path):
    problems = tmp_path / "problems.json"
    problems.write_text(json.dumps({
        "p1": {"choices": ["x", "y", "z"], "answer": 1, "image": "image.png"},
        "p2": {"choices": ["x", "y"], "answer": 0, "image": "image.png"},
        "p3": {"choices": ["x", "y", "z"], "answer": 2, "image": None},
        "p4": {"choices": ["x", "y"], "answer": 0, "image": "image.png"},
    }))
    splits = tmp_path / "pid_splits.json"
    splits.write_text(json.dumps({"test": ["p1", "p2", "p3"], "val": ["p4"]}))
    answers = write_answers(tmp_path / "a.jsonl", [
        {"question_id": "p1", "text": "B"},  # right (index 1)
        {"question_id": "p2", "text": "The answer is B."},  # wrong (answer A)
        {"question_id": "p3", "text": "C. z"},  # right, but no image
        {"question_id": "p4", "text": "A"},  # val split: not counted
    ])
    metrics = scienceqa.score(answers, problems, splits)
    assert metrics["img_accuracy"] == pytest.approx(1 / 2)  # p1 right, p2 wrong
    assert metrics["img_total"] == 2
    assert metrics["accuracy"] == pytest.approx(2 / 3)  # p1, p3 right of p1..p3


# -- POPE ---------------------------------------------------------------------------------------
def test_pope_yes_no_parsing():
    assert pope.parse_yes_no("Yes, there is a dog.") == "yes"
    assert pope.parse_yes_no("No, there isn't") == "no"
    assert pope.parse_yes_no("There is not a cat.") == "no"
    assert pope.parse_yes_no("I think so. No doubt.") == "yes"  # only the first sentence counts


def test_pope_metrics_per_category(tmp_path):
    coco = tmp_path / "coco"
    coco.mkdir()
    cases = {
        # (image, label, model answer) -> parsed
        "random": [("r0.jpg", "yes", "Yes, there is."),  # TP
                   ("r1.jpg", "no", "No."),  # TN
                   ("r2.jpg", "no", "There is not a cat."),  # TN
                   ("r3.jpg", "no", "yes"),  # FP
                   ("r4.jpg", "yes", "I think so. No doubt."),  # TP (first sentence only)
                   ("r5.jpg", "no", "No, there isn't")],  # TN
        "popular": [("p0.jpg", "no", "Yes"),  # FP
                    ("p1.jpg", "no", "no")],  # TN
    }
    answers = []
    for category, rows in cases.items():
        with (coco / f"coco_pope_{category}.json").open("w") as f:
            for i, (image, label, _) in enumerate(rows):
                f.write(json.dumps({"question_id": i + 1, "image": image, "text": "Is there a dog in the image?",
                                    "label": label}) + "\n")
        answers += [{"question_id": f"{category}{i}", "image": image, "category": category, "text": text,
                     "prompt": "<image>\nIs there a dog in the image?\nAnswer the question using a single word or phrase."}
                    for i, (image, _, text) in enumerate(rows)]
    metrics = pope.score(write_answers(tmp_path / "a.jsonl", answers), coco)
    # random: TP=2, FP=1, TN=3, FN=0 -> precision 2/3, recall 2/2, F1 = 2·(2/3)·1 / (5/3) = 0.8,
    # accuracy (2+3)/6, yes-ratio (TP+FP)/6 = 0.5
    assert metrics["random/precision"] == pytest.approx(2 / 3)
    assert metrics["random/recall"] == pytest.approx(1.0)
    assert metrics["random/f1"] == pytest.approx(0.8)
    assert metrics["random/accuracy"] == pytest.approx(5 / 6)
    assert metrics["random/yes_ratio"] == pytest.approx(0.5)
    # popular: TP=0, FP=1, TN=1 -> precision 0, recall 0 (no positives), F1 0, accuracy 1/2, yes-ratio 1/2
    assert (metrics["popular/precision"], metrics["popular/recall"], metrics["popular/f1"]) == (0.0, 0.0, 0.0)
    assert metrics["popular/accuracy"] == metrics["popular/yes_ratio"] == 0.5
    assert "adversarial/f1" not in metrics  # no annotation file, no entry
    assert metrics["f1_mean"] == pytest.approx((0.8 + 0.0) / 2)


# -- MME ----------------------------------------------------------------------------------------
def test_mme_acc_plus_and_perception_cognition_sums(tmp_path):
    release = tmp_path / "MME_Benchmark_release_version"
    q_yes, q_no = "Is there a dog in this image? Please answer yes or no.", "Is there a cat in this image? Please answer yes or no."
    layout = {  # task -> (folder holding the txt files, {image stem: None})
        "existence": release / "existence",  # txt files next to the images
        "artwork": release / "artwork" / "questions_answers_YN",  # images/ + questions_answers_YN/
        "code_reasoning": release / "code_reasoning",
    }
    stems = {"existence": ["a", "b"], "artwork": ["c"], "code_reasoning": ["d"]}
    for task, folder in layout.items():
        folder.mkdir(parents=True)
        if task == "artwork":
            (release / "artwork" / "images").mkdir()
        for stem in stems[task]:
            (folder / f"{stem}.txt").write_text(f"{q_yes}\tYes\n{q_no}\tNo\n")
    suffix = "\nAnswer the question using a single word or phrase."  # LLaVA's prompt, not the release's
    preds = {("existence", "a"): ("Yes", "No, it is not"),  # both right
             ("existence", "b"): ("no", "no"),  # first wrong
             ("artwork", "c"): ("yes", "maybe"),  # "maybe" -> other: wrong
             ("code_reasoning", "d"): ("Yes", "No")}  # both right
    rows = []
    for (task, stem), (ans_yes, ans_no) in preds.items():
        image = f"{task}/images/{stem}.jpg" if task == "artwork" else f"{task}/{stem}.jpg"
        for k, (q, a) in enumerate(((q_yes, ans_yes), (q_no, ans_no))):
            rows.append({"question_id": f"{image}#{k}", "image": image, "category": task, "text": a,
                         "prompt": "<image>\n" + q.replace(" Please answer yes or no.", "") + suffix})
    metrics = mme.score(write_answers(tmp_path / "a.jsonl", rows), release)
    # existence: acc 3/4, acc+ 1/2 (image a only) -> 75 + 50 = 125
    assert metrics["existence/acc"] == pytest.approx(0.75)
    assert metrics["existence/acc_plus"] == pytest.approx(0.5)
    assert metrics["existence/score"] == pytest.approx(125)
    # artwork: acc 1/2, acc+ 0 -> 50; code_reasoning: 100 + 100 = 200
    assert metrics["artwork/score"] == pytest.approx(50)
    assert metrics["code_reasoning/score"] == pytest.approx(200)
    assert metrics["perception"] == pytest.approx(125 + 50)
    assert metrics["cognition"] == pytest.approx(200)


# -- option letters, MMBench, SEED ----------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("B", "B"), ("B.", "B"), ("(C) a dog", "C"), ("The answer is D.", "D"), ("I choose A", "A"),
    ("dog", "C"),  # the text of option C
    ("A or B", None),  # two letters
    ("E", None),  # not an option
    ("I do not know", None),
])
def test_option_letter_parsing(text, expected):
    assert parse_option_letter(text, "ABCD", {"A": "cat", "B": "bird", "C": "Dog", "D": "fish"}) == expected


def write_mmbench(path, rows):
    fields = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image"]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fields, delimiter="\t")
        writer.writeheader()
        for row in rows:
            writer.writerow({"hint": "nan", "D": "", "category": "attr", "image": "aW1n", **row})


def test_mmbench_plain_and_circular_accuracy(tmp_path):
    tsv = tmp_path / "mmbench_dev_20230712.tsv"
    write_mmbench(tsv, [
        {"index": 0, "question": "Q0", "A": "a", "B": "b", "C": "c", "D": "d", "answer": "B"},
        {"index": 1, "question": "Q1", "A": "cat", "B": "dog", "C": "cow", "answer": "C", "category": "count"},
        {"index": 1_000_001, "question": "Q1", "A": "cow", "B": "cat", "C": "dog", "answer": "A", "category": "count"},
        {"index": 2, "question": "Q2", "A": "Dog", "B": "cat", "answer": "A", "hint": "Look closely."},
        {"index": 3, "question": "Q3", "A": "a", "B": "b", "C": "c", "D": "d", "answer": "D"},
    ])
    answers = write_answers(tmp_path / "a.jsonl", [
        {"question_id": 0, "text": "B"},  # right
        {"question_id": 1, "text": "The answer is C"},  # right
        {"question_id": 1_000_001, "text": "C. dog"},  # wrong (rotated copy: answer A)
        {"question_id": 2, "text": "dog"},  # option A's text: right
        {"question_id": 3, "text": "I do not know"},  # unparsed: wrong
    ])
    metrics = mmbench.score(answers, tsv)
    assert metrics["accuracy"] == pytest.approx(3 / 5)
    # groups by index % 1e6: {0: right}, {1, 1000001: right, wrong -> wrong}, {2: right}, {3: wrong} -> 2/4
    assert metrics["circular_accuracy"] == pytest.approx(2 / 4)
    assert metrics["circular_groups"] == 4
    assert metrics["unparsed"] == 1
    assert metrics["accuracy/count"] == pytest.approx(1 / 2)
    # LLaVA's prompt: hint, question, the present options, the letter instruction; image kept private.
    q2 = [q for q in mmbench.read_questions(tmp_path, tsv) if q.question_id == 2][0]
    assert q2.text == "<image>\nLook closely.\nQ2\nA. Dog\nB. cat\n" + mmbench.PROMPT_SUFFIX
    assert q2.extra["_image_base64"] == "aW1n"


def test_seed_accuracy_per_question_type(tmp_path):
    annotation = tmp_path / "SEED-Bench.json"
    annotation.write_text(json.dumps({
        "question_type": {"Scene Understanding": 1, "Instance Counting": 2},
        "questions": [
            {"question_id": "1", "answer": "A", "question_type_id": 1, "data_type": "image"},
            {"question_id": "2", "answer": "B", "question_type_id": 1, "data_type": "image"},
            {"question_id": "3", "answer": "D", "question_type_id": 2, "data_type": "image",
             "choice_a": "2", "choice_b": "3", "choice_c": "4", "choice_d": "5"},
            {"question_id": "4", "answer": "A", "question_type_id": 2, "data_type": "image"},
            {"question_id": "5", "answer": "A", "question_type_id": 2, "data_type": "video"},
        ]}))
    answers = write_answers(tmp_path / "a.jsonl", [
        {"question_id": "1", "text": "A"}, {"question_id": "2", "text": "B."},
        {"question_id": "3", "text": "(D) five"}, {"question_id": "5", "text": "B"},  # 4 unanswered; 5 is video
    ])
    metrics = seed.score(answers, annotation)
    assert metrics["accuracy/Scene Understanding"] == 1.0  # 2 of 2
    assert metrics["accuracy/Instance Counting"] == 0.5  # 3 right, 4 unanswered -> wrong
    assert metrics["accuracy"] == pytest.approx(3 / 4)
    assert (metrics["total"], metrics["missing"]) == (4, 1)


# -- submission files ------------------------------------------------------------------------------
def test_vqav2_submission_fills_unanswered(tmp_path):
    answers = write_answers(tmp_path / "a.jsonl", [{"question_id": 10, "text": "Two."},
                                                   {"question_id": 11, "text": "Yes"}])
    everything = tmp_path / "llava_vqav2_mscoco_test2015.jsonl"
    everything.write_text("".join(json.dumps({"question_id": i, "text": "?"}) + "\n" for i in (10, 11, 12)))
    path = vqav2.write_submission(answers, tmp_path / "sub.json", everything)
    assert path.read_text() == ('[{"question_id": 10, "answer": "2"}, {"question_id": 11, "answer": "yes"}, '
                                '{"question_id": 12, "answer": ""}]')


def test_vizwiz_submission(tmp_path):
    answers = write_answers(tmp_path / "a.jsonl", [
        {"question_id": 0, "image": "VizWiz_test_00000000.jpg", "text": "Unanswerable."},
        {"question_id": "VizWiz_test_00000001.jpg", "text": "a can of soup"},  # image name as id
    ])
    path = vizwiz.write_submission(answers, tmp_path / "sub.json")
    assert json.loads(path.read_text()) == [{"image": "VizWiz_test_00000000.jpg", "answer": "unanswerable"},
                                            {"image": "VizWiz_test_00000001.jpg", "answer": "can of soup"}]


def test_mmvet_submission_keeps_raw_answers(tmp_path):
    answers = write_answers(tmp_path / "a.jsonl", [{"question_id": 0, "text": "A cat, sitting."},
                                                   {"question_id": "v1_7", "text": "42"}])
    path = mmvet.write_submission(answers, tmp_path / "results.json")
    assert path.read_text() == '{"v1_0": "A cat, sitting.", "v1_7": "42"}'


# -- synthetic split + registry ----------------------------------------------------------------------
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


def test_registry_readers_follow_llava_layout(tmp_path):
    assert {"gqa", "scienceqa", "textvqa", "pope", "mme", "mmbench", "seed_bench", "vqav2", "vizwiz", "mm-vet",
            "synthetic"} <= set(SCORERS)
    (tmp_path / "llava_gqa_testdev_balanced.jsonl").write_text(json.dumps(
        {"question_id": "201", "image": "n1.jpg", "text": "Is it red?\nAnswer the question using a single word or phrase.",
         "category": "default"}) + "\n")
    [q] = SCORERS["gqa"].read_questions(tmp_path)
    assert q.text == "<image>\nIs it red?\nAnswer the question using a single word or phrase."
    assert q.image == str(tmp_path / "data" / "images" / "n1.jpg")
    assert q.extra == {"category": "default", "image": "n1.jpg"}
