# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Main results: Table I
#
# The paper's Table I is its central claim: a DHD hashing network trained on 1, 10 or 50 images
# a class condensed by IEM retrieves better than one trained on Random, DM, DSA or IDC sets of
# the same size, at 32 and 64 bits, on CIFAR-10 and on two ImageNet subsets; *Whole* trains on
# the whole training set (500 images a class on CIFAR-10) and is the ceiling.
#
# This chapter sets our numbers beside the paper's, cell by cell, asks whether the methods come
# in the same order, and then looks inside the retrieval: precision-recall curves and the
# images each network actually retrieves. Our score is mAP@1000 (the DHD code's default and,
# as the design notes argue, likely the paper's metric); mAP over the whole database is shown
# too.

# %% tags=["parameters"]
profile = "cpu"        # smoke | cpu | paper
seed = 0
device = "auto"
results_dir = "results"
methods = ("random", "dm", "dsa", "idc", "iem", "whole")
ipcs = (1, 10, 50)     # images a class
bits = (32, 64)        # code lengths
curves_ipc = 10        # PR curves, P@k and the gallery: this size and code length (records made
curves_bits = 64       # before the curves existed hold none, so pick a configuration that has them)
gallery_methods = ("iem", "dm")  # IEM and a baseline for contrast
imagenet_stand_in = "imagenette-mini"  # an ImageFolder under $IEMLIB_DATA standing in for ImageNet-10
compute_missing = True  # False: show only what the results cache already holds

# %%
import math
import statistics

import matplotlib.pyplot as plt

from iemlib import gallery
from iemlib.experiment import Config
from iemlib.keynumbers import show_key_numbers
from iemlib.paper import TABLE1_METHODS, table1
from iemlib.report import (concordant_pairs, ensure_records, method_order, provenance, recorded,
                           show_table, table1_comparison)

if profile == "smoke":  # smoke keeps 50 training images a class: the smallest cell only
    ipcs, bits, curves_ipc, curves_bits = (1,), (32,), 1, 32
NAMES = {"random": "Random", "dm": "DM", "dsa": "DSA", "idc": "IDC", "iem": "IEM", "whole": "Whole"}
CONDENSED = [m for m in TABLE1_METHODS if m != "whole"]


def config(method: str, ipc: int, b: int, dataset: str = "cifar10") -> Config:
    return Config(dataset=dataset, method=method, ipc=ipc, bits=b, hash="dhd", profile=profile, seed=seed)


grid = [config(m, i, b) for m in methods for i in (*ipcs, curves_ipc) for b in (*bits, curves_bits)]
grid = list(dict.fromkeys(c.resolved() for c in grid))  # Whole is one run whatever the ipc

# %% tags=["nbval-ignore-output"]
if compute_missing:  # runs what the cache lacks (a progress bar counts them)
    ensure_records(grid, results_dir, device, desc="Table I")

# %%
rows = table1_comparison(profile, results_dir=results_dir, seed=seed)
hardware = "; ".join(sorted({provenance(r["record"]) for r in rows if r["record"]}))
print(f"{sum(r['ours'] is not None for r in rows)} of {len(rows)} CIFAR-10 cells have a record · {hardware}")

# %% [markdown]
# ## Table I, CIFAR-10
# Each cell reads *ours / paper (ours − paper)*, in mAP % (ours: mAP@1000); "–" marks a cell
# that has not run in this profile.


# %%
def cells(rows: list[dict]) -> dict[tuple[int, int], dict[str, dict]]:
    """Table I's rows, (ipc, bits) -> method -> cell."""
    table: dict[tuple[int, int], dict[str, dict]] = {}
    for row in rows:
        table.setdefault((row["ipc"], row["bits"]), {})[row["method"]] = row
    return table


def fmt(value: float | None, sign: bool = False) -> str:
    return "–" if value is None else f"{value:+.2f}" if sign else f"{value:.2f}"


table = cells(rows)
header = ["img/cls", "bits", *(NAMES[m] for m in TABLE1_METHODS)]
show_table(header, [[i, b, *(f"{fmt(c['ours'])} / {fmt(c['paper'])}"
                              + ("" if c["ours"] is None else f" ({c['ours'] - c['paper']:+.2f})")
                              for c in (table[(i, b)][m] for m in TABLE1_METHODS))]
                    for (i, b) in table],
           caption=f"Table I, CIFAR-10: mAP@1000 % ours / paper (difference) · {hardware}")
show_table(header, [[i, b, *(fmt(table[(i, b)][m]["ours_all"]) for m in TABLE1_METHODS)]
                    for (i, b) in table],
           caption=f"Ours, mAP@all % (the whole database ranked) · {hardware}")

# %% [markdown]
# ### Do we rank the methods as the paper does?
# Per row, the condensed sets (Whole aside) from best to worst; "pairs alike" counts the pairs
# of methods that both orderings put the same way round.

# %%
orderings = []
agree = {"winner": 0, "rows": 0, "alike": 0, "pairs": 0}
for (i, b), row in table.items():
    ours = {m: row[m]["ours"] for m in CONDENSED}
    paper = {m: row[m]["paper"] for m in CONDENSED if ours[m] is not None}
    if len(paper) < 2:
        continue
    mine, theirs = method_order(ours), method_order(paper)
    alike, pairs = concordant_pairs(ours, paper)
    agree["winner"] += mine[0] == theirs[0]
    agree["rows"] += 1
    agree["alike"] += alike
    agree["pairs"] += pairs
    orderings.append([i, b, " > ".join(NAMES[m] for m in mine), " > ".join(NAMES[m] for m in theirs),
                      "yes" if mine[0] == theirs[0] else "no", f"{alike} of {pairs}"])
show_table(["img/cls", "bits", "ours (mAP@1000)", "paper", "same winner", "pairs alike"], orderings,
           caption="The order of the condensed sets, best first (methods with a record of ours)")

# %%
fig, axes = plt.subplots(1, len(bits), figsize=(5.5 * len(bits), 3.6), squeeze=False)
width = 0.8 / len(TABLE1_METHODS)
for ax, b in zip(axes[0], bits):
    for k, m in enumerate(TABLE1_METHODS):
        x = [n + (k - (len(TABLE1_METHODS) - 1) / 2) * width for n in range(len(ipcs))]
        ours = [table[(i, b)][m]["ours"] for i in ipcs]
        ax.bar([p for p, y in zip(x, ours) if y is not None], [y for y in ours if y is not None],
               width, label=NAMES[m])
        ax.scatter(x, [table[(i, b)][m]["paper"] for i in ipcs], marker="_", s=150, linewidths=1.5,
                   color="black", zorder=3, label="paper" if k == 0 else None)
    ax.set_xticks(range(len(ipcs)), [f"{i} img/cls" for i in ipcs])
    ax.set(ylabel="mAP %", title=f"CIFAR-10, {b} bits: ours (bars, mAP@1000), the paper (dashes)")
    ax.grid(axis="y", alpha=0.3)
axes[0][0].legend(fontsize=7, ncol=2)
fig.text(0.01, 0.01, hardware, fontsize=7)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## What we found

# %%
condensed = [r for r in rows if r["method"] != "whole" and r["ours"] is not None]
whole = {b: table[(ipcs[0], b)]["whole"] for b in bits}
for b, cell in whole.items():
    if cell["ours"] is not None:
        steps = cell["record"]["config"]["train_steps"]
        print(f"Whole training set, {b} bits: ours {cell['ours']:.2f} against the paper's "
              f"{cell['paper']:.2f} ({cell['ours'] - cell['paper']:+.2f}); the {profile} profile trains "
              f"the hashing network {steps} steps.")
by_ipc = {}
for i in ipcs:
    gaps = [r["ours"] - r["paper"] for r in condensed if r["ipc"] == i]
    if gaps:
        by_ipc[i] = statistics.mean(gaps)
        print(f"{i} img/cls: condensed sets differ from the paper by {by_ipc[i]:+.2f} points "
              f"on average ({min(gaps):+.2f} to {max(gaps):+.2f}, {len(gaps)} cells).")
if len(by_ipc) > 1:
    gaps = list(by_ipc.values())
    trend = ("falls steadily" if all(a > b for a, b in zip(gaps, gaps[1:])) else
             "rises steadily" if all(a < b for a, b in zip(gaps, gaps[1:])) else "moves unevenly")
    print(f"The difference to the paper {trend} as the sets grow, from {gaps[0]:+.2f} to {gaps[-1]:+.2f}.")
shortfall = {b: c["ours"] - c["paper"] for b, c in whole.items() if c["ours"] is not None}
if shortfall and condensed:
    worst = min(r["ours"] - r["paper"] for r in condensed)
    judged = [r for r in condensed if r["bits"] in shortfall]
    closer = sum(r["ours"] - r["paper"] > shortfall[r["bits"]] for r in judged)
    print(f"{closer} of {len(judged)} condensed cells are closer to the paper than our whole set is "
          f"(whole set {', '.join(f'{v:+.2f} at {b} bits' for b, v in shortfall.items())}; "
          f"the largest shortfall of a condensed cell {worst:+.2f}).")
share = [(r["ours"] / whole[r["bits"]]["ours"], r["paper"] / whole[r["bits"]]["paper"])
         for r in condensed if r["bits"] in whole and whole[r["bits"]]["ours"] is not None]
if share:
    ours_share, paper_share = (100 * statistics.mean(s) for s in zip(*share))
    print(f"Measured against each one's own whole-set ceiling, our condensed sets reach "
          f"{ours_share:.1f}% of it on average and the paper's {paper_share:.1f}% ({len(share)} cells).")
if agree["rows"]:
    print(f"The same method wins in {agree['winner']} of {agree['rows']} rows; "
          f"{agree['alike']} of {agree['pairs']} method pairs are ordered alike.")
mean_gap = statistics.mean(r["ours"] - r["paper"] for r in condensed) if condensed else math.nan

# %% [markdown]
# Read the cells with the whole-set row in mind: the paper's ceiling comes from training DHD on
# a GPU for its full schedule, ours from this profile's (short outside `paper`), so the tables sit on
# different scales and a cell's difference mixes the method's quality with the ceiling's. The
# share of the ceiling and the ordering of the methods are the comparisons that survive the
# change of scale. Every cell is a single run (seed 0).

# %% [markdown]
# ## On a GPU, the paper's protocol
# The cells above come from this book's profile. Where a GPU was lent to us we ran IEM at the
# paper's scale: the full CIFAR-10 protocol, 256 real images a class every iteration, DHD
# trained 5,000 steps of 256 images, the real branch in bf16 (the setting `python -m iemlib
# bench` checks against fp32), all 20,000 of the paper's condensation iterations. The 64-bit
# network is trained on the 32-bit run's condensed set.

# %%
gpu_rows = []
for b in (32, 64):
    record = recorded(Config(method="iem", ipc=10, bits=b, profile="paper", seed=seed), results_dir)
    if record:
        ours, paper = 100 * record["metrics"]["map_at_1000"], table1("cifar10", 10, b, "iem")
        gpu_rows.append([10, b, record["config"]["iterations"], f"{ours:.2f}", f"{paper:.2f}",
                         f"{ours - paper:+.2f}", f"{100 * record['metrics']['map']:.2f}",
                         f"{record['timings']['condense_s']:.0f} s", provenance(record)])
if gpu_rows:
    show_table(["img/cls", "bits", "iterations", "IEM mAP@1000 %", "paper", "ours − paper",
                "mAP@all %", "condensation", "made by"], gpu_rows,
               caption="IEM on CIFAR-10 at the paper's protocol")
    above = [row[1] for row in gpu_rows if float(row[5]) > 0]
    print(f"By mAP@1000 our IEM set is above the paper's Table I entry at {len(above)} of "
          f"{len(gpu_rows)} code lengths ({', '.join(f'{r[1]} bits {r[5]}' for r in gpu_rows)}); "
          f"mAP over the whole database is {', '.join(r[6] for r in gpu_rows)} %. If the paper "
          f"reports mAP@1000, as DHD's code does by default, this cell "
          f"{'reaches' if len(above) == len(gpu_rows) else 'does not reach'} Table I. One seed, "
          "one cell: the other methods have not run at this scale.")
else:
    print(f"No GPU record of the paper's protocol under {results_dir}/paper.")

# %% [markdown]
# ## ImageNet subsets
# The paper's Table I also covers ImageNet-10 and ImageNet-20 (130 training images a class,
# ResNetAP-10 at 224 px). Their numbers are below; our cells are shown where a record exists:
# for the subsets themselves (they need ImageNet under `$IEMLIB_DATA/imagenet`), and for the
# stand-in folder named by `imagenet_stand_in` beside ImageNet-10.

# %%
imagenet: dict[tuple, dict[str, str]] = {}  # (data set, ipc, bits) -> method -> cell text
for dataset, stand_in in (("imagenet10", None), ("imagenet10", imagenet_stand_in), ("imagenet20", None)):
    cells_ = table1_comparison(profile, dataset=dataset, results_dir=results_dir, seed=seed,
                               stand_in=stand_in)
    found = [r for r in cells_ if r["ours"] is not None]
    what = ""
    if found:
        c, sizes = found[0]["record"]["config"], found[0]["record"]["split"]["sizes"]
        what = (f" ({c['backbone']} at {c['image_size']} px; train {sizes['train']}, query "
                f"{sizes['query']}, database {sizes['database']} images; {provenance(found[0]['record'])})")
    print(f"{stand_in or dataset}: {len(found)} of {len(cells_)} cells recorded{what}")
    for r in cells_:
        row = imagenet.setdefault((r["dataset"], r["ipc"], r["bits"]), {})
        row.setdefault(r["method"], f"{r['paper']:.2f}")
        if r["ours"] is not None:
            row[r["method"]] += f" [{'stand-in' if stand_in else 'ours'}: {r['ours']:.2f}]"
show_table(["data set", "img/cls", "bits", *(NAMES[m] for m in TABLE1_METHODS)],
           [[*key, *(row[m] for m in TABLE1_METHODS)] for key, row in imagenet.items()],
           caption=f"Table I, ImageNet subsets: the paper's mAP %, [ours or the stand-in "
                   f"({imagenet_stand_in}): mAP@1000 %] where recorded")

# %% [markdown]
# The stand-in is not the paper's ImageNet-10: it is ten *Imagenette* classes (other classes),
# a small database, 32 px images and ConvNet-3 on 2 CPU cores (the line above names what ran),
# so its numbers say whether the methods keep their order on another data set at this budget,
# not how close we come to the paper's ImageNet numbers.

# %% [markdown]
# ## Precision-recall
# Ranking by Hamming distance, a query retrieves everything within radius $r$ of its code;
# sweeping $r = 0..K$ gives one precision-recall point per radius. P@k is the precision of the
# first $k$ retrieved. Shown for the configuration named by `curves_ipc` and `curves_bits`
# (records made before the curves were stored hold none and are listed as missing).

# %%
curve_records = {m: recorded(config(m, curves_ipc, curves_bits), results_dir) for m in methods}
with_curves = {m: r for m, r in curve_records.items() if r and "pr_curve" in r["metrics"]}
missing = [NAMES[m] for m in methods if m not in with_curves]
print(f"{curves_ipc} img/cls, {curves_bits} bits: curves from "
      f"{', '.join(NAMES[m] for m in with_curves) or 'none'}"
      + (f"; missing (no record, or a record without curves): {', '.join(missing)}" if missing else ""))
if with_curves:
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    for m, record in with_curves.items():
        curve, at_k = record["metrics"]["pr_curve"], record["metrics"]["precision_at_k"]
        style = dict(ls="--") if m == "whole" else {}
        left.plot(curve["recall"], curve["precision"], marker=".", label=NAMES[m], **style)
        right.plot([int(k) for k in at_k], [100 * p for p in at_k.values()], marker="o",
                   label=NAMES[m], **style)
    left.set(xlabel="recall", ylabel="precision", title="precision-recall over Hamming radius")
    right.set(xlabel="k (retrieved images)", ylabel="P@k (%)", title="precision of the top k")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"CIFAR-10, {curves_ipc} img/cls, {curves_bits} bits, DHD · "
                 + "; ".join(sorted({provenance(r) for r in with_curves.values()})), fontsize=8)
    plt.tight_layout()
    plt.show()

# %% [markdown]
# ## What the networks retrieve
# The first query of each class (grey frame, its class on the left) and the ten database images
# nearest to its code, nearest first: green when they share the query's class, red when not.

# %%
shown = {m: curve_records[m] for m in gallery_methods
         if m in curve_records and curve_records[m] and "gallery" in curve_records[m]["metrics"]}
galleries = {}
if shown:
    protocol = config(next(iter(shown)), curves_ipc, curves_bits).resolved().protocol()
    galleries = {m: gallery.from_record(r, protocol) for m, r in shown.items()}
    fig, axes = plt.subplots(1, len(galleries), figsize=(6.5 * len(galleries), 6.5), squeeze=False)
    for ax, (m, g) in zip(axes[0], galleries.items()):
        gallery.show(g, ax, protocol.class_names,
                     title=f"{NAMES[m]}: {100 * g.precision:.0f}% of the top 10 from the query's class")
    fig.suptitle(f"CIFAR-10, {curves_ipc} img/cls, {curves_bits} bits · "
                 + "; ".join(sorted({provenance(r) for r in shown.values()})), fontsize=8)
    plt.tight_layout()
    plt.show()
for m in gallery_methods:
    if m in galleries:
        g = galleries[m]
        print(f"{NAMES[m]}: {int(g.wrong.sum())} of {g.wrong.numel()} retrieved images are of another class")
    else:
        print(f"{NAMES.get(m, m)}: no gallery at {curves_ipc} img/cls, {curves_bits} bits "
              "(no record, or one made before galleries were stored)")

# %% [markdown]
# Ten queries are a glimpse, not a measure: the P@k curves above average over every query.

# %%
key = {"mean gap to the paper, condensed sets": mean_gap}
for b, cell in whole.items():
    if cell["ours"] is not None:
        key[f"whole-set mAP@1000, {b} bits"] = cell["ours"]
iem = table.get((curves_ipc, curves_bits), {}).get("iem", {}).get("ours")
if iem is not None:
    key[f"IEM mAP@1000, {curves_ipc} img/cls, {curves_bits} bits"] = iem
if agree["rows"]:
    key["rows with the paper's winner"] = agree["winner"]
for m, g in galleries.items():
    key[f"{NAMES[m]} gallery precision"] = 100 * g.precision
show_key_numbers({k: v for k, v in key.items() if math.isfinite(v)})
