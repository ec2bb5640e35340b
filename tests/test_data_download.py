"""The download path through a real HTTP server on 127.0.0.1, started by the test."""
import hashlib
import http.server
import os
import threading

import pytest

from minidl.data import CIFAR10, MNIST, DownloadError, download_url
from tests import datafiles as F


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict = {}

    def do_GET(self):  # noqa: N802 (http.server's name)
        body = self.routes.get(self.path)
        if body is None:
            self.send_error(404)
            return
        interrupted = self.path.startswith("/cut/")
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        # an interrupted transfer: promise len(body) bytes, send half, drop the connection
        self.wfile.write(body[: len(body) // 2] if interrupted else body)
        self.wfile.flush()
        if interrupted:
            self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    """(base URL, routes dict) of a threaded HTTP server on 127.0.0.1 serving routes[path] bytes."""
    routes = {}
    handler = type("Handler", (_Handler,), {"routes": routes})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", routes
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def _md5(blob):
    return hashlib.md5(blob).hexdigest()


def _leftovers(folder):
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def test_download_success(tmp_path, server):
    base, routes = server
    blob = os.urandom(300_000)
    routes["/f.bin"] = blob
    dest = tmp_path / "sub" / "f.bin"
    assert download_url(base + "/f.bin", dest, md5=_md5(blob), progress=False) == str(dest)
    assert dest.read_bytes() == blob
    assert _leftovers(tmp_path / "sub") == ["f.bin"]
    routes.clear()  # present with the right MD5: not fetched again
    download_url(base + "/f.bin", dest, md5=_md5(blob), progress=False)


def test_md5_mismatch_leaves_nothing(tmp_path, server):
    base, routes = server
    routes["/f.bin"] = b"not what was published" * 100
    with pytest.raises(DownloadError, match="MD5 mismatch"):
        download_url(base + "/f.bin", tmp_path / "f.bin", md5=_md5(b"the published bytes"), progress=False)
    assert _leftovers(tmp_path) == []


def test_interrupted_transfer_never_looks_finished(tmp_path, server):
    base, routes = server
    blob = os.urandom(200_000)
    routes["/cut/f.bin"] = blob
    for md5 in (_md5(blob), None):  # caught by the byte count even without an MD5
        with pytest.raises(DownloadError, match="f.bin"):
            download_url(base + "/cut/f.bin", tmp_path / "f.bin", md5=md5, progress=False)
        assert _leftovers(tmp_path) == []


def test_falls_back_to_the_next_mirror_and_reports_each(tmp_path, server):
    base, routes = server
    blob = b"payload" * 1000
    routes["/b/f.bin"] = blob
    download_url([base + "/a/f.bin", base + "/b/f.bin"], tmp_path / "f.bin", md5=_md5(blob), progress=False)
    assert (tmp_path / "f.bin").read_bytes() == blob
    with pytest.raises(DownloadError) as e:
        download_url([base + "/a/g.bin", base + "/c/g.bin"], tmp_path / "g.bin", progress=False)
    assert "/a/g.bin" in str(e.value) and "/c/g.bin" in str(e.value) and "404" in str(e.value)


def test_mnist_download_true(tmp_path, server, monkeypatch):
    base, routes = server
    monkeypatch.setattr(MNIST, "expected_sizes", {"train": 20, "test": 10})
    src = tmp_path / "src"
    arrays = F.write_mnist(str(src), gz=True)
    resources = []
    for name in sorted(os.listdir(src)):
        blob = (src / name).read_bytes()
        routes[f"/mirror2/{name}"] = blob
        resources.append((name, _md5(blob)))
    monkeypatch.setattr(MNIST, "mirrors", [base + "/mirror1/", base + "/mirror2/"])  # the first one 404s
    monkeypatch.setattr(MNIST, "resources", resources)
    root = tmp_path / "root"
    ds = MNIST(root, train=False, download=True)
    assert (ds.data == arrays["test"][0]).all() and (ds.targets == arrays["test"][1]).all()
    assert sorted(os.listdir(root / "mnist")) == sorted(
        [n for n, _ in resources] + [n[:-3] for n, _ in resources])
    routes.clear()  # now offline: the files on disk suffice
    assert len(MNIST(root, train=True, download=True)) == 20


def test_cifar10_download_true_extracts(tmp_path, server, monkeypatch):
    base, routes = server
    monkeypatch.setattr(CIFAR10, "expected_sizes", {"train": 20, "test": 10})
    files, arrays = F.cifar10_files()
    blob = F.tar_gz_bytes("cifar-10-batches-py", files)
    routes["/cifar-10-python.tar.gz"] = blob
    monkeypatch.setattr(CIFAR10, "url", base + "/cifar-10-python.tar.gz")
    monkeypatch.setattr(CIFAR10, "tgz_md5", _md5(blob))
    ds = CIFAR10(tmp_path, train=True, download=True)
    assert (ds.data == arrays["train"][0]).all()
    assert sorted(os.listdir(tmp_path / "cifar-10-batches-py")) == sorted(files)
    assert (tmp_path / "cifar-10-python.tar.gz").read_bytes() == blob


def test_cifar10_download_md5_mismatch(tmp_path, server, monkeypatch):
    base, routes = server
    routes["/cifar-10-python.tar.gz"] = F.tar_gz_bytes("cifar-10-batches-py", F.cifar10_files()[0])
    monkeypatch.setattr(CIFAR10, "url", base + "/cifar-10-python.tar.gz")
    with pytest.raises(DownloadError, match="MD5 mismatch"):
        CIFAR10(tmp_path, download=True)  # the real published MD5 cannot match these bytes
    assert _leftovers(tmp_path) == []


def test_cifar10_download_true_verifies_an_archive_already_there(tmp_path, server, monkeypatch):
    base, routes = server
    monkeypatch.setattr(CIFAR10, "expected_sizes", {"train": 20, "test": 10})
    files, arrays = F.cifar10_files()
    good = F.tar_gz_bytes("cifar-10-batches-py", files)
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(good[:1000])  # a truncated earlier copy
    routes["/c.tar.gz"] = good
    monkeypatch.setattr(CIFAR10, "url", base + "/c.tar.gz")
    monkeypatch.setattr(CIFAR10, "tgz_md5", _md5(good))
    ds = CIFAR10(tmp_path, train=False, download=True)
    assert (ds.targets == arrays["test"][1]).all()
    assert (tmp_path / "cifar-10-python.tar.gz").read_bytes() == good


def test_download_failure_says_where_to_put_the_files(tmp_path, server, monkeypatch):
    base, _ = server  # serves nothing: every request is a 404
    monkeypatch.setattr(MNIST, "mirrors", [base + "/nowhere/"])
    with pytest.raises(DownloadError) as e:
        MNIST(tmp_path, download=True)
    assert "train-images-idx3-ubyte.gz" in str(e.value) and str(tmp_path / "mnist") in str(e.value)
    monkeypatch.setattr(CIFAR10, "url", base + "/nowhere/cifar-10-python.tar.gz")
    with pytest.raises(DownloadError, match="cifar-10-python.tar.gz in " + str(tmp_path)):
        CIFAR10(tmp_path, download=True)
    assert _leftovers(tmp_path / "mnist") == [] and _leftovers(tmp_path) == ["mnist"]


def test_extract_refuses_members_outside_the_folder(tmp_path):
    import io
    import tarfile

    from minidl.data import DatasetFormatError, extract_archive
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("../evil.txt")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(buf.getvalue())
    with pytest.raises(DatasetFormatError, match=str(archive)):
        extract_archive(archive, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists() and _leftovers(tmp_path / "out") == []
