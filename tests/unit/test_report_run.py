"""The report end to end through an inner pytest (pytester), without a VM: phase lines in
the terminal as they end, key metrics and verdicts as JUnit properties, the metrics table
and results/<run id>/report.html at the end, a failure at the top of the page."""

import xml.etree.ElementTree as ET

import pytest

pytest_plugins = ["pytester"]

INNER = """
    import pytest

    pytestmark = pytest.mark.scenario

    def test_cycle(test_results):
        with test_results.timeline.span("suspend") as note:
            note.append("(242 MB)")
        with test_results.phase("verdict_wait_s"):
            pass
        test_results.metrics.update(suspend_s=0.45, checkpoint_bytes=242396074,
                                    verdicts={"copy": "PASS", "ping": "PASS"})
        test_results.note_verdicts(test_results.metrics["verdicts"])

    def test_broken(test_results):
        test_results.metrics["verdicts"] = {"copy": "FAIL: cp exited with status 1"}
        assert False, "copy: FAIL: cp exited with status 1"
"""


@pytest.fixture
def inner_run(pytester, tmp_path, monkeypatch):
    monkeypatch.setenv("BHYVE_SNAPTEST_STATE", str(tmp_path / "state"))
    pytester.makeini("[pytest]\nmarkers =\n    scenario: boots VMs\n")
    pytester.makepyfile(test_inner=INNER)
    results = tmp_path / "results"
    # In a subprocess: numpy (under matplotlib) cannot be imported twice in one process.
    outcome = pytester.runpytest_subprocess(
        "-p", "bhyve_snaptest.plugin", "-p", "bhyve_snaptest.report.terminal",
        "--results-dir", str(results), "-p", "no:cacheprovider")
    return outcome, (results / "latest").resolve()


def test_each_phase_is_shown_as_it_ends_and_the_run_ends_with_a_table(inner_run):
    outcome, folder = inner_run
    outcome.assert_outcomes(passed=1, failed=1)
    outcome.stdout.fnmatch_lines(["    suspend 0.0 s (242 MB)", "    verdict wait 0.0 s",
                                  "    verdicts copy PASS ping PASS"])
    outcome.stdout.fnmatch_lines([
        "*bhyve-snaptest scenarios (seconds; checkpoint in MB)*",
        "verdict  boot  suspend   MB  restore  ssh  done  total  test",
        " FAILED     -        -    -        -    -     -      -  test_broken",
        " PASSED     -      0.5  242        -    -     -      -  test_cycle",
        f"bhyve-snaptest report: {folder}/report.html (written in *"])


def test_key_metrics_and_verdicts_are_junit_properties(inner_run):
    _, folder = inner_run
    cases = {c.get("name"): c for c in ET.parse(folder / "junit.xml").iter("testcase")}
    properties = {p.get("name"): p.get("value") for p in cases["test_cycle"].iter("property")}
    assert properties["results_folder"] == "test_cycle"
    assert properties["metric.suspend_s"] == "0.45"
    assert properties["metric.checkpoint_bytes"] == "242396074"
    assert properties["verdict.copy"] == "PASS" and properties["verdict.ping"] == "PASS"
    assert "metric.restore_s" not in properties  # never measured, never made up


def test_the_page_names_the_failure_before_anything_else(inner_run):
    _, folder = inner_run
    page = (folder / "report.html").read_text()
    banner = page.index('id="failures"')
    assert banner < page.index("<h2>Summary</h2>")
    assert "test_broken</a>: <code>AssertionError: copy: FAIL: cp exited with status 1" \
        in page[banner:page.index("</div>", banner)]
