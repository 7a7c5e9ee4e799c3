"""Loads the harness plugin for every test in this repository."""

pytest_plugins = [
    "fixtures.plugin",  # and fixtures.matrix, which it names in its pytest_plugins
    "fixtures.repeat",
    "fixtures.report.terminal",
    "fixtures.shard",
    "fixtures.expected",  # expected-failures.toml
]
