"""On a real GPU: the Triton kernels against the torch fallback on the CPU, the real branch's
CUDA settings against fp32, copies through pinned memory, short condensations on CUDA, eager
and compiled, and the host's waits for the GPU in condensation and encoding. Skipped where
there is no GPU (CI); run them on a GPU machine with ``pytest tests/test_gpu.py``."""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import pytest
import torch
import torch.nn.functional as F

from iemlib import kernels
from iemlib.augment import DSA
from iemlib.bench import structured_codes
from iemlib.condense import CondenseSettings, CondenseTask, condense, engine
from iemlib.condense.engine import Embedder
from iemlib.condense.networks import freeze
from iemlib.data import Split
from iemlib.devices import module_to_device, pinned, to_device
from iemlib.models import build_backbone
from iemlib.retrieval import mean_average_precision
from iemlib.seeding import seeded
from iemlib.training import fit, predict

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _codes_and_labels(n_query: int, n_db: int, bits: int):
    """Queries and database codes near one centre a class, so that many distances tie."""
    codes, labels = structured_codes(n_query + n_db, bits, 10, torch.Generator().manual_seed(bits))
    return (codes[:n_query], labels[:n_query]), (codes[n_query:], labels[n_query:])


@pytest.mark.parametrize("bits", [16, 32, 64])
def test_triton_kernels_equal_the_cpu_fallback(bits):
    (qc, ql), (dc, dl) = _codes_and_labels(300, 5000, bits)
    cpu = [kernels.pack_codes(qc), kernels.pack_codes(dc)]
    gpu = [t.cuda() for t in cpu]
    assert kernels.backend(*gpu) == "triton"
    assert torch.equal(kernels.hamming(*gpu).cpu(), kernels.hamming(*cpu))
    assert torch.equal(kernels.hamming_topk(*gpu, 100).cpu(), kernels.hamming_topk(*cpu, 100))
    for k in (100, 5000):
        ap_gpu = kernels.average_precision(*gpu, ql.cuda(), dl.cuda(), k).cpu()
        ap_cpu = kernels.average_precision(*cpu, ql, dl, k)
        torch.testing.assert_close(ap_gpu, ap_cpu, rtol=0, atol=1e-12)
    assert abs(mean_average_precision(qc.cuda(), dc.cuda(), ql.cuda(), dl.cuda())
               - mean_average_precision(qc, dc, ql, dl)) < 1e-12


@pytest.mark.parametrize("bits", [32, 64])
def test_the_dense_rank_mode_equals_the_torch_backend_on_cuda(bits):
    (qc, ql), (dc, dl) = _codes_and_labels(128, 5000, bits)
    q, d, ql, dl = kernels.pack_codes(qc).cuda(), kernels.pack_codes(dc).cuda(), ql.cuda(), dl.cuda()
    triton_precisions, triton_hits = kernels._precisions_triton(q, d, ql, dl, 5000)
    torch_precisions, torch_hits = kernels._precisions_torch(q, d, ql, dl, 5000)
    assert torch.equal(triton_hits.cpu(), torch_hits.cpu().to(triton_hits.dtype))
    torch.testing.assert_close(triton_precisions.sum(1).cpu(), torch_precisions.sum(1).cpu(),
                               rtol=0, atol=1e-9)


@pytest.mark.parametrize("precision,compile_mode,tolerance", [
    ("fp32", "off", 2e-2), ("bf16", "off", 2e-2), ("bf16", "reduce-overhead", 2e-2)])
def test_the_real_branch_on_cuda_matches_fp32(precision, compile_mode, tolerance):
    batches = [torch.rand(64, 3, 32, 32, device="cuda") for _ in range(4)]
    embedder = Embedder("cuda", precision, compile_mode)
    for seed in range(3):  # fresh networks must not break a compiled forward
        torch.manual_seed(seed)
        net = build_backbone("convnet", channels=3, image_size=32, mean=(0.5,) * 3,
                             std=(0.5,) * 3).eval()
        reference = Embedder("cpu").real_means(net, [b.cpu() for b in batches])
        means = embedder.real_means(net.cuda(), batches).cpu()
        error = (means - reference).norm() / reference.norm()
        assert error < tolerance, (seed, float(error))


def test_a_real_branch_past_the_memory_budget_holds_less_on_cuda(monkeypatch):
    """Past ``DEVICE_FORWARD_BYTES`` the real branch goes a class at a time: less memory at the
    peak, the same means up to the float rounding of the kernels picked for smaller batches."""
    torch.manual_seed(0)
    net = module_to_device(build_backbone("convnet", channels=3, image_size=32,
                                          mean=(0.5,) * 3, std=(0.5,) * 3).eval(), "cuda")
    batches = [torch.rand(256, 3, 32, 32, device="cuda") for _ in range(10)]
    runs = {}
    for budget in (engine.DEVICE_FORWARD_BYTES, 256 * engine.largest_activation(net, (3, 32, 32))):
        monkeypatch.setattr(engine, "DEVICE_FORWARD_BYTES", budget)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
        means = Embedder("cuda").real_means(net, batches)
        runs[budget] = (means.cpu(), torch.cuda.max_memory_allocated() - start)
    (one, one_peak), (apart, apart_peak) = runs.values()
    assert float((apart - one).norm() / one.norm()) < 1e-2  # TF32 convolutions, other algorithms
    assert apart_peak < one_peak / 4, (apart_peak, one_peak)


def test_the_matching_loss_past_the_memory_budget_follows_one_forward_under_cuda_graphs(
        monkeypatch):
    """Past ``DEVICE_FORWARD_BYTES`` DM's loss runs the real branch a piece at a time and then
    the synthetic branch, several compiled calls an iteration where one forward makes one:
    under CUDA graphs each call would overwrite the outputs of the last unless they are kept.
    The loss and the image gradient follow one forward's, for fresh networks."""
    torch.manual_seed(0)
    real = [torch.rand(64, 3, 32, 32, device="cuda") for _ in range(4)]
    dsa = DSA(mean=(0.5,) * 3, std=(0.5,) * 3)
    draws = [dsa.sample(1, torch.Generator().manual_seed(c), siamese=True) for c in range(4)]
    embedder, whole = Embedder("cuda", compile_mode="reduce-overhead"), engine.DEVICE_FORWARD_BYTES
    for seed in range(3):
        torch.manual_seed(seed)
        net = module_to_device(freeze(build_backbone("convnet", channels=3, image_size=32,
                                                     mean=(0.5,) * 3, std=(0.5,) * 3)), "cuda")
        runs = []
        pieces_of_32 = 32 * engine.largest_activation(net, (3, 32, 32))
        for budget in (whole, pieces_of_32):
            monkeypatch.setattr(engine, "DEVICE_FORWARD_BYTES", budget)
            images = torch.rand(8, 3, 32, 32, device="cuda",
                                generator=torch.Generator("cuda").manual_seed(seed))
            images.requires_grad_(True)
            loss = embedder.matching_loss(net, real, images.split(2), (dsa, draws))
            loss.backward()
            runs.append((loss.detach(), images.grad))
        (loss, grad), (pieces_loss, pieces_grad) = runs
        torch.testing.assert_close(pieces_loss, loss, rtol=1e-2, atol=0)
        assert float((pieces_grad - grad).norm() / grad.norm()) < 2e-2, seed


def _cuda_task(classes: int, per_class: int, size: int, **options) -> CondenseTask:
    """A task on CUDA of random uint8 images, ``per_class`` of each class."""
    n = classes * per_class
    images = torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(0),
                           dtype=torch.uint8)
    split = Split(images, torch.arange(classes).repeat_interleave(per_class), torch.arange(n))
    return CondenseTask(split, classes, (0.5,) * 3, (0.5,) * 3, device="cuda", progress=False,
                        **options)


def _iem_on_cuda(compile_mode: str, draw_ahead: int | None = None) -> object:
    """IEM on CUDA; its draws made ahead on worker threads unless ``draw_ahead`` is 0."""
    task = _cuda_task(10, 20, 32, draw_ahead=draw_ahead)
    settings = CondenseSettings(ipc=2, iterations=6, real_batch=16, factor=2, network="fresh",
                                perturb="filter", alpha=0.05, precision="bf16",
                                compile_mode=compile_mode, checkpoint_every=3)
    return condense("iem", task, settings)


def test_iem_condenses_on_cuda():
    result = _iem_on_cuda("off")
    assert len(result.history) == 6 and all(torch.isfinite(torch.tensor(result.history)))
    assert result.synthetic.images.shape == (20, 3, 32, 32)
    assert result.synthetic.images.device.type == "cpu"


# the CUDA runtime's calls in which the host waits for the device
WAITS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")


def _host_waits(run: Callable[[], object]) -> int:
    """How often the host waits for the GPU in ``run()``: the CUDA runtime calls that
    synchronise, counted by torch.profiler on every thread."""
    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=activities) as profile:
        run()
    return sum(event.count for event in profile.key_averages() if event.key in WAITS)


@pytest.mark.parametrize("method,settings", [
    ("dm", CondenseSettings(ipc=2, real_batch=8)),
    ("iem", CondenseSettings(ipc=2, real_batch=8, factor=2, perturb="filter", alpha=0.05)),
    ("dsa", CondenseSettings(ipc=2, real_batch=8, outer_loop=10, inner_loop=2)),
    ("idc", CondenseSettings(ipc=2, real_batch=8, factor=2, outer_loop=10, inner_loop=2)),
])
def test_the_host_waits_for_the_gpu_no_more_in_a_longer_run(method, settings):
    """An iteration queues its work without waiting for the last (IDC's CutMix, its synthetic
    subsample, the network's training losses, DM's and IEM's draws): three more iterations
    add no wait. The loss history is read at checkpoints (here only the end)."""
    counts = [_host_waits(lambda: condense(method, _cuda_task(3, 40, 16), replace(
        settings, iterations=n, checkpoint_every=n))) for n in (2, 3, 6)]
    assert counts[1] == counts[2], counts  # the first run is a warm-up (cuDNN, lazy init)


def test_encoding_sends_uint8_and_waits_once():
    """Each batch goes to the GPU as stored and is converted there, as the host would convert
    it; more batches add no wait (the codes come back in one copy)."""
    with seeded(0, "encode"):
        net = build_backbone("convnet", channels=3, image_size=16, mean=(0.5,) * 3,
                             std=(0.5,) * 3).cuda()
    images = torch.randint(0, 256, (64, 3, 16, 16), generator=torch.Generator().manual_seed(0),
                           dtype=torch.uint8)
    on_device = predict(net, images, batch_size=8, device="cuda")
    assert torch.equal(on_device, predict(net, images.float() / 255, batch_size=8, device="cuda"))
    counts = [_host_waits(lambda: predict(net, images[:n], batch_size=8, device="cuda"))
              for n in (16, 32, 64)]
    assert counts[1] == counts[2], counts


@pytest.mark.parametrize("compile_mode", ["default", "reduce-overhead"])
def test_compiled_branches_follow_the_eager_run_on_cuda(compile_mode):
    """Both branches compiled (the synthetic one with its backward): the loss of each
    iteration follows the eager run's within bf16's tolerance."""
    eager, compiled = _iem_on_cuda("off"), _iem_on_cuda(compile_mode)
    torch.testing.assert_close(torch.tensor(compiled.history), torch.tensor(eager.history),
                               rtol=5e-2, atol=0)


@pytest.mark.parametrize("compile_mode", ["off", "reduce-overhead"])
def test_draws_made_ahead_give_the_run_drawn_in_turn_on_cuda(compile_mode):
    """Worker threads drawing networks and batches while the GPU runs (and CUDA graphs are
    recorded) give the same run as drawing each in its turn, to the GPU's own rounding."""
    ahead, in_turn = _iem_on_cuda(compile_mode), _iem_on_cuda(compile_mode, draw_ahead=0)
    torch.testing.assert_close(torch.tensor(ahead.history), torch.tensor(in_turn.history),
                               rtol=1e-4, atol=0)
    torch.testing.assert_close(ahead.synthetic.images, in_turn.synthetic.images,
                               rtol=0, atol=1e-4)


def test_fit_on_images_held_on_the_gpu_equals_fit_from_the_host():
    """IDC's and IEM's networks gather their real batches from the task's copy on the GPU."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8, generator=g)
    labels = torch.arange(64) % 4

    def trained(data: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with seeded(0, "fit"):
            model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 4))
        losses = fit(model, data, labels, lambda m, x, y, _: F.cross_entropy(m(x), y), steps=5,
                     batch_size=16, generator=torch.Generator().manual_seed(1), device="cuda",
                     progress=False)
        return losses.cpu(), model[1].weight.detach().cpu()

    (host_losses, host_weight), (gpu_losses, gpu_weight) = trained(images), trained(images.cuda())
    assert torch.equal(host_losses, gpu_losses) and torch.equal(host_weight, gpu_weight)


def test_copies_go_through_fresh_pinned_buffers():
    x = torch.randn(5, 3)
    assert pinned(x).is_pinned() and torch.equal(pinned(x), x) and not x.is_pinned()
    y = to_device(x.t(), "cuda", torch.float64)  # not contiguous, converted on the host
    assert y.device.type == "cuda" and y.dtype == torch.float64
    assert torch.equal(y.cpu(), x.t().double())
    net = module_to_device(torch.nn.Linear(3, 2), "cuda")
    assert all(p.device.type == "cuda" for p in net.parameters())


def test_a_seeded_block_leaves_the_cuda_generator_alone():
    torch.cuda.manual_seed(5)
    expected = torch.rand(3, device="cuda")
    torch.cuda.manual_seed(5)
    with seeded(0, "net"):
        torch.rand(3)
    assert torch.equal(torch.rand(3, device="cuda"), expected)
