"""Shared pytest setup: markers only. Tests that need several CPU devices set
XLA_FLAGS themselves (in a subprocess or before importing jax in their module)."""


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: end-to-end tests that take minutes; run with -m slow")
    config.addinivalue_line("markers", "ci: a slow test the default run (and so CI) still includes "
                            "(pytest.ini: -m 'not slow or ci')")
