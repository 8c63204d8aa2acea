"""Performance benchmark of the Bayesian layers: ``python -m ssvi bench`` (a measurement, not a test).

    python -m ssvi bench                                   # ResNet-18 width 1, batch 128, density 0.1, CPU
    python -m ssvi bench --width 0.25 --batch 32 --no-sparse-routes --out bench.json
    python -m ssvi bench --device cuda --speed-variants all --out gpu.json   # the GPU fast path check
    python -m ssvi bench --threads 2 --micro-routes kernel --kernel-steps --out results/measured/cpu_sparse_kernels.json

Everything is measured in one process, so every number that matters is a ratio against a baseline
measured on the same machine in the same run:

  train_step   full SSVI training steps (LRT forward + cross-entropy + KL/N + backward + masked
               optimiser step) of ``production`` (the layers as they are) and ``reference``
               (:mod:`ssvi.reference`: separate mean/variance convolutions, mask multiplications, no
               fusion), interleaved step by step (alternating which goes first) so machine noise hits
               both alike; each path trains its own copy of the same model with its own optimiser.
  eval         evaluation throughput (mean-mode forward, no grad) of both, interleaved the same way.
  first_step_check
               both paths' loss and gradients on the first step under the same seed (max abs diff).
  sparse_routes
               layer-level microbenchmark per layer shape (CIFAR ResNet-18 shapes at the chosen width)
               and density: the production LRT forward+backward of one layer with a random mask (dense
               masked compute) against real sparse compute, where only active weights do work: ``kernel``,
               the project's sparse LRT kernels (:mod:`ssvi.sparse_lrt`, run option ``sparse_kernel``),
               and PyTorch's sparse tensors: im2col + ``torch.sparse.mm`` with a CSR (or BSR) weight for
               the forward, the input gradient through the sparse transpose, and the weight gradient at
               active entries only via ``torch.sparse.sampled_addmm``. Outputs and gradients are checked
               against the dense masked route (max abs diff) and the time ratio sparse/dense is reported
               either way.
  kernel_steps (only with ``--kernel-steps``, CPU) whole SSVI training steps per density with the sparse
               kernels in every sparsified layer (``all``) or where measured faster (``auto``) against
               the masked dense step, taking turns on one model; plus the whole-run ratio implied by
               the dense subspace-update steps (one in ``--delta-t``).
  speed_variants
               (only with ``--speed-variants``) whole epochs of the real trainer on synthetic CIFAR-shaped
               data for the trainer's speed options -- plain, data_on_device, channels_last, bf16 and
               fast (all three) -- with samples/s, speedup over plain, the first-epoch loss against the
               plain path's (same seed), and on CUDA the host synchronisations of one epoch.
  concurrency  (only with ``--concurrency 1,2,4``) 1, 2, 4, ... spawned training processes sharing the
               device: aggregate samples/s per level and the speedup over one process.

Times are seconds per step: median, p25/p75, min/max over the repeats after warm-up. Ratios are
production/reference or sparse/dense medians (< 1 = faster). Progress lines go to stderr, a one-screen
summary to stdout; the full JSON record is written only to the file --out names.

Modules, each readable alone:
  timing          timers, summaries, paired ratios, machine description
  train_step      whole-model training steps and evaluation, production vs reference layers
  speed_variants  whole trainer epochs for the trainer's speed options (the GPU fast path)
  sparse_layer    an LRT layer computing only on active weights (im2col + torch.sparse)
  routes          the layer-level microbenchmark of sparse routes against the dense masked layer
  kernel_step     whole SSVI steps with the sparse LRT kernels against the dense step
  concurrency     several training processes sharing one device (aggregate samples/s)
  cli             ``run_benchmark`` (the JSON record) and the command line
"""

from .cli import JSON_KEYS, build_parser, main, run_benchmark
from .routes import verify_sparse_route
from .sparse_layer import SparseLRTLayer
from .speed_variants import SPEED_VARIANTS, synthetic_cifar

__all__ = ["JSON_KEYS", "SPEED_VARIANTS", "SparseLRTLayer", "build_parser", "main", "run_benchmark",
           "synthetic_cifar", "verify_sparse_route"]
