"""Options are checked once, before any VM: a bad value is one usage error naming it."""

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from bhyve_snaptest.errors import ConfigError
from bhyve_snaptest.options import add_options, scenario_options

PROJECT = Path(__file__).resolve().parents[2]


def _options(*argv: str):
    parser = argparse.ArgumentParser()
    add_options(parser.add_argument)
    return scenario_options(parser.parse_args(list(argv)).__getattribute__)


def test_the_defaults_are_valid():
    options = _options()
    assert options.cpus == 1 and options.memory_mb == 256


@pytest.mark.parametrize(("argv", "message"), [
    (["--cpus", "0"], r"bad vCPU count 0 \(--cpus\)"),
    (["--memory", "32M"], r"bad memory size 32 MB \(--memory\)"),
    (["--memory-share", "0.9"], "bad memory share 0.9"),
    (["--memory-share", "0"], "bad memory share 0"),
    (["--copy-share-before-suspend", "1.5"], "bad copy share before suspend 1.5"),
    (["--copy-size", "1500K"], "use whole MiB"),
    (["--hypervisor", "bhyve", "--disk-model", "nvme"], "no pe_snapshot in"),
    (["--ping-count", "10"], r"10 s cannot span a suspend.*--suspended-for 5 s plus 20 s"),
    (["--suspended-for", "60"], r"40 s cannot span a suspend"),
])
def test_a_bad_value_names_the_option_and_what_it_accepts(argv, message):
    with pytest.raises(ConfigError, match=message):
        _options(*argv)


def test_nvme_is_refused_for_bhyve_only():
    assert _options("--hypervisor", "qemu", "--disk-model", "nvme").disk_model == "nvme"


def test_pytest_reports_a_bad_value_once_as_a_usage_error(tmp_path):
    """Not an error in every test, with a traceback each."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--cpus", "0",
         "--results-dir", str(tmp_path), str(PROJECT / "tests/unit/test_damage.py")],
        cwd=PROJECT, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, result.stdout + result.stderr
    assert result.stderr.count("bad vCPU count 0 (--cpus): at least 1") == 1
    assert "Traceback" not in result.stdout + result.stderr
