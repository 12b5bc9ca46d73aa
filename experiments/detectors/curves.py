"""The synthetic recipe's validation curves of two or more training runs, side by side, from their MLflow store.

    .venv/bin/python experiments/detectors/curves.py default=f4dd80e0c0c543c89403440fc1350514 \\
        fast=675eecf370f24f32bee079e2673a1b1e

For each run: its detector, training minutes (MLflow's start and end), steps, and at every validation the hazard
AP, the recall at the operating point (lowest score whose precision is at least the recipe's 0.5) and mAP50, on
the 200 held-out synthetic tiles (bf16 validation, as the runs log them). Writes curves.csv (every validation of
every run) and curves.json here and the table into experiments/README.md; the MLflow store
(experiments/mlruns, or MLFLOW_TRACKING_URI) does not travel with a clone, the CSV does.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
BEGIN, END = "<!-- detectors-training:begin -->", "<!-- detectors-training:end -->"
METRICS = ("val/hazard_ap", "val/recall", "val/map50")


def read_runs(pairs: list[tuple[str, str]]) -> list[dict]:
    import mlflow
    from ordnance.training.tracking import default_tracking_uri

    client = mlflow.MlflowClient(default_tracking_uri())
    runs = []
    for tag, run_id in pairs:
        run = client.get_run(run_id)
        history = {k: {m.step: m.value for m in client.get_metric_history(run_id, k)} for k in METRICS}
        steps = sorted(history["val/hazard_ap"])
        runs.append({
            "tag": tag,
            "run": run_id,
            "detector": run.data.params.get("model.model"),
            "minutes": (run.info.end_time - run.info.start_time) / 60000 if run.info.end_time else None,
            "validations": [{"step": s + 1, **{k: history[k].get(s) for k in METRICS}} for s in steps],
        })  # fmt: skip
    return runs


def markdown(runs: list[dict]) -> str:
    lines = [
        "Validation on the 200 held-out synthetic tiles (bf16, as logged): hazard AP / recall at precision 0.5 / "
        "mAP50 at each validation.",
        "",
        "| run | detector | training minutes | steps | "
        + " | ".join(f"step {v['step']:,}" for v in runs[0]["validations"][:4])
        + " | last |",
        "| --- | --- | --- | --- | " + " | ".join("---" for _ in runs[0]["validations"][:4]) + " | --- |",
    ]

    def cell(v: dict) -> str:
        return f"{v['val/hazard_ap']:.3f} / {v['val/recall']:.3f} / {v['val/map50']:.3f}"

    for r in runs:
        by_step = {v["step"]: v for v in r["validations"]}
        firsts = [cell(by_step[v["step"]]) if v["step"] in by_step else "" for v in runs[0]["validations"][:4]]
        last = r["validations"][-1]
        lines.append(f"| {r['tag']} ({r['run'][:8]}) | `{r['detector']}` | {r['minutes']:.1f} | {last['step']:,} | "
                     + " | ".join(firsts) + f" | **{cell(last)}** |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from common import write_readme_block

    args = argv if argv is not None else sys.argv[1:]
    if not args:
        sys.exit(__doc__)
    runs = read_runs([tuple(a.split("=", 1)) for a in args])
    tmp = HERE / "curves.csv.tmp"
    with open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["tag", "run", "detector", "step", *METRICS])
        for r in runs:
            for v in r["validations"]:
                writer.writerow([r["tag"], r["run"], r["detector"], v["step"], *(v[k] for k in METRICS)])
    os.replace(tmp, HERE / "curves.csv")
    (HERE / "curves.json").write_text(json.dumps(runs, indent=1) + "\n")
    text = markdown(runs)
    write_readme_block(BEGIN, END, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
