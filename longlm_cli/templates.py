"""Prompt templates: `prompts/*.txt` shipped with the package, or a user's own file.

A template is the user message, with ``{document}`` where the document goes and (for `ask`) ``{question}``.
The document must come before the instruction, so that the document's tokens form a prefix of the prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .errors import InputError

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


def _builtin_text(task: str) -> str:
    try:
        return resources.files("longlm_cli.prompts").joinpath(f"{task}.txt").read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError):
        # Running from a source checkout: prompts/ sits beside the package.
        return (Path(__file__).resolve().parent.parent / "prompts" / f"{task}.txt").read_text(encoding="utf-8")


def load_template(task: str, prompt_file: str | None = None) -> Template:
    """The template for ``task`` (summarize or ask), from ``prompt_file`` when given."""
    if task not in TASKS:
        raise InputError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if prompt_file is None:
        template = Template(name=f"{task}.txt", text=_builtin_text(task))
    else:
        path = Path(prompt_file)
        try:
            template = Template(name=str(path), text=path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read prompt file {prompt_file!r}: {exc.strerror or exc}") from None
    if template.text.count(DOCUMENT) != 1:
        raise InputError(f"prompt template {template.name!r} must contain {DOCUMENT} exactly once")
    if task == "ask" and QUESTION not in template.split()[1]:
        raise InputError(f"prompt template {template.name!r} must contain {QUESTION} after {DOCUMENT}")
    return template


def user_message(template: Template, document: str, question: str | None = None) -> str:
    """Fill the template. The document is inserted verbatim (braces in it are left alone)."""
    before, after = template.split()
    if question is not None:
        after = after.replace(QUESTION, question)
    return before + document + after


def chat_token_ids(tokenizer, message: str) -> list[int]:
    """Token ids of ``message`` as one user turn in the model's chat template (plain text without one)."""
    if getattr(tokenizer, "chat_template", None):
        return apply_chat_template(tokenizer, [{"role": "user", "content": message}])
    return list(tokenizer(message + "\n\nAnswer:", add_special_tokens=True)["input_ids"])


def apply_chat_template(tokenizer, messages) -> list[int]:
    """Token ids of ``messages`` in the tokenizer's chat template, ending with the generation prompt."""
    ids = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True, return_dict=False)
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return list(ids)
