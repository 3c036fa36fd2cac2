"""Conversation templates as data (LLaVA's `vicuna_v1` and `plain`).

vicuna_v1 (LLaVA-v1.5 SFT), one conversation:
    "{system} USER: {q1} ASSISTANT: {a1}</s> USER: {q2} ASSISTANT: {a2}</s>"
plain (stage-1 alignment): the image, then the caption, then </s>; no system prompt, no roles, and
the human text besides the image is dropped (LLaVA's preprocess_plain does the same), so stage 1
learns image -> caption only.
"""

from __future__ import annotations

from dataclasses import dataclass

from .formats import IMAGE_TAG


@dataclass(frozen=True)
class ConversationTemplate:
    name: str
    system: str
    user: str  # role name of the human turn
    assistant: str  # role name of the model turn
    plain: bool = False

    def prompt_prefix(self) -> str:
        """Text before the first turn (the system prompt and its separator)."""
        return self.system + " " if self.system else ""

    def question_text(self, question: str) -> str:
        """Text of one turn before its answer; the answer and its </s> follow."""
        if self.plain:
            return IMAGE_TAG if IMAGE_TAG in question else question.strip()
        return f"{self.user}: {question.strip()} {self.assistant}:"

    def render_prompt(self, question: str) -> str:
        """Inference prompt for one question, ending where the assistant starts answering."""
        return self.prompt_prefix() + self.question_text(question)

    def render_conversation(self, turns: list[tuple[str, str]], eos: str = "</s>") -> str:
        """The whole text of (question, answer) turns, as the model sees it (for logs and docs)."""
        parts = [self.render_prompt(turns[0][0]) if turns else self.prompt_prefix().rstrip()]
        for i, (question, answer) in enumerate(turns):
            if i:
                parts.append(self.question_text(question))
            parts.append(answer.strip() + eos)
        return " ".join(p for p in parts if p)


VICUNA_V1 = ConversationTemplate(
    name="vicuna_v1",
    system=("A chat between a curious human and an artificial intelligence assistant. "
            "The assistant gives helpful, detailed, and polite answers to the human's questions."),
    user="USER",
    assistant="ASSISTANT",
)
PLAIN = ConversationTemplate(name="plain", system="", user="", assistant="", plain=True)
TEMPLATES: dict[str, ConversationTemplate] = {t.name: t for t in (VICUNA_V1, PLAIN)}


def get_template(name: str) -> ConversationTemplate:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ValueError(f"unknown conversation template {name!r}; known: {sorted(TEMPLATES)}") from None
