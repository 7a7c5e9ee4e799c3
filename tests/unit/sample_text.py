"""Reading the upstream-format samples in tests/unit/samples/.

Each sample starts with '#' lines naming the upstream source whose format it follows;
``sample`` returns the rest, i.e. what the program itself printed.
"""

import itertools
from pathlib import Path

SAMPLES = Path(__file__).parent / "samples"


def sample(name: str) -> str:
    lines = (SAMPLES / name).read_text().splitlines(keepends=True)
    return "".join(itertools.dropwhile(lambda line: line.startswith("#"), lines))
