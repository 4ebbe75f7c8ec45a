"""The benchmark's numbers and tables from measured rows: quartiles, ratios to the reference,
% of the sgemm roofline, per-layer useful FLOPs, and the markdown tables :mod:`bench.run` prints
and stores in its JSON.

Result rows are dicts with ``mode``, ``batch``, ``threads``, ``impl``, ``median_ms``,
``iqr_ms``, ``block_medians_ms``, ``gflops`` (see :func:`bench.run.bench_threads`); profile
entries are dicts with ``batch``, ``threads``, ``impl`` and ``rows`` (see
:func:`bench.run.profile_layers`).
"""
from .models import layer_flops

#: the implementation the others are compared with (ratios, % of roofline in the layer table)
REFERENCE = "fastnn"
#: the pseudo-implementation that times only the step's GEMMs (bench/_sgemm.py)
ROOFLINE = "sgemm"


def quantiles(values):
    """(q1, median, q3) with linear interpolation, like numpy.percentile's default."""
    v = sorted(values)
    n = len(v)

    def q(p):
        x = p * (n - 1)
        i = int(x)
        j = min(i + 1, n - 1)
        return v[i] + (v[j] - v[i]) * (x - i)

    return q(0.25), q(0.5), q(0.75)


def add_layer_flops(rows, spec, batch):
    """Add ``flops`` and ``gflops`` (useful GFLOP/s of forward + backward) to profile rows:
    one per layer, then the loss and the optimizer; then append a ``total`` row."""
    per_layer = [f + b for f, b in layer_flops(spec, batch)]
    per_layer += [0] * (len(rows) - len(per_layer))
    out = []
    for row, flops in zip(rows, per_layer):
        ms = row["forward_ms"] + row["backward_ms"]
        out.append(dict(row, flops=flops,
                        gflops=flops / (ms * 1e-3) / 1e9 if flops and ms > 0 else None))
    fwd = sum(r["forward_ms"] for r in rows)
    bwd = sum(r["backward_ms"] for r in rows)
    total = sum(per_layer)
    out.append({"name": "total", "forward_ms": fwd, "backward_ms": bwd, "flops": total,
                "gflops": total / ((fwd + bwd) * 1e-3) / 1e9 if fwd + bwd > 0 else None})
    return out


def _by_case(results):
    rows = {}
    for r in results:
        rows.setdefault((r["batch"], r["threads"]), {})[r["impl"]] = r
    return rows


def add_ratios(results, impls):
    """Per (batch, threads): ratio of each implementation's median to the reference's (the
    roofline is not an implementation: see :func:`add_roofline`)."""
    ratios = []
    for (batch, threads), by_impl in sorted(_by_case(results).items()):
        ref = by_impl.get(REFERENCE)
        if ref is None:
            continue
        for impl in impls:
            if impl in (REFERENCE, ROOFLINE) or impl not in by_impl:
                continue
            other = by_impl[impl]
            paired = [a / b for a, b in zip(other["block_medians_ms"], ref["block_medians_ms"])]
            q1, med, q3 = quantiles(paired) if paired else (None, None, None)
            ratios.append({"mode": ref.get("mode", "train"), "batch": batch, "threads": threads,
                           "impl": impl, "reference": REFERENCE,
                           "ratio_of_medians": other["median_ms"] / ref["median_ms"],
                           "per_round_ratio_q1": q1, "per_round_ratio_median": med,
                           "per_round_ratio_q3": q3})
    return ratios


def add_roofline(results):
    """Give every implementation's result row, where the sgemm roofline ran for its (batch,
    threads), ``roofline_ms`` (the roofline's median), ``pct_roofline`` (100 * roofline median /
    its median) and ``pct_roofline_per_round`` (quartiles of the same over the paired blocks of
    each round). Returns ``results``."""
    cases = {}
    for r in results:  # train and inference rows may share a batch size: keep them apart
        cases.setdefault((r.get("mode"), r["batch"], r["threads"]), {})[r["impl"]] = r
    for by_impl in cases.values():
        roof = by_impl.get(ROOFLINE)
        if roof is None:
            continue
        for impl, r in by_impl.items():
            if impl == ROOFLINE:
                continue
            r["roofline_ms"] = roof["median_ms"]
            r["pct_roofline"] = 100.0 * roof["median_ms"] / r["median_ms"]
            paired = [100.0 * a / b for a, b in zip(roof["block_medians_ms"],
                                                    r["block_medians_ms"])]
            r["pct_roofline_per_round"] = list(quantiles(paired)) if paired else None
    return results


def _md(head, body):
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join("---:" if i else "---" for i, _ in enumerate(head)) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines)


def format_table(results, impls, gflops=True):
    """Markdown table: one row per (batch, threads): median (IQR) ms per implementation, ratios
    to the reference, useful GFLOP/s (if ``gflops``) and, when the sgemm roofline ran, its ms
    (and GFLOP/s) and each implementation's % of it (roofline ms / its ms)."""
    rows = _by_case(results)
    present = [i for i in impls if any(i in v for v in rows.values())]
    roof = ROOFLINE if ROOFLINE in present else None
    present = [i for i in present if i != ROOFLINE]
    others = [i for i in present if i != REFERENCE]
    ref = REFERENCE if REFERENCE in present else None
    shown = others + ([ref] if ref else [])
    head = ["batch", "threads"] + [f"{i} ms" for i in others]
    if ref:
        head += [f"{ref} ms"] + [f"{i}/{ref}" for i in others]
    if gflops:
        head += [f"{i} GFLOP/s" for i in shown]
    if roof:
        head += ["roofline ms"] + (["roofline GFLOP/s"] if gflops else [])
        head += [f"{i} % roofline" for i in shown]
    body = []
    for (batch, threads), by_impl in sorted(rows.items()):

        def cell(impl, by_impl=by_impl):
            r = by_impl.get(impl)
            return f"{r['median_ms']:.3f} ({r['iqr_ms']:.3f})" if r else "n/a"

        def gf(impl, by_impl=by_impl):
            r = by_impl.get(impl)
            return f"{r['gflops']:.1f}" if r else "n/a"

        cells = [str(batch), str(threads)] + [cell(i) for i in others]
        if ref:
            rr = by_impl.get(ref)
            cells.append(cell(ref))
            for i in others:
                o = by_impl.get(i)
                cells.append(f"{o['median_ms'] / rr['median_ms']:.2f}" if (o and rr) else "n/a")
        if gflops:
            cells += [gf(i) for i in shown]
        if roof:
            rf = by_impl.get(roof)
            cells.append(f"{rf['median_ms']:.3f}" if rf else "n/a")
            if gflops:
                cells.append(gf(roof))
            for i in shown:
                o = by_impl.get(i)
                cells.append(f"{o['pct_roofline']:.0f}%" if o and "pct_roofline" in o else "n/a")
        body.append(cells)
    # the first column is numeric here too: right-align every column
    return _md(head, body).replace("|---|", "|---:|", 1)


def format_profile_table(profiles, impls):
    """Markdown table of the per-layer profiles: for the reference, forward and backward ms and
    useful GFLOP/s; for the others, forward + backward ms, GFLOP/s and the ratio to the
    reference; for the sgemm roofline, the layer's GEMM ms, their GFLOP/s and the reference's
    % of it. One block of rows per (batch, threads)."""
    by_key = {}
    for p in profiles:
        by_key.setdefault((p["batch"], p["threads"]), {})[p["impl"]] = p["rows"]
    present = [i for i in impls if any(i in v for v in by_key.values())]
    roof = ROOFLINE if ROOFLINE in present else None
    present = [i for i in present if i != ROOFLINE]
    if not present:
        return ""
    ref = REFERENCE if REFERENCE in present else None
    others = [i for i in present if i != ref]
    head = ["layer", "batch", "threads"]
    if ref:
        head += [f"{ref} fwd ms", f"{ref} bwd ms", f"{ref} GFLOP/s"]
    for i in others:
        head += [f"{i} ms"] + ([f"{i}/{ref}"] if ref else []) + [f"{i} GFLOP/s"]
    if roof:
        head += ["roofline ms", "roofline GFLOP/s"] + ([f"{ref} % roofline"] if ref else [])
    body = []

    def g(row):
        return f"{row['gflops']:.1f}" if row.get("gflops") else ""

    for (batch, threads), by_impl in sorted(by_key.items()):
        base = next((by_impl[i] for i in ([ref] if ref else []) + others if i in by_impl),
                    None)
        if base is None:
            continue
        for k, name_row in enumerate(base):
            cells = [name_row["name"], str(batch), str(threads)]
            r = by_impl.get(ref)[k] if ref and ref in by_impl else None
            rms = r["forward_ms"] + r["backward_ms"] if r else 0
            if ref:
                cells += ([f"{r['forward_ms']:.3f}", f"{r['backward_ms']:.3f}", g(r)] if r
                          else ["n/a"] * 3)
            for i in others:
                o = by_impl[i][k] if i in by_impl else None
                if o is None:
                    cells += ["n/a"] * (3 if ref else 2)
                    continue
                ms = o["forward_ms"] + o["backward_ms"]
                cells.append(f"{ms:.3f}")
                if ref:
                    cells.append(f"{ms / rms:.2f}" if rms > 0 else "")
                cells.append(g(o))
            if roof:
                o = by_impl[roof][k] if roof in by_impl else None
                ms = o["forward_ms"] + o["backward_ms"] if o else 0
                if o is None:
                    cells += ["n/a"] * (3 if ref else 2)
                elif ms > 0:  # a layer with GEMMs (and the total)
                    cells += [f"{ms:.3f}", g(o)]
                    if ref:
                        cells.append(f"{100 * ms / rms:.0f}%" if rms > 0 else "")
                else:
                    cells += [""] * (3 if ref else 2)
            body.append(cells)
    return _md(head, body)
