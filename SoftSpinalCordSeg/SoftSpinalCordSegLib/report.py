"""Cohort outputs of `softseg batch`: the CSA summary CSV, the spread of CSA across contrasts, the HTML report.

Everything is computed from the per-image `<stem>_csa.csv` files in the derivatives folder, so images done
by an earlier run count as much as those done now. The HTML report embeds its images (base64 PNG) and
styles, so it opens offline and can be mailed as one file.
"""

from __future__ import annotations

import base64
import csv
import datetime
import html
from io import BytesIO
import math
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from .bids import REPORT_FILE, SPREAD_FILE, SUMMARY_FILE
from .morphometry import CsaTable, shared_z_range

# a summary row of `softseg csa --vert/--slices` (its first columns, same names) with the image it belongs to
SUMMARY_COLUMNS = ["subject", "session", "contrast", "level", "slices", "n_slices", "z_min_mm", "z_max_mm", "csa_mm2_mean",
                   "csa_mm2_sd", "slices_to_check", "warning", "file"]
SPREAD_COLUMNS = ["subject", "session", "level", "z_min_mm", "z_max_mm", "n_contrasts", "contrast_means_mm2", "mean_csa_mm2", "sd_across_contrasts_mm2", "range_mm2", "cv_percent"]
WHOLE_CORD = "all"


def contrast_label(image) -> str:
    """The BIDS suffix with the entities that tell two images of one subject and session apart (acq-MTon_MTS,
    run-2_T2w: two runs of one contrast compare as two contrasts would, a scan-rescan spread)."""
    others = [f"{k}-{v}" for k, v in image.entities.items() if k not in ("sub", "ses")]
    return "_".join(others + [image.contrast or "image"])


def _levels(table) -> List[int]:
    return sorted({row["level"] for row in table.rows if row["level"] is not None})


def summarise(image, table, csa_path, warning: str = "") -> List[dict]:
    """One summary row for the whole cord, plus one per vertebral level when the table has levels; warning:
    segment's about the image (the model unsure it is a cord), on each of its rows."""
    from .plot import level_name

    aggregates = table.summarize().rows
    if _levels(table):
        aggregates += table.summarize(per_level=True).rows
    suspects = set(table.suspect_slices()) | set(table.oversized_slices()) | set(table.steep_slices())  # as segment's summary names them
    summary = []
    for aggregate in aggregates:
        level = aggregate["level"]
        rows = table.select(levels=(level, level)) if isinstance(level, int) else table.rows
        summary.append({
            "subject": image.subject, "session": image.session, "contrast": contrast_label(image),
            "level": level_name(level) if isinstance(level, int) else WHOLE_CORD, "slices": aggregate["slices"],
            "n_slices": aggregate["n_slices"],
            "z_min_mm": round(aggregate["z_min_mm"], 2), "z_max_mm": round(aggregate["z_max_mm"], 2),
            "csa_mm2_mean": round(aggregate["csa_mm2_mean"], 3), "csa_mm2_sd": _rounded(aggregate["csa_mm2_sd"]),
            "slices_to_check": " ".join(str(row["slice"]) for row in rows if row["slice"] in suspects),
            "warning": warning, "file": str(csa_path),
        })
    return summary


def _rounded(value, digits=3):
    return "" if value is None or math.isnan(value) else round(value, digits)


def contrast_spread(tables: Dict[Tuple[str, str], Dict[str, object]]) -> List[dict]:
    """Per subject (and session), how much the mean CSA varies across contrasts: the contrast-agnostic figure.

    tables: {(subject, session): {contrast: CsaTable}}. The whole cord is compared over the z range that every
    contrast covers (a longer field of view must not change the figure); levels level by level.
    """
    import numpy as np

    from .errors import InputError
    from .plot import level_name

    spread = []
    for (subject, session), by_contrast in sorted(tables.items()):
        if len(by_contrast) < 2:
            continue
        regions = [(WHOLE_CORD, {"z_range": shared_z_range(list(by_contrast.values()))})]
        shared = set.intersection(*(set(_levels(table)) for table in by_contrast.values()))
        regions += [(level_name(level), {"levels": (level, level)}) for level in sorted(shared)]
        for level, selection in regions:
            try:
                aggregates = {c: t.summarize(**selection).rows[0] for c, t in sorted(by_contrast.items())}
            except InputError:
                continue  # the contrasts share no slice there
            means = np.array([a["csa_mm2_mean"] for a in aggregates.values()])
            sd = float(means.std(ddof=1))
            spread.append({
                "subject": subject, "session": session, "level": level,
                "z_min_mm": round(min(a["z_min_mm"] for a in aggregates.values()), 2),
                "z_max_mm": round(max(a["z_max_mm"] for a in aggregates.values()), 2),
                "n_contrasts": len(means),
                "contrast_means_mm2": " ".join(f"{c}={a['csa_mm2_mean']:.2f}" for c, a in aggregates.items()),
                "mean_csa_mm2": round(float(means.mean()), 3), "sd_across_contrasts_mm2": round(sd, 3),
                "range_mm2": round(float(np.ptp(means)), 3), "cv_percent": round(100 * sd / float(means.mean()), 2),
            })
    return spread


def write_csv(path: Path, rows: List[dict], columns: List[str]) -> Path:
    from .io import atomic_path

    with atomic_path(path) as temporary:
        with open(temporary, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    return path


def write_cohort_outputs(output_dir: Path, results: Sequence, input_path) -> Tuple[Path, Path, Path]:
    """Write the summary CSV, the contrast-spread CSV and the HTML report of a batch run."""
    summary, tables, no_cord = [], defaultdict(dict), []
    for result in results:
        csa_path = Path(result.outputs.get("csa", ""))
        if result.status == "failed" or not csa_path.is_file():
            continue
        table = CsaTable.read_csv(csa_path)
        if not len(table):
            no_cord.append(result.image.path)  # listed in the report, no summary row
            continue
        summary += summarise(result.image, table, csa_path.relative_to(output_dir), result.note)
        tables[(result.image.subject, result.image.session)][contrast_label(result.image)] = table
    spread = contrast_spread(tables)
    summary_csv = write_csv(output_dir / SUMMARY_FILE, summary, SUMMARY_COLUMNS)
    spread_csv = write_csv(output_dir / SPREAD_FILE, spread, SPREAD_COLUMNS)
    report = output_dir / REPORT_FILE
    from .io import atomic_path

    with atomic_path(report) as temporary:
        temporary.write_text(render_html(results, summary, spread, tables, no_cord, input_path, output_dir), encoding="utf-8")
    return summary_csv, spread_csv, report


# --------------------------------------------------------------------------------------------- HTML
STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1240px;font-size:16px}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:14px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#eee}.failed{color:#b00020}
figure{margin:.5em 0}figcaption{font-size:15px;color:#444}
img.qc{width:100%;max-width:1200px;height:auto}img.plot{max-width:100%;height:auto}section{margin-bottom:2em}
"""

def data_uri_png(png_bytes: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes).decode("ascii")


def csa_plot_png(by_contrast: Dict[str, object], title: str) -> bytes:
    """CSA along the cord (z in mm) for each contrast of one subject, vertebral levels shaded when known."""
    from matplotlib.figure import Figure

    from .plot import level_name

    figure = Figure(figsize=(8, 3.6), dpi=100)
    axes = figure.add_subplot()
    for contrast, table in sorted(by_contrast.items()):
        axes.plot(table.column("z_mm"), table.column("csa_mm2"), marker=".", label=contrast)
    levels = sorted(set().union(*(_levels(table) for table in by_contrast.values())))
    for level in levels:
        z = [r["z_mm"] for table in by_contrast.values() for r in table.rows if r["level"] == level]
        axes.axvspan(min(z), max(z), color="0.9" if level % 2 else "0.8", zorder=0)
        axes.text((min(z) + max(z)) / 2, 0.02, level_name(level), transform=axes.get_xaxis_transform(), ha="center", fontsize=10)
    axes.set_xlabel("z (mm, inferior \u2192 superior)")
    axes.set_ylabel("CSA (mm\u00b2)")
    axes.set_title(title, fontsize=12)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=10)
    figure.tight_layout()
    buffer = BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _table(rows: List[dict], columns: List[str], css_class: str = "data") -> str:
    if not rows:
        return "<p>none</p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(row.get(c, '')))}</td>" for c in columns) + "</tr>" for row in rows
    )
    return f'<div class="scroll"><table class="{css_class}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def render_html(results, summary, spread, tables, no_cord, input_path, output_dir) -> str:
    """The self-contained report: failures first, then the cohort tables, then each subject's plot and QC."""
    counts = {s: sum(r.status == s for r in results) for s in ("done", "skipped", "failed")}
    failures = [{"file": r.image.path, "reason": r.reason} for r in results if r.status == "failed"]
    warnings = [{"file": r.image.path, "warning": r.note} for r in results if r.note]
    parts = [
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<title>softseg batch report</title>", f"<style>{STYLE}</style></head><body>",
        "<h1>Soft spinal-cord segmentation: cohort report</h1>",
        f"<p>Input: <code>{html.escape(str(input_path))}</code><br>Derivatives: <code>{html.escape(str(output_dir))}</code><br>",
        f"Generated {html.escape(datetime.datetime.now().isoformat(timespec='seconds'))}: {len(results)} images, "
        f"{counts['done']} segmented in this run, {counts['skipped']} already done, {counts['failed']} failed.</p>",
        f'<section id="failures"><h2>Failures ({len(failures)})</h2>', _table(failures, ["file", "reason"], "failed"),
    ]
    if no_cord:
        parts.append("<p>No cord found in: " + ", ".join(f"<code>{html.escape(p)}</code>" for p in no_cord) + "</p>")
    parts += [
        "</section>",
        f'<section id="warnings"><h2>Warnings ({len(warnings)}): check these masks on their QC mosaic</h2>',
        _table(warnings, ["file", "warning"], "failed"), "</section>",
        '<section id="spread"><h2>CSA spread across contrasts, per subject</h2>',
        "<p>Mean CSA of each contrast over the z range that all contrasts cover (and per vertebral level when known); "
        "SD is the sample standard deviation across contrasts.</p>",
        _table(spread, SPREAD_COLUMNS),
        "</section>",
        '<section id="summary"><h2>CSA per image</h2>', _table(summary, [c for c in SUMMARY_COLUMNS if c != "file"]), "</section>",
        '<section id="subjects"><h2>Subjects</h2>',
    ]
    by_subject = defaultdict(list)
    for result in results:
        by_subject[(result.image.subject, result.image.session)].append(result)
    for (subject, session), subject_results in sorted(by_subject.items()):
        name = f"sub-{subject}" + (f" ses-{session}" if session else "")
        parts.append(f"<h3>{html.escape(name)}</h3>")
        if (subject, session) in tables:
            plot = csa_plot_png(tables[(subject, session)], f"{name}: CSA by contrast")
            parts.append(f'<figure><img class="plot" alt="CSA along the cord of {html.escape(name)}" src="{data_uri_png(plot)}"></figure>')
        for result in subject_results:
            caption = html.escape(f"{contrast_label(result.image)}: {Path(result.image.path).name}")
            qc = Path(result.outputs.get("qc", ""))
            if result.status == "failed":
                parts.append(f'<p class="failed">{caption}: failed ({html.escape(result.reason)})</p>')
            elif qc.is_file():
                parts.append(f'<figure><img class="qc" alt="QC {caption}" src="{data_uri_png(qc.read_bytes())}">'
                             f"<figcaption>{caption}</figcaption></figure>")
    parts.append("</section></body></html>\n")
    return "\n".join(parts)
