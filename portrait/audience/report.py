"""The insight report for people: one self-contained HTML page with inline SVG charts (no script, no CDN).

Sections: the audience in one line, its top distinguishing traits in words, one chart of the traits' lifts
(audience against the average customer), one chart per tier column (share of the audience and of the
population per tier), and the full tables with the adjusted p-values.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

from portrait.audience.insight import CategoryTrait, Insight, NumericTrait
from portrait.audience.store import AudienceRecord

AUDIENCE_COLOUR = "#2563eb"
POPULATION_COLOUR = "#9ca3af"
UP_COLOUR, DOWN_COLOUR = "#16a34a", "#dc2626"
CHART_WIDTH = 720

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto; max-width: 960px;
       color: #111827; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { font-size: 1.2rem; margin-top: 2rem; }
.meta { color: #4b5563; } .chart { display: block; margin: .5rem 0 1rem; }
ul.traits li { margin: .3rem 0; } table { border-collapse: collapse; width: 100%; font-size: .85rem; }
th, td { border-bottom: 1px solid #e5e7eb; padding: .25rem .4rem; text-align: right; }
th:first-child, td:first-child { text-align: left; } tr.sig td { font-weight: 600; }
.legend span { display: inline-block; width: .8rem; height: .8rem; margin: 0 .3rem 0 1rem; vertical-align: middle; }
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _num(value: float | None, digits: int = 3) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def lift_chart(traits: Sequence[tuple[str, float]], title: str) -> str:
    """Horizontal bars of lifts on a log scale around 1 (the average customer), one per trait."""
    rows = [(label, lift) for label, lift in traits if lift is not None and lift > 0 and math.isfinite(lift)]
    if not rows:
        return ""
    bar_h, gap, left, right = 22, 8, 300, 70
    height = len(rows) * (bar_h + gap) + 40
    span = max(max(abs(math.log(lift)) for _, lift in rows), math.log(2))
    mid = left + (CHART_WIDTH - left - right) / 2
    half = (CHART_WIDTH - left - right) / 2
    parts = [
        f'<svg class="chart" role="img" aria-label="{_e(title)}" width="{CHART_WIDTH}" height="{height}" '
        f'viewBox="0 0 {CHART_WIDTH} {height}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{_e(title)}</title>",
        f'<line x1="{mid:.1f}" y1="10" x2="{mid:.1f}" y2="{height - 20}" stroke="#374151" stroke-width="1"/>',
        f'<text x="{mid:.1f}" y="{height - 5}" font-size="11" text-anchor="middle" fill="#374151">1× = the average customer</text>',
    ]
    for i, (label, lift) in enumerate(rows):
        y = 15 + i * (bar_h + gap)
        width = max(abs(math.log(lift)) / span * half, 2.0)
        x = mid if lift >= 1 else mid - width
        colour = UP_COLOUR if lift >= 1 else DOWN_COLOUR
        text_x = mid + width + 4 if lift >= 1 else mid - width - 4
        anchor = "start" if lift >= 1 else "end"
        short = label if len(label) <= 46 else label[:45] + "…"
        parts += [
            f'<text x="{left - 8}" y="{y + bar_h * 0.7:.1f}" font-size="12" text-anchor="end" fill="#111827">{_e(short)}</text>',
            f'<rect class="bar" x="{x:.1f}" y="{y}" width="{width:.1f}" height="{bar_h}" fill="{colour}" rx="2">'
            f"<title>{_e(label)}: {lift:.2f}×</title></rect>",
            f'<text x="{text_x:.1f}" y="{y + bar_h * 0.7:.1f}" font-size="11" text-anchor="{anchor}" fill="#111827">{lift:.2f}×</text>',
        ]
    parts.append("</svg>")
    return "".join(parts)


def share_chart(column: str, rows: Sequence[CategoryTrait]) -> str:
    """Grouped horizontal bars: each value's share of the audience and of the population."""
    if not rows:
        return ""
    bar_h, gap, left = 14, 12, 160
    height = len(rows) * (2 * bar_h + gap) + 30
    scale = (CHART_WIDTH - left - 60) / max(
        max(max(r.audience_share, r.population_share) for r in rows), 1e-9
    )
    parts = [
        f'<svg class="chart" role="img" aria-label="{_e(column)}" width="{CHART_WIDTH}" height="{height}" '
        f'viewBox="0 0 {CHART_WIDTH} {height}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{_e(column)}: share of the audience and of all customers</title>",
    ]
    for i, r in enumerate(rows):
        y = 10 + i * (2 * bar_h + gap)
        parts.append(
            f'<text x="{left - 8}" y="{y + bar_h + 4}" font-size="12" text-anchor="end" fill="#111827">{_e(r.value)}</text>'
        )
        for j, (share, colour, who) in enumerate(
            (
                (r.audience_share, AUDIENCE_COLOUR, "audience"),
                (r.population_share, POPULATION_COLOUR, "all customers"),
            )
        ):
            width = max(share * scale, 1.0)
            yy = y + j * bar_h
            parts += [
                f'<rect class="bar" x="{left}" y="{yy}" width="{width:.1f}" height="{bar_h - 2}" fill="{colour}">'
                f"<title>{_e(who)}: {share:.1%}</title></rect>",
                f'<text x="{left + width + 4:.1f}" y="{yy + bar_h - 4}" font-size="10" fill="#374151">{share:.1%}</text>',
            ]
    parts.append("</svg>")
    return "".join(parts)


def _numeric_table(rows: Sequence[NumericTrait]) -> str:
    head = "<tr><th>feature</th><th>audience mean</th><th>population mean</th><th>lift</th><th>effect (d)</th><th>q-value</th></tr>"
    body = "".join(
        f'<tr class="{"sig" if r.significant else ""}"><td>{_e(r.field)}</td><td>{_num(r.audience_mean)}</td>'
        f"<td>{_num(r.population_mean)}</td><td>{_num(r.lift)}</td><td>{_num(r.effect, 2)}</td>"
        f"<td>{_num(r.q_value, 2)}</td></tr>"
        for r in rows
    )
    return f"<table>{head}{body}</table>"


def _category_table(rows: Sequence[CategoryTrait]) -> str:
    head = "<tr><th>attribute = value</th><th>audience</th><th>population</th><th>lift</th><th>effect (h)</th><th>q-value</th></tr>"
    body = "".join(
        f'<tr class="{"sig" if r.significant else ""}"><td>{_e(r.field)} = {_e(r.value)}</td>'
        f"<td>{r.audience_share:.1%}</td><td>{r.population_share:.1%}</td><td>{_num(r.lift)}</td>"
        f"<td>{_num(r.effect, 2)}</td><td>{_num(r.q_value, 2)}</td></tr>"
        for r in rows
    )
    return f"<table>{head}{body}</table>"


def insight_html(record: AudienceRecord, result: Insight) -> str:
    """The whole report page."""
    significant = [r for r in result.numeric if r.significant and r.lift is not None]
    significant.sort(key=lambda r: -abs(r.effect or 0.0))
    lifts = [(r.field.replace("_", " "), r.lift) for r in significant[:12]]
    cats = [
        r
        for r in result.categorical
        if r.significant and r.lift is not None and r.audience_share > r.population_share
    ]
    cats.sort(key=lambda r: -abs(r.effect))
    lifts += [(f"{r.field.replace('_', ' ')} = {r.value}", r.lift) for r in cats[:6]]
    tier_columns = [c for c in dict.fromkeys(r.field for r in result.categorical) if c.endswith("_tier")]
    tier_columns += [
        c for c in ("lifecycle_stage", "rfm_segment") if any(r.field == c for r in result.categorical)
    ]
    traits = (
        "".join(f"<li>{_e(t)}</li>" for t in result.top_traits)
        or "<li>No difference is more than noise.</li>"
    )
    sections = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Audience insight: {_e(record.name)}</title>",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{_e(record.name)}</h1>",
        f'<p class="meta">{result.audience_size:,} of {result.population_size:,} customers '
        f"({result.audience_size / max(result.population_size, 1):.1%}) · audience {_e(record.id)} ({_e(record.kind)}) · "
        f"created {record.created_at:%Y-%m-%d %H:%M} UTC · features of {_e(record.snapshot[:10])} · models "
        f"{_e(', '.join(f'{k} v{v}' for k, v in sorted(record.model_versions.items())))}</p>",
        "<h2>What sets this audience apart</h2>",
        f'<ul class="traits">{traits}</ul>',
        f'<p class="meta">{_e(result.method)}; significant at q ≤ {result.alpha} over {result.tests} tests.</p>',
    ]
    chart = lift_chart(lifts, "Lift against the average customer (log scale)")
    if chart:
        sections += ["<h2>Lift against the average customer</h2>", chart]
    sections.append(
        '<h2>Tiers and segments</h2><p class="legend"><span style="background:'
        f'{AUDIENCE_COLOUR}"></span>audience<span style="background:{POPULATION_COLOUR}"></span>all customers</p>'
    )
    for column in tier_columns:
        rows = sorted((r for r in result.categorical if r.field == column), key=lambda r: r.value)
        sections += [f"<h3>{_e(column.replace('_', ' '))}</h3>", share_chart(column, rows)]
    sections += [
        "<h2>Every feature</h2>",
        _numeric_table(result.numeric),
        "<h2>Every attribute</h2>",
        _category_table(result.categorical),
        "</body></html>",
    ]
    return "\n".join(sections)


__all__ = ["insight_html", "lift_chart", "share_chart"]
