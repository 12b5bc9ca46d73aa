"""Inference tests run with torch unavailable: importing it raises ImportError."""

import sys

import pytest


@pytest.fixture(autouse=True)
def no_torch(monkeypatch):
    for name in [m for m in sys.modules if m == "torch" or m.startswith("torch.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "torch", None)
