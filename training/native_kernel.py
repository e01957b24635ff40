"""The fused SGD step's C kernel (training/fused_sgd.c): built once per machine, loaded with ctypes.

At batch 10 a step's PyTorch ops are mostly dispatch and small-GEMM overhead; one C call per chunk of
steps runs the same arithmetic straight through (benchmarks/grid_throughput.py measures both).  The
library is compiled with the machine's C compiler at first use, into the user's cache directory, named
by the hash of its source, flags and CPU, so an edit, another compiler flag or another CPU builds anew.
It is written under a temporary name and renamed, so processes starting at once never load half a file.

Without a C compiler, or with MNIST_LAB_NATIVE=0, `kernel()` is None and training takes the PyTorch
path: the same updates, slower.  ctypes releases the GIL for the call, so several threads run it at
once, each claiming the next model from a shared counter (`FusedKernel.steps`).
"""
import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor, wait
from functools import cache
from pathlib import Path

SOURCE = Path(__file__).with_name("fused_sgd.c")
FLAGS = ["-O3", "-march=native", "-fPIC", "-shared", "-fno-math-errno"]
ACTIVATIONS = {"sigmoid": 0, "tanh": 1, "relu": 2}
LOSSES = {"mse": 0, "cross_entropy": 1}
ENV = "MNIST_LAB_NATIVE"  # 0: never use the kernel; 1: fail loudly if it cannot be built


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mnist-lab"


def _cpu() -> str:
    """What -march=native depends on: the CPU's model and flags."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return "".join(l for l in lines if l.startswith(("model name", "flags")))[:4000]
    except OSError:
        return platform.processor()


def _build(compiler: str) -> Path:
    key = hashlib.sha256(b"\0".join([SOURCE.read_bytes(), " ".join(FLAGS).encode(), compiler.encode(),
                                     _cpu().encode()])).hexdigest()[:16]
    target = cache_dir() / f"fused_sgd-{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out = Path(tmp) / target.name
        subprocess.run([compiler, *FLAGS, "-o", str(out), str(SOURCE), "-lm"], check=True, capture_output=True,
                       text=True, timeout=120)
        os.replace(out, target)
    return target


def compiler() -> str | None:
    """The C compiler the kernel is built with: $CC (default cc), else gcc; None if there is none."""
    return shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")


@cache
def kernel() -> "FusedKernel | None":
    """The loaded kernel, or None where it is switched off or cannot be built; with MNIST_LAB_NATIVE=1 a
    failed build raises, saying why."""
    wanted = os.environ.get(ENV, "")
    if wanted == "0":
        return None
    cc = compiler()
    try:
        if cc is None:
            raise RuntimeError("no C compiler (cc or gcc) on PATH")
        return FusedKernel(ctypes.CDLL(str(_build(cc))))
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:
        detail = getattr(e, "stderr", None) or str(e)
        if wanted == "1":
            raise RuntimeError(f"{ENV}=1 but the fused SGD kernel could not be built: {detail.strip()[:300]}") from e
        return None


class FusedKernel:
    def __init__(self, lib: ctypes.CDLL):
        self.fn = lib.fused_sgd_steps
        i64, ptr = ctypes.c_int64, ctypes.c_void_p
        self.fn.argtypes = [ptr, i64, i64, ptr, i64, i64, i64, i64, ptr, ptr, ptr, ptr,
                            ctypes.c_int, ctypes.c_int, ctypes.c_int, ptr]
        self.fn.restype = ctypes.c_int
        self._pool: ThreadPoolExecutor | None = None
        self._workers = 0

    def steps(self, table, n_in: int, idx, weights: list, lr, raw, activation: str, loss: str, update: bool) -> None:
        """Run the chunk: idx (S, K*B) int64, weights[i] (K, units, fan_in + 1), lr (K,), raw (S, L, K);
        every tensor contiguous float32 (idx int64).  Torch's thread count of threads claim the models."""
        import torch  # not at the top: `python -m training.native_kernel` (make install) needs no torch
        n_steps, k = idx.shape[0], weights[0].shape[0]
        b = idx.shape[1] // k
        units = (ctypes.c_int64 * len(weights))(*[w.shape[1] for w in weights])
        pointers = (ctypes.c_void_p * len(weights))(*[w.data_ptr() for w in weights])
        args = (table.data_ptr(), table.shape[1], n_in, idx.data_ptr(), n_steps, k, b, len(weights), units,
                pointers, lr.data_ptr(), raw.data_ptr(), ACTIVATIONS[activation], LOSSES[loss], int(update))
        threads = max(1, min(torch.get_num_threads(), k))
        claimed = ctypes.c_int64(0)  # the next model to claim
        args += (ctypes.addressof(claimed),)
        futures = []
        if threads > 1:
            if self._workers < threads - 1:
                self._pool, self._workers = ThreadPoolExecutor(threads - 1, thread_name_prefix="fused-sgd"), threads - 1
            futures = [self._pool.submit(self.fn, *args) for _ in range(threads - 1)]
        try:
            codes = [self.fn(*args)]
        finally:  # even on Ctrl-C: no thread may still be writing the weights once this returns
            wait(futures)
        codes += [f.result() for f in futures]
        if any(codes):
            raise MemoryError("the fused SGD kernel could not allocate its buffers")


def main() -> int:
    """`python -m training.native_kernel` (make install): build it now, so the first training doesn't.
    Says what it did; a machine without a compiler is not an error, training just takes the PyTorch path."""
    if os.environ.get(ENV) == "0":
        print(f"fused SGD kernel: off ({ENV}=0)")
        return 0
    os.environ[ENV] = "1"
    try:
        kernel()
    except RuntimeError as e:
        print(f"fused SGD kernel: not built, training takes the PyTorch path ({str(e).split(': ', 1)[-1]})",
              file=sys.stderr)
        return 0
    print(f"fused SGD kernel: ready ({cache_dir()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
