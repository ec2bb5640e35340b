"""Where datasets live on disk, and fetching them safely.

``default_root()`` is ``$MINIDL_DATA`` when set, else ``~/.cache/minidl``.

``download_url`` streams a file from the first mirror that works into a temporary file in
the destination folder, with a tqdm progress bar, checks the byte count against
``Content-Length`` and the MD5 against the published one, and only then renames it to its
final name (``os.replace`` is atomic within a folder): an interrupted or corrupted download
never leaves a file that looks finished.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tarfile
import tempfile
import http.client
import urllib.error
import urllib.request
import zlib

ENV_VAR = "MINIDL_DATA"
USER_AGENT = "minidl/0.1 (+https://github.com/; dataset downloader)"


class DatasetNotFoundError(FileNotFoundError):
    """The files of a dataset are not on disk (and no download was asked for).  Besides the message, it says
    what is missing for a caller to word its own advice: ``dataset`` (its name), ``missing`` (file names),
    ``folder`` (where they go) and ``alternative`` (another way to provide them, or None)."""

    def __init__(self, message, dataset=None, missing=(), folder=None, alternative=None):
        super().__init__(message)
        self.dataset, self.missing, self.folder, self.alternative = dataset, list(missing), folder, alternative


class DatasetFormatError(ValueError):
    """A dataset file exists but is truncated, corrupted or not in the expected format."""


class DownloadError(RuntimeError):
    """Every mirror failed, or the downloaded bytes did not match the published MD5."""


def default_root() -> str:
    """``$MINIDL_DATA`` if set, else ``~/.cache/minidl``."""
    env = os.environ.get(ENV_VAR)
    return os.path.expanduser(env) if env else os.path.join(os.path.expanduser("~"), ".cache", "minidl")


def resolve_root(root) -> str:
    return os.path.abspath(os.path.expanduser(os.fspath(root))) if root is not None else default_root()


def md5sum(path, chunk_size: int = 1 << 20) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            h.update(chunk)
    return h.hexdigest()


def check_integrity(path, md5: str | None = None) -> bool:
    """True when ``path`` exists and (if ``md5`` is given) its MD5 matches."""
    if not os.path.isfile(path):
        return False
    return md5 is None or md5sum(path) == md5


def _fetch(url: str, tmp_file, progress: bool, timeout: float, desc: str) -> int:
    """Stream ``url`` into the open file ``tmp_file``; return the byte count, checked against Content-Length."""
    from tqdm.auto import tqdm

    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        length = resp.headers.get("Content-Length")
        total = int(length) if length is not None and length.isdigit() else None
        got = 0
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, disable=not progress,
                  leave=False) as bar:
            while True:
                chunk = resp.read(1 << 16)
                if not chunk:
                    break
                tmp_file.write(chunk)
                got += len(chunk)
                bar.update(len(chunk))
    if total is not None and got != total:
        raise DownloadError(f"transfer from {url} was interrupted: got {got} of {total} bytes")
    return got


def download_url(urls, path, md5: str | None = None, progress: bool = True, timeout: float = 60.0) -> str:
    """Download to ``path`` from the first of ``urls`` (a URL or a list of mirrors) that succeeds.

    The bytes go to a hidden temporary file beside ``path``; it is renamed to ``path`` only when the
    transfer is complete and its MD5 equals ``md5`` (when given), and removed otherwise.  If ``path``
    already exists with the right MD5 nothing is fetched.  Raises ``DownloadError`` naming every
    mirror tried and why it failed.
    """
    path = os.fspath(path)
    if isinstance(urls, str):
        urls = [urls]
    if check_integrity(path, md5):
        return path
    folder = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(folder, exist_ok=True)
    name = os.path.basename(path)
    errors = []
    for url in urls:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                _fetch(url, f, progress, timeout, desc=name)
            if md5 is not None:
                got = md5sum(tmp)
                if got != md5:
                    raise DownloadError(f"MD5 mismatch for {url}: expected {md5}, got {got}")
            os.replace(tmp, path)
            return path
        except (OSError, http.client.HTTPException, DownloadError, ValueError) as e:  # URLError is an OSError
            errors.append(f"  {url}: {e}")
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    raise DownloadError(f"could not download {name} to {folder}:\n" + "\n".join(errors))


def extract_archive(archive, dest_dir) -> str:
    """Extract a ``.tar.gz``/``.tgz``/``.tar`` into ``dest_dir`` or gunzip a ``.gz`` beside it.

    Tar members go to a temporary folder first and are moved into place only when the whole archive
    has been read, so an archive that turns out to be truncated leaves nothing half-extracted.
    """
    archive, dest_dir = os.fspath(archive), os.fspath(dest_dir)
    os.makedirs(dest_dir, exist_ok=True)
    if archive.endswith((".tar.gz", ".tgz", ".tar")):
        tmp = tempfile.mkdtemp(prefix=".extract-", dir=dest_dir)
        try:
            try:
                with tarfile.open(archive) as tar:
                    _safe_extractall(tar, tmp)
            except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
                raise DatasetFormatError(f"{archive}: cannot extract ({type(e).__name__}: {e}); "
                                         "the archive is truncated or corrupted, delete it and download again") from e
            for entry in os.listdir(tmp):
                target = os.path.join(dest_dir, entry)
                if os.path.isdir(target):
                    shutil.rmtree(target)
                elif os.path.lexists(target):
                    os.remove(target)
                os.replace(os.path.join(tmp, entry), target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return dest_dir
    if archive.endswith(".gz"):
        out = os.path.join(dest_dir, os.path.basename(archive)[:-3])
        fd, tmp = tempfile.mkstemp(prefix=".gunzip-", dir=dest_dir)
        try:
            with gzip.open(archive, "rb") as src, os.fdopen(fd, "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.replace(tmp, out)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return out
    raise ValueError(f"don't know how to extract {archive!r}: expected .tar.gz, .tgz, .tar or .gz")


def _safe_extractall(tar: tarfile.TarFile, dest: str):
    """``extractall`` refusing absolute paths, ``..`` and links out of ``dest`` (tarfile's 'data' filter)."""
    if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12 / 3.11.4
        tar.extractall(dest, filter="data")
        return
    root = os.path.realpath(dest)
    for m in tar.getmembers():
        target = os.path.realpath(os.path.join(dest, m.name))
        if not (target == root or target.startswith(root + os.sep)) or m.issym() or m.islnk() or m.isdev():
            raise DatasetFormatError(f"refusing to extract suspicious archive member {m.name!r}")
    tar.extractall(dest)
