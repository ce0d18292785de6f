"""The test suite (see tests/conftest.py for the servers it starts)."""
