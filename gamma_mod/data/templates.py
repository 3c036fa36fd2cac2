"""Conversation templates as data: LLaVA's `vicuna_v1`, `llava_v1` and `plain` (llava/conversation.py).

A template turns messages into the one string the model reads; tokenization (chunk-wise around
`<image>`, as LLaVA's tokenizer_image_token) is `gamma_mod.data.tokenizer`'s job, label masking
`gamma_mod.data.preprocess`'s. Reproduces `Conversation.get_prompt` of haotian-liu/LLaVA
llava/conversation.py (identical in Yaxin9Luo/Gamma-MOD gamma_mod/conversation.py):

    two-separator style (vicuna_v1, llava_v1), sep " ", sep2 "</s>":
        "{system} USER: {q1} ASSISTANT: {a1}</s>USER: {q2} ASSISTANT: {a2}</s>"
        a prompt for generation ends with "ASSISTANT:" (no space); messages are used verbatim
        (whatever stripping happens is the caller's: LLaVA's preprocess_multimodal, its eval scripts).
    plain (stage-1 alignment), sep "\\n": training text "<image>" + caption + "\\n" (LLaVA's
        preprocess_plain: the human text besides the image is dropped, the caption is not stripped);
        a prompt is the question + "\\n".

`vicuna_v1` is the conv mode LLaVA-1.5 was trained with (`--version v1`) and that every official
eval script passes: "A chat between a curious user ... the user's questions." `llava_v1` is the same
format with the older "curious human ... the human's questions." wording.
Deviations: none in the strings. An empty message renders as LLaVA renders None ("ROLE:" and no
separator), which is what get_prompt's `if message:` does.
"""

from __future__ import annotations

from dataclasses import dataclass

from .formats import IMAGE_TAG

TWO = "two"
PLAIN = "plain"


@dataclass(frozen=True)
class ConversationTemplate:
    name: str
    system: str
    roles: tuple[str, str]  # (human, model)
    sep: str
    sep2: str | None = None
    style: str = TWO

    def __post_init__(self) -> None:
        if self.style not in (TWO, PLAIN):
            raise ValueError(f"template {self.name!r}: unknown style {self.style!r}")
        if self.style == TWO and not self.sep2:
            raise ValueError(f"template {self.name!r}: the two-separator style needs sep2")

    @property
    def plain(self) -> bool:
        return self.style == PLAIN

    @property
    def answer_sep(self) -> str:
        """What precedes every answer (" ASSISTANT: "): LLaVA's preprocess_v1 splits a round on it."""
        return self.sep + self.roles[1] + ": "

    def render(self, messages: list[str | None]) -> str:
        """get_prompt over alternating human / model messages; None (or "") leaves the role open."""
        if self.plain:
            out = self.system
            for message in messages:
                if message:
                    out += message + self.sep
            return out
        out = self.system + self.sep
        for i, message in enumerate(messages):
            role = self.roles[i % 2]
            out += f"{role}: {message}{(self.sep, self.sep2)[i % 2]}" if message else f"{role}:"
        return out

    def render_prompt(self, question: str) -> str:
        """The generation prompt for one question (used verbatim), ending where the answer starts."""
        return self.render([question, None])

    def render_conversation(self, turns: list[tuple[str, str]]) -> str:
        """The training text of (question, answer) turns, as LLaVA's preprocess_v1 / preprocess_plain build it."""
        if self.plain:
            if len(turns) != 1:
                raise ValueError(f"the {self.name} template takes one (image, caption) pair, got {len(turns)} turns")
            return IMAGE_TAG + turns[0][1] + self.sep
        return self.render([m for turn in turns for m in turn])


VICUNA_V1 = ConversationTemplate(
    name="vicuna_v1",
    system=("A chat between a curious user and an artificial intelligence assistant. "
            "The assistant gives helpful, detailed, and polite answers to the user's questions."),
    roles=("USER", "ASSISTANT"), sep=" ", sep2="</s>",
)
LLAVA_V1 = ConversationTemplate(
    name="llava_v1",
    system=("A chat between a curious human and an artificial intelligence assistant. "
            "The assistant gives helpful, detailed, and polite answers to the human's questions."),
    roles=("USER", "ASSISTANT"), sep=" ", sep2="</s>",
)
PLAIN_TEMPLATE = ConversationTemplate(name="plain", system="", roles=("", ""), sep="\n", style=PLAIN)
TEMPLATES: dict[str, ConversationTemplate] = {t.name: t for t in (VICUNA_V1, LLAVA_V1, PLAIN_TEMPLATE)}


def get_template(name: str) -> ConversationTemplate:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ValueError(f"unknown conversation template {name!r}; known: {sorted(TEMPLATES)}") from None
