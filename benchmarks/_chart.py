"""Draw a family's results as a PNG chart: ``python -m benchmarks FAMILY --chart PATH.png``.

The chart is made from the same raw numbers ``--json`` writes (the ``table`` of a run), so it
shows exactly what the printed table shows: one group of bars per workload, one bar per peer,
in operations per second on a log scale (every workload reads "higher is better"), each bar
labelled with its rate and its time per operation. Rows that are ratios, not measurements,
are left out. matplotlib is imported only here, and only when a chart is asked for.
"""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING, Any, Final

from benchmarks._common import WS, fmt_seconds, versions_line

if TYPE_CHECKING:
    from collections.abc import Sequence

# watchstore in a strong colour, its peers in quieter ones, always in the same order.
WS_COLOUR: Final = "#1f5fa8"
PEER_COLOURS: Final = ("#e08a2c", "#8c8c8c", "#5aa36a", "#b05a9a")


def measured_rows(results: dict[str, Any]) -> list[tuple[str, dict[str, float]]]:
    """``(workload, {peer: seconds per operation})`` for each measured row of a run."""
    rows = []
    for label, row in results["table"].items():
        peers = row.get("peers", row)  # durable nests its peers one level down
        seconds = {
            peer: float(measure["seconds_per_op"])
            for peer, measure in peers.items()
            if isinstance(measure, dict) and "seconds_per_op" in measure
        }
        if seconds:
            rows.append((label, seconds))
    return rows


def fmt_rate(per_second: float) -> str:
    """A rate for a bar label: ``1.6M/s``, ``70.0k/s``, ``812/s``, ``0.49/s``."""
    if per_second >= 1e6:
        return f"{per_second / 1e6:.1f}M/s"
    if per_second >= 1e4:
        return f"{per_second / 1e3:.0f}k/s"
    if per_second >= 1e3:
        return f"{per_second / 1e3:.1f}k/s"
    return f"{per_second:.3g}/s"


def peer_order(rows: Sequence[tuple[str, dict[str, float]]]) -> list[str]:
    """Every peer that appears, watchstore first, the others in order of appearance."""
    peers = dict.fromkeys(peer for _label, seconds in rows for peer in seconds)
    return sorted(peers, key=lambda peer: peer != WS)


def write_chart(family: str, results: dict[str, Any], path: str) -> None:
    """Draw ``results`` (what ``--json`` writes for ``family``) into the PNG file ``path``."""
    try:
        from matplotlib.figure import Figure
        from matplotlib.patches import Patch
    except ImportError:
        raise SystemExit(
            "--chart needs matplotlib: pip install --group bench (or `make install`)"
        ) from None

    rows = measured_rows(results)
    if not rows:
        raise SystemExit(f"the {family} run has no measured rows to chart")
    peers = peer_order(rows)
    colours = dict(zip(peers, (WS_COLOUR, *PEER_COLOURS), strict=False))
    bar = 0.8 / len(peers)

    fig = Figure(figsize=(11, 1.1 + 0.22 * len(peers) * len(rows) + 0.3 * len(rows)), dpi=110)
    ax = fig.subplots()
    for row, (_label, seconds) in enumerate(rows):
        present = [peer for peer in peers if peer in seconds]
        for slot, peer in enumerate(present):
            y = row + (slot - (len(present) - 1) / 2) * bar
            rate = 1.0 / seconds[peer]
            ax.barh(y, rate, height=bar * 0.9, color=colours[peer])
            ax.annotate(
                f" {fmt_rate(rate)} ({fmt_seconds(seconds[peer])})",
                (rate, y),
                va="center",
                fontsize=8,
                color="#1a1a1a" if peer == WS else "#555555",
            )
    ax.set_xscale("log")
    ax.set_yticks(range(len(rows)), [textwrap.fill(label, 52) for label, _ in rows], fontsize=8)
    ax.invert_yaxis()
    low = min(1.0 / max(s.values()) for _label, s in rows)
    high = max(1.0 / min(s.values()) for _label, s in rows)
    ax.set_xlim(low / 3, high * 30)  # room for the labels right of the longest bar
    ax.set_xlabel("operations per second, log scale (higher is better); label: rate (time per op)")
    ax.grid(axis="x", which="major", color="#dddddd")
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    handles = [Patch(color=colours[peer], label=peer) for peer in peers]
    ax.legend(handles=handles, loc="lower right", fontsize=8, frameon=False)
    env = results.get("environment", {})
    quick = " (--quick: small sizes)" if env.get("quick") else ""
    ax.set_title(
        f"python -m benchmarks {family}{quick}\n{versions_line(env)}" if "python" in env else "",
        fontsize=9,
        loc="left",
    )
    fig.tight_layout()
    fig.savefig(path, format="png")
