"""`luigiflow plots --dvc dvc.yaml`: the `plots:` a dvc.yaml declares, rendered as
`dvc plots show` does (from the files in the workspace) to PNG files and one HTML page.

A plot is a data file (JSON: a list of records or `{name: [records]}` as dvclive
writes them; CSV, TSV, YAML), with `x`, `y` (a field, a list of fields, or `{file:
field}` across files) and a template: `simple`/`linear`/`smooth` draw lines,
`scatter` points, `confusion`/`confusion_normalized` a matrix of (x, y) counts,
`bar_horizontal` bars. An image file (`.png`, `.jpg`, `.svg`, `.gif`) is shown as is.
"""

from __future__ import annotations

import csv
import html
import json
import pathlib
import shutil
from dataclasses import dataclass, field
from typing import Any

from luigiflow._errors import ConfigError

IMAGES = (".png", ".jpg", ".jpeg", ".svg", ".gif")
DEFAULT_FOLDER = "dvc_plots"  # where `dvc plots show` writes


@dataclass
class PlotSpec:
    """One plot: its title, the (file, y field) series, x field and template."""

    title: str
    series: list[tuple[str, str | None]] = field(default_factory=list)  # (file, y field)
    x: dict[str, str] = field(default_factory=dict)  # file -> x field ("" : every file)
    template: str = "simple"
    x_label: str | None = None
    y_label: str | None = None


def specs(dvc_yaml: pathlib.Path) -> list[PlotSpec]:
    """The plots a dvc.yaml declares: top-level definitions, then stages' plot outputs."""
    import yaml

    try:
        data = yaml.safe_load(dvc_yaml.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{dvc_yaml}: cannot be read: {exc}") from exc
    found: list[PlotSpec] = []
    for entry in data.get("plots") or []:
        found.extend(_top_level(entry))
    for stage in (data.get("stages") or {}).values():
        body = stage.get("do", stage) if isinstance(stage, dict) else {}
        for entry in body.get("plots") or [] if isinstance(body, dict) else []:
            path, props = (entry, {}) if isinstance(entry, str) else next(iter(entry.items()))
            if "${" in str(path):
                continue  # a templated stage's plots: one per generated stage, not shown
            found.append(_from_props(str(path), str(path), props or {}))
    return found


def _top_level(entry: Any) -> list[PlotSpec]:
    if isinstance(entry, str):
        return [PlotSpec(title=entry, series=[(entry, None)])]
    plots = []
    for name, props in (entry or {}).items():
        props = props or {}
        y = props.get("y")
        if isinstance(y, dict):  # {file: field or [fields]}
            spec = _from_props(str(name), None, props)
            for file, fields in y.items():
                for one in [fields] if isinstance(fields, str) else list(fields):
                    spec.series.append((str(file), one))
            plots.append(spec)
        else:
            plots.append(_from_props(str(name), str(name), props))
    return plots


def _from_props(title: str, file: str | None, props: dict[str, Any]) -> PlotSpec:
    x = props.get("x")
    spec = PlotSpec(
        title=str(props.get("title") or title),
        x={str(k): str(v) for k, v in x.items()} if isinstance(x, dict) else {"": str(x or "")},
        template=str(props.get("template") or "simple"),
        x_label=props.get("x_label"),
        y_label=props.get("y_label"),
    )
    if file is not None:
        y = props.get("y")
        fields = [None] if y is None else [y] if isinstance(y, str) else list(y)
        spec.series.extend((file, f) for f in fields)
    return spec


def records(path: pathlib.Path) -> list[dict[str, Any]]:
    """The rows of a plot data file."""
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8")
    if suffix in (".csv", ".tsv"):
        return list(csv.DictReader(text.splitlines(), delimiter="\t" if suffix == ".tsv" else ","))
    if suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), list):
        data = next(iter(data.values()))  # dvclive's {"roc": [...]}
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise ConfigError(f"plot data {path}: expected a list of records")
    return data


def render(dvc_yaml: pathlib.Path, out: pathlib.Path) -> tuple[pathlib.Path, list[str]]:
    """Every plot of the dvc.yaml drawn into `out` (PNG files and index.html); returns
    the page and the plots left out, each with why (a file not in the workspace)."""
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    root = dvc_yaml.parent
    out.mkdir(parents=True, exist_ok=True)
    shown: list[tuple[str, str]] = []  # (title, image file name)
    skipped: list[str] = []
    for number, spec in enumerate(specs(dvc_yaml)):
        missing = sorted({f for f, _ in spec.series if not (root / f).is_file()})
        if missing:
            skipped.append(f"{spec.title}: {', '.join(missing)} not in the workspace")
            continue
        first = spec.series[0][0]
        if pathlib.PurePath(first).suffix.lower() in IMAGES:
            name = f"{number:02d}_{_safe(spec.title)}{pathlib.PurePath(first).suffix.lower()}"
            shutil.copyfile(root / first, out / name)
            shown.append((spec.title, name))
            continue
        try:
            fig = _draw(plt, spec, root)
        except (ConfigError, ValueError, KeyError) as exc:
            skipped.append(f"{spec.title}: {exc}")
            continue
        name = f"{number:02d}_{_safe(spec.title)}.png"
        fig.savefig(out / name)
        plt.close(fig)
        shown.append((spec.title, name))
    page = out / "index.html"
    blocks = "\n".join(
        f'<figure><img src="{html.escape(n)}" alt="{html.escape(t)}">'
        f"<figcaption>{html.escape(t)}</figcaption></figure>"
        for t, n in shown
    )
    page.write_text(
        "<!doctype html>\n<html><head><meta charset='utf-8'>"
        f"<title>plots of {html.escape(str(dvc_yaml))}</title></head>\n"
        f"<body><h1>{html.escape(str(dvc_yaml))}</h1>\n{blocks}\n</body></html>\n",
        encoding="utf-8",
    )
    return page, skipped


def _draw(plt: Any, spec: PlotSpec, root: pathlib.Path) -> Any:
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=100)
    confusion = spec.template.startswith("confusion")
    for file, y in spec.series:
        rows = records(root / file)
        if not rows:
            continue
        x = spec.x.get(file) or spec.x.get("") or ""
        y = y or [k for k in rows[0] if k != x][-1]  # DVC's default: the last field
        label = f"{file}: {y}" if len(spec.series) > 1 else y
        if confusion:
            _confusion(ax, rows, x, y, spec.template == "confusion_normalized")
            ax.set_title(f"{spec.title} ({file})")
            break  # one matrix per plot: the first file's, as a picture cannot hold two
        xs = [_number(r[x]) for r in rows] if x else list(range(len(rows)))
        ys = [_number(r[y]) for r in rows]
        if spec.template == "scatter":
            ax.scatter(xs, ys, label=label, s=10)
        elif spec.template == "bar_horizontal":
            ax.barh([str(v) for v in xs], ys, label=label)
        else:
            ax.plot(xs, ys, label=label)
        ax.set_xlabel(spec.x_label or x or "step")
        ax.set_ylabel(spec.y_label or y)
    if not confusion:
        ax.set_title(spec.title)
        ax.grid(alpha=0.3)
        if len(spec.series) > 1:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _confusion(ax: Any, rows: list[dict[str, Any]], x: str, y: str, normalized: bool) -> None:
    actual = sorted({str(r[x]) for r in rows})
    predicted = sorted({str(r[y]) for r in rows} | set(actual))
    counts = [[0.0] * len(actual) for _ in predicted]
    for r in rows:
        counts[predicted.index(str(r[y]))][actual.index(str(r[x]))] += 1
    if normalized:
        totals = [sum(counts[i][j] for i in range(len(predicted))) or 1 for j in range(len(actual))]
        counts = [[c / totals[j] for j, c in enumerate(row)] for row in counts]
    ax.imshow(counts, cmap="Blues")
    ax.set_xticks(range(len(actual)), actual)
    ax.set_yticks(range(len(predicted)), predicted)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    for i, row in enumerate(counts):
        for j, c in enumerate(row):
            ax.annotate(f"{c:.2g}", (j, i), ha="center", va="center")


def _number(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:60]
