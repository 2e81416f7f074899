"""Fixtures for root tests: a real lab (see lab_fixture.py for the handle's shape)."""

from lab_fixture import lab, lab_factory  # noqa: F401  (pytest fixtures)
