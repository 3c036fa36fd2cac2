"""Yes/no scorers against the official rules: POPE (eval_pope.py) and MME (convert_answer_to_mme.py +
calculation.py). Every expected value is derived by hand from the official scripts' rules."""

import pytest
from scorer_fixtures import write_answers, write_jsonl

from gamma_mod.eval.scorers import mme, pope

SHORT = "\nAnswer the question using a single word or phrase."


# -- POPE ---------------------------------------------------------------------------------------
def test_pope_yes_no_parsing():
    assert pope.parse_yes_no("Yes, there is a dog.") == "yes"
    assert pope.parse_yes_no("No, there isn't") == "no"
    assert pope.parse_yes_no("There is not a cat.") == "no"
    assert pope.parse_yes_no("I think so. No doubt.") == "yes"  # only the first sentence counts
    assert pope.parse_yes_no("Nope") == "yes"  # "No" must be a whole word


def pope_files(tmp_path):
    coco = tmp_path / "coco"
    coco.mkdir()
    question = "Is there a dog in the image?"
    # The same (image, question) pair is in two categories with different labels.
    labels = {"random": [("same.jpg", "yes"), ("r1.jpg", "no"), ("r2.jpg", "no"), ("r3.jpg", "yes")],
              "popular": [("same.jpg", "no"), ("p1.jpg", "no")]}
    for category, rows in labels.items():
        write_jsonl(coco / f"coco_pope_{category}.json", [
            {"question_id": i + 1, "image": image, "text": question, "label": label}
            for i, (image, label) in enumerate(rows)])
    # LLaVA's question file: unique ids, the category on each line.
    order = [("random", 0), ("popular", 0), ("random", 1), ("random", 2), ("popular", 1), ("random", 3)]
    write_jsonl(tmp_path / "llava_pope_test.jsonl", [
        {"question_id": qid, "image": labels[c][i][0], "text": question + SHORT, "category": c}
        for qid, (c, i) in enumerate(order)])
    texts = ["Yes", "Yes", "No, there is not.", "yes", "no", "I think so. No doubt."]
    # LLaVA's model_vqa_loader answer lines: no "image", no "category"; categories interleaved in the file.
    answers = write_answers(tmp_path / "a.jsonl", [
        {"question_id": qid, "prompt": question + SHORT, "text": t} for qid, t in enumerate(texts)])
    return answers, coco


def test_pope_pairs_answers_and_labels_by_order_within_each_category(tmp_path):
    answers, coco = pope_files(tmp_path)
    metrics = pope.score(answers, coco, tmp_path / "llava_pope_test.jsonl")
    # random answers in order: yes, no, yes, yes vs labels yes, no, no, yes -> TP 2, TN 1, FP 1, FN 0:
    # accuracy 3/4, precision 2/3, recall 1, F1 = 2·(2/3)·1 / (5/3) = 0.8, yes-ratio 3/4
    assert metrics["random/accuracy"] == pytest.approx(3 / 4)
    assert metrics["random/precision"] == pytest.approx(2 / 3)
    assert metrics["random/recall"] == pytest.approx(1.0)
    assert metrics["random/f1"] == pytest.approx(0.8)
    assert metrics["random/yes_ratio"] == pytest.approx(3 / 4)
    # popular answers: yes, no vs labels no, no -> FP 1, TN 1: accuracy 1/2, yes-ratio 1/2, no true positive.
    # (Keyed by (image, question), both "same.jpg" answers would land on one label.)
    assert metrics["popular/accuracy"] == pytest.approx(1 / 2)
    assert metrics["popular/yes_ratio"] == pytest.approx(1 / 2)
    assert (metrics["popular/precision"], metrics["popular/recall"], metrics["popular/f1"]) == (0.0, 0.0, 0.0)
    assert "adversarial/f1" not in metrics  # no annotation file, no entry
    assert metrics["f1_mean"] == pytest.approx(0.4)
    # The pipeline layout: evaluate() finds the question file itself.
    assert pope.evaluate(answers, tmp_path, tmp_path / "out") == metrics


def test_pope_category_from_the_answer_line_without_question_file(tmp_path):
    answers, coco = pope_files(tmp_path)
    rows = [{"question_id": 0, "category": "popular", "image": "same.jpg", "text": "Yes"},
            {"question_id": 1, "category": "popular", "text": "no"}]
    metrics = pope.score(write_answers(tmp_path / "b.jsonl", rows), coco)
    assert metrics["popular/accuracy"] == pytest.approx(1 / 2)  # labels no, no: FP then TN
    assert (metrics["popular/total"], metrics["popular/yes_ratio"]) == (2, 0.5)
    assert "random/accuracy" not in metrics
    with pytest.raises(ValueError, match="no 'category'"):
        pope.score(write_answers(tmp_path / "c.jsonl", [{"question_id": 0, "text": "No"}]), coco)


# -- MME ----------------------------------------------------------------------------------------
Q_DOG = "Is there a dog in this image?"
Q_CAT = "Is there a cat in this image?"


def mme_release(tmp_path):
    release = tmp_path / "MME_Benchmark_release_version"
    (release / "existence").mkdir(parents=True)  # txt files next to the images
    for stem in ("a", "b"):
        (release / "existence" / f"{stem}.txt").write_text(
            f"{Q_DOG} Please answer yes or no.\tYes\n{Q_CAT} Please answer yes or no.\tNo\n")
    # images/ + questions_answers_YN/, and ground-truth questions with a double space (as in the release).
    (release / "landmark" / "images").mkdir(parents=True)
    (release / "landmark" / "questions_answers_YN").mkdir()
    (release / "landmark" / "questions_answers_YN" / "c.txt").write_text(
        "Is this the Eiffel Tower?  Please answer yes or no.\tYes\nIs this Big Ben?  Please answer yes or no.\tNo\n")
    (release / "code_reasoning").mkdir()
    (release / "code_reasoning" / "d.txt").write_text(
        "Does the code print 1? Please answer yes or no.\tYes\nDoes the code print 2? Please answer yes or no.\tNo\n")
    return release


def mme_row(image, k, question, text):
    """Our loop's line: "<image>\\n" + LLaVA's llava_mme.jsonl text, "#<line>" on the id."""
    return {"question_id": f"{image}#{k}", "image": image, "prompt": "<image>\n" + question + SHORT, "text": text}


def test_mme_official_calculation(tmp_path):
    release = mme_release(tmp_path)
    rows = [
        # existence, answer order a1, b1, a2, b2: the tool pairs lines (a1, b1) and (a2, b2), not by image.
        mme_row("existence/a.png", 0, Q_DOG, "Yes"),  # right
        mme_row("existence/b.png", 1, Q_DOG, "yes"),  # right
        mme_row("existence/a.png", 2, Q_CAT, "Yes"),  # wrong
        mme_row("existence/b.png", 3, Q_CAT, "Yes, there is"),  # wrong
        # landmark: the single-space question is not in the ground truth, the double-space one is.
        mme_row("landmark/images/c.jpg", 4, "Is this the Eiffel Tower?", "Yes"),  # right
        mme_row("landmark/images/c.jpg", 5, "Is this Big Ben?", "Maybe"),  # "other": wrong
        # code_reasoning: a tab inside the answer breaks that result line: the tool skips it.
        mme_row("code_reasoning/d.png", 6, "Does the code print 1?", "Yes\tindeed"),
        mme_row("code_reasoning/d.png", 7, "Does the code print 2?", "No"),  # right
    ]
    metrics = mme.score(write_answers(tmp_path / "a.jsonl", rows), release)
    # existence: acc 2/4; acc+: pair (a1, b1) both right, pair (a2, b2) not -> 1/2 -> 50 + 50 = 100
    # (grouped by image instead: a (right, wrong), b (right, wrong) -> acc+ 0, score 50).
    assert metrics["existence/acc"] == pytest.approx(0.5)
    assert metrics["existence/acc_plus"] == pytest.approx(0.5)
    assert metrics["existence/score"] == pytest.approx(100)
    assert metrics["landmark/score"] == pytest.approx(50)  # acc 1/2, acc+ 0
    # code_reasoning: 1 question read, right -> acc 1; the pair is not fully right -> acc+ 0 -> 100
    assert metrics["code_reasoning/acc"] == pytest.approx(1.0)
    assert metrics["code_reasoning/skipped_lines"] == 1
    assert metrics["code_reasoning/score"] == pytest.approx(100)
    assert metrics["perception"] == pytest.approx(150)
    assert metrics["cognition"] == pytest.approx(100)
    assert metrics["tasks_missing"] == 11


def test_mme_answer_parsing_and_bad_input(tmp_path):
    assert mme.parse_yes_no("Yes") == "yes"
    assert mme.parse_yes_no("No, it is not") == "no"
    assert mme.parse_yes_no("I think yes") == "other"  # only the first 4 characters are searched
    assert mme.parse_yes_no("Nothing") == "no"  # "no" within "noth"
    release = mme_release(tmp_path)
    odd = write_answers(tmp_path / "odd.jsonl", [mme_row("existence/a.png", 0, Q_DOG, "Yes")])
    with pytest.raises(ValueError, match="not pairs"):
        mme.score(odd, release)
    unknown = write_answers(tmp_path / "unknown.jsonl", [mme_row("existence/a.png", 0, "Is it red?", "Yes")])
    with pytest.raises(ValueError, match="no ground truth"):
        mme.score(unknown, release)
