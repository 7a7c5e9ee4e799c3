"""Loads the harness plugin for every test in this repository."""

pytest_plugins = ["fixtures.plugin", "fixtures.repeat", "fixtures.report.terminal"]
