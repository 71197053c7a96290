"""A :class:`~qpm.assignment.compare.Comparison` as a table, compare.json, .csv and .png."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from qpm.assignment.compare import BOUND_RUN, Comparison, Row
from qpm.assignment.trace import BOUND, INCUMBENT
from qpm.text import csv_row, drawn_as_plain_text, printable

COLUMNS = ("solver", "form", "status", "objective", "bound", "gap %", "to best bound %",
           "first s", "final s", "build+handoff s", "peak MB", "verified", "note")


def _f(x, spec: str) -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.3f}"


def table_rows(cmp: Comparison) -> list[tuple[str, ...]]:
    """One tuple of strings per row; ``*`` marks the best objective and the best bound."""
    best_obj, best_bound = cmp.best_objective, cmp.best_bound
    out = []
    for r in cmp.rows:
        obj = _f(r.objective, ".4f")
        if r.verified and best_obj is not None and r.objective is not None \
                and r.objective >= best_obj - 1e-9 * max(1.0, abs(best_obj)):
            obj += "*"
        bound = _f(r.bound, ".4f")
        if best_bound is not None and r.bound is not None \
                and r.bound <= best_bound + 1e-9 * max(1.0, abs(best_bound)):
            bound += "*"
        out.append((
            r.label, r.formulation, r.status, obj, bound, _pct(r.gap), _pct(cmp.to_bound(r)),
            _f(r.first_answer, ".1f"), _f(r.final_answer, ".1f"), _f(r.build_handoff, ".1f"),
            _f(r.peak_mb, ".0f"), "-" if r.status == BOUND_RUN else "yes" if r.verified else "no",
            r.note.replace("\n", " "),
        ))
    return out


def format_table(cmp: Comparison) -> str:
    """A plain aligned table (the note column last and never cut) plus a legend."""
    lines = [COLUMNS, *table_rows(cmp)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS) - 1)]
    text = "\n".join(
        "  ".join(v.ljust(w) for v, w in zip(line[:-1], widths, strict=True)) + "  " + line[-1]
        for line in lines
    )
    by = cmp.best_bound_by
    certificate = "" if by is None else f"\nbest bound {cmp.best_bound:.6g}, proved by {by}."
    return text.rstrip() + certificate + (
        "\n* best verified objective / best (lowest) proven bound of all runs; "
        "'to best bound %': how far each answer lies below that bound; first s / final s: "
        "seconds to the first verified answer / to the returned answer.")


def to_json(cmp: Comparison) -> dict:
    return {**cmp.header, "best_objective": cmp.best_objective, "best_bound": cmp.best_bound,
            "best_bound_by": cmp.best_bound_by,
            "rows": [{**r.to_dict(), "to_best_bound": cmp.to_bound(r)} for r in cmp.rows]}


def to_csv(cmp: Comparison) -> str:
    buf = io.StringIO()
    keys = [k for k in Row.__dataclass_fields__ if k != "trace"]
    writer = csv.writer(buf)
    writer.writerow(["label", *keys, "to_best_bound"])
    for r in cmp.rows:
        d = r.to_dict()
        writer.writerow(csv_row([d["label"], *(d[k] for k in keys), cmp.to_bound(r)]))
    return buf.getvalue()


def _steps(points: list, kind: str, end: float) -> tuple[list[float], list[float]]:
    pts = [(t, v) for t, k, v in points if k == kind]
    if not pts:
        return [], []
    ts = [max(t, 1e-2) for t, _ in pts] + [max(end, pts[-1][0], 1e-2)]
    vs = [v for _, v in pts] + [pts[-1][1]]
    return ts, vs


@drawn_as_plain_text  # the title names the input file: a "$" in it is a dollar sign
def plot(cmp: Comparison, path, title: str = ""):
    """Objective (solid) and proven bound (dashed) over time, one colour per run."""
    import matplotlib.pyplot as plt

    fig = figure(cmp, title)
    fig.savefig(path, format="png")  # a path or an open binary file
    plt.close(fig)


# A time axis needs the runs' times to spread over more than this factor; when every solver
# finishes at once (a small problem), a table-like bar figure shows what there is to see.
AT_ONCE = 10.0


def _time_span(cmp: Comparison) -> tuple[float, float] | None:
    times = [max(t, 1e-2) for r in cmp.rows for t, _, _ in r.trace]
    times += [max(r.final_answer, 1e-2) for r in cmp.rows if r.final_answer is not None]
    return (min(times), max(times)) if times else None


def figure(cmp: Comparison, title: str = ""):
    """The figure :func:`plot` saves (call it inside :func:`qpm.text.plain_text`): incumbent
    and bound over time, or bars per run when every run finished at once."""
    span = _time_span(cmp)
    if span is None or span[1] < AT_ONCE * span[0]:
        return _bars(cmp, title, span)
    return _over_time(cmp, title)


def _title(ax, title: str, right: str) -> None:
    import textwrap

    ax.set_title(textwrap.fill(printable(title), 90) + "\n" if title else "", fontsize=9,
                 loc="left")
    ax.set_title(right, fontsize=9, loc="right")


def _bars(cmp: Comparison, title: str, span: tuple[float, float] | None):
    """One bar per run (its objective) with its proven bound as a black mark and its numbers
    written out: a table as a figure, no time axis to squeeze."""
    import matplotlib.pyplot as plt

    rows = cmp.rows
    fig, ax = plt.subplots(figsize=(12, 1.6 + 0.55 * len(rows)), dpi=110)
    colours = plt.get_cmap("tab10")
    values = [v for r in rows for v in (r.objective, r.bound) if v is not None]
    top = max(values + [0.0])
    for i, r in enumerate(rows):
        if r.objective is not None:
            ax.barh(i, r.objective, height=0.6, color=colours(i % 10))
        if r.bound is not None:
            ax.plot([r.bound], [i], marker="|", markersize=22, mew=2.5, color="black")
        text = (f"objective {_f(r.objective, '.4f')}   bound {_f(r.bound, '.4f')}   gap "
                f"{_pct(r.gap)} %   {_f(r.final_answer, '.2f')} s   {r.status}")
        ax.text(top * 1.02 if top > 0 else 0.0, i, text, va="center", fontsize=9)
    ax.set_yticks(range(len(rows)), [printable(r.label) for r in rows], fontsize=9)
    ax.invert_yaxis()
    ax.set_xlim(min(values + [0.0]), top * 1.75 if top > 0 else 1.0)
    ax.set_xticks([t for t in ax.get_xticks() if t <= top])  # none under the numbers
    ax.set_xlim(min(values + [0.0]), top * 1.75 if top > 0 else 1.0)
    ax.ticklabel_format(axis="x", useOffset=False, style="plain")
    ax.set_xlabel("objective (higher is better); black mark: proven bound")
    when = "" if span is None else f" within {span[1]:.2g} s"
    _title(ax, title, f"every run finished{when}: no time axis to show")
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def _over_time(cmp: Comparison, title: str):
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    fig, ax = plt.subplots(figsize=(12, 5.5), dpi=110)
    colours = plt.get_cmap("tab10")
    lows, highs = [], []
    for n, r in enumerate(cmp.rows):
        colour = colours(n % 10)
        end = r.final_answer or 0.0
        ts, vs = _steps(r.trace, INCUMBENT, end)
        if ts:
            ax.step(ts, vs, where="post", color=colour, lw=2, label=f"{r.label}: objective")
            ax.plot(ts[-1], vs[-1], "o", color=colour)
            lows.append(min(vs))
            highs.append(max(vs))
        ts, vs = _steps(r.trace, BOUND, end)
        if ts:
            ax.step(ts, vs, where="post", color=colour, lw=1.5, ls="--",
                    label=f"{r.label}: bound")
            highs.append(vs[-1])  # every run's final bound stays in view
        if not r.trace:
            ax.plot([], [], " ", label=f"{r.label}: {r.status} (no trace)")
    best_obj, best_bound = cmp.best_objective, cmp.best_bound
    if best_bound is not None:
        ax.axhline(best_bound, color="black", lw=0.8, ls=":", label="best bound")
    if lows and best_obj is not None:
        # Frame the interesting band: from the worst answer to a little above the best bound.
        top = max(highs + [best_obj])
        span = max(top - min(lows), 1e-6 * max(1.0, abs(top)))
        ax.set_ylim(min(lows) - 0.05 * span, top + 0.15 * span)
    ax.set_xscale("log")
    # Log axes label their ticks in mathtext ("$10^{1}$"), which plain text shows verbatim.
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("seconds since the solve started (log scale)")
    ax.set_ylabel("objective (higher is better)")
    ax.ticklabel_format(axis="y", useOffset=False, style="plain")  # 761.2, not +7.61e2
    _title(ax, title, "incumbent (solid), proven bound (dashed)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # never over a line
    fig.tight_layout()
    return fig


def read(path: str | Path) -> Comparison:
    """A Comparison back from compare.json (e.g. to re-plot it)."""
    from qpm.io import read_json

    data = read_json(path)
    fields = set(Row.__dataclass_fields__)
    rows = [Row(**{k: v for k, v in r.items() if k in fields}) for r in data["rows"]]
    header = {k: v for k, v in data.items()
              if k not in ("rows", "best_objective", "best_bound", "best_bound_by")}
    return Comparison(rows, header)


def write(cmp: Comparison, out_dir: str | Path, title: str = "") -> list[Path]:
    """compare.json, compare.csv and compare.png in ``out_dir`` (each written atomically)."""
    from qpm.io import atomic_write, write_json, write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return [write_json(out / "compare.json", to_json(cmp)),
            write_text(out / "compare.csv", to_csv(cmp)),
            atomic_write(out / "compare.png", lambda fh: plot(cmp, fh, title))]
