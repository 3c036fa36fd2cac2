"""Helpers shared by the scorer tests: answer files as our loop and as LLaVA's loops write them."""

import json


def write_answers(path, rows, prompt=""):
    """Answer lines; `prompt` is the default for lines without one (LLaVA's loops always write one)."""
    path.write_text("".join(json.dumps({"prompt": prompt, **r}) + "\n" for r in rows))
    return path


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
