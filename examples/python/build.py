"""Generates the CP-IS Python client from proto/ with grpcio-tools (no system protoc).

Writes the stubs into examples/python/generated/ (git-ignored). Run it after the contracts
change; council_client.py runs it by itself when the stubs are missing or older than proto/.
Several clients started at once on a fresh checkout build once: the build holds a lock
(generated.lock beside it), and the others wait for it and use its stubs.

    python examples/python/build.py
"""

import fcntl
import pathlib
import shutil
import sys

from grpc_tools import protoc

HERE = pathlib.Path(__file__).resolve().parent
PROTO = HERE.parents[1] / "proto"
OUT = HERE / "generated"
LOCK = HERE / "generated.lock"


def sources() -> list[str]:
    files = sorted(str(p.relative_to(PROTO)) for p in (PROTO / "cpis").rglob("*.proto"))
    return files + ["google/type/date.proto", "google/rpc/error_details.proto", "google/rpc/status.proto"]


def stale() -> bool:
    stamp = OUT / ".built"
    if not stamp.exists():
        return True
    built = stamp.stat().st_mtime
    return any((PROTO / f).stat().st_mtime > built for f in sources())


def build() -> pathlib.Path:
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    well_known = pathlib.Path(protoc.__file__).parent / "_proto"
    args = ["protoc", f"-I{PROTO}", f"-I{well_known}", f"--python_out={OUT}", f"--grpc_python_out={OUT}", *sources()]
    if protoc.main(args) != 0:
        sys.exit("protoc failed")
    (OUT / ".built").touch()
    return OUT


def ensure() -> pathlib.Path:
    """Builds when needed (one process at a time) and puts the stubs on sys.path."""
    with open(LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        # Checked under the lock: another client may have just built them.
        if stale():
            build()
    if str(OUT) not in sys.path:
        sys.path.insert(0, str(OUT))
    return OUT


if __name__ == "__main__":
    print(f"generated the CP-IS client in {build()}")
