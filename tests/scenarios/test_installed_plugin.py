"""The plugin in a test suite of someone else's: installed from a clone into a fresh
virtual environment, beside PyPI's own ``fixtures`` distribution, running the README's
example scenario (examples/test_my_scenario.py) from a folder outside the checkout.

pip resolves the harness's dependencies from PyPI as any user's ``pip install`` does (not
from requirements.lock): this is what someone installing the harness gets.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from bhyve_snaptest import REPO_ROOT
from bhyve_snaptest.options import ScenarioOptions

pytestmark = [pytest.mark.scenario, pytest.mark.selftest, pytest.mark.hypervisor("qemu")]

EXAMPLE = REPO_ROOT / "examples" / "test_my_scenario.py"
#: What a copy of the checkout leaves out: environments, results, built images, git.
NOT_COPIED = shutil.ignore_patterns(".venv", ".git", ".tox", "results", "cache", "*.egg-info",
                                    "__pycache__", "build")
PIP_S = 900.0


def run(argv: list[str | Path], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """``argv``, its output kept for the failure message; fails the test on a non-zero exit."""
    done = subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                          check=False, **kwargs)
    assert done.returncode == 0, f"{' '.join(map(str, argv))}:\n{done.stdout}\n{done.stderr}"
    return done


def test_the_example_scenario_runs_from_a_fresh_environment_beside_pypis_fixtures(
        tmp_path: Path, scenario: ScenarioOptions, guest_image: object) -> None:
    clone = tmp_path / "clone"
    shutil.copytree(REPO_ROOT, clone, ignore=NOT_COPIED, symlinks=True)
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", venv])
    python = venv / "bin" / "python"
    run([python, "-m", "pip", "install", "-q", clone], timeout=PIP_S)
    run([python, "-m", "pip", "install", "-q", "fixtures"], timeout=PIP_S)
    # Both import names stay apart: PyPI's fixtures and the harness's bhyve_snaptest.
    run([python, "-c", "import fixtures, bhyve_snaptest.plugin; fixtures.Fixture"])

    suite = tmp_path / "my-suite"
    suite.mkdir()
    shutil.copy(EXAMPLE, suite)
    results = tmp_path / "results"
    env = {**os.environ, "BHYVE_SNAPTEST_CACHE": str(scenario.image.parent)}
    env.pop("PYTEST_ADDOPTS", None)
    done = run([python, "-m", "pytest", "-p", "no:cacheprovider", "--strict-markers",
                "--hypervisor", "qemu", "--copy-size", "128M", "--results-dir", results,
                "--image", scenario.image, suite / EXAMPLE.name],
               cwd=suite, env=env, timeout=scenario.boot_timeout_s + 1200)
    assert "1 passed" in done.stdout, done.stdout
    [case] = ET.parse(results / "latest" / "junit.xml").getroot().iter("testcase")
    assert case.get("name") == "test_a_guest_suspended_for_ten_seconds_keeps_its_workloads"
    assert case.find("failure") is None and case.find("error") is None
