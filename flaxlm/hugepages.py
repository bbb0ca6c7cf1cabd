"""Transparent huge pages for the host memory of a training process (glibc's malloc, Linux).

XLA:CPU allocates a step's temporary buffers as one block and frees it when the step ends; glibc
serves a block that large with a fresh `mmap` and returns it with `munmap`, so every step faults
its scratch memory in again, 4 KiB at a time: 52,000 page faults a step for BERT-tiny (0.1 s of
kernel time in a 0.18 s step on a 2-core AMD EPYC), a million for GPT-2 small at seq 256, batch 8
(1.7 s of kernel time in 6.3 s). glibc's `glibc.malloc.hugetlb=1` tunable (glibc >= 2.35) asks
for transparent huge pages (`madvise(MADV_HUGEPAGE)`) on the memory malloc maps, 2 MiB a fault:
on that CPU BERT-tiny's step took 0.12 s instead of 0.18 and GPT-2 small's 5.1 s instead of 6.3,
with peak memory within 3% (docs/performance.md, "Huge pages"). Accelerator memory is not malloc's;
there it only speeds up the host side.

glibc reads its tunables once, when the process starts, so the `flaxlm` command starts itself
again with the tunable added to GLIBC_TUNABLES (`reexec`), before it imports JAX. Set
FLAXLM_HUGEPAGES=0 to keep glibc's defaults. Python code that imports flaxlm as a library runs in
whatever process it is: start that process with GLIBC_TUNABLES=glibc.malloc.hugetlb=1 to get the
same (`environment`).
"""

import os
import sys

TUNABLE = "glibc.malloc.hugetlb=1"
OPT_OUT = "FLAXLM_HUGEPAGES"  # "0": the command keeps glibc's defaults
THP_SETTING = "/sys/kernel/mm/transparent_hugepage/enabled"


def glibc_version() -> tuple[int, int] | None:
    """(major, minor) of the C library if it is glibc, else None (musl, macOS, Windows)."""
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()
    except (AttributeError, ValueError, OSError):  # no confstr, or not glibc
        return None
    if name != "glibc":
        return None
    try:
        major, minor = version.split(".")[:2]
        return int(major), int(minor)
    except ValueError:
        return None


def thp_mode(path: str = THP_SETTING) -> str | None:
    """The kernel's transparent huge page mode ("always", "madvise" or "never"), None if unknown."""
    try:
        with open(path, encoding="ascii") as f:
            setting = f.read()
    except OSError:
        return None
    start, end = setting.find("["), setting.find("]")
    return setting[start + 1 : end] if 0 <= start < end else None


THIS_MACHINE = "this machine"  # environment()'s default: read glibc's version and the THP mode here


def environment(environ, glibc=THIS_MACHINE, thp=THIS_MACHINE) -> dict | None:
    """A copy of `environ` with glibc's huge-page tunable added to GLIBC_TUNABLES, or None when there
    is nothing to add: FLAXLM_HUGEPAGES=0, the tunable (any glibc.malloc.hugetlb value) already set,
    not glibc 2.35 or later, or a kernel whose huge pages are off or unknown. `glibc` ((major, minor)
    or None) and `thp` (a mode or None) default to this machine's (`glibc_version`, `thp_mode`)."""
    if environ.get(OPT_OUT, "1") == "0":
        return None
    tunables = environ.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.hugetlb=" in tunables:
        return None
    glibc = glibc_version() if glibc == THIS_MACHINE else glibc
    thp = thp_mode() if thp == THIS_MACHINE else thp
    if glibc is None or glibc < (2, 35) or thp not in ("always", "madvise"):
        return None
    return {**environ, "GLIBC_TUNABLES": f"{tunables}:{TUNABLE}" if tunables else TUNABLE}


def reexec() -> None:
    """Starts this Python process again, same command line, with `environment`'s variables (returns
    when there is nothing to change, or if the exec fails: the command then runs as it is)."""
    env = environment(os.environ)
    if env is None:
        return
    argv = getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv]
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, argv, env)
    except OSError:
        return
