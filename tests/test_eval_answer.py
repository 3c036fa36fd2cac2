"""The generic answer loop on a tiny random model: JSONL format, resume, batch == one at a time."""

import json

import pytest
import torch

from gamma_mod.eval.answer import Question, answered_ids, generate_answers, left_pad

IMAGE_TOKEN, NUM_IMAGE_TOKENS = 5, 4  # (16 / 8) ** 2 patches


class StubTokenizer:
    """Just what the loop uses: pad/eos ids and decode of the new tokens."""

    pad_token_id, bos_token_id, eos_token_id = 0, 1, 2

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(f"w{i}" for i in ids if not (skip_special_tokens and i in (0, 1, 2)))


def encode(q: Question):
    # Prompts of different lengths, so batches really are left-padded.
    text_ids = [10 + (ord(c) % 50) for c in q.text]
    if q.image is None:
        return [1] + text_ids, None
    pixels = torch.randn(3, 16, 16, generator=torch.Generator().manual_seed(len(q.text)))
    return [1] + [IMAGE_TOKEN] * NUM_IMAGE_TOKENS + text_ids, pixels


def build_model(**overrides):
    from gamma_mod.model import LlavaLlamaConfig, LlavaLlamaForCausalLM

    torch.manual_seed(0)
    config = LlavaLlamaConfig(**{**dict(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=16, patch_size=8),
        image_token_index=IMAGE_TOKEN, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    ), **overrides})
    return LlavaLlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def model():
    return build_model()


QUESTIONS = [
    Question("q0", "what", "img0.png", {"category": "a"}),
    Question("q1", "what colour is it", "img1.png", {"_private": "x"}),
    Question(2, "no image here"),
    Question("q3", "how many", "img3.png"),
    Question("q4", "where is the small red square", "img4.png"),
]


def read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_left_pad_right_aligns():
    ids, mask = left_pad([[7, 8], [9]], pad_id=0)
    assert ids.tolist() == [[7, 8], [0, 9]]
    assert mask.tolist() == [[1, 1], [0, 1]]


def test_jsonl_format_and_batch_equals_single(model, tmp_path):
    batched = generate_answers(model, QUESTIONS, encode, StubTokenizer(), tmp_path / "b.jsonl", batch_size=4,
                               max_new_tokens=4, progress=False)
    single = generate_answers(model, QUESTIONS, encode, StubTokenizer(), tmp_path / "s.jsonl", batch_size=1,
                              max_new_tokens=4, progress=False)
    rows = read(batched)
    assert [r["question_id"] for r in rows] == ["q0", "q1", 2, "q3", "q4"]
    assert rows[0] == {"category": "a", "question_id": "q0", "prompt": "what", "text": rows[0]["text"]}
    assert "_private" not in rows[1]  # private extras (MMBench's base64 image) stay out of the file
    assert all(r["text"] and set(r["text"].split()) <= {f"w{i}" for i in range(3, 64)} for r in rows)
    # Greedy + left padding with the mask: padding must not change any answer.
    assert [r["text"] for r in rows] == [r["text"] for r in read(single)]


@pytest.mark.parametrize("decode", ["dense", "threshold"])
def test_mod_model_batch_equals_single(tmp_path, decode):
    # Top-k prefill routes each row's own image tokens, so left padding must not change answers either.
    mod_model = build_model(num_hidden_layers=3, mod=dict(mod_layers_idx=[1], skip_ratio=0.5, decode=decode))
    answers = [read(generate_answers(mod_model, QUESTIONS, encode, StubTokenizer(), tmp_path / f"{b}.jsonl",
                                     batch_size=b, max_new_tokens=4, progress=False)) for b in (4, 1)]
    assert [r["text"] for r in answers[0]] == [r["text"] for r in answers[1]]


def test_resume_skips_answered_and_repairs_a_cut_line(model, tmp_path):
    out = tmp_path / "a.jsonl"
    out.write_text(json.dumps({"question_id": "q0", "prompt": "what", "text": "kept"}) + "\n"
                   + '{"question_id": "q1", "pro')  # killed mid-write
    seen = []

    def counting_encode(q):
        seen.append(q.question_id)
        return encode(q)

    generate_answers(model, QUESTIONS, counting_encode, StubTokenizer(), out, batch_size=2, max_new_tokens=2,
                     progress=False)
    assert seen == ["q1", 2, "q3", "q4"]  # q0 was answered; q1's line was cut, so it is answered again
    rows = read(out)
    assert [r["question_id"] for r in rows] == ["q0", "q1", 2, "q3", "q4"]
    assert rows[0]["text"] == "kept"
    assert answered_ids(out) == {"q0", "q1", "2", "q3", "q4"}
    seen.clear()
    generate_answers(model, QUESTIONS, counting_encode, StubTokenizer(), out, progress=False)
    assert seen == []  # everything answered: nothing is generated again


def test_duplicate_ids_are_an_error(model, tmp_path):
    with pytest.raises(ValueError, match="unique"):
        generate_answers(model, [Question("x", "a"), Question("x", "b")], encode, StubTokenizer(),
                         tmp_path / "d.jsonl", progress=False)


def test_cli_answers_and_scores_synthetic_end_to_end(tmp_path, capsys):
    """`gamma-mod eval` on a saved tiny model + the synthetic split: answers, metrics, resume."""
    from gamma_mod.cli import main
    from gamma_mod.data.synthetic import write_synthetic_dataset
    from gamma_mod.data.tokenizer import load_tokenizer, model_token_ids
    from gamma_mod.model import LlavaLlamaConfig, LlavaLlamaForCausalLM

    data = write_synthetic_dataset(tmp_path / "data", n_captions=1, n_vqa_train=1, n_vqa_test=2, image_size=16)
    tokenizer = load_tokenizer(str(data.tokenizer))
    torch.manual_seed(0)
    config = LlavaLlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=16, patch_size=8), **model_token_ids(tokenizer))
    model_dir = tmp_path / "model"
    LlavaLlamaForCausalLM(config).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    args = ["eval", "--model", str(model_dir), "--benchmark", "synthetic", "--data", str(data.root),
            "--out", str(tmp_path / "out"), "--batch-size", "4", "--max-new-tokens", "2"]
    assert main(args) == 0
    rows = read(tmp_path / "out" / "answers.jsonl")
    assert len(rows) == 6  # 2 images x 3 questions
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["answered"] == 6 and 0.0 <= metrics["accuracy"] <= 1.0
    assert main(args) == 0  # rerun: everything already answered, only scored again
    assert len(read(tmp_path / "out" / "answers.jsonl")) == 6
