"""Stand-ins of bhyve and procstat (not the real programs, and running no guest), and the
emulated bhyvectl they share with the emulated bhyve, run as executables."""

import sys
from pathlib import Path

DIRECTORY = Path(__file__).parent
#: Where each program's source is: bhyvectl is the emulation's own (it has no guest to fake).
PROGRAMS = {"bhyve": DIRECTORY / "bhyve.py", "procstat": DIRECTORY / "procstat.py",
            "bhyvectl": DIRECTORY.parents[2] / "fixtures" / "bhyve_snaptest" / "emulated_bhyve"
            / "bhyvectl.py"}


def executable(directory: Path, name: str) -> str:
    """A shell wrapper in ``directory`` that runs the stand-in ``name``; its path."""
    wrapper = directory / name
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} {PROGRAMS[name]} "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)
