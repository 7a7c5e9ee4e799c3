"""Fixtures of the scenarios about the harness itself (tests/scenarios/innerruns.py)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from innerruns import FaultLab, HarnessWatch, forwarded_options

from bhyve_snaptest.config import GuestImage
from bhyve_snaptest.drivers.base import HypervisorDriver
from bhyve_snaptest.options import ScenarioOptions


@pytest.fixture
def lab(tmp_path: Path, pytestconfig: pytest.Config, scenario: ScenarioOptions,
        hypervisor: HypervisorDriver, guest_image: GuestImage) -> Iterator[FaultLab]:
    """A place for inner runs; ``hypervisor`` and ``guest_image`` make the case skip, with
    the reason, on a host that cannot boot VMs, instead of failing inside the inner run.

    The state directory is a short one under the system's temporary directory, not in
    tmp_path: hypervisor control sockets live in the run's scratch directory, and AF_UNIX
    socket paths are limited to 104-108 bytes, which tmp_path plus the run and VM directory
    names exceeds.
    """
    state_dir = Path(tempfile.mkdtemp(prefix="sf-")).resolve()
    lab = FaultLab(tmp_path, state_dir, forwarded_options(pytestconfig, scenario),
                   HarnessWatch(state_dir))
    try:
        yield lab
    finally:
        lab.close()
