"""``ordnance tablet build``: the field tablet app, an offline web page that runs the exported ONNX model.

The app is static files: HTML, JavaScript, the onnxruntime-web WebAssembly runtime, exifr (EXIF, GPS and XMP
reader), geotiff.js and proj4 (GeoTIFFs and their UTM coordinates), all taken from their npm packages at build time
at pinned versions whose integrity is checked, and, when bundled, the model. Served once from any web server, it
installs as a progressive web app: a service worker keeps every file, so the page opens and scores with no network
afterwards, and no request ever leaves the device. The service worker also marks the page cross-origin isolated,
which lets onnxruntime-web run on several threads.

The page does what ``ordnance score`` does to a photo: the card's tile grid and overlap, the same per-window
filtering and the same seam merge, and the same ground placement from the camera's pose (see
``ordnance/inference/tablet_app/ordnance.js``). Torch-free.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

from ordnance.inference.card import CARD_KEY, INPUT_NAME, OUTPUT_NAMES, SCHEMA_VERSION
from ordnance.inference.errors import InputError, OutputError
from ordnance.inference.scoring import ScoringJob
from ordnance.inference.session import file_sha256, open_session
from ordnance.inference.writers import FIELDS

# npm packages vendored into the app: version, the registry's integrity (sha512 of the tarball), files taken.
VENDOR = {
    "onnxruntime-web": {
        "version": "1.30.0",
        "integrity": "sha512-q0y+JrrtukXSzsBWEMccVfqX25LRmosXHF+CaRJmg8pZClzcV7svNc4rKY3jL02Vb7QmRMDs1SigqR4CXAfKYQ==",
        "files": {
            "package/dist/ort.wasm.min.js": "ort.wasm.min.js",
            "package/dist/ort-wasm-simd-threaded.wasm": "ort-wasm-simd-threaded.wasm",
            "package/dist/ort-wasm-simd-threaded.mjs": "ort-wasm-simd-threaded.mjs",
            "package/package.json": "onnxruntime-web.package.json",  # its licence (MIT) and authors
        },
    },
    "geotiff": {
        "version": "3.0.5",
        "integrity": "sha512-OWcL9S9+yDZ6iAlXMt32T1iwUApJM8UiD47xbm6ZP1h33d10fqkPs14EG/ttT5EnefpZSx3G15iDFC5FxUNUwA==",
        "files": {"package/dist-browser/geotiff.js": "geotiff.js", "package/package.json": "geotiff.package.json"},
    },
    "proj4": {
        "version": "2.22.0",
        "integrity": "sha512-MVvH09QrYm3A235rcX39WDiCKanrBiblu28l0KYIn/B2DofmYhvP/LLS43kE66jNDfx/P1l/nah3JmsAq8UgbQ==",
        "files": {"package/dist/proj4.js": "proj4.js", "package/package.json": "proj4.package.json"},
    },
    "exifr": {
        "version": "7.1.3",
        "integrity": "sha512-g/aje2noHivrRSLbAUtBPWFbxKdKhgj/xr1vATDdUXPOFYJlQ62Ft0oy+72V6XLIpDJfHs6gXLbBLAolqOXYRw==",
        "files": {"package/dist/lite.umd.js": "exifr.lite.umd.js", "package/package.json": "exifr.package.json"},
    },
}
APP_FILES = ("index.html", "app.js", "ordnance.js", "worker.js", "sw.js", "manifest.webmanifest", "icon.svg")
MODEL_NAME = "model.onnx"


def cache_dir() -> Path:
    """Where npm tarballs are kept between builds: $ORDNANCE_CACHE/npm, else ~/.cache/ordnance/npm."""
    root = os.environ.get("ORDNANCE_CACHE") or Path.home() / ".cache" / "ordnance"
    return Path(root) / "npm"


def _integrity(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def npm_tarball(name: str, cache: Path | None = None) -> Path:
    """The pinned npm tarball of ``name``: from the cache, else fetched with ``npm pack`` from the registry into it;
    its sha512 must equal the pinned integrity."""
    spec = VENDOR[name]
    cache = cache or cache_dir()
    path = cache / f"{name}-{spec['version']}.tgz"
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        npm = shutil.which("npm")
        if npm is None:
            raise InputError(f"npm is needed once to fetch {name}@{spec['version']} (or place its tarball here)", path)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            done = subprocess.run(
                [npm, "pack", f"{name}@{spec['version']}", "--pack-destination", tmp, "--silent"],
                capture_output=True, text=True, timeout=600,
            )  # fmt: skip
            fetched = Path(tmp) / path.name
            if done.returncode != 0 or not fetched.exists():
                reason = (done.stderr or done.stdout).strip().splitlines()
                raise InputError(f"npm pack {name}@{spec['version']} failed ({reason[-1] if reason else 'no file'})",
                                 path)  # fmt: skip
            fetched.replace(path)
    actual = _integrity(path.read_bytes())
    if actual != spec["integrity"]:
        raise InputError(f"{name} tarball integrity {actual[:24]}... is not the pinned {spec['integrity'][:24]}...",
                         path)  # fmt: skip
    return path


def _extract(tarball: Path, files: dict[str, str], dest: Path) -> None:
    with tarfile.open(tarball, "r:gz") as archive:
        for member, target in files.items():
            try:
                handle = archive.extractfile(member)
            except KeyError:
                handle = None
            if handle is None:
                raise InputError(f"{member} is not in the package", tarball)
            (dest / target).write_bytes(handle.read())


def build_tablet(out: str | Path, model: str | Path | None = None, *, cache: Path | None = None) -> dict:
    """Write the tablet app to ``out`` (replaced as a whole), with ``model`` bundled when given (checked against
    the ONNX contract first). Returns the build record written as ``app.json``."""
    out = Path(out)
    card = None
    if model is not None:
        detector = open_session(model)  # a file without a card or with another input contract is refused here
        card = detector.card
    if out.exists() and not (out / "app.json").exists():
        raise OutputError("exists and is not a tablet app folder; choose an empty or new folder", out)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    stage.chmod(0o755)  # served as a web folder
    try:
        vendor = stage / "vendor"
        vendor.mkdir()
        for name, spec in VENDOR.items():
            _extract(npm_tarball(name, cache), spec["files"], vendor)
        app = resources.files("ordnance.inference") / "tablet_app"
        for name in APP_FILES:
            (stage / name).write_bytes((app / name).read_bytes())
        record = {
            "built_utc": datetime.now(UTC).isoformat(timespec="seconds"),
            "vendor": {name: {"version": s["version"], "integrity": s["integrity"]} for name, s in VENDOR.items()},
            "model": None,
            # what the page checks and writes, from the same constants as the scorer
            "contract": {
                "card_key": CARD_KEY,
                "schema_version": SCHEMA_VERSION,
                "input": INPUT_NAME,
                "outputs": list(OUTPUT_NAMES),
            },
            "fields": list(FIELDS),
            "gsd_tolerance": ScoringJob.gsd_tolerance,
        }
        if model is not None:
            shutil.copyfile(model, stage / MODEL_NAME)
            record["model"] = {
                "file": MODEL_NAME,
                "source": Path(model).name,
                "sha256": file_sha256(stage / MODEL_NAME),
                "name": card.model_name,
                "version": card.model_version,
            }
        files = sorted(p.relative_to(stage).as_posix() for p in stage.rglob("*") if p.is_file())
        hashes = {f: file_sha256(stage / f) for f in files}
        # The service worker's cache name changes with any other file and is written into the worker itself: a
        # browser looks for a new app only when sw.js changes, and then replaces the old cache whole.
        digest = hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()[:16]
        record["cache"] = f"ordnance-tablet-{digest}"
        worker = stage / "sw.js"
        source = worker.read_text()
        if '"use strict";\n' not in source:
            raise OutputError("the service worker template has no 'use strict' line", worker)
        worker.write_text(source.replace('"use strict";\n', f'"use strict";\nconst CACHE = "{record["cache"]}";\n', 1))
        record["files"] = hashes | {"sw.js": file_sha256(worker)}
        (stage / "app.json").write_text(json.dumps(record, indent=2, sort_keys=True))
        old = out.with_name(f".{out.name}.old")
        if out.exists():
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
        stage.rename(out)
        shutil.rmtree(old, ignore_errors=True)
        return record
    finally:
        shutil.rmtree(stage, ignore_errors=True)
