"""Fixtures of every test: a kernel cache of the session's own, the repository's root.

Shared helpers (random networks, the torch and SymPy references) are the package
tests/helpers, importable as `helpers` through pyproject.toml's pytest `pythonpath`."""
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True, scope="session")
def _isolated_kernel_cache(tmp_path_factory):
    """Kernels generated on demand during the tests go to a temporary cache, not the user's."""
    if "FEYNMLP_CACHE_DIR" not in os.environ:
        os.environ["FEYNMLP_CACHE_DIR"] = str(tmp_path_factory.mktemp("kernel-cache"))
    yield


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture
def cli_main():
    """feynmlp.cli.main, the `feynmlp` command as a function of its arguments."""
    import feynmlp.cli as cli

    return cli.main
