"""Session fixtures for real components that several suites share (one instance each)."""

pytest_plugins = ("tests.fixtures.seaweedfs",)
