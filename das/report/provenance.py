"""What a benchmark result records about the run that produced it: machine, code and time.

Proxy scores and timings depend on the CPU, the thread count, the library versions and the
proxy code (uncommitted edits included), so every result carries these alongside its numbers.
``set_threads`` lives here because the thread count it returns is part of that record.
"""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from das.errors import DasError


def machine_info() -> dict[str, Any]:
    """CPU model, core count, OS and library versions, for the settings block of a result."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu or platform.machine(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def code_version() -> dict[str, Any]:
    """The git commit of the checkout, whether it had local changes, and a digest of das's sources.

    Scores depend on the proxy code, so a result names the code that produced it, including
    uncommitted edits (the digest covers every ``das/**/*.py`` as it was when the run started).
    """
    import hashlib
    import subprocess

    root = Path(__file__).resolve().parents[2]
    digest = hashlib.sha256()
    for path in sorted((root / "das").rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    info: dict[str, Any] = {"das_sources_sha256": digest.hexdigest()[:16]}
    try:
        git = lambda *a: subprocess.run(["git", "-C", str(root), *a], capture_output=True, text=True, timeout=10).stdout.strip()  # noqa: E731
        info["git_commit"] = git("rev-parse", "--short", "HEAD") or None
        info["git_dirty"] = bool(git("status", "--porcelain", "--", "das", "teachers"))
    except (OSError, subprocess.SubprocessError):
        info["git_commit"] = None
    return info


def now_iso() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


def set_threads(threads: int) -> int:
    if threads < 1:
        raise DasError(f"--threads {threads} must be at least 1")
    torch.set_num_threads(threads)
    return torch.get_num_threads()
