"""The hostile-input campaign's ``quick`` cases (``Testing/hostile/campaign.py --quick``), one test each.

Each case runs the CLI in a subprocess and is checked by the campaign's own checker: the expected
exit code, no traceback, no crash or hang, a one-line ``imagetomesh: error:`` for refused input,
nothing left behind in the output folder, no input changed. The full campaign is a script.
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "hostile"))
import campaign  # noqa: E402

QUICK = [case for case in campaign.cases() if case.quick]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    folder = campaign.prepare(root)
    return folder, root / "out", campaign._tree(folder)


def test_the_campaign_is_big_and_the_subset_small():
    assert len(campaign.cases()) >= 150
    assert 30 <= len(QUICK) <= 45


@pytest.mark.parametrize("case", QUICK, ids=[case.name for case in QUICK])
def test_hostile_case(inputs, case):
    folder, work, tree = inputs
    result = campaign.run_case(case, folder, work, tree)
    assert not result.failures, f"{case.name}: {', '.join(result.failures)}\n{result.detail}"
