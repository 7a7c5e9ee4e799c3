"""--repeat: scenarios run N times (other tests once), and the summary counts and spreads."""

import json

from fixtures.repeat import spread, summarize

pytest_plugins = ["pytester"]


def test_spread_and_pass_count():
    outcomes = {"t[run1of3]": "passed", "t[run2of3]": "failed", "t[run3of3]": "passed"}
    metrics = [{"suspend_s": 1.0, "verdicts": {"copy": "PASS"}, "ok": True},
               {"suspend_s": 3.0}, {"suspend_s": 2.0}]
    summary = summarize(outcomes, metrics)
    assert summary["runs"] == 3 and summary["passed"] == 2
    assert summary["spread"] == {"suspend_s": {"min": 1.0, "median": 2.0, "max": 3.0,
                                               "stdev": 1.0}}
    assert spread([5.0]) == {"min": 5.0, "median": 5.0, "max": 5.0, "stdev": 0.0}


def test_repeat_runs_scenarios_n_times_and_writes_the_summary(pytester, monkeypatch, tmp_path):
    monkeypatch.setenv("BHYVE_SNAPTEST_STATE", str(tmp_path / "state"))
    pytester.makepyfile(test_inner="""
        import json
        import pytest

        @pytest.mark.scenario
        def test_scenario(test_results, snaptest_repeat):
            test_results.metrics["suspend_s"] = float(snaptest_repeat)
            assert snaptest_repeat != 2

        def test_plain():
            pass
    """)
    results = tmp_path / "results"
    outcome = pytester.runpytest("-p", "fixtures.plugin", "-p", "fixtures.repeat",
                                 "--repeat", "3", "--results-dir", str(results),
                                 "-o", "markers=scenario", "-p", "no:cacheprovider")
    outcome.assert_outcomes(passed=3, failed=1)
    outcome.stdout.fnmatch_lines(["*test_scenario: 2 of 3 passed*",
                                  "*suspend_s: min 1.0 median 2.0 max 3.0*"])
    summary = json.loads((results / "latest" / "repeat-summary.json").read_text())
    assert summary["test_inner.py::test_scenario"]["passed"] == 2
