"""VQA-style scorers against the official rules: EvalAI normalisation, TextVQA, VQAv2, VizWiz, OK-VQA,
COCO caption. Every expected value is derived by hand from the official scripts' rules."""

import json
import shutil

import pytest
from scorer_fixtures import write_answers, write_jsonl

from gamma_mod.eval.scorers import coco_caption, okvqa, textvqa, vizwiz, vqav2
from gamma_mod.eval.scorers.vqa_normalize import (
    normalize_answer,
    normalize_vqaeval_human,
    normalize_vqaeval_prediction,
    tables,
)

SHORT = "Answer the question using a single word or phrase."


# -- the official EvalAI normalisation ------------------------------------------------------------
@pytest.mark.parametrize("raw, expected", [
    ("Two dogs.", "2 dogs"),  # number word -> digit; final period dropped
    ("The Cat!", "cat"),  # lower-case; article dropped; "!" glued to a word is removed
    ("an apple", "apple"),
    ("none", "0"),
    ("dont know", "don't know"),  # apostrophe restored
    ("man's hat", "man 's hat"),  # "'s" split off its word
    ("3.5", "3.5"),  # a period before a digit stays
    ("1,000", "1000"),  # commas are dropped first
    ("black-and-white", "black and white"),  # "-" between words -> space
    ("yes, it is", "yes it is"),
    ("left - right", "left right"),  # "-" next to a space is removed, spaces collapse
    # Keys the old hand-typed table lacked:
    ("thats", "that's"), ("somebodyll", "somebody'll"), ("hadnt've", "hadn't've"), ("yall'll", "y'all'll"),
    ("whod've", "who'd've"),
    # Keys the official table lacks (the old table had them): nothing is restored.
    ("A shed.", "shed"), ("shes", "shes"), ("somethings", "somethings"), ("somebodyd", "somebodyd"),
    # The official table's own oddities: a reversed entry, a capitalised key no lower-cased word matches.
    ("somebody'd", "somebodyd"), ("Im", "im"),
])
def test_evalai_normalisation(raw, expected):
    assert normalize_answer(raw) == expected


def test_period_strip_stops_after_32_periods():
    # The official sub(..., re.UNICODE) puts 32 in `count`: of 40 periods, 8 survive.
    assert normalize_answer("." * 32) == ""
    assert normalize_answer("." * 40) == "." * 8
    assert normalize_answer("wait" + "." * 33 + " ok") == "wait. ok"


def test_tables_are_the_official_ones():
    t = tables()
    assert len(t["contractions"]) == 120
    assert t["number_map"]["ten"] == "10" and len(t["number_map"]) == 12
    assert t["articles"] == ["a", "an", "the"]
    assert t["punctuation"] == [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<",
                                "@", "`", ",", "?", "!"]
    assert not {"shed", "shes", "somethings", "somebodyd"} & set(t["contractions"])


def test_vqaeval_sides_differ_from_evalai():
    # VQAEval keeps commas until its punctuation step: "a,b" -> "a b" -> article "a" dropped.
    assert normalize_vqaeval_prediction("a,b") == "b"
    assert normalize_answer("a,b") == "ab"
    assert normalize_vqaeval_prediction("Two\tDogs.") == "2 dogs"
    # Human answers only get the punctuation step: no lower-casing, no digits, no articles.
    assert normalize_vqaeval_human("The Two-toned") == "The Two toned"


# -- TextVQA --------------------------------------------------------------------------------------
def test_textvqa_accuracy_over_ten_leave_one_out_subsets():
    # 3 of 10 humans said "cat". Leaving out one of those 3 (3 subsets): 2 match -> 2/3;
    # leaving out any of the 7 others: 3 match -> min(3/3, 1) = 1. (3·2/3 + 7·1) / 10 = 0.9
    assert textvqa.vqa_accuracy("The cat.", ["cat"] * 3 + ["dog"] * 7) == pytest.approx(0.9)
    # One human said "2 dogs": 9 subsets keep that answer -> 1/3 each, 1 subset drops it -> 0. 9/30 = 0.3
    assert textvqa.vqa_accuracy("2 dogs", ["two dogs"] + ["dogs"] * 9) == pytest.approx(0.3)
    # 4+ matches: every subset has >= 3 -> 1.0 ("two", "2", "Two." all normalise to "2")
    assert textvqa.vqa_accuracy("2", ["two", "2", "Two.", "2"] + ["3"] * 6) == pytest.approx(1.0)


@pytest.mark.parametrize("prompt, question", [
    ("<image>\nWhat is the brand?\nReference OCR token: DAKOTA, digital\n" + SHORT, "what is the brand?"),  # our loop
    ("What Year?\n" + SHORT, "what year?"),  # LLaVA's loop, no OCR tokens
    ("Reference OCR token: a, b\nWhat is it?\n" + SHORT, "what is it?"),
    ("OCR tokens: a b. Question: What Is It? Short answer:", "what is it?"),
])
def test_textvqa_question_parsed_from_prompt(prompt, question):
    assert textvqa.question_from_prompt(prompt) == question


def test_textvqa_prompt_of_another_shape_is_an_error():
    with pytest.raises(ValueError, match="official shapes"):
        textvqa.question_from_prompt("one\ntwo\nthree\nfour")


def test_textvqa_joins_by_image_id_and_question_text(tmp_path):
    annotation = tmp_path / "TextVQA_0.5.1_val.json"
    annotation.write_text(json.dumps({"data": [
        # Two questions on one image: only the question text tells them apart.
        {"question_id": 10, "image_id": "img1", "question": "Is it open?", "answers": ["yes"] * 10},
        {"question_id": 11, "image_id": "img1", "question": "What animal?", "answers": ["cat"] * 3 + ["dog"] * 7},
        {"question_id": 12, "image_id": "img2", "question": "How many?", "answers": ["two dogs"] + ["dogs"] * 9},
    ]}))
    answers = write_answers(tmp_path / "a.jsonl", [
        # LLaVA's own loop: the question file's id is the image id, no "image", no "<image>" in the prompt.
        {"question_id": "img1", "prompt": "Is it open?\nReference OCR token: OPEN\n" + SHORT, "text": "Yes"},  # 1.0
        {"question_id": "img1", "prompt": "What animal?\n" + SHORT, "text": "cat"},  # 0.9
        # Our loop: "<image>\n" prompt, "image" copied from the question line.
        {"question_id": "img2", "image": "img2.jpg", "prompt": "<image>\nHow many?\n" + SHORT, "text": "2 dogs"},  # 0.3
    ])
    metrics = textvqa.score(answers, annotation)
    assert metrics["accuracy"] == pytest.approx((1.0 + 0.9 + 0.3) / 3)
    assert (metrics["answered"], metrics["total"]) == (3, 3)


def test_textvqa_unknown_question_is_an_error(tmp_path):
    annotation = tmp_path / "TextVQA_0.5.1_val.json"
    annotation.write_text(json.dumps({"data": [{"image_id": "img1", "question": "q?", "answers": ["a"] * 10}]}))
    answers = write_answers(tmp_path / "a.jsonl", [{"question_id": "img1", "prompt": "other?\n" + SHORT,
                                                    "text": "a"}])
    with pytest.raises(ValueError, match="no question 'other\\?' on image 'img1'"):
        textvqa.score(answers, annotation)


# -- VQAv2 / VizWiz submissions -------------------------------------------------------------------
def test_vqav2_submission_in_question_file_order_with_unanswered_empty(tmp_path):
    answers = write_answers(tmp_path / "a.jsonl", [{"question_id": 11, "text": "Yes"},
                                                   {"question_id": 10, "text": "A shed."}])
    everything = write_jsonl(tmp_path / "llava_vqav2_mscoco_test2015.jsonl",
                             [{"question_id": i, "text": "?"} for i in (10, 11, 12)])
    path = vqav2.write_submission(answers, tmp_path / "sub.json", everything)
    assert path.read_text() == ('[{"question_id": 10, "answer": "shed"}, {"question_id": 11, "answer": "yes"}, '
                                '{"question_id": 12, "answer": ""}]')


def test_vizwiz_submission_follows_the_question_file(tmp_path):
    questions = write_jsonl(tmp_path / "llava_test.jsonl", [
        {"question_id": 0, "image": "VizWiz_test_00000000.jpg", "text": "q"},
        {"question_id": 1, "image": "VizWiz_test_00000001.jpg", "text": "q"}])
    # Answer order reversed, and no "image" key (LLaVA's loader writes none).
    answers = write_answers(tmp_path / "a.jsonl", [{"question_id": 1, "text": "a can of soup"},
                                                   {"question_id": 0, "text": "Unanswerable."}])
    path = vizwiz.write_submission(answers, questions, tmp_path / "sub.json")
    assert json.loads(path.read_text()) == [{"image": "VizWiz_test_00000000.jpg", "answer": "unanswerable"},
                                            {"image": "VizWiz_test_00000001.jpg", "answer": "can of soup"}]


def test_vizwiz_needs_every_question_answered(tmp_path):
    questions = write_jsonl(tmp_path / "llava_test.jsonl", [{"question_id": i, "image": f"{i}.jpg", "text": "q"}
                                                            for i in range(3)])
    answers = write_answers(tmp_path / "a.jsonl", [{"question_id": 0, "text": "yes"}])
    with pytest.raises(ValueError, match="2 of 3 questions"):
        vizwiz.write_submission(answers, questions, tmp_path / "sub.json")


# -- OK-VQA (VQAEval) -----------------------------------------------------------------------------
def humans(*answers):
    return [{"answer_id": i + 1, "answer": a, "answer_confidence": "yes"} for i, a in enumerate(answers)]


def test_okvqa_accuracy_rules():
    # All agree: humans are left as is; "Race." -> "race" matches the 9 others -> 1.
    assert okvqa.vqa_accuracy("Race.", humans(*["race"] * 10)) == pytest.approx(1.0)
    # Humans disagree: punctuation step on them, "dog-food" -> "dog food": 2 matches.
    # Held out one of the 2: 1 match -> 1/3; one of the 8 cats: 2 -> 2/3. (2/3 + 16/3) / 10 = 0.6
    assert okvqa.vqa_accuracy("dog food", humans("dog-food", "dog food", *["cat"] * 8)) == pytest.approx(0.6)
    # Equal answer dicts are left out together (`item != gtAnsDatum`): holding out either red drops both -> 0;
    # holding out a blue keeps 2 reds -> 2/3. 8·(2/3) / 10 = 16/30 (per-position leave-one-out would give 0.6).
    duplicated = [{"answer_id": 1, "answer": "red"}] * 2 + [{"answer_id": i, "answer": "blue"} for i in range(2, 10)]
    assert okvqa.vqa_accuracy("red", duplicated) == pytest.approx(16 / 30)


def test_okvqa_score_counts_unanswered_wrong(tmp_path):
    annotation = tmp_path / "mscoco_val2014_annotations.json"
    annotation.write_text(json.dumps({"annotations": [
        {"question_id": 1, "answer_type": "other", "question_type": "what", "answers": humans(*["race"] * 10)},
        {"question_id": 2, "answer_type": "other", "question_type": "which",
         "answers": humans("dog-food", "dog food", *["cat"] * 8)},
        {"question_id": 3, "answer_type": "other", "question_type": "which", "answers": humans(*["x"] * 10)},
    ]}))
    answers = write_answers(tmp_path / "a.jsonl", [{"question_id": 2, "text": "dog food"},
                                                   {"question_id": 1, "text": "Race."}])
    metrics = okvqa.score(answers, annotation)
    assert metrics["accuracy"] == pytest.approx((1.0 + 0.6 + 0.0) / 3)
    assert metrics["accuracy/question_type/which"] == pytest.approx(0.3)
    assert (metrics["total"], metrics["missing"]) == (3, 1)
    stray = write_answers(tmp_path / "b.jsonl", [{"question_id": 99, "text": "x"}])
    with pytest.raises(ValueError, match="not in"):
        okvqa.score(stray, annotation)


# -- COCO caption (pycocoevalcap) ----------------------------------------------------------------
@pytest.mark.skipif(shutil.which("java") is None, reason="pycocoevalcap's PTB tokenizer runs java, not installed")
def test_coco_caption_cider_by_hand(tmp_path):
    annotation = tmp_path / "captions_test5k.json"
    annotation.write_text(json.dumps({"images": [{"id": 1}, {"id": 2}], "annotations": [
        {"image_id": 1, "id": 1, "caption": "red cat"}, {"image_id": 2, "id": 2, "caption": "blue dog"}]}))
    answers = write_answers(tmp_path / "a.jsonl", [{"question_id": 1, "text": "Red cat."},
                                                   {"question_id": 2, "text": "green frog"}])
    metrics = coco_caption.score(answers, annotation)
    # CIDEr-D over 2 images: idf = ln 2 for every reference n-gram (each in one image). Image 1: the tokenised
    # caption equals its reference: cosine 1 for unigrams and bigrams, 0 for 3-, 4-grams (none), same length ->
    # mean 0.5, ×10 = 5. Image 2 shares nothing -> 0. Corpus: 2.5.
    assert metrics["CIDEr"] == pytest.approx(2.5)
    assert metrics["answered"] == 2
