"""Conversation templates as data (LLaVA's `vicuna_v1` and `plain`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ConversationTemplate:
    name: str
    system: str
    user: str  # role name of the human turn
    assistant: str  # role name of the model turn
    # A turn renders as "{user}: {question} {assistant}: {answer}{eos}"; turns joined by a space.
    # `plain` (stage 1) has no roles: "{image}{caption}{eos}".
    plain: bool = False

    def prompt_prefix(self) -> str:
        return self.system + " " if self.system else ""

    def question_text(self, question: str) -> str:
        """Text before the answer of one turn."""
        if self.plain:
            return question
        return f"{self.user}: {question} {self.assistant}:"

    def render_prompt(self, question: str) -> str:
        """Inference prompt for one question, ending where the assistant starts answering."""
        return self.prompt_prefix() + self.question_text(question)


VICUNA_V1 = ConversationTemplate(
    name="vicuna_v1",
    system=("A chat between a curious human and an artificial intelligence assistant. "
            "The assistant gives helpful, detailed, and polite answers to the human's questions."),
    user="USER",
    assistant="ASSISTANT",
)
PLAIN = ConversationTemplate(name="plain", system="", user="", assistant="", plain=True)
TEMPLATES = {t.name: t for t in (VICUNA_V1, PLAIN)}


def get_template(name: str) -> ConversationTemplate:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ValueError(f"unknown conversation template {name!r}; known: {sorted(TEMPLATES)}") from None
