"""Stand-ins of bhyve, bhyvectl and procstat (not the real programs), run as executables."""

import sys
from pathlib import Path

DIRECTORY = Path(__file__).parent


def executable(directory: Path, name: str) -> str:
    """A shell wrapper in ``directory`` that runs the stand-in ``name``; its path."""
    wrapper = directory / name
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} {DIRECTORY / name}.py "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)
