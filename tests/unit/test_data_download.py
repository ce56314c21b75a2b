"""Downloads against a local HTTP server on 127.0.0.1 (no network): checksums, resume, retry, offline."""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
import zipfile
from pathlib import Path

import pytest

from recsys.data import download as dl
from recsys.data.sources import MovieLensSource, SplitFolderSource
from recsys.data.sources import movielens as movielens_mod
from recsys.data.sources import session_files as session_files_mod
from recsys.data.sources import split_folder as split_folder_mod
from recsys.data.sources.files import RemoteFile
from recsys.data.sources.session_files import PreparedSessionSource
from recsys.errors import ConfigError, DataError

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


class Server:
    """Serves ``files`` (path → bytes) with HTTP Range support; ``truncate_next`` cuts the next responses."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.truncate_next = 0
        self.ignore_range = False
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                rng = self.headers.get("Range")
                outer.requests.append((self.path, rng))
                body = outer.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                if rng and not outer.ignore_range:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                chunk = body[start:]
                self.send_header("Content-Length", str(len(chunk)))
                self.end_headers()
                if outer.truncate_next > 0:
                    outer.truncate_next -= 1
                    self.wfile.write(chunk[: len(chunk) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(chunk)

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_git_blob_checksum_matches_git_hash_object(tmp_path):
    # ids printed by `git hash-object` for an empty file and for "hello\n"
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "hello").write_bytes(b"hello\n")
    assert dl.file_checksum(tmp_path / "empty", "git-blob") == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
    assert dl.file_checksum(tmp_path / "hello", "git-blob") == "ce013625030ba8dba906f756967f9e9ca394464a"


def test_download_verifies_and_reuses(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    dest = tmp_path / "raw" / "a.bin"
    assert dl.download(f"{server.url}/a.bin", dest, sha(PAYLOAD), progress=False) == dest
    assert dest.read_bytes() == PAYLOAD and not Path(f"{dest}.part").exists()
    dl.download(f"{server.url}/a.bin", dest, sha(PAYLOAD), progress=False)
    assert len(server.requests) == 1  # the verified file is reused


def test_checksum_mismatch_raises_and_leaves_no_file(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    dest = tmp_path / "a.bin"
    with pytest.raises(DataError, match=r"a\.bin: sha256 checksum mismatch .* for the download of http://127"):
        dl.download(f"{server.url}/a.bin", dest, sha(b"something else"), progress=False)
    assert not dest.exists() and not Path(f"{dest}.part").exists()
    blob = "git-blob:" + "0" * 40
    with pytest.raises(DataError, match="git-blob checksum mismatch"):
        dl.download(f"{server.url}/a.bin", dest, blob, progress=False)
    assert not dest.exists() and not Path(f"{dest}.part").exists()


def test_interrupted_transfer_is_resumed_with_range(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    server.truncate_next = 1
    dest = tmp_path / "a.bin"
    dl.download(f"{server.url}/a.bin", dest, sha(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests[0][1] is None
    assert server.requests[1][1] == f"bytes={len(PAYLOAD) // 2}-"


def test_partial_file_from_an_earlier_run_is_resumed(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    dest = tmp_path / "a.bin"
    Path(f"{dest}.part").write_bytes(PAYLOAD[:1000])
    dl.download(f"{server.url}/a.bin", dest, sha(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD and server.requests == [("/a.bin", "bytes=1000-")]


def test_corrupt_partial_file_gets_a_clean_retry(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    dest = tmp_path / "a.bin"
    Path(f"{dest}.part").write_bytes(b"\xff" * 1000)  # wrong prefix: the resumed file fails its checksum
    dl.download(f"{server.url}/a.bin", dest, sha(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert [r for _, r in server.requests] == ["bytes=1000-", None]


def test_server_without_range_support_restarts(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    server.ignore_range = True
    dest = tmp_path / "a.bin"
    Path(f"{dest}.part").write_bytes(PAYLOAD[:1000])
    dl.download(f"{server.url}/a.bin", dest, sha(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_http_404_is_one_clear_error(server, tmp_path):
    with pytest.raises(DataError, match=r"download of http://127.*/missing.txt failed: HTTP 404"):
        dl.download(f"{server.url}/missing.txt", tmp_path / "m.txt", None, progress=False)


def test_offline_error_names_url_and_data_path(tmp_path):
    with socket.socket() as s:  # a port with nothing listening: connection refused, as when offline
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/gowalla/train.txt"
    with pytest.raises(DataError, match=rf"could not download {url} .*data\.path="):
        dl.download(url, tmp_path / "train.txt", None, progress=False, timeout=5)
    assert not (tmp_path / "train.txt").exists()


def test_movielens_source_downloads_the_archive_and_builds(server, tmp_path, monkeypatch, caplog):
    archive = tmp_path / "fixture.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("ml-100k/u.data", "1\t10\t5\t100\n1\t11\t4\t101\n2\t10\t4\t102\n2\t11\t5\t103\n2\t12\t2\t104\n")
    server.files["/ml-100k.zip"] = archive.read_bytes()
    monkeypatch.setattr(movielens_mod, "GROUPLENS", server.url)
    source = MovieLensSource(variant="100k", download_dir=str(tmp_path / "raw"), split="random",
                             split_ratios=[1.0, 0.0, 0.0])
    splits = source.build()
    assert (tmp_path / "raw" / "ml_100k" / "ml-100k.zip").is_file()
    assert len(splits.train[0]) == 4 and splits.num_users == 2
    assert "No checksum pinned" in caplog.text


def test_split_folder_download_with_pinned_checksums(server, tmp_path, monkeypatch):
    train, test = b"0 0 1\n1 1 2\n", b"0 2\n1 0\n"
    server.files["/g/train.txt"], server.files["/g/test.txt"] = train, test
    monkeypatch.setitem(split_folder_mod.REMOTE, "gowalla", {
        "train.txt": RemoteFile(f"{server.url}/g/train.txt", sha(train)),
        "test.txt": RemoteFile(f"{server.url}/g/test.txt", "git-blob:" + hashlib.sha1(b"blob %d\0" % len(test) + test).hexdigest()),
    })
    splits = SplitFolderSource(dataset="gowalla", download_dir=str(tmp_path / "raw")).build()
    assert len(splits.train[0]) == 4 and len(splits.test[0]) == 2
    server.files["/g/test.txt"] = b"0 2\n1 1\n"  # the remote file changed: a fresh download fails its checksum
    (tmp_path / "raw" / "gowalla" / "test.txt").unlink()
    with pytest.raises(DataError, match="git-blob checksum mismatch"):
        SplitFolderSource(dataset="gowalla", download_dir=str(tmp_path / "raw")).build()
    assert not (tmp_path / "raw" / "gowalla" / "test.txt").exists()


def test_session_files_download_through_the_same_resolver(server, tmp_path, monkeypatch):
    train = b"SessionId\tItemId\tTime\n1\t10\t1.0\n1\t11\t2.0\n2\t10\t3.0\n2\t11\t4.0\n"
    test = b"SessionId\tItemId\tTime\n3\t10\t5.0\n3\t11\t6.0\n"
    server.files["/p/tr.txt"], server.files["/p/te.txt"] = train, test
    monkeypatch.setattr(session_files_mod, "RSC15_BASE_URL", f"{server.url}/p/")
    monkeypatch.setattr(session_files_mod, "RSC15_FILES", {"tr.txt": sha(train), "te.txt": sha(test)})
    splits = PreparedSessionSource(download_dir=str(tmp_path / "raw"), train="tr.txt", test="te.txt").build()
    assert (tmp_path / "raw" / "rsc15" / "tr.txt").read_bytes() == train
    assert (splits.train.num_events, splits.test.num_events) == (4, 2)
    with pytest.raises(ConfigError, match=r"data.source.test='other.txt' has no download"):
        PreparedSessionSource(download_dir=str(tmp_path / "raw"), train="tr.txt", test="other.txt").fingerprint()
    with pytest.raises(ConfigError, match=r"data=rsc15: set data.path \(a local copy\) or data.source.download_dir"):
        PreparedSessionSource(train="tr.txt", test="te.txt").fingerprint()


def test_pinned_urls_and_checksums_are_well_formed():
    for files in split_folder_mod.REMOTE.values():
        for name, remote in files.items():
            assert remote.url.startswith("https://raw.githubusercontent.com/") and remote.url.endswith(name)
            if remote.checksum is not None:
                dl.parse_checksum(remote.checksum)
