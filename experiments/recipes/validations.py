"""Every validation of one MLflow training run: a CSV beside this script and a markdown table in
experiments/README.md between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->``.

    .venv/bin/python experiments/recipes/validations.py RUN_ID --name thermal-rerun \\
        --goal "val/map50>0.641:YOLO11n from scratch, 38.5 min, same split"

Reads the run from the project's MLflow store (MLFLOW_TRACKING_URI, else experiments/mlruns).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "experiments"))

from common import write_readme_block  # noqa: E402

COLUMNS = {
    "val/map50": "mAP50",
    "val/map": "mAP50-95",
    "val/hazard_ap": "hazard AP",
    "val/recall": "recall at the operating point",
    "val/fa_per_image": "FA/frame there",
    "val/recall_at_0.1_fa_per_image": "recall @ 0.1 FA/frame",
    "val/recall_at_1_fa_per_image": "recall @ 1 FA/frame",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_id")
    parser.add_argument("--name", required=True, help="CSV name and README marker")
    parser.add_argument("--goal", default=None, help="METRIC>VALUE:what it is, checked on the best validation")
    args = parser.parse_args(argv)
    import mlflow
    from ordnance.training.tracking import default_tracking_uri

    os.chdir(REPO)  # the default store lies under the repository
    client = mlflow.MlflowClient(tracking_uri=default_tracking_uri())
    run = client.get_run(args.run_id)
    history = {key: {m.step: m.value for m in client.get_metric_history(args.run_id, key)} for key in COLUMNS}
    epochs = {m.step: int(m.value) for m in client.get_metric_history(args.run_id, "epoch")}
    steps = sorted(history["val/map50"])
    rows = [{"step": s, "epoch": epochs.get(s, ""), **{k: history[k].get(s, "") for k in COLUMNS}} for s in steps]
    out = HERE / f"{args.name}.csv"
    with open(out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["step", "epoch", *COLUMNS])
        writer.writeheader()
        writer.writerows(rows)
    best = max(rows, key=lambda r: r["val/map50"])  # the highest mAP50 (the checkpoint kept: best hazard AP)
    minutes = (run.info.end_time - run.info.start_time) / 60000 if run.info.end_time else float("nan")
    init = run.data.params.get("model.init_checkpoint")
    init = init if init not in (None, "", "None", "null") else "no checkpoint"  # the detector's own initialisation
    lines = [
        f"MLflow run `{args.run_id}` ({init} as init; "
        f"{len(rows)} validations, {minutes:.1f} minutes from start to end of the run); every validation in "
        f"`experiments/recipes/{out.name}`.",
        "",
        "| epoch | " + " | ".join(COLUMNS.values()) + " |",
        "| --- | " + " | ".join("---" for _ in COLUMNS) + " |",
    ]
    for r in rows:
        mark = " (highest mAP50)" if r is best else ""
        cells = " | ".join(f"{r[k]:.3f}" if r[k] != "" else "" for k in COLUMNS)
        lines.append(f"| {r['epoch']}{mark} | {cells} |")
    if args.goal:
        rule, _, what = args.goal.partition(":")
        metric, _, value = rule.partition(">")
        met = best[metric] > float(value)
        lines += ["", f"Goal: highest {COLUMNS.get(metric, metric)} above {value} ({what}): "
                      f"{best[metric]:.3f}, {'met' if met else 'not met'}."]  # fmt: skip
    text = "\n".join(lines) + "\n"
    write_readme_block(f"<!-- {args.name}:begin -->", f"<!-- {args.name}:end -->", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
