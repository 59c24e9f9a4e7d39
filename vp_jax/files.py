"""Atomic file writes: a reader (or a resumed job) never sees a half-written file.

    with atomic_open('/run/eval/results.json') as f:
        json.dump(results, f)

The data goes to a temporary file beside the target, which replaces the target only when
the block finishes without an exception; otherwise the temporary file is removed and the
target is left as it was. Missing parent directories are created.
"""
from __future__ import annotations

import contextlib
import os
from typing import IO, Iterator


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w") -> Iterator[IO]:
    """A file object opened with `mode` ('w' or 'wb') whose contents become `path` on success."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open: mode must be 'w' or 'wb', got {mode!r}")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, mode) as f:
            yield f
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
