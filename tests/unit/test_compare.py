"""A/B comparison: the statistics on samples with known answers (p-values counted by hand
over every split, Fisher's test from its table), the sides read from results folders,
and `bhyve-snaptest ab` end to end on a test that needs no VM."""

from __future__ import annotations

import itertools
import json
import random
import shutil
import statistics
import sys
from pathlib import Path

import pytest

from bhyve_snaptest import cli
from bhyve_snaptest.compare import ab
from bhyve_snaptest.compare.report import compare, table
from bhyve_snaptest.compare.samples import base_nodeid, collect
from bhyve_snaptest.compare.stats import (
    NO_CHANGE,
    compare_metric,
    compare_metrics,
    compare_pass_rates,
)
from bhyve_snaptest.errors import ConfigError, ExitStatus

SAMPLES = Path(__file__).parent / "samples" / "report"
SEED = "tests/scenarios/test_suspend_restore.py::test_busy_guest_survives_suspend_and_restore"


def exact_p_value(a: list[float], b: list[float]) -> float:
    """The two-sided permutation p-value of the difference of means, over every split."""
    pooled, observed = a + b, statistics.mean(b) - statistics.mean(a)
    splits = list(itertools.combinations(range(len(pooled)), len(a)))
    extreme = 0
    for chosen in splits:
        side_a = [pooled[i] for i in chosen]
        side_b = [pooled[i] for i in range(len(pooled)) if i not in chosen]
        if abs(statistics.mean(side_b) - statistics.mean(side_a)) >= abs(observed) - 1e-12:
            extreme += 1
    return extreme / len(splits)


def test_identical_samples_are_no_change_with_certainty():
    result = compare_metric("suspend_s", [1.0, 1.2, 0.9, 1.1], [1.0, 1.2, 0.9, 1.1])
    assert result.p_value == pytest.approx(1.0)
    assert result.change == 0.0 and result.verdict == NO_CHANGE and not result.regressed


def test_ties_get_the_exact_permutation_p_value():
    a, b = [1.0, 1.0, 2.0, 2.0, 2.0], [2.0, 2.0, 3.0, 3.0, 3.0]
    result = compare_metric("restore_s", a, b)
    assert result.p_value == pytest.approx(exact_p_value(a, b))  # 252 splits: exact
    assert result.p_value > 0.05 and result.verdict == NO_CHANGE  # 20/252


def test_a_clear_slowdown_is_flagged_with_an_interval_that_excludes_zero():
    a = [1.00, 1.02, 0.98, 1.01, 0.99, 1.03]
    b = [1.50, 1.52, 1.49, 1.55, 1.51, 1.48]
    result = compare_metric("suspend_s", a, b)
    assert result.p_value == pytest.approx(exact_p_value(a, b))  # 2/924
    assert result.p_value < 0.01
    assert result.verdict == "slower" and result.regressed
    assert result.change == pytest.approx(statistics.median(b) / statistics.median(a) - 1)
    assert 0 < result.ci[0] <= statistics.median(b) - statistics.median(a) <= result.ci[1]


def test_a_change_below_the_threshold_is_not_a_verdict_however_certain():
    a = [1.00, 1.01, 1.00, 1.01, 1.00, 1.01]
    b = [x * 1.03 for x in a]
    result = compare_metric("suspend_s", a, b)
    assert result.p_value < 0.05 and result.verdict == NO_CHANGE
    assert compare_metric("suspend_s", a, b, threshold=0.02).verdict == "slower"


def test_faster_and_smaller_are_not_regressions():
    faster = compare_metric("restore_s", [2.0, 2.1, 2.2, 2.1, 2.0], [1.0, 1.1, 1.0, 1.2, 1.1])
    assert faster.verdict == "faster" and not faster.regressed


def test_constant_sizes_that_differ_are_known_exactly():
    result = compare_metric("checkpoint_bytes", [242e6] * 10, [484e6] * 10)
    assert result.ci == (242e6, 242e6)
    assert result.verdict == "larger" and result.regressed


def test_one_run_or_none_is_not_compared():
    one = compare_metric("suspend_s", [1.0], [2.0])
    assert one.verdict == "not compared: fewer than 2 runs on a side"
    assert one.p_value is None and one.ci is None and one.change == 1.0
    missing = compare_metric("suspend_s", [], [2.0, 2.1])
    assert missing.verdict == "not compared: no values in A" and missing.median_a is None


def benjamini_hochberg(p_values: list[float]) -> list[float]:
    """The BH adjustment by its definition: p(i) * m / i from the largest down, each no
    larger than the one above it."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted, running = [0.0] * m, 1.0
    for rank in range(m, 0, -1):
        i = order[rank - 1]
        running = min(running, p_values[i] * m / rank)
        adjusted[i] = running
    return adjusted


def test_many_metrics_of_the_same_build_are_not_called_changed_by_chance():
    """Fifteen metrics drawn from one distribution for both sides: one raw p-value falls
    below 0.05 (as one in twenty will), the adjusted ones do not, and no verdict is made,
    even with no threshold on the size of the change."""
    rng = random.Random(2)
    values = {f"m{i}_s": ([rng.gauss(1, 0.1) for _ in range(10)],
                          [rng.gauss(1, 0.1) for _ in range(10)]) for i in range(15)}
    results = compare_metrics(values, threshold=0.0)
    raw = [r.p_value for r in results]
    assert min(raw) < 0.05
    assert [r.p_adjusted for r in results] == pytest.approx(benjamini_hochberg(raw))
    assert all(r.verdict == NO_CHANGE for r in results)


def test_a_real_difference_survives_the_adjustment():
    quiet = {f"m{i}_s": ([1.0, 1.1, 0.9, 1.0, 1.05], [1.0, 1.1, 0.9, 1.0, 1.05])
             for i in range(10)}
    slow = {"suspend_s": ([0.40, 0.42, 0.41, 0.43, 0.40, 0.41, 0.42, 0.40, 0.43, 0.41],
                          [0.80, 0.84, 0.82, 0.86, 0.81, 0.83, 0.85, 0.80, 0.82, 0.84])}
    results = {r.metric: r for r in compare_metrics({**quiet, **slow})}
    assert results["suspend_s"].verdict == "slower"
    assert results["suspend_s"].p_adjusted < 0.01
    assert all(results[name].verdict == NO_CHANGE for name in quiet)


def test_pass_rates_are_compared_with_fishers_exact_test():
    # Table [[10, 0], [5, 5]]: the hypergeometric tail, 2 * C(10,5) * C(10,0)... / C(20,15)
    rates = compare_pass_rates(10, 10, 5, 10)
    assert rates.p_value == pytest.approx(0.0325077, abs=1e-6)
    assert rates.dropped
    assert not compare_pass_rates(10, 10, 9, 10).dropped
    assert not compare_pass_rates(5, 10, 10, 10).dropped  # B got better


def test_repeated_runs_share_the_node_id_without_the_repeat_parameter():
    assert base_nodeid("t.py::test_a[run2of10]") == "t.py::test_a"
    assert base_nodeid("t.py::test_a[corrupted-run2of10]") == "t.py::test_a[corrupted]"
    assert base_nodeid("t.py::test_a[corrupted]") == "t.py::test_a[corrupted]"


def test_a_side_counts_every_run_and_takes_numbers_from_passed_runs_only():
    side = collect(SAMPLES / "seed-repeat3")[SEED]
    assert (side.runs, side.passed) == (3, 3)
    assert len(side.values["suspend_s"]) == 3 and len(side.values["guest_clock_lag_s"]) == 3
    failed = collect(SAMPLES / "seed-failed")[SEED]
    assert (failed.runs, failed.passed) == (1, 0) and not failed.values


def test_a_failed_side_is_compared_on_its_pass_rate(tmp_path):
    result = compare(SAMPLES / "seed-repeat3", SAMPLES / "seed-failed")
    (test,) = result.tests
    assert (test.pass_rates.passed_a, test.pass_rates.passed_b) == (3, 0)
    assert test.pass_rates.p_value == pytest.approx(0.25)  # too few runs to call it
    assert all(m.verdict == "not compared: no values in B" for m in test.metrics)
    assert table(result)[0].startswith(f"{SEED}: passed A 3/3, B 0/1")


def _runs(tmp_path: Path, name: str, suspend_s: list[float]) -> Path:
    """A folder of recorded runs whose suspend_s are the given ones."""
    side = tmp_path / name
    for number, value in enumerate(suspend_s, 1):
        run = Path(shutil.copytree(SAMPLES / "seed-passed", side / f"run{number}"))
        metrics_file = next(run.glob("*/metrics.json"))
        metrics = json.loads(metrics_file.read_text())
        metrics["suspend_s"] = value
        metrics_file.write_text(json.dumps(metrics))
    return side


def test_the_command_exits_1_on_a_regression_and_writes_json_and_a_page(tmp_path, capsys):
    # Eight runs a side: enough for a p-value that survives the adjustment for 15 metrics.
    a = _runs(tmp_path, "a", [0.40, 0.42, 0.41, 0.43, 0.40, 0.42, 0.41, 0.43])
    b = _runs(tmp_path, "b", [0.80, 0.84, 0.82, 0.86, 0.81, 0.83, 0.85, 0.80])
    assert cli.main(["compare", str(a), str(b), "--output", str(tmp_path / "out")]) == 1
    out = capsys.readouterr().out
    assert f"B regressed: {SEED}: suspend_s slower" in out
    data = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert data["regressions"] == [f"{SEED}: suspend_s slower"]
    page = (tmp_path / "out" / "compare.html").read_text()
    assert "<svg" in page and "suspend_s" in page and "<script" not in page
    assert cli.main(["compare", str(a), str(a), "--metrics", "suspend_s,restore_s",
                     "--output", str(tmp_path / "aa")]) == 0


def test_the_command_says_what_it_needs(tmp_path, capsys):
    usage_error = ExitStatus.USAGE_ERROR
    assert cli.main(["compare", str(tmp_path), str(SAMPLES / "seed-passed")]) == usage_error
    assert "holds no run's results" in capsys.readouterr().err
    assert cli.main(["compare", "a", "b", "--threshold", "5"]) == usage_error
    assert "'5' is not a number between 0 and 1" in capsys.readouterr().err


def test_runs_alternate_and_a_side_is_its_options():
    a = ab.Side("a", ab.side_options("--memory 512M", {"bhyve": "/opt/a/bhyve"}))
    b = ab.Side("b", ab.side_options("", {"qemu_binary": "/opt/b/qemu"}))
    assert a.options == ("--bhyve", "/opt/a/bhyve", "--memory", "512M")
    assert b.options == ("--qemu-binary", "/opt/b/qemu")
    assert [s.name for s in ab.plan(a, b, 3)] == ["a", "b", "a", "b", "a", "b"]
    with pytest.raises(ConfigError, match="at least 2 runs per side"):
        ab.plan(a, b, 1)


INNER = """
    import pytest

    pytestmark = pytest.mark.scenario

    def test_inner(scenario, test_results):
        test_results.metrics["suspended_s"] = scenario.suspended_for_s
        test_results.metrics["boot_to_ssh_s"] = 12.0
"""


def test_ab_runs_both_sides_interleaved_and_finds_the_one_difference(tmp_path, capsys,
                                                                     monkeypatch):
    """Five runs a side of a test without a VM whose 'suspended_s' is the option's value:
    B's longer --suspended-for is found, and the constant boot_to_ssh_s is not."""
    monkeypatch.setenv("BHYVE_SNAPTEST_STATE", str(tmp_path / "state"))
    test = tmp_path / "test_inner.py"
    test.write_text("\n".join(line[4:] for line in INNER.splitlines()))
    output = tmp_path / "ab"
    status = cli.main(["ab", "--a", "--suspended-for 5", "--b", "--suspended-for 6",
                       "--repeat", "5", "--tests", str(test), "--output", str(output),
                       "-p", "bhyve_snaptest.plugin", "-p", "bhyve_snaptest.report.terminal",
                       "--rootdir", str(tmp_path), "-c", str(tmp_path / "pytest.ini")])
    out = capsys.readouterr().out
    assert status == 1, out
    assert [line.split(",")[1].strip()[:6] for line in out.splitlines()
            if line.startswith("ab: run ") and line.endswith("s") and "passed" in line] == \
        ["side A", "side B"] * 5
    data = json.loads((output / "compare.json").read_text())
    assert data["regressions"] == ["test_inner.py::test_inner: suspended_s slower"]
    verdicts = {m["metric"]: m["verdict"] for m in data["tests"][0]["metrics"]}
    assert verdicts["boot_to_ssh_s"] == NO_CHANGE
    assert len([p for p in (output / "a").glob("*/junit.xml") if not p.parent.is_symlink()]) == 5


@pytest.fixture(autouse=True)
def _inner_ini(tmp_path):
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    scenario: VMs\n")
    assert sys.executable  # the children run with this interpreter
