"""docs/tablet.png: the tablet app after scoring a DJI photo with the blob reference model (drawn blobs at known
ground offsets), one candidate confirmed and one rejected."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
from helpers import StaticServer, chromium, dji_xmp, drone_photo, ground_pixels, wait_for  # noqa: E402


def main() -> int:
    from ordnance.inference.tablet import build_tablet
    from ordnance.training.blobnet import blob_model_bytes
    from PIL.ExifTags import Base
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "blob.onnx").write_bytes(blob_model_bytes(256))
        build_tablet(tmp / "app", tmp / "blob.onnx")
        width, height, gsd, focal, agl = 1600, 1200, 0.01, 4.5, 30.0
        offsets = [(3.0, 2.0), (-2.5, 2.8), (1.2, -3.4), (-3.5, -1.5), (5.0, -4.0)]
        photo = drone_photo(tmp / "DJI_0001.JPG", width, height, ground_pixels(offsets, 20.0, gsd, width, height),
                            xmp=dji_xmp(agl, 20.0, -90.0),
                            exif_extra={Base.FocalLength: focal, Base.FocalPlaneXResolution: agl / (gsd * focal),
                                        Base.FocalPlaneResolutionUnit: 4})  # fmt: skip
        with StaticServer(tmp / "app", isolate=True) as server, sync_playwright() as p:
            browser = chromium(p)
            page = browser.new_page(viewport={"width": 1100, "height": 1400})
            page.goto(server.url("index.html"))
            wait_for(page, "window.ordnanceTablet && window.ordnanceTablet.ready")
            page.set_input_files("#photos", str(photo))
            wait_for(page, "window.ordnanceTablet.photos.length === 1 && !window.ordnanceTablet.busy")
            page.locator("tr[data-id='1'] button.confirm").click()
            page.locator("tr[data-id='2'] button.reject").click()
            page.screenshot(path=str(REPO / "docs" / "tablet.png"), full_page=True)
            browser.close()
    print(REPO / "docs" / "tablet.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
