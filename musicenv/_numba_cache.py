"""Keep numba's on-disk cache honest.

numba keys a cached function by its own file's timestamp only, so a compiled kernel
that calls kernels from other modules (the fused reward kernel) or bakes in
musicenv.theory's tables keeps stale machine code after an edit elsewhere. A stamp
over every source of the packages that hold kernels guards that: when it changes,
their cached ``.nbi``/``.nbc`` files are deleted. In an installed, unchanged package
it costs one hash of a few files at the first env creation.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

_DONE = False


def drop_stale_numba_cache() -> None:
    global _DONE
    if _DONE:
        return
    _DONE = True
    root = Path(__file__).resolve().parent.parent
    dirs = [root / "musicenv", root / "musicenv" / "envs", root / "rewards"]
    sources = sorted(p for d in dirs for p in d.glob("*.py"))
    digest = hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in sources)).hexdigest()
    stamp = root / "musicenv" / "__pycache__" / "numba_sources.stamp"
    try:
        if stamp.exists() and stamp.read_text() == digest:
            return
        for d in dirs:
            for f in list((d / "__pycache__").glob("*.nbi")) + list((d / "__pycache__").glob("*.nbc")):
                f.unlink(missing_ok=True)
        stamp.parent.mkdir(exist_ok=True)
        stamp.write_text(digest)
    except OSError:  # read-only install: numba then compiles in memory
        pass
