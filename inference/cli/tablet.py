"""``ordnance tablet build OUT --model model.onnx``: the offline field tablet app."""

from __future__ import annotations

from pathlib import Path

import click


@click.group("tablet")
def tablet() -> None:
    """The field tablet app: an offline web page that scores drone photos with the exported model."""


@tablet.command("build")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--model", type=click.Path(path_type=Path), default=None,
              help="Exported .onnx to bundle; without it the page asks for one from the device's storage.")  # fmt: skip
@click.option("--npm-cache", type=click.Path(path_type=Path), default=None,
              help="Folder of npm tarballs (default: ~/.cache/ordnance/npm); missing ones come from npm.")  # fmt: skip
def build(out: Path, model: Path | None, npm_cache: Path | None) -> None:
    """Write the app to OUT: HTML, JavaScript, onnxruntime-web and exifr at pinned versions, the model when given.

    Serve OUT once from any web server over HTTPS or on localhost (for example `python -m http.server -d OUT`),
    open it on the tablet and install it; it then opens and scores with no network."""
    from ordnance.inference.tablet import build_tablet

    record = build_tablet(out, model, cache=npm_cache)
    vendor = ", ".join(f"{k} {v['version']}" for k, v in record["vendor"].items())
    model_note = record["model"]
    bundled = f"model {model_note['source']} bundled" if model_note else "no model bundled (opened on the device)"
    click.echo(f"{out}: {len(record['files'])} files; {vendor}; {bundled}")
