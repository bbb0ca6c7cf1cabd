"""glibc's huge pages for the `flaxlm` command (flaxlm.hugepages) and the benchmark workers."""

import argparse
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from flaxlm import hugepages

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
import benchmark  # noqa: E402

TUNABLE = "glibc.malloc.hugetlb=1"
HERE = hugepages.environment({}) is not None  # this machine: glibc >= 2.35 and huge pages on


@pytest.mark.parametrize(
    "environ, glibc, thp, tunables",
    [
        ({}, (2, 36), "madvise", TUNABLE),
        ({}, (2, 35), "always", TUNABLE),
        (
            {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"},
            (2, 36),
            "madvise",
            f"glibc.malloc.arena_max=2:{TUNABLE}",
        ),
        ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, (2, 36), "madvise", None),  # the user's choice stands
        ({"FLAXLM_HUGEPAGES": "0"}, (2, 36), "madvise", None),
        ({}, (2, 34), "madvise", None),  # no such tunable before glibc 2.35
        ({}, None, "madvise", None),  # not glibc
        ({}, (2, 36), "never", None),
        ({}, (2, 36), None, None),  # no THP setting to read
    ],
)
def test_environment(environ, glibc, thp, tunables):
    env = hugepages.environment({"PATH": "/bin", **environ}, glibc=glibc, thp=thp)
    if tunables is None:
        assert env is None
    else:
        assert env == {"PATH": "/bin", **environ, "GLIBC_TUNABLES": tunables}


def test_environment_reads_this_machine(monkeypatch):
    monkeypatch.setattr(hugepages, "glibc_version", lambda: None)  # musl, macOS
    assert hugepages.environment({}, thp="madvise") is None
    monkeypatch.setattr(hugepages, "glibc_version", lambda: (2, 36))
    monkeypatch.setattr(hugepages, "thp_mode", lambda: "madvise")
    assert hugepages.environment({})["GLIBC_TUNABLES"] == TUNABLE


def test_thp_mode_reads_the_bracketed_setting(tmp_path):
    setting = tmp_path / "enabled"
    setting.write_text("always [madvise] never\n")
    assert hugepages.thp_mode(str(setting)) == "madvise"
    assert hugepages.thp_mode(str(tmp_path / "missing")) is None


def test_reexec_restarts_the_same_command_once_with_the_tunable():
    code = textwrap.dedent(
        """
        import os, sys
        from flaxlm import hugepages
        print("start", os.getpid(), flush=True)
        hugepages.reexec()
        print("after", os.getpid(), os.environ.get("GLIBC_TUNABLES", ""), sys.argv[1:], flush=True)
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "FLAXLM_HUGEPAGES")}
    out = subprocess.run(
        [sys.executable, "-c", code, "a b", "--x=1"], env=env, capture_output=True, text=True, check=True
    ).stdout.split("\n")
    starts = [line for line in out if line.startswith("start")]
    after = [line for line in out if line.startswith("after")]
    assert len(after) == 1
    pid = starts[0].split()[1]
    assert after[0].split()[1] == pid  # exec: the same process
    assert after[0].endswith("['a b', '--x=1']")  # the same arguments
    if HERE:
        assert len(starts) == 2  # started once more, not in a loop
        assert after[0].split()[2] == TUNABLE
    else:
        assert len(starts) == 1


def _tunables_in_command(tmp_path, **env) -> str:
    """GLIBC_TUNABLES as the `flaxlm train` process sees it when it reads its config."""
    seen = tmp_path / "seen.txt"
    config = tmp_path / "peek.py"
    config.write_text(
        "import os\n\n\ndef get_config():\n"
        f"    open({str(seen)!r}, 'w').write(os.environ.get('GLIBC_TUNABLES', '-'))\n"
        "    raise ValueError('stop here')\n"
    )
    base = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "FLAXLM_HUGEPAGES")}
    r = subprocess.run(
        [sys.executable, "-m", "flaxlm", "train", f"--config={config}", f"--workdir={tmp_path / 'run'}"],
        env={**base, **env},
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert r.returncode == 2 and "stop here" in r.stderr, r.stderr
    return seen.read_text()


def test_the_command_runs_with_huge_pages_unless_told_not_to(tmp_path):
    assert _tunables_in_command(tmp_path) == (TUNABLE if HERE else "-")
    assert _tunables_in_command(tmp_path, FLAXLM_HUGEPAGES="0") == "-"


def test_benchmark_workers_get_huge_pages_as_asked():
    shell = {"PATH": "/bin", "GLIBC_TUNABLES": f"glibc.malloc.arena_max=2:{TUNABLE}"}
    without = {"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}
    with_ = {"PATH": "/bin", "GLIBC_TUNABLES": f"glibc.malloc.arena_max=2:{TUNABLE}"} if HERE else without
    assert benchmark.worker_env("flaxlm", shell, "flaxlm") == with_
    assert benchmark.worker_env("flaxlm_data", shell, "flaxlm") == with_
    assert benchmark.worker_env("hf_torch", shell, "flaxlm") == without  # not even from the shell
    assert benchmark.worker_env("hf_flax", shell, "all") == with_
    assert benchmark.worker_env("flaxlm", shell, "none") == without
    assert benchmark.worker_env("hf_torch", {"PATH": "/bin"}, "none") == {"PATH": "/bin"}


def test_flaxlm_env_goes_to_flaxlm_workers_alone_and_keeps_the_huge_pages():
    shell = {"PATH": "/bin", "XLA_FLAGS": "--shell"}
    mine = {"XLA_FLAGS": "--mine", "GLIBC_TUNABLES": "glibc.malloc.arena_max=1"}
    tunables = f"glibc.malloc.arena_max=1:{TUNABLE}" if HERE else "glibc.malloc.arena_max=1"
    for f in ("flaxlm", "flaxlm_data"):
        assert benchmark.worker_env(f, shell, "flaxlm", mine) == {
            "PATH": "/bin",
            "XLA_FLAGS": "--mine",
            "GLIBC_TUNABLES": tunables,
        }
    assert benchmark.worker_env("flaxlm", shell, "none", mine) == {**shell, **mine}
    assert benchmark.worker_env("hf_flax", shell, "none", mine) == shell
    assert benchmark.worker_env("flaxlm", shell, "none", {}) == shell
    parser = argparse.ArgumentParser()
    assert benchmark.flaxlm_env(parser, ["A=1", "B_2=x=y", "C="]) == {"A": "1", "B_2": "x=y", "C": ""}
    for bad in ("A", "=1", "1A=2", "A-B=1"):
        with pytest.raises(SystemExit):
            benchmark.flaxlm_env(parser, [bad])


def test_help_names_the_switch():
    from flaxlm import cli

    assert f"{hugepages.OPT_OUT}=0" in cli.overview()
