"""Every probe scenario (probe.py and hostile.py) as one test, marked `e2e`; the fast subset below is marked `ci`
too and runs with the suite. `python -m pytest tests/e2e -m e2e` runs them all, one at a time (`python
tests/e2e/probe.py --jobs 2` runs them two at a time: 28 minutes on 2 cores, with a CI run beside it for 17 of
them); `-m "e2e and not slow"` leaves out the embedded model's."""

import pytest

import probe

# One or two of each class of issue 35's round, under two minutes together on one core (most of a case is
# the command's start: about 4 s to import torch and transformers).
CI = {
    "gguf-kv-count-2^63-plan",
    "forged-turns-txt-ask",
    "forged-turns-html-ask",
    "kv-link-cache-clear",
    "kv-foreign-files-cache-prune",
    "kv-crafted-zero-keys-valid-checksum",
    "chat-history-link-to-a-dotfile",
    "state-tuned-nested-100000-plan",
    "state-tuned-entry-scale-base-infinity-plan",
    "state-machine-link-to-dev-zero-ask",
    "nested-docx-500-in-a-batch",
    "charset-zlib-epub",
    "converted-int4-overwritten-inside",
    "output-dev-full-plan",
    "output-closed-stdout-ask",
    "invisible-every-format-character",
    "output-names-the-input-hard-link-to-it",
    "mostly-utf8-one-latin1-run",
    "tokenizer-json-missing-message",
}


def _case(sc: probe.Scenario):
    marks = [pytest.mark.e2e]
    if sc.name in CI:
        marks.append(pytest.mark.ci)
    if sc.embedded:
        marks.append(pytest.mark.slow)
    if sc.skip:
        marks.append(pytest.mark.skip(reason=sc.skip))
    return pytest.param(sc, id=sc.name, marks=marks)


SCENARIOS = probe.all_scenarios()


def test_the_ci_subset_names_scenarios_that_exist():
    assert CI <= {sc.name for sc in SCENARIOS}


@pytest.mark.parametrize("scenario", [_case(sc) for sc in SCENARIOS])
def test_scenario(scenario, probe_fixtures, record_outcome):
    outcome = probe.run_scenario(probe_fixtures, scenario, keep=False)
    record_outcome(outcome)
    assert outcome.verdict == "pass", probe.line_for(outcome)
