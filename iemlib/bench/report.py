"""The results as a table: a row a measurement, and footnotes."""

from __future__ import annotations

from typing import Callable

from .condense import BACK_TO_BACK
from .retrieval import MAP_ATOL

HEADER = ("benchmark", "baseline", "ours", "ratio", "check")


def result_rows(results: dict) -> list[tuple[str, ...]]:
    """One row a measurement (columns as ``HEADER``), as the table prints them."""
    return (condense_rows(results) + loop_rows(results) + map_rows(results)
            + encode_rows(results) + memory_rows(results))


def table(results: dict) -> str:
    """The results as a fixed-width table: benchmark, baseline, ours, ratio, check."""
    rows = [HEADER, *result_rows(results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines + footnotes(results))


def verdict(check: dict) -> str:
    return "ok" if check["ok"] else "FAILED"


def condense_rows(results: dict) -> list[tuple[str, ...]]:
    if "condense" not in results:
        return []
    s = results["sizes"]
    return variant_rows(
        results["condense"], f"DM iteration ({s['classes']}x{s['real_per_class']} real, ipc "
        f"{s['ipc']})", lambda c: f"loss {c['loss_ours']:.6g}, rel diff {c['loss_rel_diff']:.1e} "
        f"(grad {c['grad_rel_diff']:.1e}, tol {c['rtol']:g}/{c['grad_rtol']:g}, draws "
        f"{'match' if c['draws_match'] else 'DIFFER'})")


def loop_rows(results: dict) -> list[tuple[str, ...]]:
    if "loop" not in results:
        return []
    r = results["loop"]
    return variant_rows(
        r, f"DM run ({r['iterations']} iterations), an iteration",
        lambda c: f"losses rel diff {c['loss_rel_diff']:.1e}, images {c['image_rel_diff']:.1e} "
        f"(tol {c['rtol']:g}/{c['image_rtol']:g})")


def variant_rows(r: dict, title: str, describe: Callable[[dict], str]) -> list[tuple[str, ...]]:
    """A row a variant of a benchmark timed in several (``describe`` words its check); * marks
    the headline."""
    rows = []
    for name, v in r["variants"].items():
        label = f"{title}, ours {name}{' *' if name == r['variant'] else ''}"
        if "error" in v:
            rows.append((label, f"{r['seconds_baseline']:.4f} s", "-", "-",
                         f"not run: {v['error']}"))
            continue
        rows.append((label, f"{r['seconds_baseline']:.4f} s", f"{v['seconds']:.4f} s",
                     f"{v['speedup']:.2f}x", f"{verdict(v['check'])}: {describe(v['check'])}"))
    return rows


def map_rows(results: dict) -> list[tuple[str, ...]]:
    if "map" not in results:
        return []
    r = results["map"]
    return [(f"mAP@all {bits} bits ({r['queries']}x{r['database']})",
             f"{b['seconds_baseline']:.3f} s", f"{b['seconds_ours']:.3f} s", f"{b['speedup']:.2f}x",
             f"{'ok' if b['abs_diff'] <= MAP_ATOL else 'FAILED'}: mAP {b['map_ours']:.6f}, "
             f"diff {b['abs_diff']:.1e}") for bits, b in r["by_bits"].items()]


def encode_rows(results: dict) -> list[tuple[str, ...]]:
    return [(f"encode {name} ({r['images']} images)", f"{r['images_per_s_baseline']:.1f} img/s",
             f"{r['images_per_s_ours']:.1f} img/s", f"{r['speedup']:.2f}x",
             f"{verdict(r['check'])}: {r['check']['code_mismatch']:.1e} of bits differ")
            for name, r in results.get("encode", {}).items()]


def memory_rows(results: dict) -> list[tuple[str, ...]]:
    if "memory" not in results:
        return []
    r = results["memory"]
    return [(f"memory: {r['iterations']}-iteration DM run ({r['measure']})",
             f"{r['baseline']['peak_mb']:.0f} MB", f"{r['ours']['peak_mb']:.0f} MB",
             f"{r['ratio']:.2f}x", f"before the run: {r['baseline']['before_mb']:.0f} / "
             f"{r['ours']['before_mb']:.0f} MB")]


def footnotes(results: dict) -> list[str]:
    notes = [f"device: {results['device']} ({results['device_type']}); "
             f"allocator: {results['allocator'] or 'untouched'}; ratio: baseline / ours "
             "(throughput: ours / baseline), medians"]
    if "condense" in results:
        r = results["condense"]
        notes.append(f"condense: {r['data']}; * the headline variant (the fastest whose loss "
                     f"and gradient hold); {r['flops'] / 1e9:.2f} GFLOP an iteration: "
                     f"{r['gflops']:.1f} GFLOP/s ours, {r['gflops_baseline']:.1f} baseline, "
                     f"against a {r['peak_gflops']:.1f} GFLOP/s fp32 matmul peak "
                     f"({r['peak_matmul_size']}^2) = {r['gflops'] / r['peak_gflops']:.0%}"
                     + (" (the headline's real branch runs in bf16, which can pass the fp32 peak)"
                        if r["variant"].startswith("bf16") else ""))
        back_to_back = {n: v["speedup_back_to_back"] for n, v in r["variants"].items()
                        if "speedup_back_to_back" in v}
        if back_to_back:
            notes.append(f"condense, {BACK_TO_BACK} iterations back to back (no wait for the "
                         "device between them, as the loop runs them), baseline / ours: "
                         + ", ".join(f"{n} {x:.2f}x" for n, x in back_to_back.items()))
    if "loop" in results:
        notes.append(f"loop: {results['loop']['data']}; whole runs, setup included, over their "
                     "iterations; the baseline reads each iteration's loss back (loss.item()), "
                     "the library its losses once a checkpoint; on a GPU the library draws "
                     "each iteration's network and batches ahead on worker threads unless "
                     "'drawn in turn'; images: the final images' distance over how far the "
                     "baseline's moved")
    for name, p in results.get("condense", {}).get("profile", {}).items():
        for clock, q in [(p["clock"], p), *([("host", p["host"])] if "host" in p else [])]:
            notes.append(f"profile {name}: {q['ms']:.2f} ms of {clock} self time an iteration; "
                         + ", ".join(f"{o['op'][:60]} {o['ms']:.2f} ms ({o['calls']:g}x)"
                                     for o in q["top"]))
    if not results["checks_ok"]:
        notes.append("CHECK FAILED: the baseline and the library disagree (see above)")
    return notes
