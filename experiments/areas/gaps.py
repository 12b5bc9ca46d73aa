"""How far apart the items of one minefield lie: for each layout pattern of the synthetic generator
(datasets/synth/layout.py, after ../shared/domain/ORDNANCE.md), the longest edge of the minimum spanning tree of
its items over many drawn patterns. A linking distance below a pattern's longest edge splits it into several
areas even when every item is found; the default rules (inference/areas.py, AreaRules) are set against these.

Writes gaps.json and gaps.md beside this script and the block in experiments/README.md.

    .venv/bin/python experiments/areas/gaps.py
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
from scipy.sparse.csgraph import minimum_spanning_tree
from scipy.spatial.distance import pdist, squareform

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "pfm1"))
from common import write_readme_block  # noqa: E402

PATTERNS = ("at_row", "ap_cluster", "pfm_ellipse", "submunitions")
CLASS = {"at_row": "at_mine", "ap_cluster": "ap_mine", "pfm_ellipse": "ap_mine", "submunitions": "uxo"}
DRAWS, SEED, FIELD_M = 2000, 2026, 1000.0  # patterns drawn per layout; a field large enough to cut none


def longest_edges(name: str, draws: int = DRAWS, seed: int = SEED) -> np.ndarray:
    from ordnance.datasets.synth.layout import PATTERNS as LAYOUTS

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(draws):
        points = np.array([p for _, p in LAYOUTS[name](rng, FIELD_M, FIELD_M)])
        if len(points) > 1:
            out.append(float(minimum_spanning_tree(squareform(pdist(points))).toarray().max()))
    return np.array(out)


def main() -> int:
    from ordnance.inference.areas import AreaRules

    rules = AreaRules()
    results = {"draws": DRAWS, "seed": SEED, "patterns": {}}
    for name in PATTERNS:
        edges = longest_edges(name)
        link = rules.distance(rules.link_m, CLASS[name])
        # a cluster is one area when its longest gap is within the linking distance or its buffers touch
        reach = max(link, 2 * rules.distance(rules.buffer_m, CLASS[name]))
        results["patterns"][name] = {
            "class": CLASS[name],
            "patterns": len(edges),
            "percentiles_m": {str(q): float(np.percentile(edges, q)) for q in (50, 90, 95, 99)},
            "link_m": link,
            "one_area_share": float(np.mean(edges <= reach)),
        }
    tmp = HERE / "gaps.json.tmp"
    tmp.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, HERE / "gaps.json")
    lines = [
        f"Longest gap inside one minefield (minimum spanning tree of its items), {DRAWS} drawn patterns per layout:",
        "",
        "| layout | class | median | 90th percentile | 95th | 99th | default linking distance | patterns kept"
        " whole when every item is found |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in results["patterns"].items():
        p = r["percentiles_m"]
        lines.append(
            f"| {name} | {r['class']} | {p['50']:.1f} m | {p['90']:.1f} m | {p['95']:.1f} m | {p['99']:.1f} m | "
            f"{r['link_m']:.0f} m | {r['one_area_share']:.3f} |"
        )
    text = "\n".join(lines)
    (HERE / "gaps.md").write_text(text + "\n")
    write_readme_block("<!-- area-gaps:begin -->", "<!-- area-gaps:end -->", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
