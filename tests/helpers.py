"""Seeded test data and models shared by the tests."""

from __future__ import annotations

import math
import shutil
import time

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


class _LocalServer:
    """A threaded HTTP server on 127.0.0.1 with a free port, run in the background while used as a context
    manager; ``url(name)`` is a file's URL."""

    def _serve(self, handler) -> None:
        import http.server
        import threading

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def url(self, name: str) -> str:
        return f"{self.origin}/{name}"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


class RangeServer(_LocalServer):
    """A local HTTP server for one folder that answers HEAD and byte-range GETs (as object storage does) and
    counts the bytes it sends. Use as a context manager; ``url(name)`` is a file's URL."""

    def __init__(self, root) -> None:
        import http.server
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

        self._serve(Handler)


class StaticServer(_LocalServer):
    """A plain static web server for one folder on 127.0.0.1 (as a team would serve the tablet app once), that
    records the paths asked for. With ``isolate`` it sends the two headers that make a page cross-origin
    isolated. Use as a context manager; ``url(name)`` is a file's URL."""

    def __init__(self, root, isolate: bool = False) -> None:
        import functools
        import http.server

        self.paths: list[str] = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet, but every request is recorded
                server.paths.append(self.path)

            def end_headers(self) -> None:
                if isolate:
                    self.send_header("Cross-Origin-Opener-Policy", "same-origin")
                    self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
                super().end_headers()

        self._serve(functools.partial(Handler, directory=str(root)))


# Drone photos with known geometry: a camera at a known position, height, lens and heading (EXIF and DJI XMP).
CAMERA_LONLAT = (33.0, 48.5)  # on the central meridian of UTM 36N: grid north is true north there


def exif_dms(value: float) -> tuple[float, float, float]:
    degrees = int(value)
    minutes = int((value - degrees) * 60)
    return float(degrees), float(minutes), round((value - degrees - minutes / 60) * 3600, 6)


def ground_pixels(offsets_en, heading_deg: float, gsd: float, width: int, height: int) -> list[tuple[int, int]]:
    """Pixel (col, row) of ground points east/north of the camera in a nadir photo whose top faces heading."""
    yaw = math.radians(heading_deg)
    out = []
    for east, north in offsets_en:
        up = east * math.sin(yaw) + north * math.cos(yaw)  # along the azimuth the image's top faces
        right = east * math.cos(yaw) - north * math.sin(yaw)  # along that azimuth + 90 deg
        out.append((round(width / 2 + right / gsd - 0.5), round(height / 2 - up / gsd - 0.5)))
    return out


def drone_photo(path, width, height, centres, *, xmp: str = "", exif_extra=None, gps_extra=None):
    from PIL import Image
    from PIL.ExifTags import GPS, IFD, Base

    image = gaussian_blobs(height, width, centres, sigma=2.0).transpose(1, 2, 0)
    exif = Image.Exif()
    exif[Base.Make] = "DJI"
    gps = {
        GPS.GPSLatitudeRef: "N",
        GPS.GPSLatitude: exif_dms(CAMERA_LONLAT[1]),
        GPS.GPSLongitudeRef: "E",
        GPS.GPSLongitude: exif_dms(CAMERA_LONLAT[0]),
        **(gps_extra or {}),
    }
    exif[IFD.GPSInfo] = gps
    sub = exif.get_ifd(IFD.Exif)
    for key, value in (exif_extra or {}).items():
        sub[key] = value
    Image.fromarray(image).save(path, quality=97, exif=exif, xmp=xmp.encode() if xmp else b"")
    return path


def dji_xmp(relative_altitude: float, yaw: float | None, pitch: float | None) -> str:
    attrs = f'drone-dji:RelativeAltitude="+{relative_altitude:.2f}"'
    if yaw is not None:
        attrs += f' drone-dji:GimbalYawDegree="{yaw:+.1f}"'
    if pitch is not None:
        attrs += f' drone-dji:GimbalPitchDegree="{pitch:+.1f}"'
    return (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        f'<rdf:Description xmlns:drone-dji="http://www.dji.com/drone-dji/1.0/" {attrs}/></rdf:RDF></x:xmpmeta>'
    )


# The tablet app in headless Chromium (Debian's package; .ci/run installs it).
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def wait_for(page, expression: str, timeout: float = 120.0) -> None:
    """Poll a page expression (the app's Content-Security-Policy forbids the string evaluation Playwright's
    wait_for_function uses); a page that reloads itself meanwhile is polled again."""
    from playwright.sync_api import Error

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if page.evaluate(expression):
                return
        except Error as error:  # the page navigated (the app reloads into a new version): poll the new one
            if "context was destroyed" not in str(error) and "navigat" not in str(error):
                raise
        time.sleep(0.1)
    raise TimeoutError(f"{expression} still false; errors: {page.evaluate('window.ordnanceTablet.errors')}")


def chromium(p):
    return p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
        "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic"])  # fmt: skip


def open_tablet(context, url: str, requests: list[str]):
    page = context.new_page()
    page.on("request", lambda r: requests.append(r.url))
    page.goto(url)
    wait_for(page, "window.ordnanceTablet && (window.ordnanceTablet.ready || window.ordnanceTablet.errors.length > 0)")
    return page


def review_page_data(html: str) -> dict:
    """The review page's embedded data, with its per-field columns turned back into one dict per candidate (the
    page does the same in JavaScript): class and CRS names looked up, the source named by its overview, and the
    chip sheet and cell of the first ``chipped`` candidates in the page's order."""
    import json
    import re

    data = json.loads(re.search(r"const DATA = (\{.*?\});\n", html, re.S).group(1).replace("<\\/", "</"))
    cols, per = data["columns"], data["chip_grid"] ** 2
    data["candidates"] = [
        {"id": cols["id"][i], "class": cols["classes"][cols["class"][i]], "score": cols["score"][i],
         "lon": cols["lon"][i], "lat": cols["lat"][i], "x": cols["x"][i], "y": cols["y"][i],
         "crs": cols["crs_names"][cols["crs"][i]], "source": data["overviews"][cols["source"][i]]["source"],
         "bbox_px": cols["bbox_px"][i], "overview": cols["source"][i], "ox": cols["ox"][i], "oy": cols["oy"][i],
         "informative": cols["informative"][i],
         "sheet": i // per if i < data["chipped"] else None, "cell": i % per if i < data["chipped"] else None}
        for i in range(len(cols["id"]))
    ]  # fmt: skip
    return data
