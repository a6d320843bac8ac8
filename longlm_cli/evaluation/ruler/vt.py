"""RULER's variable tracking (vt): find every variable a chain of assignments gives one value.

Owns: the vt prompt (RULER's template and answer prefix, split into the document part and the question), the
assignment chain (one chain of four hops, RULER's synthetic.yaml), its noise haystack and the worked example
the prompt opens with.

Follows RULER's variable_tracking.py: five-letter upper-case names, a 5-digit value, statements
``VAR A = 12345`` then ``VAR B = VAR A `` (RULER's trailing space kept) hidden at random places among RULER's
noise lines, joined as RULER joins them. As in RULER's main(), the prompt opens with a worked example: a short
vt prompt with three-letter names, its answer prefix and its answer.

Deviations: noise is counted in sentences, so the last noise line may be cut short; statements go to depths
drawn uniformly (fractions of the text) rather than to drawn line indices; the worked example is fitted to
min(460, length // 4) tokens (RULER: whatever stays under 500 with 30 tokens to generate), so short prompts
keep room for the task; its names are drawn as three letters directly instead of being renamed afterwards
with str.replace (RULER's randomize_icl), never "VAR"; RULER's space before the example is dropped.
"""

from __future__ import annotations

import random
import string

from .fit import fit, largest_fitting
from .haystack import noise_lines, place
from .sample import Count, Draft, Sample, Scoring

HEAD = "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n"
QUESTION = "\nQuestion: Find all variables that are assigned the value {query} in the text above."
ANSWER_PREFIX = (
    " Answer: According to the chain(s) of variable assignment in the text above, {num_v} variables "
    "are assgined the value {query}, they are: "
)  # RULER's spelling
MAX_NEW_TOKENS = 30
CHAINS, HOPS = 1, 4
EXAMPLE_TOKENS = 460


def _chains(rng: random.Random, name_length: int) -> tuple[list[list[str]], list[list[str]]]:
    """(names, statements) per chain; names are all different."""
    names: list[str] = []
    while len(names) < CHAINS * (HOPS + 1):
        name = "".join(rng.choices(string.ascii_uppercase, k=name_length))
        if name not in names and name != "VAR":
            names.append(name)
    chains = [names[i : i + HOPS + 1] for i in range(0, len(names), HOPS + 1)]
    statements = []
    for chain in chains:
        value = rng.randint(10000, 99998)  # np.random.randint(10000, 99999) excludes the upper bound
        statements.append(
            [f"VAR {chain[0]} = {value}"] + [f"VAR {chain[j + 1]} = VAR {chain[j]} " for j in range(HOPS)]
        )
    return chains, statements


def _depths(rng: random.Random, statements: list[list[str]]) -> list[tuple[str, float]]:
    """Each chain's statements at sorted uniform depths, so a chain reads in order."""
    placed: list[tuple[str, float]] = []
    for chain in statements:
        placed += zip(chain, sorted(rng.random() for _ in chain))
    return placed


def _haystack(sentences: int, needles: list[tuple[str, float]]):
    lines = [line + "\n" for line in noise_lines(sentences)]
    placed = place(lines, " ", needles)
    return placed.text.replace(". \n", ".\n"), placed  # RULER's join and clean-up


def _value(statements: list[list[str]]) -> str:
    return statements[0][0].split("=")[-1].strip()


def worked_example(count: Count, budget: int, seed: int) -> str:
    """RULER's in-context example: a whole short vt prompt, its answer prefix and answer, then a blank line."""
    rng = random.Random(f"{seed}:example")
    chains, statements = _chains(rng, 3)
    needles = _depths(rng, statements)
    value = _value(statements)
    tail = (
        QUESTION.format(query=value)
        + ANSWER_PREFIX.format(num_v=HOPS + 1, query=value)
        + " "
        + " ".join(chains[0])
        + "\n\n"
    )

    def text(n: int) -> str:
        return HEAD + _haystack(n, needles)[0] + tail

    n = largest_fitting(lambda k: count(text(k)), budget, 1, 10**6)
    return text(n)


def generate_vt(task: str, count: Count, length: int, *, seed: int, depth: float | None = None) -> Sample:
    """One vt sample of about ``length`` tokens (context + question); ``depth`` must be None."""
    rng = random.Random(seed)
    chains, statements = _chains(rng, 5)
    needles = _depths(rng, statements)
    value = _value(statements)
    example = worked_example(count, min(EXAMPLE_TOKENS, length // 4), seed)
    question = QUESTION.format(query=value)

    def render(n: int, m: int) -> Draft:
        text, placed = _haystack(n, needles)
        return Draft(example + HEAD + text, question, placed.needles, placed.positions)

    scoring = Scoring(ANSWER_PREFIX.format(num_v=HOPS + 1, query=value), MAX_NEW_TOKENS)
    return fit(render, count, length, task=task, lo=1, hi=10**8).sample(scoring, answers=chains[0], seed=seed)
