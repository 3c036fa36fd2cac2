"""Multiple-choice and reasoning scorers against the official rules: ScienceQA, SEED-Bench, MMBench, MMMU,
MathVista. Every expected value is derived by hand from the official scripts' rules."""

import csv
import json
import random

import pytest
from scorer_fixtures import write_answers

from gamma_mod.eval.scorers import mathvista, mmbench, mmmu, scienceqa, seed
from gamma_mod.eval.scorers.options import parse_option_letter


# -- ScienceQA ----------------------------------------------------------------------------------
@pytest.mark.parametrize("text, llava, llava_hr", [
    ("A", "A", "A"),
    ("", "FAILED", "FAILED"),  # (a) not accepted as "A"
    ("BC", "FAILED", "FAILED"),  # (a) not accepted as "B"
    (" A", "FAILED", "FAILED"),  # (d) no stripping
    ("A\n", "FAILED", "FAILED"),  # (d)
    ("B. The moon", "B", "B"),  # "X. " prefix
    ("The answer is C.", "C", "C"),
    ("The answer is Z.", "Z", "Z"),  # (b) parsed, no error: simply wrong later
    ("Because of gravity. The answer is B.", "B", "B"),  # llava-hr: "Because" starts with B -> B too
    ("The answer is A. The answer is B.", "FAILED", "FAILED"),  # two answers
    ("A cat", "FAILED", "A"),  # LLaVA-HR's looser prefix rule
    ("Because", "FAILED", "B"),
])
def test_scienceqa_official_answer_rule(text, llava, llava_hr):
    assert scienceqa.parse_answer(text, "llava") == llava
    assert scienceqa.parse_answer(text, "llava-hr") == llava_hr


def test_scienceqa_letter_outside_the_choices_is_wrong_not_an_error():
    assert scienceqa.predicted_index("Z", 3) == -1
    assert scienceqa.predicted_index("D", 3) == -1
    assert scienceqa.predicted_index("C", 3) == 2


def scienceqa_files(tmp_path):
    problems = tmp_path / "problems.json"
    problems.write_text(json.dumps({
        "p1": {"choices": ["x", "y", "z"], "answer": 1}, "p2": {"choices": ["x", "y"], "answer": 0},
        "p3": {"choices": ["x", "y", "z"], "answer": 2}, "p4": {"choices": ["x", "y", "z", "w"], "answer": 3},
        "p5": {"choices": ["x", "y"], "answer": 1}, "p6": {"choices": ["x", "y", "z"], "answer": 0},
        "p7": {"choices": ["x", "y"], "answer": 0},
    }))
    splits = tmp_path / "pid_splits.json"
    splits.write_text(json.dumps({"test": ["p1", "p2", "p3", "p4", "p5", "p6"], "val": ["p7"]}))
    img, txt = "<image>\nQ\nA. x\nB. y", "Q\nA. x\nB. y"
    answers = write_answers(tmp_path / "a.jsonl", [
        {"question_id": "p1", "prompt": img, "text": "B"},  # right, IMG
        {"question_id": "p2", "prompt": img, "text": ""},  # wrong (the old rule took it as "A"), IMG
        {"question_id": "p3", "prompt": txt, "text": "The answer is Z."},  # wrong, no error, not IMG
        # p4 unanswered: counted wrong, not IMG (no prompt to hold "<image>")
        {"question_id": "p5", "prompt": img, "text": "B\n"},  # wrong: not stripped, IMG
        {"question_id": "p6", "prompt": img, "text": "A cat"},  # llava: wrong; llava-hr: "A", right; IMG
        {"question_id": "p7", "prompt": img, "text": "A"},  # val split: not counted
    ])
    return answers, problems, splits


def test_scienceqa_counts_every_test_problem(tmp_path):
    answers, problems, splits = scienceqa_files(tmp_path)
    metrics = scienceqa.score(answers, problems, splits)
    assert metrics["accuracy"] == pytest.approx(1 / 6)  # (c) p4 is in the denominator
    assert metrics["img_accuracy"] == pytest.approx(1 / 4)  # p1 of p1, p2, p5, p6
    assert (metrics["total"], metrics["img_total"], metrics["missing"]) == (6, 4, 1)
    assert metrics["failed"] == 4  # p2, p4, p5, p6 ("Z" is a parsed letter)


def test_scienceqa_llava_hr_rule_is_an_explicit_option(tmp_path):
    answers, problems, splits = scienceqa_files(tmp_path)
    metrics = scienceqa.score(answers, problems, splits, scienceqa.ScienceQAOptions(rule="llava-hr"))
    assert metrics["accuracy"] == pytest.approx(2 / 6)
    assert metrics["img_accuracy"] == pytest.approx(2 / 4)
    with pytest.raises(ValueError, match="rule"):
        scienceqa.ScienceQAOptions(rule="loose")


# -- SEED-Bench ---------------------------------------------------------------------------------
def seed_files(tmp_path):
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
            {"question_id": "6", "answer": "C", "question_type_id": 2, "data_type": "image"},
        ]}))
    answers = write_answers(tmp_path / "a.jsonl", [
        {"question_id": 1, "text": "A"},  # exact: right
        {"question_id": 2, "text": "B."},  # exact: wrong; lenient: right
        {"question_id": 3, "text": "(D) five"},  # exact: wrong; lenient: right
        # 4 unanswered -> wrong
        {"question_id": 5, "text": "A"},  # video: not in the image score
        {"question_id": "6", "text": "C"},  # string id: the official int(question_id) look-up misses it
    ])
    return answers, annotation


def test_seed_exact_match_by_default(tmp_path):
    answers, annotation = seed_files(tmp_path)
    metrics = seed.score(answers, annotation)
    assert metrics["accuracy/Scene Understanding"] == pytest.approx(1 / 2)
    assert metrics["accuracy/Instance Counting"] == 0.0  # 3, 4, 6 wrong
    assert metrics["accuracy"] == pytest.approx(1 / 5)
    assert (metrics["total"], metrics["missing"], metrics["unscored_answers"]) == (5, 2, 2)


def test_seed_lenient_parsing_is_opt_in(tmp_path):
    answers, annotation = seed_files(tmp_path)
    metrics = seed.score(answers, annotation, seed.SeedOptions(lenient=True))
    assert metrics["accuracy/Scene Understanding"] == 1.0
    assert metrics["accuracy/Instance Counting"] == pytest.approx(1 / 3)
    assert metrics["accuracy"] == pytest.approx(3 / 5)


def test_seed_upload_file(tmp_path):
    answers, annotation = seed_files(tmp_path)
    metrics = seed.evaluate(answers, tmp_path, tmp_path / "out")
    lines = (tmp_path / "out" / seed.UPLOAD).read_text().splitlines()
    # Annotation order, its ids as written, raw answer text; 4 unanswered is left out (and counted).
    assert [json.loads(line) for line in lines] == [
        {"question_id": "1", "prediction": "A"}, {"question_id": "2", "prediction": "B."},
        {"question_id": "3", "prediction": "(D) five"}, {"question_id": "5", "prediction": "A"},
        {"question_id": "6", "prediction": "C"}]
    assert metrics["upload_missing"] == 1
    assert metrics["accuracy"] == pytest.approx(1 / 5)


# -- MMBench ------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("B", "B"), ("B.", "B"), ("(C) a dog", "C"), ("The answer is D.", "D"), ("I choose A", "A"),
    ("dog", "C"),  # the text of option C
    ("A or B", None),  # two letters
    ("E", None),  # not an option
    ("I do not know", None),
])
def test_lenient_option_letter_parsing(text, expected):
    assert parse_option_letter(text, "ABCD", {"A": "cat", "B": "bird", "C": "Dog", "D": "fish"}) == expected


MMBENCH_FIELDS = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image", "source",
                  "l2-category", "comment", "split"]


def write_mmbench(path, rows):
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, MMBENCH_FIELDS, delimiter="\t")
        writer.writeheader()
        for row in rows:
            writer.writerow({"hint": "nan", "D": "", "category": "attr", "image": "aW1n", "source": "s",
                             "l2-category": "l2", "comment": "", "split": "dev", **row})


def mmbench_files(tmp_path):
    tsv = tmp_path / "mmbench_dev_20230712.tsv"
    write_mmbench(tsv, [
        {"index": 0, "question": "Q0", "A": "a", "B": "b", "C": "c", "D": "d", "answer": "B"},
        {"index": 1, "question": "Q1", "A": "cat", "B": "dog", "C": "cow", "answer": "C", "category": "count"},
        {"index": 1_000_001, "question": "Q1", "A": "cow", "B": "cat", "C": "dog", "answer": "A", "category": "count"},
        {"index": 2, "question": "Q2", "A": "Dog", "B": "cat", "answer": "A", "hint": "Look closely."},
        {"index": 3, "question": "Q3", "A": "a", "B": "b", "C": "c", "D": "d", "answer": "D"},
    ])
    answers = write_answers(tmp_path / "a.jsonl", [
        {"question_id": 0, "text": "B"},  # right either way
        {"question_id": 1, "text": "The answer is C"},  # exact: wrong; lenient: right
        {"question_id": 1_000_001, "text": "C. dog"},  # wrong either way (rotated copy: answer A)
        {"question_id": 2, "text": "dog"},  # exact: wrong; lenient: option A's text, right
        # 3 unanswered
    ])
    return answers, tsv


def test_mmbench_exact_by_default_lenient_opt_in(tmp_path):
    answers, tsv = mmbench_files(tmp_path)
    exact = mmbench.score(answers, tsv)
    assert exact["accuracy"] == pytest.approx(1 / 4)
    assert exact["unparsed"] == 3
    # groups by index % 1e6: {0: right}, {1, 1000001: wrong}, {2: wrong} -> 1/3
    assert exact["circular_accuracy"] == pytest.approx(1 / 3)
    lenient = mmbench.score(answers, tsv, mmbench.MMBenchOptions(lenient=True))
    assert lenient["accuracy"] == pytest.approx(3 / 4)
    assert lenient["circular_accuracy"] == pytest.approx(2 / 3)  # {0}, {2} solved; {1, 1000001} not
    assert lenient["accuracy/count"] == pytest.approx(1 / 2)
    # LLaVA's prompt: hint, question, the present options, the letter instruction; image kept private.
    q2 = [q for q in mmbench.read_questions(tmp_path, tsv, single_pred_prompt=True) if q.question_id == 2][0]
    assert q2.text == "<image>\nLook closely.\nQ2\nA. Dog\nB. cat\n" + mmbench.PROMPT_SUFFIX
    assert q2.extra["_image_base64"] == "aW1n"


def test_mmbench_upload_xlsx_has_the_official_columns(tmp_path):
    import openpyxl

    answers, tsv = mmbench_files(tmp_path)
    metrics = mmbench.evaluate(answers, tmp_path, tmp_path / "out")
    sheet = openpyxl.load_workbook(metrics["submission"]).active
    rows = [list(r) for r in sheet.iter_rows(values_only=True)]
    # hint, category, source, image, comment, l2-category dropped; prediction inserted at position 6.
    assert rows[0] == ["index", "question", "A", "B", "C", "D", "prediction", "answer", "split"]
    assert rows[1] == [0, "Q0", "a", "b", "c", "d", "B", "B", "dev"]
    assert rows[2] == [1, "Q1", "cat", "dog", "cow", None, "The answer is C", "C", "dev"]  # raw answer text
    assert rows[4][0] == 2 and rows[4][6] == "dog"
    assert rows[5] == [3, "Q3", "a", "b", "c", "d", None, "D", "dev"]  # unanswered: empty
    assert metrics["accuracy"] == pytest.approx(1 / 4)


# -- MMMU ---------------------------------------------------------------------------------------
FRUIT = {"A": "apple", "B": "banana", "C": "cherry", "D": "date"}


@pytest.mark.parametrize("response, expected", [
    ("(B)", "B"),
    ("B.", "B"),  # punctuation stripped from both ends, then " B " found
    ("The answer is (C) cherry, not (A).", "A"),  # bracketed letters: the one written last
    ("I think A or B", "B"),  # standalone letters: the one written last
    ("It looks like a tasty banana to me", "B"),  # more than 5 words: an option's text
])
def test_mmmu_multiple_choice_parsing(response, expected):
    assert mmmu.parse_multi_choice(response, list("ABCD"), FRUIT, random.Random(42)) == expected


def test_mmmu_unparseable_choice_draws_from_the_seeded_generator():
    rng = random.Random(42)
    # "apple" is one word (the content rule needs > 5): no candidate, so random.Random(42).choice("ABCD"),
    # whose first two draws are "A", "A".
    assert mmmu.parse_multi_choice("apple", list("ABCD"), FRUIT, rng) == "A"
    assert mmmu.parse_multi_choice("no idea", list("ABCD"), FRUIT, rng) == "A"


def test_mmmu_open_answer_rules():
    # "is " gives the shortest tail "3.14159" -> number 3.14 (rounded to 2 decimals).
    assert mmmu.parse_open("The answer is 3.14159") == [3.14]
    assert mmmu.eval_open("3.14", mmmu.parse_open("The answer is 3.14159"))
    assert not mmmu.eval_open("3.15", mmmu.parse_open("The answer is 3.14159"))
    # No indicator: the whole answer, plus its numbers "1,000" -> 1000.0 and (simple pattern) "000" -> 0.0.
    assert sorted(map(str, mmmu.parse_open("1,000 apples"))) == ["0.0", "1,000 apples", "1000.0"]
    assert mmmu.eval_open("1000", mmmu.parse_open("1,000 apples"))
    assert mmmu.eval_open("Apples", mmmu.parse_open("1,000 apples"))  # a gold string inside the answer
    # A one-letter gold is padded (" c", "c ") so that it does not match inside a word.
    assert not mmmu.eval_open("C", mmmu.parse_open("cat"))
    assert mmmu.eval_open("C", mmmu.parse_open("the letter c here"))
    assert mmmu.eval_open(["Tampa", "Florida"], mmmu.parse_open("florida"))  # a list gold: any of them


def test_mmmu_score_per_subject_and_discipline(tmp_path):
    mc = {"question_type": "multiple-choice", "options": ["apple", "banana", "cherry", "date"]}
    answers = write_answers(tmp_path / "a.jsonl", [
        {"question_id": "validation_Art_1", "answer": "B", "text": "(B)", **mc},  # right
        {"question_id": "validation_Art_2", "answer": "C", "text": "A", **mc},  # wrong
        {"question_id": "validation_Art_Theory_1", "answer": "A", "text": "apple", **mc},  # random "A": right
        {"question_id": "validation_Math_1", "question_type": "short-answer", "answer": "3.14",
         "text": "The answer is 3.14159"},  # right
    ])
    metrics = mmmu.score(answers)
    assert metrics["accuracy"] == pytest.approx(3 / 4)
    assert metrics["accuracy/Art"] == pytest.approx(1 / 2)
    assert metrics["accuracy/Art_Theory"] == 1.0
    assert metrics["accuracy/Art and Design"] == pytest.approx(2 / 3)  # instance-weighted over Art, Art_Theory
    assert metrics["accuracy/Science"] == 1.0
    assert metrics["random_picks"] == 1
    # answer_dict: gold answers from MMMU's answer_dict_val.json (a list gold for the open question).
    answer_dict = tmp_path / "answer_dict_val.json"
    answer_dict.write_text(json.dumps({
        "validation_Art_1": {"question_type": "multiple-choice", "ground_truth": "A"},
        "validation_Art_2": {"question_type": "multiple-choice", "ground_truth": "A"},
        "validation_Art_Theory_1": {"question_type": "multiple-choice", "ground_truth": "B"},
        "validation_Math_1": {"question_type": "short-answer", "ground_truth": ["3.14", "pi"]}}))
    metrics = mmmu.score(answers, mmmu.MMMUOptions(answer_dict=str(answer_dict)))
    assert metrics["accuracy"] == pytest.approx(2 / 4)  # Art_2 ("A") and Math_1 right


def test_mmmu_prompt_follows_the_llava_config():
    assert mmmu.build_prompt("Which <image 1>?", ["x", "y"], "multiple-choice") == (
        "Which <image 1>?\n(A) x\n(B) y\n\nAnswer with the option's letter from the given choices directly.")
    assert mmmu.build_prompt("How many?", [], "short-answer") == (
        "How many?\nAnswer the question using a single word or phrase.")
    assert mmmu.subject_of("validation_Art_Theory_12") == "Art_Theory"


# -- MathVista ----------------------------------------------------------------------------------
def mathvista_problems(tmp_path):
    def problem(qtype, atype, answer, choices=None, precision=None, **metadata):
        return {"question": "q", "image": "images/x.jpg", "choices": choices, "unit": None, "precision": precision,
                "answer": answer, "question_type": qtype, "answer_type": atype,
                "metadata": {"task": "t", "skills": ["s1", "s2"], **metadata}}

    problems = {
        "1": problem("free_form", "float", "1.2", precision=1),
        "2": problem("free_form", "integer", "1000"),
        "3": problem("multi_choice", "text", "145°", choices=["135°", "140°", "145°", "150°"]),
        "4": problem("multi_choice", "text", "No", choices=["Yes", "No"]),
        "5": problem("free_form", "integer", "4"),
        "6": problem("free_form", "integer", "7"),
        "7": problem("multi_choice", "text", "half", choices=["quarter past", "half", "o'clock"]),
        "8": problem("free_form", "float", "0.33", precision=2),
    }
    path = tmp_path / "testmini.json"
    path.write_text(json.dumps(problems))
    answers = write_answers(tmp_path / "a.jsonl", [
        {"question_id": "1", "text": "1.2"},  # float parses -> "1.2": right
        {"question_id": "2", "text": "1000"},  # int parses: right (LLaVA-HR's collapse makes it "10")
        {"question_id": "3", "text": "C"},  # not a choice, no GPT -> "" -> nearest to "": "135°": wrong
        {"question_id": "4", "text": "No"},  # one of the choices: right
        {"question_id": "5", "text": "4.0"},  # int("4.0") fails -> "" -> None: wrong
        {"question_id": "6", "text": 'The answer is "7".'},  # "" by default; quick_extract -> "7": right
        {"question_id": "7", "text": "(B) half"},  # -> "" -> the shortest choice "half": right by the rule
        {"question_id": "8", "text": "0.333"},  # round(0.333, 2) = 0.33: right
    ])
    return answers, path


def test_mathvista_rule_based_extraction(tmp_path):
    answers, problems = mathvista_problems(tmp_path)
    metrics = mathvista.score(answers, problems)
    assert metrics["accuracy"] == pytest.approx(5 / 8)
    assert metrics["accuracy/question_type/multi_choice"] == pytest.approx(2 / 3)
    assert metrics["accuracy/answer_type/integer"] == pytest.approx(1 / 3)
    assert metrics["accuracy/skills/s2"] == pytest.approx(5 / 8)
    assert mathvista.score(answers, problems, mathvista.MathVistaOptions(quick_extract=True))["accuracy"] == \
        pytest.approx(6 / 8)
    # "1000" -> "10" and "0.333" -> "0.3" (round -> "0.3"): both wrong now.
    assert mathvista.score(answers, problems, mathvista.MathVistaOptions(collapse_repeats=True))["accuracy"] == \
        pytest.approx(3 / 8)


def test_mathvista_normalisation_pieces():
    assert mathvista.levenshtein("kitten", "sitting") == 3
    mc = {"question_type": "multi_choice", "answer_type": "text", "choices": ["Yes", "No", "Maybe"]}
    assert mathvista.normalize_extraction("(c) because", mc) == "Maybe"  # "(c)" -> "C" -> its text
    assert mathvista.normalize_extraction("Noo", mc) == "No"  # nearest by edit distance
    assert mathvista.normalize_extraction("2.0", {"question_type": "free_form", "answer_type": "integer",
                                                  "choices": None}) == "2"


def test_mathvista_prompt_is_llava_hr_zero_shot_query():
    problem = {"question": "How long?", "unit": "cm", "choices": None, "precision": 1, "question_type": "free_form",
               "answer_type": "float"}
    assert mathvista.build_query(problem) == (
        "Question: How long? (Unit: cm)\nHint: Please answer the question requiring a floating-point number with "
        "one decimal place and provide the final value, e.g., 1.2, 1.3, 1.4, at the end.\nSolution:")
    mc = {"question": "Which?", "unit": None, "choices": ["x", "y"], "precision": None,
          "question_type": "multi_choice", "answer_type": "text"}
    assert mathvista.build_query(mc).startswith("Question: Which?\nChoices:\n(A) x\n(B) y\nHint: ")
