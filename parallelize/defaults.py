"""Option defaults and where parallelize keeps its files: one home, importing nothing heavy.

The CLI reads its flag defaults from here and the engine its fallbacks, so a default is written
once; `--help` imports this module, so it stays standard-library only.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_TIMEOUT = 300.0


DEFAULT_CONCURRENCY = 8


DEFAULT_MAX_RETRIES = 6


#: Stands for the model the server will choose, in plans made before it is asked.
UNKNOWN_MODEL = "(default model)"
CACHE_ENV = "PARALLELIZE_CACHE_DIR"


def default_cache_dir() -> Path:
    """PARALLELIZE_CACHE_DIR, else the user cache directory of this platform."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("parallelize", appauthor=False))
