"""Loads the harness plugin for every test in this repository."""

pytest_plugins = [
    # fixtures.plugin imports fixtures.matrix: registered first, pytest can still rewrite
    # its asserts.
    "fixtures.matrix",
    "fixtures.plugin",
    "fixtures.repeat",
    "fixtures.report.terminal",
    "fixtures.shard",
]
