"""PNG chart of one benchmark run (matplotlib, the optional ``bench`` extra).

:func:`write_chart` draws, from the JSON payload :func:`bench.run.run_net` builds, one figure
per network: a panel of ms per train step and a panel of ms per inference call, one group of bars
per (batch, threads), one bar per implementation (the median, with the interquartile range as an
error bar) on a log scale, and the sgemm roofline (the same GEMMs alone) as a black line across
each group, with the reference implementation's % of it written above the group.
"""

#: bar colours per implementation (matplotlib's default cycle, fixed so every chart agrees)
COLOURS = {"fastnn": "C0", "numpy": "C1", "torch": "C2"}


def _panel(ax, rows, impls, reference, roofline, title):
    """Draw one panel (train or inference) of ``rows`` (result rows of one mode)."""
    cases = sorted({(r["batch"], r["threads"]) for r in rows})
    by_key = {(r["batch"], r["threads"], r["impl"]): r for r in rows}
    shown = [i for i in impls if i != roofline and any(r["impl"] == i for r in rows)]
    width = 0.8 / max(1, len(shown))
    for j, impl in enumerate(shown):
        xs, med, lo, hi = [], [], [], []
        for x, (b, t) in enumerate(cases):
            r = by_key.get((b, t, impl))
            if r is None:
                continue
            xs.append(x - 0.4 + width * (j + 0.5))
            med.append(r["median_ms"])
            lo.append(r["median_ms"] - r["q1_ms"])
            hi.append(r["q3_ms"] - r["median_ms"])
        ax.bar(xs, med, width * 0.92, yerr=[lo, hi], capsize=2, label=impl,
               color=COLOURS.get(impl, f"C{3 + j}"), error_kw={"elinewidth": 0.8})
    labelled = False
    for x, (b, t) in enumerate(cases):
        roof = by_key.get((b, t, roofline))
        if roof is None:
            continue
        ax.hlines(roof["median_ms"], x - 0.45, x + 0.45, colors="black", linewidths=1.6,
                  label=None if labelled else "sgemm roofline (GEMMs only)")
        labelled = True
        ref = by_key.get((b, t, reference))
        if ref is not None and ref.get("pct_roofline") is not None:
            top = max(by_key[(b, t, i)]["median_ms"] for i in shown if (b, t, i) in by_key)
            ax.annotate(f"{reference}\n{ref['pct_roofline']:.0f}% of roofline", (x, top),
                        xytext=(0, 4), textcoords="offset points", ha="center", va="bottom",
                        fontsize=7)
    ax.set_yscale("log")
    ax.set_xticks(range(len(cases)))
    ax.set_xticklabels([f"batch {b}\n{t} thread{'s' if t > 1 else ''}" for b, t in cases],
                       fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", which="both", alpha=0.3)
    ax.set_axisbelow(True)
    lo_y, hi_y = ax.get_ylim()
    ax.set_ylim(lo_y, hi_y * 2.5)  # room for the annotations
    ax.legend(fontsize=8, loc="upper left")


def write_chart(payload, path):
    """Draw the run in ``payload`` (as written to ``bench/results/<net>.json``) to ``path`` (PNG).

    Raises ImportError when matplotlib is not installed.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display needed; the driver draws nothing else
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    panels = [(rows, title) for rows, title in (
        (payload["results"], "train step (forward + loss + backward + SGD), ms"),
        (payload.get("inference_results") or [], "inference (predict), ms per call"))
        if rows]
    if not panels:
        raise ValueError("no results to draw")
    widths = [max(2, len({(r["batch"], r["threads"]) for r in rows})) for rows, _ in panels]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 + 1.5 * sum(widths), 5.2),
                             gridspec_kw={"width_ratios": widths}, squeeze=False)
    impls = payload["implementations"]
    for ax, (rows, title) in zip(axes[0], panels):
        _panel(ax, rows, impls, payload["reference"], payload.get("roofline"), title)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        # plain numbers on the minor ticks too, at 2 and 5 times a power of ten only
        ax.yaxis.set_minor_formatter(FuncFormatter(
            lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))
    axes[0][0].set_ylabel("ms (median, bars: interquartile range; log scale)")
    machine = payload.get("machine", {})
    fig.suptitle(f"{payload['net']}: {payload['model']['description']}\n"
                 f"{machine.get('cpu_model', '?')}, {payload['profile']} run, "
                 f"{payload.get('date', '')}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
