"""Reports of an experiment: Markdown (figures beside it) or one self-contained HTML page.

Both hold the same content: per dataset the results table (best value per column in bold,
† where a system differs from the baseline with corrected randomisation-test p < 0.05,
published numbers beside ours), recall@k curves, quality against latency, per-query
differences against the baseline; then the significance tests, and the interpolation /
extrapolation regimes. The HTML page embeds its images and needs no network.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cormorant.data.files import atomic_write
from cormorant.errors import CormorantError
from cormorant.eval import plots
from cormorant.eval.experiment import ExperimentResult
from cormorant.eval.reference import published
from cormorant.eval.significance import ALPHA


@dataclass
class Cell:
    text: str
    bold: bool = False


@dataclass
class Table:
    header: list[str]
    rows: list[list[Cell]]


@dataclass
class Image:
    name: str
    png: bytes
    caption: str


Block = tuple[str, str] | Table | Image  # ("h1"|"h2"|"p", text), a table, or a figure


def build_blocks(result: ExperimentResult) -> list[Block]:
    """The report's content, independent of its format."""
    exp = result.experiment
    first = exp.measures[0] if exp.measures else "nDCG@10"
    first = next(iter(result.results[0].metrics)) if result.results else first
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    blocks: list[Block] = [
        ("h1", "Cormorant evaluation report"),
        ("p", f"Split `{exp.split}`; depth {exp.depth}; measures from ir-measures;"
              f" baseline `{exp.baseline or 'none'}`; {exp.correction} correction over all"
              f" comparisons; randomisation tests with {exp.permutations:,} permutations."
              f" Generated {stamp}."),
    ]
    significant = {(c.dataset, c.system, c.measure) for c in result.comparisons
                   if c.randomization_p_adjusted < ALPHA}
    for number, dataset in enumerate(dict.fromkeys(r.dataset for r in result.results)):
        rows = [r for r in result.results if r.dataset == dataset]
        blocks.append(("h2", f"{dataset}"))
        blocks.append(_results_table(rows, significant, first))
        if number == 0:  # the legend where a reader first needs it, not at the bottom
            blocks.append(("p", "Bold: best value in its column. †: differs from the baseline"
                                f" with corrected randomisation-test p < {ALPHA}. Queries: the"
                                " judged queries each mean is over. Published: the reference"
                                " number shipped with Cormorant for that dataset and pipeline."))
        slug = _slug(dataset)
        curves = {r.pipeline: result.curves[(dataset, r.pipeline)] for r in rows}
        blocks.append(Image(f"{slug}-recall.png", plots.recall_curves(dataset, curves),
                            f"{dataset}: Recall@k of every pipeline."))
        blocks.append(Image(f"{slug}-latency.png", plots.quality_vs_latency(dataset, rows, first),
                            f"{dataset}: {first} against search time per query."))
        base = next((r for r in rows if r.pipeline == exp.baseline), None)
        others = [r for r in rows if r is not base]
        if base is not None and others:
            blocks.append(Image(f"{slug}-per-query.png",
                                plots.per_query_differences(dataset, base, others, first),
                                f"{dataset}: per-query {first} difference to {base.pipeline}."))
    if result.comparisons:
        blocks += [("h2", "Significance against the baseline"), _significance_table(result)]
    if result.regimes:
        blocks += [("h2", "Interpolation and extrapolation"),
                   ("p", "Queries of the train and test splits are clustered together (spherical"
                         " k-means on query embeddings); in each fold the test queries of one"
                         " cluster extrapolate (no training query from their cluster) and the"
                         " rest interpolate (Zhan et al., CIKM 2022). Scores average over folds."),
                   _regimes_table(result, first)]
        for dataset, info in result.regimes.items():
            blocks.append(Image(f"{_slug(dataset)}-regimes.png",
                                plots.regimes(dataset, info["systems"], first),
                                f"{dataset}: {first} on interpolation and extrapolation queries."))
            blocks.append(Image(f"{_slug(dataset)}-gap.png",
                                plots.regime_gap(dataset, info["systems"], first),
                                f"{dataset}: each system's gap (interpolation minus"
                                f" extrapolation {first}; above 0: worse on unfamiliar queries)."))
    return blocks


def _results_table(rows: list, significant: set, first: str) -> Table:
    measures = list(rows[0].metrics)
    best = {m: max(r.metrics[m] for r in rows) for m in measures}
    table_rows = []
    for r in rows:
        cells = [Cell(f"`{r.pipeline}`")]
        for m in measures:
            mark = " †" if (r.dataset, r.pipeline, m) in significant else ""
            cells.append(Cell(f"{r.metrics[m]:.4f}{mark}", bold=r.metrics[m] == best[m]))
        cells.append(Cell(f"{len(r.per_query):,}"))
        ms = r.timing.get("ms_per_query")
        cells.append(Cell("-" if ms is None else f"{ms:.1f}"))
        cells.append(Cell(latency_cell(r.timing)))
        ref = published(r.dataset, r.pipeline, first)
        cells.append(Cell(f"{ref[0]:.3f} ({ref[1]})" if ref else ""))
        table_rows.append(cells)
    return Table(["pipeline", *measures, "queries", "ms/query (batch)",
                  "one query, ms: median (10th-90th pct.)", f"published {first}"], table_rows)


def latency_cell(timing: dict[str, float]) -> str:
    """``12.3 (10.1-15.0)``: the one-query latency's median and spread, or ``-``.

    Example:
        >>> latency_cell({"latency_ms_p50": 12.3, "latency_ms_p10": 10.1, "latency_ms_p90": 15.0})
        '12.3 (10.1-15.0)'
    """
    if "latency_ms_p50" not in timing:
        return "-"
    return (f"{timing['latency_ms_p50']:.1f} ({timing['latency_ms_p10']:.1f}-"
            f"{timing['latency_ms_p90']:.1f})")


def format_p(p: float) -> str:
    """A p-value to four places, and ``<0.0001`` rather than a misleading 0.0000.

    Example:
        >>> format_p(0.00002), format_p(0.0312)
        ('<0.0001', '0.0312')
    """
    return "<0.0001" if p < 0.0001 else f"{p:.4f}"


def _significance_table(result: ExperimentResult) -> Table:
    rows = []
    for c in result.comparisons:
        rows.append([Cell(c.dataset), Cell(f"`{c.system}`"), Cell(c.measure),
                     Cell(f"{c.delta:+.4f}"),
                     Cell(f"{format_p(c.t_p)} / {format_p(c.t_p_adjusted)}"),
                     Cell(f"{format_p(c.randomization_p)} / {format_p(c.randomization_p_adjusted)}",
                          bold=c.randomization_p_adjusted < ALPHA),
                     Cell(f"{c.wins}/{c.ties}/{c.losses}")])
    return Table(["dataset", "system", "measure", f"Δ vs `{result.experiment.baseline}`",
                  "t-test p / adjusted", "randomisation p / adjusted", "wins/ties/losses"], rows)


def _regimes_table(result: ExperimentResult, measure: str) -> Table:
    rows = []
    for dataset, info in result.regimes.items():
        sims = info["nearest_train_similarity"]
        for system, scores in info["systems"].items():
            s = scores[measure]
            rows.append([Cell(dataset), Cell(f"`{system}`"), Cell(f"{s['interpolation']:.4f}"),
                         Cell(f"{s['extrapolation']:.4f}"), Cell(f"{s['gap']:+.4f}"),
                         Cell(f"{sims['interpolation']:.3f} / {sims['extrapolation']:.3f}"),
                         Cell(str(info["folds"]))])
    return Table(["dataset", "system", f"interpolation {measure}", f"extrapolation {measure}",
                  "gap", "nearest-train similarity (interp / extrap)", "folds"], rows)


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text.lower()).strip("-")


def render_markdown(blocks: list[Block], image_dir: str) -> str:
    out = []
    for block in blocks:
        if isinstance(block, Table):
            out.append("| " + " | ".join(block.header) + " |")
            out.append("|" + "---|" * len(block.header))
            for row in block.rows:
                out.append("| " + " | ".join(f"**{c.text}**" if c.bold else c.text
                                             for c in row) + " |")
            out.append("")
        elif isinstance(block, Image):
            out += [f"![{block.caption}]({image_dir}/{block.name})", ""]
        else:
            kind, text = block
            prefix = {"h1": "# ", "h2": "## "}.get(kind, "")
            out += [prefix + text, ""]
    return "\n".join(out)


_CSS = """body{font-family:system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem;
color:#222}table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;
padding:.3rem .6rem;text-align:right}td:first-child,th:first-child{text-align:left}
th{background:#f3f3f3}code{background:#f6f6f6;padding:0 .2rem}figure{margin:1rem 0}
img{max-width:100%}figcaption{color:#555;font-size:.9rem}"""


def render_html(blocks: list[Block]) -> str:
    def inline(text: str) -> str:
        parts = html.escape(text).split("`")
        return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))

    body = []
    for block in blocks:
        if isinstance(block, Table):
            head = "".join(f"<th>{inline(h)}</th>" for h in block.header)
            rows = "".join("<tr>" + "".join(
                f"<td>{'<b>' if c.bold else ''}{inline(c.text)}{'</b>' if c.bold else ''}</td>"
                for c in row) + "</tr>" for row in block.rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif isinstance(block, Image):
            data = base64.b64encode(block.png).decode()
            body.append(f'<figure><img alt="{html.escape(block.caption)}" '
                        f'src="data:image/png;base64,{data}"><figcaption>'
                        f"{inline(block.caption)}</figcaption></figure>")
        else:
            kind, text = block
            tag = kind if kind in ("h1", "h2") else "p"
            body.append(f"<{tag}>{inline(text)}</{tag}>")
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>Cormorant evaluation report</title><style>{_CSS}</style></head><body>"
            + "\n".join(body) + "</body></html>\n")


def write_report(result: ExperimentResult, path: str | Path) -> Path:
    """Write ``path`` (.md with a ``<name>_files/`` folder of figures, or .html), plus
    ``<name>.json`` with every number in it."""
    path = Path(path)
    if path.suffix not in (".md", ".html"):
        raise CormorantError(f"report must end in .md or .html, got {path.name}")
    blocks = build_blocks(result)
    if path.suffix == ".md":
        image_dir = path.with_name(f"{path.stem}_files")
        image_dir.mkdir(parents=True, exist_ok=True)
        for block in blocks:
            if isinstance(block, Image):
                with atomic_write(image_dir / block.name, "wb") as handle:
                    handle.write(block.png)
        text = render_markdown(blocks, image_dir.name)
    else:
        text = render_html(blocks)
    with atomic_write(path) as handle:
        handle.write(text)
    with atomic_write(path.with_suffix(".json")) as handle:
        json.dump(result.to_json(), handle, indent=1)
    return path
