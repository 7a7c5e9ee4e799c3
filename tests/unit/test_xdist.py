"""pytest-xdist (-n 2) without VMs: the workers write into the controller's one run folder,
whose junit.xml, --repeat summary and report cover every test."""

import json
import xml.etree.ElementTree as ET

pytest_plugins = ["pytester"]

INNER = """
    import os
    import pytest

    @pytest.mark.scenario
    @pytest.mark.parametrize("n", [1, 2, 3])
    def test_scenario(test_results, n):
        test_results.metrics["suspend_s"] = float(n)
        test_results.metrics["worker_pid"] = os.getpid()
"""


def test_two_workers_write_one_run(pytester, monkeypatch, tmp_path):
    monkeypatch.setenv("BHYVE_SNAPTEST_STATE", str(tmp_path / "state"))
    pytester.makepyfile(test_inner=INNER)
    results = tmp_path / "results"
    outcome = pytester.runpytest_subprocess(
        "-p", "bhyve_snaptest.plugin", "-p", "xdist", "-n", "2", "--repeat", "2",
        "--results-dir", str(results),
        "-o", "markers=scenario", "-p", "no:cacheprovider")
    outcome.assert_outcomes(passed=6)
    [run] = [p for p in results.iterdir() if not p.is_symlink()]  # not one per worker
    tests = sorted(p.name for p in run.iterdir() if p.is_dir())
    assert tests == [f"test_scenario_{n}_run{k}of2" for n in (1, 2, 3) for k in (1, 2)]
    pids = {json.loads((run / t / "metrics.json").read_text())["worker_pid"] for t in tests}
    assert outcome.ret == 0 and pids, "each test recorded the process that ran it"

    root = ET.parse(run / "junit.xml").getroot()
    assert len(list(root.iter("testcase"))) == 6
    suite = {p.get("name"): p.get("value") for p in root.iter("property")
             if p.get("name") == "junit.prefix"}
    assert suite == {"junit.prefix": "qemu"}, "the controller records the suite's properties"
    summary = json.loads((run / "repeat-summary.json").read_text())
    # (node ids as the workers name them: relative to their rootdir, which here is the
    # temporary directory's parent)
    [second] = [data for nodeid, data in summary.items()
                if nodeid.endswith("test_inner.py::test_scenario[2]")]
    assert (second["runs"], second["passed"]) == (2, 2)
    assert len(summary) == 3
    assert (run / "report.html").is_file()
