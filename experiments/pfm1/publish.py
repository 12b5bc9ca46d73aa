"""Make a finished stage's exported files the project's RGB model: experiments/models/rgb.onnx, rgb.int8.onnx and
the parity report rgb.parity.json (the report is kept in the repository, the files are not).

Only a stage whose export passed the parity gate is taken, and each file is checked against the report before it
is copied: the card inside the ONNX file must carry the weights hash, score threshold and view count the report's
card names. Every file is first copied under a temporary name and only then renamed into place, so a failed copy
leaves the published set as it was; an int8 file of an earlier model is removed when the new report has none.

    .venv/bin/python experiments/pfm1/publish.py imagenet_flips2
    .venv/bin/python experiments/pfm1/publish.py imagenet_ensemble4 --name rgb_ensemble
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

from common import HERE, REPO
from ordnance.inference.card import read_card

DATA = HERE / "data"
MODELS = REPO / "experiments" / "models"


def publish(stage: str, name: str = "rgb") -> list[str]:
    report_path = DATA / f"{stage}.parity.json"
    if not report_path.exists():
        raise SystemExit(f"{report_path}: no parity report; export the stage first (run.py --reexport {stage})")
    report = json.loads(report_path.read_text())
    if not report.get("passed"):
        raise SystemExit(f"{report_path}: the export did not pass the parity gate; it is not published")
    expected = report["card"]
    sources = {f"{name}.onnx": DATA / f"{stage}.onnx"}
    if "int8" in report and "refused" not in report["int8"]:  # a refused int8 export left no file
        sources[f"{name}.int8.onnx"] = DATA / f"{stage}.int8.onnx"
    for source in sources.values():
        if not source.exists():
            raise SystemExit(f"{source}: missing; the parity report names it")
        card = read_card(source)
        if (
            card.weights_sha256 != expected["weights_sha256"]
            or card.score_threshold != expected["score_threshold"]
            or card.test_flips != expected.get("test_flips", 1)
        ):
            raise SystemExit(f"{source}: its card does not match {report_path.name} (another export?)")
    MODELS.mkdir(parents=True, exist_ok=True)
    copies = [*sources.items(), (f"{name}.parity.json", report_path)]
    try:
        for target, source in copies:
            shutil.copyfile(source, MODELS / f".{target}.tmp")
    except OSError as error:
        for target, _ in copies:
            (MODELS / f".{target}.tmp").unlink(missing_ok=True)
        raise SystemExit(f"{MODELS}: could not copy the files ({error.strerror}); nothing was published") from None
    (MODELS / f"{name}.int8.onnx").unlink(missing_ok=True)  # an earlier model's, where this export has none
    for target, _ in copies:
        os.replace(MODELS / f".{target}.tmp", MODELS / target)
    return [str((MODELS / target).relative_to(REPO)) for target, _ in copies]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", help="a run.py stage whose files lie in experiments/pfm1/data")
    parser.add_argument(
        "--name", default="rgb", help="the published files' name in experiments/models (default: rgb, the RGB model)"
    )
    args = parser.parse_args(argv)
    if not args.name.replace("_", "").replace("-", "").isalnum():
        parser.error(f"--name {args.name!r}: letters, digits, '-' and '_' only")
    for path in publish(args.stage, args.name):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
