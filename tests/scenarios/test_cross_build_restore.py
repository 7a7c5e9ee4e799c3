"""Cross-build restore (--restore-with): a checkpoint written by one build of the
hypervisor, restored by another. Bhyve developers ask it of every snapshot patch: can the
new bhyve restore what the old one saved, and the other way round?

The seed scenario runs across builds in an inner run: the build under test boots and
suspends, the other restores (--restore-with, or, without it, a stand-in for another build:
a wrapper that execs the same program). A build that cannot read the checkpoint must fail
the restore with its own words: never a hang, never a guest booted afresh, nothing left.
"""

import os
import re
import shutil
from pathlib import Path

import pytest
from innerruns import SEED_SCENARIO, TEARDOWN_S, assert_nothing_left

from bhyve_snaptest.drivers import get_driver

pytestmark = pytest.mark.scenario

#: The commands.log line of a restore (the hypervisor's command line is recorded as run).
RESTORE_LINE = re.compile(r"^\S+ (?P<program>\S+) .*(?:-incoming defer| -r \S+ \S+)$",
                          re.MULTILINE)


def other_build(directory: Path, program: str, *, replace: tuple[str, str] | None = None,
                comment: str) -> Path:
    """A stand-in for another build of ``program``: an executable of the same name (bhyve
    titles its process with its program's name) that execs it with the same arguments,
    or with the argument ``replace[0]`` replaced by ``replace[1]``."""
    real = shutil.which(program)
    assert real is not None, f"{program} is not on PATH"
    directory.mkdir(parents=True)
    wrapper = directory / Path(program).name
    edit = (f'for arg do shift; [ "$arg" = {replace[0]} ] && arg={replace[1]}; '
            f'set -- "$@" "$arg"; done\n') if replace else ""
    wrapper.write_text(f"#!/bin/sh\n# {comment}\n{edit}exec {real} \"$@\"\n")
    wrapper.chmod(0o755)
    return wrapper


def restore_programs(commands_log: str) -> list[str]:
    return [m["program"] for m in RESTORE_LINE.finditer(commands_log)]


def inner_program(lab, scenario, monkeypatch) -> str:
    """The hypervisor executable the inner run's driver boots with (the emulated bhyve is
    installed per state directory, with that directory's paths in it)."""
    with monkeypatch.context() as env:
        env.setenv("BHYVE_SNAPTEST_STATE", str(lab.state_dir))
        return get_driver(scenario.hypervisor, scenario.host).program


def test_the_seed_scenario_passes_across_builds(lab, scenario, tmp_path, monkeypatch):
    """Boot and suspend with the build under test, restore with the other: PASS."""
    other = scenario.host.restore_with or str(other_build(
        tmp_path / "other-build", inner_program(lab, scenario, monkeypatch),
        comment="a stand-in for another build: the same program"))
    run = lab.start("across", SEED_SCENARIO, "--restore-with", other)
    status = run.wait_exit(scenario.boot_timeout_s + 4 * scenario.step_timeout_s, lab.watch)
    assert status == pytest.ExitCode.OK, f"the seed across builds failed:\n{run.output_tail()}"
    assert restore_programs(run.commands_log()) == [other], \
        "the restore did not run the other build"
    provenance = (run.results_dir / "latest" / "provenance.json").read_text()
    assert other in provenance, "the results do not name the restoring build"


@pytest.mark.hypervisor("qemu")
def test_a_build_that_cannot_read_the_checkpoint_fails_the_restore_in_its_words(
        lab, scenario, tmp_path, monkeypatch):
    """QEMU with the i440fx machine instead of q35 refuses a q35 migration stream: the
    restore fails with QEMU's message, promptly, and the run leaves nothing behind."""
    other = other_build(tmp_path / "i440fx-build", inner_program(lab, scenario, monkeypatch),
                        replace=("q35", "pc"),
                        comment="another build: the same QEMU with the i440fx machine")
    run = lab.start("refused", SEED_SCENARIO, "--restore-with", str(other), "--tb=short")
    status = run.wait_exit(scenario.boot_timeout_s + 3 * scenario.step_timeout_s + TEARDOWN_S,
                           lab.watch)
    output = run.output()
    assert status == pytest.ExitCode.TESTS_FAILED, f"exit {status}:\n{run.output_tail()}"
    error = next((line for line in output.splitlines()
                  if "RestoreError: qemu restore failed:" in line), "")
    assert "load of migration failed" in error, \
        f"the RestoreError does not give QEMU's own words:\n{run.output_tail(60)}"
    assert restore_programs(run.commands_log()) == [str(other)]
    assert os.path.getsize(run.results_dir / "latest" / "junit.xml") > 0
    assert_nothing_left(lab.watch, "after the refused restore")
