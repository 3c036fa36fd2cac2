"""Every benchmark's prompt and generation length as the official answer scripts build them.

For each benchmark a question file in its official format is read through our reader, and the prompt
string and the ids our answer loop passes to generate() are compared with ones written out by hand
from the official scripts (Yaxin9Luo/Gamma-MOD gamma_mod/eval/model_vqa_loader.py, model_vqa_science.py,
model_vqa_mmbench.py, model_vqa.py with the flags of scripts/v1_5/eval_full/*.sh; the `vicuna_v1`
conversation; LLaVA's tokenizer_image_token), on a Llama-style sentencepiece tokenizer built in the
test with `legacy` true and false (a one-turn prompt has no "</s>", so both give the same ids).
"""

import base64
import io
import json

import pytest
import torch
from PIL import Image

from gamma_mod.data.preprocess import encode_prompt
from gamma_mod.data.templates import get_template
from gamma_mod.data.tokenizer import load_tokenizer
from gamma_mod.eval import prompts
from gamma_mod.eval.prompts import ANSWER_SCRIPTS, PromptOptions, max_new_tokens_for, read_benchmark_questions
from gamma_mod.eval.scorers import SCORERS, gqa, mmbench, mme, mmvet, pope, scienceqa, seed, textvqa, vizwiz, vqav2
from llama_tokenizer import build_llama_tokenizer

SYSTEM_TEXT = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
               "detailed, and polite answers to the user's questions.")
SYSTEM = ("▁A ▁chat ▁between ▁a ▁curious ▁user ▁and ▁an ▁artificial ▁intelligence ▁assistant . ▁The ▁assistant "
          "▁gives ▁helpful , ▁detailed , ▁and ▁polite ▁answers ▁to ▁the ▁user ' s ▁questions .")
SHORT = "Answer the question using a single word or phrase."
SHORT_PIECES = "Answer ▁the ▁question ▁using ▁a ▁single ▁word ▁or ▁phrase ."
LETTER = "Answer with the option's letter from the given choices directly."
LETTER_PIECES = "Answer ▁with ▁the ▁option ' s ▁letter ▁from ▁the ▁given ▁choices ▁directly ."

# benchmark -> (question-file text, its pieces after "<image>\n" in the prompt)
LOADER_CASES = {
    "gqa": ("What color is the shape?\n" + SHORT, "What ▁color ▁is ▁the ▁shape ? <0x0A> " + SHORT_PIECES),
    "vqav2": ("How many shapes are there?\n" + SHORT,
              "How ▁many ▁shapes ▁are ▁there ? <0x0A> " + SHORT_PIECES),
    "vizwiz": ("What is in the image?\nWhen the provided information is insufficient, respond with 'Unanswerable'.\n"
               + SHORT,
               "What ▁is ▁in ▁the ▁image ? <0x0A> When ▁the ▁provided ▁information ▁is ▁insufficient , ▁respond "
               "▁with ▁' Unanswerable ' . <0x0A> " + SHORT_PIECES),
    "textvqa": ("What is in the image?\nReference OCR token: STOP\n" + SHORT,
                "What ▁is ▁in ▁the ▁image ? <0x0A> Reference ▁OCR ▁token : ▁STOP <0x0A> " + SHORT_PIECES),
    "pope": ("Is there a dog in the image?\n" + SHORT,
             "Is ▁there ▁a ▁dog ▁in ▁the ▁image ? <0x0A> " + SHORT_PIECES),
    # the loader keeps the question file's whitespace: a trailing space is a token
    "mme": ("Is there a dog in the image? Please answer yes or no. ",
            "Is ▁there ▁a ▁dog ▁in ▁the ▁image ? ▁Please ▁answer ▁yes ▁or ▁no . ▁"),
    "seed_bench": ("Which is bigger?\nA. sun\nB. moon\nC. star\nD. dog\n" + LETTER,
                   "Which ▁is ▁bigger ? <0x0A> A . ▁sun <0x0A> B . ▁moon <0x0A> C . ▁star <0x0A> D . ▁dog <0x0A> "
                   + LETTER_PIECES),
    "mm-vet": ("What is the man doing?", "What ▁is ▁the ▁man ▁doing ?"),
}
FILES = {"gqa": (gqa.QUESTIONS, gqa.IMAGES), "vqav2": (vqav2.QUESTIONS, vqav2.IMAGES),
         "vizwiz": (vizwiz.QUESTIONS, vizwiz.IMAGES), "textvqa": (textvqa.QUESTIONS, textvqa.IMAGES),
         "pope": (pope.QUESTIONS, pope.IMAGES), "mme": (mme.QUESTIONS, mme.RELEASE), "seed_bench": (seed.QUESTIONS, ""),
         "mm-vet": (mmvet.QUESTIONS, mmvet.IMAGES)}
TEMPLATE = get_template("vicuna_v1")


@pytest.fixture(scope="module", params=[True, False], ids=["legacy", "non-legacy"])
def tok(request, tmp_path_factory):
    return load_tokenizer(str(build_llama_tokenizer(tmp_path_factory.mktemp("llama"), legacy=request.param)))


def prompt_ids(tok, question_pieces: str) -> list[int]:
    """<s> {system} USER: <image>\\n{question} ASSISTANT: -- "▁" "<0x0A>" after the image: chunk-wise."""
    vocab = tok.get_vocab()
    pieces = f"<s> {SYSTEM} ▁ USER : ▁ <image> ▁ <0x0A> {question_pieces} ▁ASSISTANT :".split()
    return [vocab[p] for p in pieces]


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (12, 8), (10, 200, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_loader_benchmark(root, name, text):
    questions, images = FILES[name]
    image = "q1.png" if name != "mme" else "artwork/q1.png"
    (root / images / image).parent.mkdir(parents=True, exist_ok=True)
    (root / images / image).write_bytes(png_bytes())
    row = {"question_id": 7, "image": image, "text": text, "category": "c"}
    (root / questions).write_text(json.dumps(row) + "\n")


@pytest.mark.parametrize("name", list(LOADER_CASES))
def test_loader_and_model_vqa_prompts(tok, tmp_path, name):
    text, pieces = LOADER_CASES[name]
    write_loader_benchmark(tmp_path, name, text)
    [question] = read_benchmark_questions(SCORERS[name], tmp_path)
    assert question.text == "<image>\n" + text  # model_vqa_loader / model_vqa: verbatim after "<image>\n"
    assert TEMPLATE.render_prompt(question.text) == f"{SYSTEM_TEXT} USER: <image>\n{text} ASSISTANT:"
    assert encode_prompt(tok, TEMPLATE, question.text, 1) == prompt_ids(tok, pieces)


SQA = [
    {"id": "img-1", "image": "img-1/image.png", "conversations": [
        {"from": "human",
         "value": "Context: The sun is a star.\nQuestion: Which is bigger?\nOptions: (A) sun (B) moon\n<image>"},
        {"from": "gpt", "value": "A"}]},
    {"id": "txt-2", "conversations": [
        {"from": "human", "value": " Question: Is there a dog?\nOptions: (A) yes (B) no "},
        {"from": "gpt", "value": "B"}]},
]


def test_scienceqa_prompt_and_text_only_questions(tok, tmp_path, caplog):
    (tmp_path / scienceqa.QUESTIONS).write_text(json.dumps(SQA))
    with caplog.at_level("INFO", logger="gamma_mod.eval.scorers.scienceqa"):
        questions = read_benchmark_questions(SCORERS["scienceqa"], tmp_path)
    # γ-MoD's model_vqa_science skips the text-only question; tag moved first, stripped, letter instruction
    assert [q.question_id for q in questions] == ["img-1"]
    assert "skipped 1 text-only questions" in caplog.text
    text = "<image>\nContext: The sun is a star.\nQuestion: Which is bigger?\nOptions: (A) sun (B) moon\n" + LETTER
    assert questions[0].text == text and questions[0].image == str(tmp_path / scienceqa.IMAGES / "img-1/image.png")
    assert encode_prompt(tok, TEMPLATE, text, 1) == prompt_ids(
        tok, "Context : ▁The ▁sun ▁is ▁a ▁star . <0x0A> Question : ▁Which ▁is ▁bigger ? <0x0A> Options : ▁( A ) "
             "▁sun ▁( B ) ▁moon <0x0A> " + LETTER_PIECES)
    # LLaVA-1.5's script answers it too, without an image
    both = read_benchmark_questions(SCORERS["scienceqa"], tmp_path, PromptOptions(scienceqa_all_questions=True))
    assert both[1].text == "Question: Is there a dog?\nOptions: (A) yes (B) no\n" + LETTER and both[1].image is None


def write_mmbench(root, rows):
    header = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image"]
    image = base64.b64encode(png_bytes()).decode()
    lines = ["\t".join(header)] + ["\t".join(str(row.get(k, image if k == "image" else "")) for k in header)
                                   for row in rows]
    (root / mmbench.QUESTIONS).write_text("\n".join(lines) + "\n")


def test_mmbench_prompt_keeps_whitespace_and_the_suffix_is_a_flag(tok, tmp_path):
    write_mmbench(tmp_path, [
        # an absent C ends the options (the official loop breaks), so D is not shown
        {"index": 3, "question": "Which is bigger? ", "hint": "The sun is a star.", "A": "sun", "B": " moon", "C": "",
         "D": "star", "answer": "A", "category": "c"},
        {"index": 4, "question": "Which is bigger?", "hint": "nan", "A": "sun", "B": "moon", "answer": "B"},
    ])
    first, second = read_benchmark_questions(SCORERS["mmbench"], tmp_path)
    # eval_full/mmbench.sh passes no --single-pred-prompt: no letter instruction
    assert first.text == "<image>\nThe sun is a star.\nWhich is bigger? \nA. sun\nB.  moon"
    assert (first.question_id, first.extra["category"]) == (3, "c")
    assert second.text == "<image>\nWhich is bigger?\nA. sun\nB. moon"  # "nan": no hint
    assert encode_prompt(tok, TEMPLATE, first.text, 1) == prompt_ids(
        tok, "The ▁sun ▁is ▁a ▁star . <0x0A> Which ▁is ▁bigger ? ▁ <0x0A> A . ▁sun <0x0A> B . ▁ ▁moon")
    flagged = read_benchmark_questions(SCORERS["mmbench"], tmp_path, PromptOptions(mmbench_single_pred_prompt=True))
    assert flagged[1].text == "<image>\nWhich is bigger?\nA. sun\nB. moon\n" + LETTER
    assert encode_prompt(tok, TEMPLATE, flagged[1].text, 1) == prompt_ids(
        tok, "Which ▁is ▁bigger ? <0x0A> A . ▁sun <0x0A> B . ▁moon <0x0A> " + LETTER_PIECES)


@pytest.mark.parametrize("value, absent", [("", True), ("nan", True), ("NaN", True), ("None", True), ("NONE", True),
                                           ("N/A", True), ("NULL", True), ("0", False), (" ", False), ("no", False)])
def test_mmbench_absent_values_follow_pandas_and_is_none(value, absent):
    assert prompts.mmbench_is_none(value) is absent


def test_generation_lengths_per_benchmark():
    scripted = [name for name in SCORERS if name in ANSWER_SCRIPTS]
    gamma = {name: max_new_tokens_for(name) for name in scripted}
    llava = {name: max_new_tokens_for(name, "llava-1.5") for name in scripted}
    loader = ["gqa", "vqav2", "vizwiz", "textvqa", "pope", "mme", "seed_bench"]
    # γ-MoD's scripts hard-code 6 / 1 / 1024 / 64; LLaVA-1.5's: 128 (loader default) / 1024 / 1024 / 1024
    assert gamma == {**dict.fromkeys(loader, 6), "scienceqa": 1, "mmbench": 1024, "mm-vet": 64, "synthetic": 8}
    assert llava == {**dict.fromkeys(loader, 128), "scienceqa": 1024, "mmbench": 1024, "mm-vet": 1024, "synthetic": 8}
    with pytest.raises(ValueError, match="unknown max_new_tokens preset"):
        max_new_tokens_for("gqa", "llava")
    assert max_new_tokens_for("new-bench", default=32) == 32
    # Benchmarks outside LLaVA-1.5 / γ-MoD's answer scripts (MMMU, MathVista, ...) keep their scorer's length.
    for name in set(SCORERS) - set(scripted):
        assert max_new_tokens_for(name, default=SCORERS[name].max_new_tokens) == SCORERS[name].max_new_tokens


def test_cli_passes_the_official_prompt_and_length_to_generate(tmp_path, monkeypatch):
    """`gamma-mod eval` end to end up to generate(): the ids of the prompt, images, max_new_tokens."""
    import gamma_mod.eval.answer as answer
    from gamma_mod.cli import main
    from gamma_mod.data.tokenizer import model_token_ids
    from gamma_mod.model import LlavaLlamaConfig, LlavaLlamaForCausalLM

    tok = load_tokenizer(str(build_llama_tokenizer(tmp_path / "tok", legacy=False)))
    config = LlavaLlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=16, patch_size=8), **model_token_ids(tok))
    model_dir = tmp_path / "model"
    LlavaLlamaForCausalLM(config).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    text = LOADER_CASES["mm-vet"][0]
    write_loader_benchmark(tmp_path / "data", "mm-vet", text)
    seen = {}

    def fake_generate(model, questions, encode, tokenizer, out, batch_size, max_new_tokens, **kwargs):
        seen.update(ids=[encode(q)[0] for q in questions], pixels=[encode(q)[1] for q in questions],
                    max_new_tokens=max_new_tokens)
        out.parent.mkdir(parents=True, exist_ok=True)  # the real loop makes it with its first answers
        out.write_text("".join(json.dumps(answer.answer_line(q, "x")) + "\n" for q in questions))

    monkeypatch.setattr(answer, "generate_answers", fake_generate)
    args = ["eval", "--model", str(model_dir), "--benchmark", "mm-vet", "--data", str(tmp_path / "data"),
            "--out", str(tmp_path / "out")]
    assert main(args) == 0
    vocab = tok.get_vocab()
    pieces = f"<s> {SYSTEM} ▁ USER : ▁ {'<image> ' * 4}▁ <0x0A> {LOADER_CASES['mm-vet'][1]} ▁ASSISTANT :".split()
    assert seen["ids"] == [[vocab[p] for p in pieces]]  # the saved tokenizer kept legacy=False and chunking
    assert seen["max_new_tokens"] == 64 and seen["pixels"][0].shape == (3, 16, 16)
    assert main(args + ["--max-new-tokens-preset", "llava-1.5"]) == 0 and seen["max_new_tokens"] == 1024
    assert main(args + ["--max-new-tokens", "5"]) == 0 and seen["max_new_tokens"] == 5
    assert torch.is_tensor(seen["pixels"][0])
