"""The prompt styles of `longlm eval`: how a RULER sample becomes the model's input ids.

- ``chat``: RULER's prompt as one user turn in the model's chat template, then RULER's answer prefix (default).
- ``plain``: RULER's prompt text with no chat template, as the paper's runs used.
- ``ask``: the question-answering tasks (qa_1, qa_2) as `longlm ask` sent them before the comparison below:
  the ask template around the documents and the bare question, in the chat template, nothing prefilled, with
  its invitation "If the document does not contain the answer, say so."
- ``ask-direct``: the same without that sentence: what the shipped ask template is now.

Comparing them chose the shipped template (issue 15: "prompts follow the evidence"): with the sentence, 6 of
10 answerable SQuAD questions at 4k were answered "The document does not contain the answer" (README).
"""

from __future__ import annotations

from ..defaults import PROMPT_STYLES
from ..errors import InputError
from . import ruler

ASK_STYLES = ("ask", "ask-direct")
NOT_SAYING = " If the document does not contain the answer, say so."  # what ask has and ask-direct has not
_AFTER = "using only information from the document above."  # where the ask template had it


def check_style(style: str, tasks) -> None:
    """Refuse before any work a style that does not exist or does not fit the tasks."""
    if style not in PROMPT_STYLES:
        raise InputError(f"unknown prompt style {style!r}; choose one of {', '.join(PROMPT_STYLES)}")
    others = [t for t in tasks if t not in ruler.QA_TASKS]
    if style in ASK_STYLES and others:
        raise InputError(f"--prompt {style} is for {', '.join(ruler.QA_TASKS)}, not {', '.join(others)}")


def prompt_ids(tokenizer, sample: ruler.Sample, *, style: str, context: str | None = None) -> list[int]:
    """The prompt's ids in ``style``; ``context`` replaces the sample's document part (to truncate it)."""
    from ..answering.templates import chat_token_ids

    if style in ASK_STYLES:
        return chat_token_ids(tokenizer, _ask_message(sample, style, context))
    text = (sample.context if context is None else context) + sample.question
    if style == "plain":
        return list(tokenizer(text + sample.answer_prefix, add_special_tokens=True)["input_ids"])
    ids = (
        chat_token_ids(tokenizer, text)
        if getattr(tokenizer, "chat_template", None)
        else list(tokenizer(text, add_special_tokens=True)["input_ids"])
    )
    return ids + list(tokenizer(sample.answer_prefix.lstrip(), add_special_tokens=False)["input_ids"])


def _ask_message(sample: ruler.Sample, style: str, documents: str | None) -> str:
    from ..answering.templates import Template, load_template, user_message

    text = load_template("ask").text.replace(NOT_SAYING, "")
    if style == "ask":
        text = text.replace(_AFTER, _AFTER + NOT_SAYING, 1)
    template = Template(name=style, text=text)
    return user_message(template, sample.documents if documents is None else documents, sample.query)


def document_part(sample: ruler.Sample, style: str) -> str:
    """The text a truncation cuts: the documents for the ask styles, else RULER's whole context."""
    return sample.documents if style in ASK_STYLES else sample.context


def truncated_ids(tokenizer, sample: ruler.Sample, *, style: str, budget: int) -> list[int]:
    """The prompt with its document part cut at its end until the whole prompt fits ``budget`` tokens."""
    ids = prompt_ids(tokenizer, sample, style=style)
    context_ids = tokenizer(document_part(sample, style), add_special_tokens=False)["input_ids"]
    keep = len(context_ids)
    while len(ids) > budget and keep > 0:
        keep = max(0, keep - (len(ids) - budget) - 4)  # a few spare: decoding and re-encoding may merge tokens
        ids = prompt_ids(tokenizer, sample, style=style, context=tokenizer.decode(context_ids[:keep]))
    return ids
