"""Shared pytest configuration."""

from __future__ import annotations


def pytest_addoption(parser):
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="regenerate generated/ (as `derivgen generate` does) instead of failing when "
        "it differs from a fresh generation",
    )
