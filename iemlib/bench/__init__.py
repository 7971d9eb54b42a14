"""Speed benchmarks: the library against reference-style baselines, in one run on one machine.

Each benchmark times a baseline written the way the public reference code does it and the
library's own code at run time, on the same device in the same process (warm-up, then
interleaved repeats; medians), checks that both compute the same thing, and reports
baseline / ours:

``condense``  one DM/IEM iteration (matching loss + backward): VICO-UoE/DatasetCondensation's
              main_DM.py loop (class by class, fp32, the real branch forwarded with autograd on
              and ``.detach()``-ed, one backward of the summed loss) against
              ``condense.dm.matching_loss``; both consume the same generator draws, so their
              losses must agree. Also FLOPs, achieved GFLOP/s and a measured matmul peak.
              Each timed iteration waits for the device; on a GPU both are also timed
              ``BACK_TO_BACK`` iterations at a time, with no wait between them, as a loop runs.
``loop``      a whole DM run (``loop_iterations`` iterations: a fresh network, the loss, the image
              step): main_DM.py's loop against ``condense("dm")`` in each variant, setup
              included, a second an iteration; both reach the same images. On a GPU each
              variant runs with its host draws made ahead on worker threads (the default) and
              in turn (``CondenseTask.draw_ahead`` 0).
``map``       mAP@all: DeepHash-pytorch's ``CalcTopMap`` in numpy (a loop over queries, stable
              argsort) against ``retrieval.mean_average_precision``; the values must agree.
``encode``    hash codes (images a second): DeepHash-pytorch's ``compute_result`` (batches of
              64, autograd on) against the library's ``hashing.encode``.
``memory``    peak memory of a short DM run (a fresh process each: RSS high-water mark on the
              CPU, ``torch.cuda.max_memory_allocated`` on a GPU): main_DM.py's loop against
              ``condense("dm")``.

A module a benchmark (``condense``, ``loop``, ``retrieval``, ``encoding``, ``memory``); ``sizes``
what they run, ``timing`` how they time it, ``suite`` runs the chosen ones, ``report`` prints them
and ``cli`` is ``python -m iemlib bench``.
"""

from .cli import add_bench_options, bench_cli
from .report import HEADER, result_rows, table
from .retrieval import structured_codes
from .sizes import BENCHMARKS, Sizes
from .suite import run_benchmarks

__all__ = ["BENCHMARKS", "HEADER", "Sizes", "add_bench_options", "bench_cli", "result_rows",
           "run_benchmarks", "structured_codes", "table"]
