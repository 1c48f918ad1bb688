"""The C load client (``upper_client.c``, shipped next to this module): build
it, and read its result line.

``greenline bench`` and the scripts in ``bench/`` drive the echo-upper
servers with it so that the client's own cost is small and fixed: a Python
client on the same cores takes CPU from the server and shapes its batches.
It is compiled on first use with the system's C compiler (``$CC``, else
``cc``, ``gcc`` or ``clang``) into a cache directory, under a name that
carries a hash of the source, so a changed source is rebuilt and an
unchanged one is not.  Without a compiler, :func:`build_client` returns
``None`` and a one-line note saying so.

Only the standard library: ``bench/`` scripts load this file by path, on
any Python, without importing greenline.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["SOURCE", "NAME", "build_client", "cache_dir", "parse_result"]

SOURCE = Path(__file__).resolve().with_name("upper_client.c")
NAME = "upper_client"


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/greenline`` (``~/.cache/greenline``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "greenline"


def _compiler() -> list[str] | None:
    cc = os.environ.get("CC")
    if cc:
        argv = shlex.split(cc)
        return argv if argv and shutil.which(argv[0]) else None
    for name in ("cc", "gcc", "clang"):
        path = shutil.which(name)
        if path:
            return [path]
    return None


def build_client(directory: Path | None = None, source: Path = SOURCE) -> tuple[Path | None, str]:
    """Compile the C client (once per version of its source) into
    ``directory`` (default :func:`cache_dir`, else a temporary directory if
    that is not writable).  Returns ``(executable, "")``, or ``(None, note)``
    with a one-line note when there is no compiler or it fails."""
    try:
        text = source.read_bytes()
    except OSError as e:
        return None, f"the C client's source is missing ({source}: {e.strerror})"
    cc = _compiler()
    if cc is None:
        what = f"$CC ({os.environ['CC']}) not found" if os.environ.get("CC") else "no C compiler (cc, gcc, clang)"
        return None, f"{what}: the C client is not available"
    digest = hashlib.sha256(text + " ".join(cc).encode()).hexdigest()[:12]
    for out_dir in (directory or cache_dir(), Path(tempfile.gettempdir()) / f"greenline-{os.getuid()}"):
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        exe = out_dir / f"{NAME}-{digest}"
        if exe.exists() and os.access(exe, os.X_OK):
            return exe, ""
        # Compile to a private name and rename: two builds at once never
        # see each other's half-written file.
        fd, tmp = tempfile.mkstemp(prefix=f".{NAME}-", dir=out_dir)
        os.close(fd)
        try:
            r = subprocess.run([*cc, "-O2", "-o", tmp, str(source)], capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as e:
            os.unlink(tmp)
            return None, f"the C client did not compile ({cc[0]}): {e}"
        if r.returncode != 0:
            os.unlink(tmp)
            first = next((ln for ln in r.stderr.splitlines() if "error" in ln), r.stderr.strip()[:200])
            return None, f"the C client did not compile ({cc[0]}): {first.strip()}"
        os.replace(tmp, exe)
        return exe, ""
    return None, f"no writable directory to build the C client in ({directory or cache_dir()})"


def parse_result(line: str) -> dict[str, float]:
    """``result k=v k=v ...`` -> ``{k: float(v)}``; empty if not a result line."""
    if not line.startswith("result "):
        return {}
    out = {}
    for kv in line.split()[1:]:
        k, _, v = kv.partition("=")
        try:
            out[k] = float(v)
        except ValueError:
            continue
    return out
