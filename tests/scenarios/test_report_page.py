"""The report page of a real seed-scenario run, as a browser shows it.

An inner run of the seed scenario writes its results/<run id>/report.html; headless
Chromium loads that page: it must load without an error in the console, fetch nothing
(everything is inline), draw its plots at a readable size, and a screenshot of it goes into
this test's results (report.png) for a person to look at.
"""

import pytest
from innerruns import SEED_SCENARIO

from bhyve_snaptest.config import MiB
from bhyve_snaptest.errors import PrerequisiteMissing
from bhyve_snaptest.report.browser import check_page, require_browser
from bhyve_snaptest.report.page import REPORT_FILE

pytestmark = [pytest.mark.scenario, pytest.mark.selftest]

#: The seed run's page draws two plots: phases with the workloads, and the ping.
SEED_PLOTS = 2
#: Smaller than this, a plot is not readable on the page.
MIN_PLOT_PX = (400.0, 120.0)


def test_the_report_page_of_a_seed_run_loads_in_a_browser(lab, scenario, test_results):
    """The page loads, fetches nothing, shows the verdict and both plots at a usable size."""
    try:
        require_browser()
    except PrerequisiteMissing as exc:
        pytest.skip(str(exc))
    run = lab.start("seed", SEED_SCENARIO, "--copy-size",
                    f"{scenario.copy_size_bytes // MiB}M")
    status = run.wait_exit(scenario.boot_timeout_s + 4 * scenario.step_timeout_s, lab.watch)
    assert status == pytest.ExitCode.OK, f"the seed run failed:\n{run.output_tail()}"
    page = (run.results_dir / "latest").resolve() / REPORT_FILE
    assert page.is_file(), f"the seed run wrote no {page}:\n{run.output_tail()}"
    assert f"bhyve-snaptest report: {page}" in run.output(), \
        "the run's terminal summary does not name its report page"

    seen = check_page(page, test_results.directory / "report.png")
    test_results.metrics["page"] = {"title": seen.title, "height_px": seen.height_px,
                                    "svg_sizes": seen.svg_sizes}
    assert seen.ready_state == "complete"
    assert seen.console_errors == [], "the browser's console has errors"
    assert seen.fetched == [], "the page fetched files; it must be self-contained"
    assert "1 passed" in seen.title, f"the title does not give the verdict: {seen.title!r}"
    assert seen.failures_banner == "", "a passed run's page shows failures"
    assert len(seen.svg_sizes) == SEED_PLOTS, f"plots drawn: {seen.svg_sizes}"
    for width, height in seen.svg_sizes:
        assert width >= MIN_PLOT_PX[0] and height >= MIN_PLOT_PX[1], \
            f"a plot is drawn at {width:.0f}x{height:.0f} px"
    assert seen.screenshot is not None and seen.screenshot.stat().st_size > 10_000
