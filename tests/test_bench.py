"""The benchmarks at tiny sizes: their baselines compute what the library computes, the command
line writes its JSON, and bad options fail clearly. No test asserts a wall-clock limit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

from iemlib.__main__ import main
from iemlib.bench import Sizes, report, timing
from iemlib.bench import condense as condense_bench
from iemlib.bench import loop as loop_bench
from iemlib.bench.condense import (PROFILE_TOP, TOLERANCES, VARIANTS, agreement, bench_settings,
                                   bench_split, bench_task, iteration_steps, profile_steps,
                                   tolerance, variants_for)
from iemlib.bench.loop import library_run, reference_run, run_agreement
from iemlib.bench.retrieval import MAP_ATOL, map_pair, one_hot, reference_map, structured_codes
from iemlib.condense.base import GPU_DRAW_AHEAD
from iemlib.condense.networks import random_network
from iemlib.retrieval import hamming_distance, mean_average_precision
from iemlib.seeding import generator

FP32_LOSS, _ = TOLERANCES["fp32", "cpu"]
TINY = Sizes(classes=2, real_per_class=8, ipc=2, queries=20, database=300, bits=(8,), repeats=1,
             encode_images=8, resnet_size=16, memory_iterations=1, loop_iterations=2, peak_size=64,
             data="random")
TINY_ARGS = ["--classes", "2", "--real-per-class", "8", "--ipc", "2", "--queries", "20",
             "--database", "300", "--bits", "8", "16", "--repeats", "1", "--encode-images", "8",
             "--resnet-size", "16", "--memory-iterations", "1", "--loop-iterations", "1",
             "--peak-size", "64", "--data", "random"]


@pytest.fixture(scope="module")
def steps():
    task = bench_task(bench_split(TINY)[0], TINY, torch.device("cpu"))
    return iteration_steps(task, TINY, random_network(task, bench_settings(TINY), "test"),
                           {"fp32": VARIANTS["fp32"], "bf16": VARIANTS["bf16"]})


def test_reference_loss_equals_matching_loss_on_the_same_draws(steps):
    check = agreement(steps["baseline"], steps["fp32"], FP32_LOSS)
    assert check["ok"] and check["draws_match"]
    assert check["loss_rel_diff"] <= FP32_LOSS and check["loss_ours"] > 0


def test_the_bf16_variant_holds_its_tolerance_and_not_fp32s(steps):
    check = agreement(steps["baseline"], steps["bf16"], *TOLERANCES["bf16", "cpu"])
    assert check["ok"] and 0 < check["loss_rel_diff"] <= TOLERANCES["bf16", "cpu"][0]
    assert 0 < check["grad_rel_diff"] <= TOLERANCES["bf16", "cpu"][1]
    assert not agreement(steps["baseline"], steps["bf16"], FP32_LOSS)["ok"]


def test_the_loss_check_fails_when_the_draws_diverge(steps):
    def elsewhere(g: torch.Generator):
        return steps["baseline"](generator(1, "another draw"))

    check = agreement(elsewhere, steps["fp32"], FP32_LOSS)
    assert not check["ok"] and check["loss_rel_diff"] > FP32_LOSS


def test_the_draw_check_fails_when_the_baseline_draws_more(steps):
    def greedy(g: torch.Generator):
        result = steps["baseline"](g)
        torch.rand(1, generator=g)  # one draw matching_loss does not make
        return result

    check = agreement(greedy, steps["fp32"], FP32_LOSS)
    assert check["loss_rel_diff"] <= FP32_LOSS  # the same loss ...
    assert not check["draws_match"] and not check["ok"]  # ... but the next iteration would differ


def test_the_profile_names_where_each_step_spends_its_time(steps):
    report = profile_steps({"fp32": steps["fp32"]}, 2, torch.device("cpu"))["fp32"]
    assert report["clock"] == "cpu" and report["ms"] > 0
    assert 0 < len(report["top"]) <= PROFILE_TOP
    assert [o["ms"] for o in report["top"]] == sorted((o["ms"] for o in report["top"]), reverse=True)
    assert any("conv" in o["op"] for o in report["top"])  # the network's convolutions dominate
    assert sum(o["ms"] for o in report["top"]) <= report["ms"] * (1 + 1e-9)


def test_back_to_back_rounds_wait_for_the_device_only_around_them(monkeypatch):
    clock, calls, waits = [0.0], [], []
    monkeypatch.setattr(timing.time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(timing, "synchronize", lambda device: waits.append(len(calls)))

    def run() -> None:
        calls.append(None)
        clock[0] += 2.0

    assert timing.interleaved({"a": run}, 3, torch.device("cpu"), back_to_back=4) == {"a": [2.0] * 3}
    assert len(calls) == 1 + 3 * 4  # a warm-up, then three rounds of four
    assert waits == [1, 5, 5, 9, 9, 13]  # before and after each round, none within one


def test_on_a_gpu_the_condensation_is_also_timed_back_to_back(monkeypatch):
    monkeypatch.setattr(condense_bench, "asynchronous", lambda device: True)  # as on CUDA
    sizes = replace(TINY, variants=("fp32",))
    result = condense_bench.condense_benchmark(sizes, torch.device("cpu"))
    assert result["variants"]["fp32"]["speedup_back_to_back"] > 0
    assert result["speedup_back_to_back"] == result["variants"]["fp32"]["speedup_back_to_back"]
    assert len(result["timings"]["fp32 back to back"]) == sizes.repeats
    notes = report.footnotes({"device": "x", "device_type": "cuda", "allocator": None,
                              "checks_ok": True, "condense": result})
    assert any(f"{condense_bench.BACK_TO_BACK} iterations back to back" in n and "fp32" in n for n in notes)


@pytest.fixture(scope="module")
def loop_task():
    return bench_task(bench_split(TINY)[0], TINY, torch.device("cpu"))


def test_the_reference_loop_reaches_the_librarys_images(loop_task):
    initial = loop_task.initial_set(TINY.ipc).images
    reference = reference_run(loop_task, TINY, 3)
    ours = library_run(loop_task, bench_settings(TINY, 3))
    check = run_agreement(reference, ours, initial, *TOLERANCES["fp32", "cpu"])
    assert check["ok"] and len(reference[1]) == 3
    assert (reference[0] - initial).abs().max() > 1e-3  # the images moved
    assert check["image_rel_diff"] <= 1e-5 and check["loss_rel_diff"] <= 1e-5


def test_the_loop_check_fails_on_other_images_or_losses(loop_task):
    initial = loop_task.initial_set(TINY.ipc).images
    images, losses = reference_run(loop_task, TINY, 2)
    shy = initial + (images - initial) * 0.9  # a tenth short of the baseline's change
    assert not run_agreement((images, losses), (shy, losses), initial, 1e-4, 5e-2)["ok"]
    assert not run_agreement((images, losses), (images, [losses[0], losses[1] * 1.01]),
                             initial, 1e-4, 5e-2)["ok"]
    short = run_agreement((images, losses), (images, losses[:1]), initial, 1e-4, 5e-2)
    assert not short["ok"] and not short["iterations_match"]


def test_on_a_gpu_the_loop_is_also_timed_with_its_draws_in_turn(monkeypatch):
    monkeypatch.setattr(loop_bench, "asynchronous", lambda device: True)  # as on CUDA
    monkeypatch.setattr("iemlib.condense.base.asynchronous", lambda device: True)
    ahead_seen = []
    original = loop_bench.library_run

    def spy(task, settings):
        ahead_seen.append(task.draws_ahead)
        return original(task, settings)

    monkeypatch.setattr(loop_bench, "library_run", spy)
    result = loop_bench.loop_benchmark(replace(TINY, variants=("fp32",)), torch.device("cpu"))
    assert set(result["variants"]) == {"fp32", "fp32, drawn in turn"}
    assert all(v["check"]["ok"] and v["speedup"] > 0 for v in result["variants"].values())
    assert set(ahead_seen) == {GPU_DRAW_AHEAD, 0}  # the default on a GPU, and in turn
    assert len(ahead_seen) == 2 * (1 + TINY.repeats)  # a checked warm-up, then the repeats
    rows = report.loop_rows({"loop": result})
    assert ["drawn in turn" in r[0] for r in rows] == [False, True]


def test_tolerances_follow_the_precision_and_the_device():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert tolerance("fp32", cpu) == (1e-4, 1e-4)  # the same sums in another order
    assert tolerance("fp32", cuda) > tolerance("fp32", cpu)  # TF32 convolutions
    assert tolerance("bf16", cpu) == tolerance("bf16", cuda) > tolerance("fp32", cpu)


def test_variants_by_device():
    assert set(variants_for(torch.device("cpu"))) == set(VARIANTS)
    assert "bf16+cudagraphs" in variants_for(torch.device("cuda"))
    assert list(variants_for(torch.device("cpu"), ("bf16",))) == ["bf16"]
    with pytest.raises(ValueError, match="unknown variants"):
        variants_for(torch.device("cpu"), ("bf16+cudagraphs",))


def test_reference_map_equals_the_library_on_tied_codes():
    codes, labels = structured_codes(230, 4, 10, generator(0, "ties"))  # 4 bits: ties everywhere
    q, db, ql, dl = codes[:30], codes[30:], labels[:30], labels[30:]
    assert len(hamming_distance(q[:1], db).unique()) <= 5 < len(db)
    values = []
    for order in (torch.arange(len(db)), torch.arange(len(db)).flip(0)):  # ties broken both ways
        ours = mean_average_precision(q, db[order], ql, dl[order], topk=None)
        reference = reference_map(q.numpy(), db[order].numpy(), one_hot(ql, 10),
                                  one_hot(dl[order], 10))
        assert abs(ours - reference) <= MAP_ATOL
        values.append(ours)
    assert abs(values[0] - values[1]) > 1e-6  # the tie order matters, so the test can tell


def test_map_pair_agrees():
    runs = map_pair(20, 300, 16, 10, torch.device("cpu"))
    assert abs(runs["baseline"]() - runs["ours"]()) <= MAP_ATOL


def test_cli_writes_the_json(tmp_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "iemlib", "bench", *TINY_ARGS, "--json", str(out)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "DM iteration" in done.stdout and "mAP@all 16 bits" in done.stdout
    assert "DM run (1 iterations)" in done.stdout
    results = json.loads(out.read_text())
    for key in ("condense_speedup", "map_speedup", "loop_speedup", "device", "condense_gflops",
                "peak_gflops", "memory_ratio", "timings"):
        assert results[key], key
    assert results["checks_ok"] and results["condense"]["check"]["draws_match"]
    variants = results["condense"]["variants"]
    assert set(variants) == set(VARIANTS) and variants["fp32"]["check"]["ok"]
    assert results["condense"]["variant"] in variants
    assert set(results["map"]["by_bits"]) == {"8", "16"}
    timings = results["timings"]
    assert set(timings) == {"condense", "loop", "map", "encode"}
    assert set(results["loop"]["variants"]) == set(VARIANTS)
    runs = (timings["condense"], timings["loop"], *timings["map"]["by_bits"].values(),
            *timings["encode"].values())
    seconds = [t for run in runs for ts in run.values() for t in ts]
    assert seconds and all(t > 0 for t in seconds)
    assert all(results["memory"][k]["peak_mb"] > 0 for k in ("baseline", "ours"))


@pytest.mark.parametrize("args,message", [
    (["--repeats", "0"], "--repeats must be >= 1"),
    (["--bits", "32", "0"], "--bits must be >= 1"),
    (["--ipc", "20", "--real-per-class", "8"], "--ipc 20 is larger than --real-per-class 8"),
    (["--resnet-size", "20"], "--resnet-size must be a multiple of 8"),
    (["--only", "speed"], "invalid choice: 'speed'"),
    (["--queries", "many"], "invalid int value: 'many'"),
    (["--variants", "fp16"], "invalid choice: 'fp16'"),
    (["--profile", "0"], "--profile must be >= 1"),
    (["--loop-iterations", "0"], "--loop-iterations must be >= 1"),
])
def test_bad_options_fail_clearly(args, message, capsys):
    try:
        code = main(["bench", *args])
    except SystemExit as exit:  # argparse's own errors
        code = exit.code
    assert code == 2
    assert message in capsys.readouterr().err
