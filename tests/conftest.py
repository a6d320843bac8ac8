import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import pytest


@pytest.fixture(autouse=True)
def _isolated_longlm_cache(request, tmp_path_factory, monkeypatch):
    """Every test gets its own LONGLM_CACHE_DIR, except the embedded-model test, which uses the real user cache."""
    if request.module.__name__.rsplit(".", 1)[-1] == "test_embedded_model":
        return
    monkeypatch.setenv("LONGLM_CACHE_DIR", str(tmp_path_factory.mktemp("longlm-cache")))
    monkeypatch.delenv("LONGLM_CACHE_MAX_BYTES", raising=False)
