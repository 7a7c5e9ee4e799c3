"""Reading the upstream-format samples in tests/unit/samples/ (and the usage texts the
emulated bhyve prints, in fixtures/bhyve_snaptest/emulated_bhyve/usage/).

Each sample starts with '#' lines naming the upstream source whose format it follows;
``sample`` returns the rest, i.e. what the program itself printed.
"""

import itertools
from pathlib import Path

from bhyve_snaptest.emulated_bhyve.upstream import USAGE_DIR

SAMPLES = Path(__file__).parent / "samples"


def sample(name: str) -> str:
    path = SAMPLES / name if (SAMPLES / name).exists() else USAGE_DIR / name
    lines = path.read_text().splitlines(keepends=True)
    return "".join(itertools.dropwhile(lambda line: line.startswith("#"), lines))
