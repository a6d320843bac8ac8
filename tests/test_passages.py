"""Passages for evidence (passages.py): sentences and paragraphs with their spans and pages, the document's
tokens placed in a prompt, and each passage's share of a per-token score."""

import pytest

from longlm_cli.answering.passages import MAX_CHARS, Passage, passage_scores, place_tokens, split_passages

DOCUMENT = (
    '[page 1]\nThe keeper counted ships. He wrote "Salt!" in a ledger? Yes.\n\n'
    "A new paragraph starts here. It ends here.\n[page ii]\nOn the second page, one sentence."
)


def test_sentences_keep_their_spans_and_pages():
    found = split_passages(DOCUMENT)
    assert [p.text for p in found] == [
        "The keeper counted ships.",
        'He wrote "Salt!" in a ledger?',
        "Yes.",
        "A new paragraph starts here.",
        "It ends here.",
        "On the second page, one sentence.",
    ]
    assert [p.page for p in found] == ["1"] * 5 + ["ii"]
    assert all(DOCUMENT[p.start : p.end] == p.text for p in found)


def test_paragraphs_end_at_blank_lines_and_page_markers():
    found = split_passages(DOCUMENT, "paragraph")
    assert [p.text for p in found] == [
        'The keeper counted ships. He wrote "Salt!" in a ledger? Yes.',
        "A new paragraph starts here. It ends here.",
        "On the second page, one sentence.",
    ]
    assert split_passages("No markers at all.")[0].page is None


def test_a_passage_longer_than_the_cap_is_cut_at_white_space():
    text = " ".join(["word"] * 400)  # 1,999 characters, no sentence end
    found = split_passages(text)
    assert len(found) > 1 and all(len(p.text) <= MAX_CHARS["sentence"] for p in found)
    assert " ".join(p.text for p in found) == text
    with pytest.raises(ValueError):
        split_passages(text, "chapter")


def test_tokens_are_placed_where_the_prompt_holds_them():
    document_ids = list(range(100, 140))
    offsets = [(3 * i, 3 * i + 3) for i in range(40)]
    prompt = [1, 2, 999, *document_ids[1:], 7, 8]  # the first token merged with the template's: left out
    placed = place_tokens(prompt, document_ids, offsets)
    assert min(placed) == 3 and max(placed) == 41 and placed[3] == 3 and placed[41] == 117
    assert place_tokens([1, 2, 3], document_ids, offsets) == {}


def test_a_passage_scores_the_tokens_that_start_inside_it():
    passages = [Passage(0, 10, "a" * 10, None), Passage(12, 20, "b" * 8, None)]
    placed = {5: 0, 6: 4, 7: 10, 8: 12, 9: 19}  # the token at character 10 is in the gap: in no passage
    assert passage_scores(passages, placed, [0] * 5 + [1.0, 2.0, 4.0, 8.0, 16.0]) == [3.0, 24.0]
