"""Seeded test data and models shared by the tests."""

from __future__ import annotations

import numpy as np
from ordnance.training.blobnet import blob_model_bytes  # noqa: F401 (re-exported for the tests)


def gaussian_blobs(
    height: int,
    width: int,
    centres_px,
    *,
    sigma: float = 1.5,
    peak: float = 250.0,
    background: np.ndarray | None = None,
) -> np.ndarray:
    """A (3, H, W) uint8 image with Gaussian blobs centred on the given pixel indices (col, row)."""
    image = np.zeros((height, width), np.float32) if background is None else background.astype(np.float32)
    yy, xx = np.mgrid[-6:7, -6:7]
    kernel = peak * np.exp(-(xx**2 + yy**2) / (2 * sigma**2))
    for col, row in centres_px:
        r0, r1, c0, c1 = row - 6, row + 7, col - 6, col + 7
        kr0, kc0 = max(0, -r0), max(0, -c0)
        kr1, kc1 = 13 - max(0, r1 - height), 13 - max(0, c1 - width)
        region = image[max(r0, 0) : min(r1, height), max(c0, 0) : min(c1, width)]
        np.maximum(region, kernel[kr0:kr1, kc0:kc1], out=region)
    return np.repeat(np.clip(image, 0, 255).astype(np.uint8)[None], 3, axis=0)


class RangeServer:
    """A local HTTP server for one folder that answers HEAD and byte-range GETs (as object storage does) and
    counts the bytes it sends. Use as a context manager; ``url(name)`` is a file's URL."""

    def __init__(self, root) -> None:
        import http.server
        import threading
        from pathlib import Path

        self.root = Path(root)
        self.bytes_sent = 0
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def _file(self):
                path = server.root / self.path.lstrip("/").split("?")[0]
                return path if path.is_file() else None

            def do_HEAD(self) -> None:
                path = self._file()
                if path is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(path.stat().st_size))
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("ETag", f'"{path.stat().st_mtime_ns}"')
                self.end_headers()

            def do_GET(self) -> None:
                path = self._file()
                if path is None:
                    self.send_error(404)
                    return
                data = path.read_bytes()
                header = self.headers.get("Range")
                server.requests.append(header or "whole")
                if header and header.startswith("bytes="):
                    first, _, last = header[6:].split(",")[0].partition("-")
                    start, end = int(first), min(int(last) if last else len(data) - 1, len(data) - 1)
                    body = data[start : end + 1]
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
                else:
                    body = data
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                self.wfile.write(body)
                server.bytes_sent += len(body)

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/{name}"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
