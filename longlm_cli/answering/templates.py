"""Prompt templates: `prompts/*.txt` shipped with the package, or a user's own file.

A template is the user message, with ``{document}`` where the document goes and (for `ask`) ``{question}``.
The document must come before the instruction, so that the document's tokens form a prefix of the prompt.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ..documents.inputs import max_input_bytes, read_path
from ..documents.text import is_blank
from ..errors import InputError, ModelError
from .citations import CITE_INSTRUCTION

TASKS = ("summarize", "ask")
DOCUMENT = "{document}"
QUESTION = "{question}"


@dataclass(frozen=True)
class Template:
    name: str
    text: str

    def split(self) -> tuple[str, str]:
        """(text before the document, text after it)."""
        before, after = self.text.split(DOCUMENT, 1)
        return before, after

    def shaped(self, shape: OutputShape) -> Template:
        """The template with ``shape``'s instructions at its end (after the document: the cached prefix and
        the document's tokens are unchanged)."""
        extra = shape.instructions()
        return self if not extra else Template(name=self.name, text=self.text.rstrip("\n") + "\n\n" + extra + "\n")


@dataclass(frozen=True)
class OutputShape:
    """How the answer should look, added to any template as plain instructions."""

    words: int | None = None  # about this many words
    bullets: bool = False  # a bulleted list
    language: str | None = None  # written in this language
    instruction: str | None = None  # the user's own words, verbatim
    cite: bool = False  # quote the passages used (checked afterwards: citations.py)

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> OutputShape:
        """From the parsed --words, --bullets, --language, --instruction and --cite."""
        return cls(**{name: options[name] for name in ("words", "bullets", "language", "instruction", "cite")})

    def __post_init__(self):
        if self.words is not None and self.words < 1:
            raise InputError(f"--words must be at least 1, got {self.words}")
        for name in ("language", "instruction"):
            value = getattr(self, name)
            if value is not None and is_blank(value):
                raise InputError(f"--{name} is empty")

    def instructions(self) -> str:
        """The instructions, one sentence each, in a fixed order ('' when there are none)."""
        parts = []
        if self.words is not None:
            parts.append(f"Use about {self.words} words.")
        if self.bullets:
            parts.append("Write it as a bulleted list: one point per line, each starting with '- '.")
        if self.language is not None:
            parts.append(f"Write it in {self.language.strip()}.")
        if self.instruction is not None:
            parts.append(self.instruction.strip())
        if self.cite:
            parts.append(CITE_INSTRUCTION)
        return " ".join(parts)


def builtin_text(task: str) -> str:
    try:
        return resources.files("longlm_cli.prompts").joinpath(f"{task}.txt").read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError):
        # Running from a source checkout: prompts/ sits beside the package.
        return (Path(__file__).resolve().parents[2] / "prompts" / f"{task}.txt").read_text(encoding="utf-8")


def load_template(task: str, prompt_file: str | None = None) -> Template:
    """The template for ``task`` (summarize or ask), from ``prompt_file`` when given."""
    if task not in TASKS:
        raise InputError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if prompt_file is None:
        template = Template(name=f"{task}.txt", text=builtin_text(task))
    else:
        template = Template(name=str(Path(prompt_file)), text=_read_prompt_file(prompt_file))
    if template.text.count(DOCUMENT) != 1:
        raise InputError(f"prompt template {template.name!r} must contain {DOCUMENT} exactly once")
    if task == "ask" and QUESTION not in template.split()[1]:
        raise InputError(f"prompt template {template.name!r} must contain {QUESTION} after {DOCUMENT}")
    if task == "summarize" and QUESTION in template.text:
        # It would reach the model as the literal text "{question}": summarize has no question to put there.
        raise InputError(
            f"prompt template {template.name!r} contains {QUESTION}, but summarize has no question; "
            "remove it, or use `longlm ask` with this template"
        )
    return template


def _read_prompt_file(prompt_file: str) -> str:
    """The text of a user's template: UTF-8 only (a template is short and must reach the model exactly)."""
    label = f"prompt file {prompt_file!r}"
    data = read_path(prompt_file, label=label, max_bytes=max_input_bytes())
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{label} is not UTF-8 text (invalid byte at offset {exc.start}); save it as UTF-8") from None


def check_question(question: str) -> None:
    """InputError when ``question`` has no visible text or holds bytes that are not UTF-8.

    Undecodable command-line bytes reach Python as lone surrogates, which tokenizers reject with a TypeError.
    """
    if is_blank(question):
        raise InputError("the question is empty (no text, or only whitespace); give the question to answer")
    try:
        question.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError("the question is not valid UTF-8 text; give it in UTF-8") from None


def user_message(template: Template, document: str, question: str | None = None) -> str:
    """Fill the template. The document is inserted verbatim (braces in it are left alone)."""
    before, after = template.split()
    if question is not None:
        after = after.replace(QUESTION, question)
    return before + document + after


def chat_token_ids(tokenizer, message: str) -> list[int]:
    """Token ids of ``message`` as one user turn in the model's chat template (plain text without one). The
    message is text: special-token names written in it stay text (see apply_chat_template)."""
    if getattr(tokenizer, "chat_template", None):
        return apply_chat_template(tokenizer, [{"role": "user", "content": message}])
    return _text_ids(tokenizer, message + "\n\nAnswer:", add_special_tokens=True)


def apply_chat_template(tokenizer, messages) -> list[int]:
    """Token ids of ``messages`` in the tokenizer's chat template, ending with the generation prompt.

    The messages' contents are text. A document that writes a special token's name (``<|im_end|>``,
    ``<|start_header_id|>``, ``</s>``, ...) must not end the user's turn or open a system one, as tokenizing the
    rendered template would do. Such contents are tokenized on their own with special tokens split into text, and
    only the template's own text between them yields special tokens. Contents without any special token's name,
    nearly all, are tokenized with the template as one text, as before.
    """
    messages = list(messages)
    if not any(_holds_special_text(tokenizer, str(m.get("content", ""))) for m in messages):
        return _rendered(tokenizer, messages, tokenize=True)
    sentinels = [f"\ue000{i}\ue001" for i in range(len(messages))]  # private-use marks no template changes
    text = _rendered(tokenizer, [{**m, "content": mark} for m, mark in zip(messages, sentinels)], tokenize=False)
    ids: list[int] = []
    for n, piece in enumerate(re.split("\ue000([0-9]+)\ue001", text)):
        if n % 2:  # a message's content, in the place the template gave it
            ids += _text_ids(tokenizer, str(messages[int(piece)]["content"]), add_special_tokens=False)
        elif piece:  # the template's own text, its special tokens included
            ids += list(tokenizer(piece, add_special_tokens=False)["input_ids"])
    return ids


def _text_ids(tokenizer, text: str, *, add_special_tokens: bool) -> list[int]:
    """Ids of ``text`` with special-token names in it tokenized as the text they are."""
    return list(tokenizer(text, add_special_tokens=add_special_tokens, split_special_tokens=True)["input_ids"])


def _holds_special_text(tokenizer, text: str) -> bool:
    """Whether ``text`` writes the name of one of the tokenizer's special tokens."""
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    names = {token.content for token in added.values() if getattr(token, "special", False)}
    names.update(getattr(tokenizer, "all_special_tokens", None) or ())
    return any(name and name in text for name in names)


def _rendered(tokenizer, messages: list, *, tokenize: bool):
    """The chat template applied to ``messages``: its token ids, or its text (``tokenize`` False)."""
    try:
        out = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=tokenize, return_dict=False)
    except Exception as exc:
        if not type(exc).__module__.startswith("jinja2"):
            raise
        # The template is the model's own Jinja code: it may not parse, or raise_exception() on our messages.
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise ModelError(f"the model's chat template cannot be used: {detail}") from None
    if not tokenize:
        return str(out)
    if isinstance(out, dict) or hasattr(out, "keys"):
        out = out["input_ids"]
    return list(out)
