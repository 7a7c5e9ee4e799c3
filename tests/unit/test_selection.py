"""What a nightly run selects: the product's scenarios, without the harness's self-tests.

A nightly job on a pool of FreeBSD hosts asks whether bhyve works, so it runs
``-m "scenario and not selftest"``; CI runs both (README, "Choosing what runs").
"""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: Scenarios about the hypervisor: what bhyve must do.
PRODUCT = {"test_suspend_restore.py", "test_repeated_cycles.py", "test_live_checkpoint.py",
           "test_bad_checkpoints.py", "test_failed_suspends.py", "test_cross_build_restore.py",
           "test_capsicum.py"}
#: Scenarios about the harness: what it does under faults, for reports and for its guest.
SELFTEST = {"test_harness_faults.py", "test_ssh_drops.py", "test_concurrent_runs.py",
            "test_report_page.py", "test_config_drive.py", "test_parallel_vms.py",
            "test_installed_plugin.py"}


def collected_files(marker: str, *options: str) -> set[str]:
    """The scenario files whose tests pytest collects for ``-m marker``."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         "-m", marker, *options, "tests/scenarios"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return {line.split("::", 1)[0].rsplit("/", 1)[-1] for line in done.stdout.splitlines()
            if "::" in line}


def test_every_scenario_file_is_product_or_selftest():
    files = {p.name for p in (REPO / "tests" / "scenarios").glob("test_*.py")}
    assert files == PRODUCT | SELFTEST
    assert not PRODUCT & SELFTEST


def test_the_nightly_selection_collects_the_product_scenarios_only():
    # Capsicum's tests need real bhyve on FreeBSD: deselected here under either driver.
    assert collected_files("scenario and not selftest") == PRODUCT - {"test_capsicum.py"}
    assert collected_files("scenario and not selftest", "--hypervisor", "bhyve") == \
        PRODUCT - {"test_capsicum.py"}


def test_the_self_tests_are_selected_apart():
    assert collected_files("scenario and selftest") == SELFTEST
