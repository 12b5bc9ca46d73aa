"""Write the review-loop tables from results.json (real flights) and results_synthetic.json (synthetic surveys):
results.md beside this script, and experiments/README.md between the ``<!-- review_loop:begin -->`` and
``<!-- review_loop:end -->`` markers.

    .venv/bin/python experiments/review_loop/report.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "pfm1"))
from common import write_readme_block  # noqa: E402

BEGIN, END = "<!-- review_loop:begin -->", "<!-- review_loop:end -->"
RECALLS = ("0.6", "0.7", "0.8")
RATES = ("250", "500", "1000")


def _fa(value) -> float:
    """False alarms per ha at a recall, infinite where the recall was never reached (None); 0 is a value."""
    return float("inf") if value is None else value


def _f(value, digits: int = 0) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _row(name: str, entry: dict) -> str:
    judge = entry["judge"]
    review = entry.get("review", {})
    decided = f"{review['confirmed']} / {review['rejected']}" if review else ("0" if name == "control" else "")
    cells = [name, decided]
    cells += [_f(judge[f"fa_per_ha_at_recall_{r}"]) for r in RECALLS]
    cells += [_f(judge[f"recall_at_{r}_fa_per_ha"], 3) for r in RATES]
    cells += [_f(judge["ap"], 3), _f(entry.get("train_minutes"), 1)]
    return "| " + " | ".join(cells) + " |"


def halving(results: dict, base: str, recall: str = "0.7") -> dict[str, str]:
    """Per order, the fewest decisions that halve false alarms per ha at ``recall`` against ``base``."""
    target = results[base]["judge"][f"fa_per_ha_at_recall_{recall}"]
    out = {}
    for order in ("score", "informative"):
        rows = sorted((v["n"], v) for k, v in results.items() if k.startswith(f"{order}_"))
        hits = [n for n, v in rows if _fa(v["judge"][f"fa_per_ha_at_recall_{recall}"]) <= _fa(target) / 2]
        if rows:
            out[order] = f"{hits[0]}" if hits else f"not reached with up to {rows[-1][0]}"
    return out


def render(results: dict) -> str:
    setup = results["setup"]
    header = (
        "| model | decisions (confirmed / rejected) | "
        + " | ".join(f"FA/ha @ recall {r}" for r in RECALLS)
        + " | "
        + " | ".join(f"recall @ {r} FA/ha" for r in RATES)
        + " | AP | fine-tune min |"
    )
    lines = [header, "|" + " --- |" * (2 + len(RECALLS) + len(RATES) + 2)]
    synthetic = setup.get("arm") == "synthetic"
    run = Path(setup["parent_ckpt"]).parent.parent.name[:8]  # runs/<experiment>/<run>/checkpoints/<file>
    parent = "parent (the synthetic recipe's model)" if synthetic else f"parent (the RGB model of run {run})"
    lines.append(_row(parent, results["parent"]))
    if "control_0" in results:
        lines.append(_row("control", results["control_0"]))
    for order in ("score", "informative"):
        for _, key in sorted((v["n"], k) for k, v in results.items() if k.startswith(f"{order}_")):
            lines.append(_row(f"{order} order, N = {results[key]['n']}", results[key]))
    if synthetic:
        where = (f"Loop: {setup['loop']} (a seeded synthetic survey at 1 cm)", "the synthetic training tiles",
                 f"Judge: {setup['judge']} (another seeded survey, other ground)")  # fmt: skip
    elif setup.get("arm") == "pfm1_train":
        where = (f"Loop: {setup['loop']} (the four training flights: hard-negative mining)", "the training flights",
                 f"Judge: {setup['judge']} (the test flight, never trained on)")  # fmt: skip
    elif setup.get("arm") == "pfm1_same":
        where = (f"Loop: {setup['loop']} (one half of the test-flight mosaic)", "the training flights",
                 f"Judge: {setup['judge']} (the other half: same flight, ground and light, items never decided "
                 "on)")  # fmt: skip
    else:
        where = (f"Loop: {setup['loop']} (the valid flight)", "the training flights",
                 f"Judge: {setup['judge']} (the test flight, never trained on)")  # fmt: skip
    judge = results["parent"]["judge"]
    notes = [
        f"{where[0]} scored at {setup['review_threshold']} by the parent, the first N candidates decided from its "
        f"truth, then {setup['steps']} fine-tuning steps (batch 8, half replay of {where[1]}). {where[2]}, hits "
        f"within half the item's size, at least {setup['floor_m'] * 100:.0f} cm. The judge covers "
        f"{judge['area_ha']:.3f} ha with {judge['n_truth']} items: one false alarm is {1 / judge['area_ha']:.0f} "
        f"per ha and one item {1 / judge['n_truth']:.2f} of recall.",
    ]
    for base, label in (("parent", "the parent"), ("control_0", "the control")):
        if base in results:
            found = halving(results, base)
            if found:
                notes.append(
                    f"Decisions that halve false alarms per ha at recall 0.7 against {label}: "
                    + ", ".join(f"{order} order {n}" for order, n in found.items())
                    + "."
                )
    rows = [v for k, v in results.items() if k.startswith(("score_", "informative_"))]
    if rows and "control_0" in results:
        control = results["control_0"]["judge"]
        better = [
            v for v in rows if _fa(v["judge"]["fa_per_ha_at_recall_0.7"]) < _fa(control["fa_per_ha_at_recall_0.7"])
        ]
        best = max(rows, key=lambda v: v["judge"]["ap"])
        notes.append(
            f"{len(better)} of {len(rows)} fine-tunes on decisions have fewer false alarms per ha at recall 0.7 than "
            f"the control; the best AP on the judge flight with decisions is {best['judge']['ap']:.3f} "
            f"({best['order']} order, N = {best['n']}) against {control['ap']:.3f} for the control."
        )
    return "\n".join(lines) + "\n\n" + "\n\n".join(notes)


def main() -> int:
    parts = []
    for name, title in (("results.json", "Real flights (PFM-1)"), ("results_synthetic.json", "Synthetic surveys"),
                        ("results_train_flights.json", "Training flights reviewed (hard-negative mining), judged on "
                         "the test flight")):  # fmt: skip
        if (HERE / name).exists():
            parts.append(f"**{title}**\n\n" + render(json.loads((HERE / name).read_text())))
    same = HERE / "results_same_ground.json"
    if same.exists():
        for fold, results in json.loads(same.read_text())["folds"].items():
            if "parent" in results:
                half = "north" if fold.endswith("_n") else "south"
                title = f"Same ground (PFM-1 test flight): decisions on its {half}ern half, judged on the other"
                parts.append(f"**{title}**\n\n" + render(results))
    text = "\n\n".join(parts)
    (HERE / "results.md").write_text(text + "\n")
    write_readme_block(BEGIN, END, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
