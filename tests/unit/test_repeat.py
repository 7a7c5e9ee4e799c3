"""--repeat: scenarios run N times (other tests once) under their own ids, and the summary
counts and spreads."""

import json
import xml.etree.ElementTree as ET

from bhyve_snaptest.repeat import spread, summarize
from bhyve_snaptest.report.model import load_run

pytest_plugins = ["pytester"]


def test_spread_and_pass_count():
    outcomes = {"t_run1of3": "passed", "t_run2of3": "failed", "t_run3of3": "passed"}
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
    outcome = pytester.runpytest("-p", "bhyve_snaptest.plugin", "-p", "bhyve_snaptest.repeat",
                                 "--repeat", "3", "--results-dir", str(results),
                                 "-o", "markers=scenario", "-p", "no:cacheprovider")
    outcome.assert_outcomes(passed=3, failed=1)
    outcome.stdout.fnmatch_lines(["*test_scenario: 2 of 3 passed*",
                                  "*suspend_s: min 1.0 median 2.0 max 3.0*"])
    summary = json.loads((results / "latest" / "repeat-summary.json").read_text())
    assert summary["test_inner.py::test_scenario"]["passed"] == 2


INNER = """
    import pytest

    @pytest.mark.scenario
    @pytest.mark.parametrize("damage", ["none", "zeroed"])
    def test_scenario(test_results, snaptest_repeat, damage):
        test_results.metrics["suspend_s"] = float(snaptest_repeat)

    def test_plain():
        pass
"""


def _run_inner(pytester, tmp_path, name, *options):
    results = tmp_path / name
    outcome = pytester.runpytest("-p", "bhyve_snaptest.plugin", "-p", "bhyve_snaptest.repeat",
                                 "--results-dir", str(results), "-o", "markers=scenario",
                                 "-p", "no:cacheprovider", *options)
    return outcome, results / "latest"


def _cases(folder):
    root = ET.parse(folder / "junit.xml").getroot()
    return [(case.get("classname"), case.get("name"),
             {p.get("name"): p.get("value") for p in case.iter("property")})
            for case in root.iter("testcase")]


def test_repeated_runs_keep_the_test_ids_of_a_plain_run(pytester, monkeypatch, tmp_path):
    monkeypatch.setenv("BHYVE_SNAPTEST_STATE", str(tmp_path / "state"))
    pytester.makepyfile(test_inner=INNER)
    plain, plain_folder = _run_inner(pytester, tmp_path, "plain")
    plain.assert_outcomes(passed=3)
    repeated, repeated_folder = _run_inner(pytester, tmp_path, "repeated", "--repeat", "3")
    repeated.assert_outcomes(passed=7)

    plain_cases, repeated_cases = _cases(plain_folder), _cases(repeated_folder)
    plain_ids = {(classname, name) for classname, name, _ in plain_cases}
    assert {(classname, name) for classname, name, _ in repeated_cases} == plain_ids
    assert ("qemu.test_inner", "test_scenario[zeroed]") in plain_ids  # the hypervisor first
    runs = [props for classname, name, props in repeated_cases
            if name == "test_scenario[zeroed]"]
    assert [props["repetition"] for props in runs] == ["1 of 3", "2 of 3", "3 of 3"]
    folders = [props["results_folder"] for props in runs]
    assert folders == [f"test_scenario_zeroed_run{i}of3" for i in (1, 2, 3)]
    assert all((repeated_folder / folder / "metrics.json").is_file() for folder in folders)
    assert "repetition" not in next(props for _, name, props in plain_cases
                                    if name == "test_scenario[zeroed]")

    summary = json.loads((repeated_folder / "repeat-summary.json").read_text())
    assert summary["test_inner.py::test_scenario[zeroed]"]["outcomes"] == {
        folder: "passed" for folder in folders}
    # Read back, the node ids are pytest's again (the prefix stripped) and runs stay apart.
    tests = load_run(repeated_folder).tests
    assert sorted({t.nodeid for t in tests}) == ["test_inner.py::test_plain",
                                                 "test_inner.py::test_scenario[none]",
                                                 "test_inner.py::test_scenario[zeroed]"]
    assert [t.repetition for t in tests if t.nodeid.endswith("[none]")] == [
        "1 of 3", "2 of 3", "3 of 3"]


def test_the_junit_prefix_names_the_configuration(pytester, monkeypatch, tmp_path):
    monkeypatch.setenv("BHYVE_SNAPTEST_STATE", str(tmp_path / "state"))
    pytester.makepyfile(test_inner=INNER)
    outcome, folder = _run_inner(pytester, tmp_path, "nvme", "--disk-model", "nvme",
                                 "--cpus", "2", "-k", "test_plain")
    outcome.assert_outcomes(passed=1)
    assert [classname for classname, _, _ in _cases(folder)] == [
        "qemu-nvme-2cpu.test_inner"]
