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
    parser.addoption(
        "--fuzz-long",
        type=int,
        default=0,
        help="run this many fresh fuzz examples through both backends in full",
    )
    parser.addoption("--fuzz-seed", type=int, default=1, help="the long fuzz run's seed")
    parser.addoption(
        "--fuzz-summary",
        default="fuzz-summary.json",
        help="where the long fuzz run writes its summary",
    )
