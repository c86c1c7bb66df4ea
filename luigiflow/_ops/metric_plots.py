"""`luigiflow plots TASK --metric M [--x PARAM]`: a metric across the FINISHED runs of a
task or stage, as `dvc plots show` and `dvc exp show` compare experiments: one PNG per
metric (against a parameter's values, or against run order, oldest first) and one HTML
page holding them and the table of the runs drawn.

The runs are those `luigiflow runs TASK` lists (with the same `--where` filters), read
without importing MLflow.
"""

from __future__ import annotations

import html
import pathlib
from collections.abc import Sequence
from typing import Any

from luigiflow._core.suggest import did_you_mean, listing
from luigiflow._errors import ParameterError, RunNotFoundError
from luigiflow._ops.run_listing import run_listing


def render(
    name: str,
    metrics: Sequence[str],
    x: str | None,
    where: dict[str, str],
    out: pathlib.Path,
) -> tuple[pathlib.Path, list[str]]:
    """Draw `metrics` (every metric logged when empty) of the runs of `name` into `out`;
    returns the HTML page and the PNG files."""
    rows = sorted(run_listing(name, where), key=lambda r: r["start_time"] or 0)
    if not rows:
        raise RunNotFoundError(
            f"{name} has no FINISHED run{' matching --where' if where else ''} to plot; "
            f"build it first (luigiflow run ...)"
        )
    logged = {m for r in rows for m in r["metrics"]}
    for metric in metrics:
        if metric not in logged:
            raise ParameterError(
                f"runs of {name} have no metric {metric!r}{did_you_mean(metric, logged)} "
                f"(metrics: {listing(logged)})"
            )
    params = {p for r in rows for p in r["params"]}
    if x is not None and x not in params:
        raise ParameterError(
            f"runs of {name} have no parameter {x!r}{did_you_mean(x, params)} "
            f"(parameters: {listing(params)}); leave --x out to plot against run order"
        )
    chosen = list(metrics) or sorted(logged)
    if not chosen:
        raise ParameterError(f"runs of {name} logged no metric: nothing to plot")

    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    images = []
    for metric in chosen:
        drawn = [r for r in rows if metric in r["metrics"] and (x is None or x in r["params"])]
        fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
        ys = [r["metrics"][metric] for r in drawn]
        if x is None:
            ax.plot(range(1, len(ys) + 1), ys, marker="o")
            ax.set_xlabel("run (oldest first)")
        else:
            _against(ax, [_value(r["params"][x]) for r in drawn], ys)
            ax.set_xlabel(x)
        ax.set_ylabel(metric)
        ax.set_title(f"{name}: {metric}" + (f" by {x}" if x else f" over {len(ys)} runs"))
        ax.grid(alpha=0.3)
        fig.tight_layout()
        image = f"{_safe(metric)}{'_by_' + _safe(x) if x else ''}.png"
        fig.savefig(out / image)
        plt.close(fig)
        images.append(image)
    page = out / "index.html"
    page.write_text(_page(name, chosen, x, rows, images), encoding="utf-8")
    return page, images


def _against(ax: Any, xs: list[Any], ys: list[float]) -> None:
    """Numbers on a numeric axis with the mean at each value joined; text as categories."""
    if all(isinstance(v, float) for v in xs):
        ax.scatter(xs, ys)
        means: dict[float, list[float]] = {}
        for v, y in zip(xs, ys, strict=True):
            means.setdefault(v, []).append(y)
        line = sorted((v, sum(m) / len(m)) for v, m in means.items())
        ax.plot([v for v, _ in line], [m for _, m in line], alpha=0.6)
        return
    categories = sorted({str(v) for v in xs})
    ax.scatter([categories.index(str(v)) for v in xs], ys)
    ax.set_xticks(range(len(categories)), categories)


def _value(text: Any) -> Any:
    try:
        return float(text)
    except (TypeError, ValueError):
        return str(text)


def _page(
    name: str, metrics: list[str], x: str | None, rows: list[dict[str, Any]], images: list[str]
) -> str:
    figures = "\n".join(
        f'<figure><img src="{html.escape(i)}" alt="{html.escape(m)}">'
        f"<figcaption>{html.escape(m)}</figcaption></figure>"
        for m, i in zip(metrics, images, strict=True)
    )
    varying = sorted(
        p
        for p in {p for r in rows for p in r["params"]}
        if len({str(r["params"].get(p)) for r in rows}) > 1
    )
    columns = ["run_id", *varying, *metrics]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "\n".join(
        "<tr>" + "".join(f"<td>{html.escape(str(_cell(r, c)))}</td>" for c in columns) + "</tr>"
        for r in rows
    )
    title = f"{name}: {', '.join(metrics)}" + (f" by {x}" if x else " over runs")
    return (
        "<!doctype html>\n<html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title></head>\n<body><h1>{html.escape(title)}</h1>\n"
        f"{figures}\n<table>\n<tr>{head}</tr>\n{body}\n</table>\n</body></html>\n"
    )


def _cell(row: dict[str, Any], column: str) -> Any:
    if column == "run_id":
        return row["run_id"]
    if column in row["metrics"]:
        return f"{row['metrics'][column]:.6g}"
    return row["params"].get(column, "")


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:60]
