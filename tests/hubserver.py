"""A local stand-in for the Hugging Face Hub's file-resolve endpoints, for tests.

It answers the two requests `huggingface_hub.hf_hub_download` (2.4) makes, the way the Hub does
for an LFS file such as a checkpoint:

* `HEAD /{repo_id}/resolve/{revision}/{filename}` -> `302` to a CDN URL on *another origin*
  (a second server, so huggingface_hub does not follow it and reads the metadata off the 302),
  with `X-Repo-Commit` (the commit the revision resolves to), `X-Linked-Etag` (the file's sha256,
  quoted), `X-Linked-Size`, an `ETag` of the pointer file and `Content-Length` of the redirect body.
  Errors carry `X-Error-Code` (`RepoNotFound`, `RevisionNotFound`, `EntryNotFound`) as the Hub's do.
* `GET <cdn>/blobs/{sha256}` -> `200` with the bytes and `Content-Length` (`206` for `Range`).

No `X-Xet-Hash` header is ever sent, so huggingface_hub takes the plain HTTP path, not Xet.
`non_lfs=True` serves files directly (`200` + git-style `ETag`) as the Hub does for small files.

Every request is recorded (`requests`, `count()`), so tests can prove that a cached file is not
fetched again and that concurrent loads download once.
"""

from __future__ import annotations

import hashlib
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = ["HubServer", "free_port", "local_only_dns"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (at the time of asking)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class HubServer:
    """Fake Hub + CDN on 127.0.0.1; use as a context manager or call start()/stop()."""

    def __init__(self, *, non_lfs: bool = False, download_delay: float = 0.0) -> None:
        self.non_lfs = non_lfs
        self.download_delay = download_delay  # seconds to stall each blob GET (lets threads overlap)
        self._lock = threading.Lock()
        self._commits: dict[tuple[str, str], dict[str, bytes]] = {}  # (repo, commit) -> files
        self._refs: dict[tuple[str, str], str] = {}  # (repo, branch) -> commit
        self._corrupt: set[tuple[str, str, str]] = set()
        self.requests: list[tuple[str, str]] = []  # (method, path) in arrival order
        self._hub = _Server(("127.0.0.1", 0), self._handler(cdn=False))
        self._cdn = _Server(("127.0.0.1", 0), self._handler(cdn=True))
        self._threads: list[threading.Thread] = []
        self._stopped = False

    # -- content ---------------------------------------------------------------------------------

    def add_commit(self, repo_id: str, files: dict[str, bytes], *, branch: str | None = "main") -> str:
        """Create a commit holding `files`; move `branch` to it; return its 40-hex hash."""
        commit = secrets.token_hex(20)
        with self._lock:
            self._commits[(repo_id, commit)] = dict(files)
            if branch:
                self._refs[(repo_id, branch)] = commit
        return commit

    def corrupt(self, repo_id: str, commit: str, filename: str, on: bool = True) -> None:
        """Serve flipped bytes (same length, same advertised sha256) for one file: a bad transfer."""
        with self._lock:
            (self._corrupt.add if on else self._corrupt.discard)((repo_id, commit, filename))

    def count(self, method: str | None = None, contains: str = "") -> int:
        """Number of recorded requests with this method whose path contains `contains`."""
        with self._lock:
            return sum(1 for m, p in self.requests if (method is None or m == method) and contains in p)

    @property
    def url(self) -> str:
        """The Hub endpoint, for HF_ENDPOINT."""
        return f"http://127.0.0.1:{self._hub.server_address[1]}"

    @property
    def cdn_url(self) -> str:
        return f"http://127.0.0.1:{self._cdn.server_address[1]}"

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> HubServer:
        for server in (self._hub, self._cdn):
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop serving (idempotent): afterwards connections are refused."""
        if self._stopped:
            return
        self._stopped = True
        for server in (self._hub, self._cdn):
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- HTTP ------------------------------------------------------------------------------------

    def _resolve(self, path: str) -> tuple[int, dict[str, str], str | None, bytes | None, tuple[str, str, str] | None]:
        """Map a /resolve/ path to (status, headers, commit, content, key)."""
        parts = [unquote(p) for p in urlsplit(path).path.split("/")]
        # ['', owner, name, 'resolve', revision, *filename]
        if len(parts) < 6 or parts[3] != "resolve":
            return 404, {"X-Error-Code": "RepoNotFound"}, None, None, None
        repo_id, revision, filename = f"{parts[1]}/{parts[2]}", parts[4], "/".join(parts[5:])
        with self._lock:
            known_repo = any(r == repo_id for r, _ in self._commits)
            commit = revision if (repo_id, revision) in self._commits else self._refs.get((repo_id, revision))
            files = self._commits.get((repo_id, commit)) if commit else None
        if not known_repo:
            return 404, {"X-Error-Code": "RepoNotFound"}, None, None, None
        if files is None:
            return 404, {"X-Error-Code": "RevisionNotFound"}, None, None, None
        if filename not in files:
            return 404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit}, commit, None, None
        return 200, {}, commit, files[filename], (repo_id, commit, filename)

    def _handler(self, *, cdn: bool) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
                pass

            def _send(self, status: int, headers: dict[str, str], body: bytes, *, head: bool) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def _record(self) -> None:
                with hub._lock:
                    hub.requests.append((self.command, ("cdn:" if cdn else "") + self.path))

            def _hub(self, head: bool) -> None:
                self._record()
                status, headers, commit, content, key = hub._resolve(self.path)
                if content is None or key is None:
                    self._send(status, headers, b'{"error": "not found"}', head=head)
                    return
                sha = hashlib.sha256(content).hexdigest()
                if hub.non_lfs:
                    git_oid = hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()
                    body = hub._body(key, content)
                    self._send(200, {"X-Repo-Commit": commit or "", "ETag": f'"{git_oid}"'}, body, head=head)
                    return
                # Hub LFS behaviour: redirect to a signed CDN URL on another host, metadata on the 302.
                location = f"{hub.cdn_url}/blobs/{sha}?repo={key[0]}&commit={key[1]}&file={key[2]}"
                pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {len(content)}\n"
                headers = {
                    "Location": location,
                    "X-Repo-Commit": commit or "",
                    "X-Linked-Etag": f'"{sha}"',
                    "X-Linked-Size": str(len(content)),
                    "ETag": '"' + hashlib.sha1(pointer.encode()).hexdigest() + '"',
                }
                self._send(302, headers, b"Found. Redirecting", head=head)

            def _cdn(self, head: bool) -> None:
                self._record()
                query = dict(p.split("=", 1) for p in urlsplit(self.path).query.split("&") if "=" in p)
                key = (unquote(query.get("repo", "")), query.get("commit", ""), unquote(query.get("file", "")))
                with hub._lock:
                    content = hub._commits.get(key[:2], {}).get(key[2])
                if content is None:
                    self._send(404, {}, b"no such blob", head=head)
                    return
                if hub.download_delay and not head:
                    time.sleep(hub.download_delay)
                body = hub._body(key, content)
                start = 0
                range_header = self.headers.get("Range", "")
                if range_header.startswith("bytes=") and range_header.endswith("-"):
                    start = int(range_header[6:-1])
                    headers = {"Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}"}
                    self._send(206, headers, body[start:], head=head)
                    return
                self._send(200, {"Content-Type": "application/octet-stream"}, body, head=head)

            def do_HEAD(self) -> None:  # noqa: N802 (http.server's naming)
                (self._cdn if cdn else self._hub)(head=True)

            def do_GET(self) -> None:  # noqa: N802
                (self._cdn if cdn else self._hub)(head=False)

        return Handler

    def _body(self, key: tuple[str, str, str], content: bytes) -> bytes:
        with self._lock:
            bad = key in self._corrupt
        return bytes(b ^ 0xFF for b in content) if bad else content


@contextmanager
def local_only_dns() -> Iterator[None]:
    """Make any name lookup other than 127.0.0.1/localhost fail, so a test cannot reach the internet."""
    real = socket.getaddrinfo

    def guarded(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name not in ("127.0.0.1", "localhost", "::1", None):
            raise OSError(f"test tried to reach {name!r}: only 127.0.0.1 is allowed in tests")
        return real(host, *args, **kwargs)

    socket.getaddrinfo = guarded  # type: ignore[assignment]
    try:
        yield
    finally:
        socket.getaddrinfo = real  # type: ignore[assignment]
