"""The probe suite as tests (test_probe.py): the tiny models and clean runs built once per session, and the
probe's totals by class printed at the end of the run, as `python tests/e2e/probe.py` prints them."""

import pytest

import probe

OUTCOMES = pytest.StashKey[list]()


@pytest.fixture(scope="session")
def probe_fixtures(tmp_path_factory):
    fx = probe.Fixtures(tmp_path_factory.mktemp("probe"), probe.longlm_command())
    fx.clean_runs()
    return fx


@pytest.fixture
def record_outcome(request):
    return request.config.stash.setdefault(OUTCOMES, []).append


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    outcomes = config.stash.get(OUTCOMES, [])
    if outcomes:
        terminalreporter.write_line(probe.totals_line(probe.totals(outcomes)))
