"""The training tests' marker: ``slow`` (runs that start processes; ``-m "not slow"``
leaves them out)."""

from __future__ import annotations


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: starts processes (deselect with -m 'not slow')")
