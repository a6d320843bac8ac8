"""Checked citations: quotes in an answer are found in the document (exactly or up to whitespace, case and
typographic quotes), with the page of the last [page N] marker before them, or flagged."""

import json

from longlm_cli.answering.citations import CITE_INSTRUCTION, Citation, check_citations, format_citations, quotes

from helpers import CORPUS, reference_answer, run

DOCUMENT = (
    "[page iv]\nThe keeper wrote in a green ledger.\n\n"
    "[page 12]\nShips carried salt and\n   wool to the northern harbour.\nThe keeper\u2019s cat slept."
)


def test_quotes_are_taken_from_straight_and_curly_double_quotes():
    answer = (
        'It says "wrote in a green ledger" and \u201cShips carried salt\u201d but "two words" and '
        '"wrote in a green ledger".'
    )
    assert quotes(answer) == ["wrote in a green ledger", "Ships carried salt"]


def test_each_quote_is_found_with_its_page_or_flagged():
    answer = (
        '"The keeper wrote in a green ledger" [page iv]\n'
        '"ships carried SALT and wool to the northern harbour" [page 12]\n'
        '"The keeper\'s cat slept."\n'
        '"the keeper wrote in a red ledger"'
    )
    assert check_citations(answer, DOCUMENT) == [
        Citation("The keeper wrote in a green ledger", True, "iv"),
        Citation("ships carried SALT and wool to the northern harbour", True, "12"),
        Citation("The keeper's cat slept.", True, "12"),
        Citation("the keeper wrote in a red ledger", False, None),
    ]
    assert check_citations('"wrote in a green"', "no pages: wrote in a green ledger") == [
        Citation("wrote in a green", True, None)
    ]


def test_format_lists_pages_and_flags():
    text = format_citations(
        [Citation("a b c", True, "3"), Citation("d e f", True, None), Citation("x y z", False, None)]
    )
    assert text == (
        'Quotes checked against the document:\n  page 3: "a b c"\n  found: "d e f"\n  NOT IN THE DOCUMENT: "x y z"'
    )
    assert format_citations([]) == "Quotes checked against the document: none found in the answer."


def test_cite_through_ask(tiny_dir, tmp_path):
    from longlm_cli.answering.templates import OutputShape

    doc = tmp_path / "ships.txt"
    doc.write_text(CORPUS)
    question = "Who counted the ships?"
    expected, _, _ = reference_answer(tiny_dir, "ask", CORPUS, question, max_new_tokens=8, shape=OutputShape(cite=True))
    result = run("ask", doc, question, "--model", tiny_dir, "--max-new-tokens", 8, "--cite")
    assert result.exit_code == 0, result.output
    assert result.stdout == expected + "\n\n" + format_citations(check_citations(expected, CORPUS)) + "\n"
    data = json.loads(run("ask", doc, question, "--model", tiny_dir, "--max-new-tokens", 8, "--cite", "--json").stdout)
    assert data["citations"] == [c.to_dict() for c in check_citations(expected, CORPUS)]
    plain = json.loads(run("ask", doc, question, "--model", tiny_dir, "--max-new-tokens", 2, "--json").stdout)
    assert plain["citations"] is None
    assert CITE_INSTRUCTION.startswith("After your answer, quote")
