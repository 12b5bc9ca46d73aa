"""Tables of experiments/areas/results.json: results.md, and the block in experiments/README.md."""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "pfm1"))
from common import write_readme_block  # noqa: E402

ARMS = {
    "unreviewed": "unreviewed, at the card's threshold",
    "dense": "unreviewed, only where they cluster beyond chance (density rule, alpha 0.01)",
    "reviewed": "after review of every candidate at the threshold",
}


def _survey(results: dict, entry: dict) -> dict:
    """How a survey was drawn and scored (surveys measured before this was kept per survey share the top level's)."""
    return {k: entry.get(k, results.get(k)) for k in ("size_px", "patterns", "layouts", "model")}


def table(results: dict) -> str:
    lines = [
        "Synthetic surveys at 1 cm, scored by the synthetic recipe's exported model; default area rules. Layouts:"
        " the layout patterns a survey's patterns were drawn from (all: isolated UXO included).",
        "",
        "| survey seed | survey | arm | true minefields | covered by exactly one area | by none | by several | areas"
        " over several minefields | true items inside an area | area proposed / true minefields' area | false areas"
        " per 100 ha | areas |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for seed, entry in sorted(results["surveys"].items()):
        how = _survey(results, entry)
        layouts = ", ".join(how["layouts"] or []) or "all"
        uxo_link = entry.get("rules", {}).get("link_m", {}).get("uxo", 30.0)  # 30 m: the default before gaps.py
        survey = (
            f"{how['size_px']:,}² px ({how['size_px'] ** 2 / 1e8:.2f} ha), {how['patterns']} patterns; layouts:"
            f" {layouts}; UXO linking {uxo_link:.0f} m"
            + ("; clusters joined by hull distance" if entry.get("rules", {}).get("hulls_joined") else "")
            + f"; `{Path(how['model']).name}`"
            + (f" (run {entry['model_run'][:8]}, {entry.get('model_quantization')})" if entry.get("model_run") else "")
        )
        for arm, label in ARMS.items():
            if arm not in entry:
                continue
            r = entry[arm]
            lines.append(
                f"| {seed} | {survey} | {label} | {r['minefields']} | {r['minefields_one_area']} | "
                f"{r['minefields_no_area']} | {r['minefields_several_areas']} | {r['areas_over_several_minefields']} | "
                f"{r['items_inside']:.3f} | {r['proposed_ha']:.2f} / {r['true_ha']:.2f} ha "
                f"({r['proposed_over_true']:.1f}x) | {r['false_areas_per_100ha']:.0f} ({r['false_areas']} in "
                f"{r['scanned_ha']:.2f} ha) | {r['areas']} |"
            )
    return "\n".join(lines)


def minefield_table(results: dict, arm: str = "reviewed") -> str:
    """Each true minefield of the surveys that record them: its item types, items, items inside an area, areas."""
    lines = [
        f"Each true minefield, {ARMS[arm]}:",
        "",
        "| survey seed | minefield | item types | true items | inside an area | areas covering it |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    rows = 0
    for seed, entry in sorted(results["surveys"].items()):
        for k, field in enumerate(entry.get(arm, {}).get("per_minefield", []), 1):
            rows += 1
            lines.append(
                f"| {seed} | {k} | {', '.join(field['items_types'])} | {field['items']} | {field['inside']} | "
                f"{field['areas']} |"
            )
    return "\n".join(lines) if rows else ""


def main() -> int:
    results = json.loads((HERE / "results.json").read_text())
    text = "\n\n".join(t for t in (table(results), minefield_table(results)) if t)
    (HERE / "results.md").write_text(text + "\n")
    write_readme_block("<!-- areas:begin -->", "<!-- areas:end -->", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
