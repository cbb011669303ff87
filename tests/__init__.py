"""The aidlink test suite."""
