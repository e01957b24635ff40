"""The fused SGD step's C kernel (training/engine/fused_sgd.c): built once per machine, loaded with ctypes.

At batch 10 a step's PyTorch ops are mostly dispatch and small-GEMM overhead; one C call per chunk of
steps runs the same arithmetic straight through (benchmarks/grid_throughput.py measures both).  The
library is compiled with the machine's C compiler at first use, into the user's cache directory, named
by the hash of its source, flags and CPU, so an edit, another compiler flag or another CPU builds anew.
It is written under a temporary name and renamed, so processes starting at once never load half a file.

Without a C compiler, or with MNIST_LAB_NATIVE=0, `kernel()` is None and training takes the PyTorch
path: the same updates, slower.  ctypes releases the GIL for the call, so several threads run it at
once, each claiming the next model from a shared counter (`FusedKernel.steps`).  The C code trusts its
arguments, so `check_args` checks every one first (dtype, shape, contiguity, CPU, index range), as a torch op would.

Why ctypes and not a C++ extension or a torch.library custom op: an extension compiles against torch's
headers (a C++ compiler and tens of seconds, against about a second for this file), which would slow `make install`;
a custom op adds dispatch and schema but no shape or index checks, and nothing here needs autograd,
torch.compile or another device, so it would be ceremony around the same checks.
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
def _load() -> "tuple[FusedKernel | None, str]":
    """The kernel and "", or None and why not (one line: switched off, no compiler, the compiler's error)."""
    wanted = os.environ.get(ENV, "")
    if wanted == "0":
        return None, f"off ({ENV}=0)"
    cc = compiler()
    try:
        if cc is None:
            raise RuntimeError("no C compiler (cc or gcc) on PATH")
        return FusedKernel(ctypes.CDLL(str(_build(cc)))), ""
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:
        detail = (getattr(e, "stderr", None) or str(e)).strip()
        if wanted == "1":
            raise RuntimeError(f"{ENV}=1 but the fused SGD kernel could not be built: {detail[:300]}") from e
        return None, f"not built ({' '.join(detail.split())[:200]})"


def kernel() -> "FusedKernel | None":
    """The loaded kernel, or None where it is switched off or cannot be built; with MNIST_LAB_NATIVE=1 a
    failed build raises, saying why."""
    return _load()[0]


def why_not() -> str:
    """Why `kernel()` is None: "off (MNIST_LAB_NATIVE=0)" or "not built (the reason)"; "" where it is built."""
    return _load()[1]


def _tensor(name: str, t, dtype, shape: tuple | None = None, dims: int | None = None) -> None:
    """One argument as the C function reads it: a contiguous CPU tensor of this dtype, and this shape
    (or this many dimensions, none of them empty).  Raises one line naming it, what was wanted and what came."""
    import torch
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"fused SGD kernel: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype != dtype:
        raise TypeError(f"fused SGD kernel: {name} must be {dtype}, got {t.dtype}")
    if t.device.type != "cpu":
        raise ValueError(f"fused SGD kernel: {name} must be on the CPU, got {t.device}")
    if shape is not None and tuple(t.shape) != shape:
        raise ValueError(f"fused SGD kernel: {name} must have shape {shape}, got {tuple(t.shape)}")
    if dims is not None and (t.dim() != dims or 0 in t.shape):
        raise ValueError(f"fused SGD kernel: {name} must be {dims}-D with no empty dimension, got shape {tuple(t.shape)}")
    if not t.is_contiguous():
        raise ValueError(f"fused SGD kernel: {name} must be contiguous, got strides {t.stride()} for shape {tuple(t.shape)}")


def check_args(table, n_in, idx, weights, lrs, raw, activation, loss, update) -> None:
    """Everything fused_sgd_steps trusts, checked before it runs: it reads the table's rows by idx and
    writes the weights and raw in place, so a wrong shape or index would read or write past their ends.
    About 25 us a call (idx's range is one reduction) against the milliseconds of a chunk."""
    import torch
    f32 = torch.float32
    if activation not in ACTIVATIONS:
        raise ValueError(f"fused SGD kernel: activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r:.40}")
    if loss not in LOSSES:
        raise ValueError(f"fused SGD kernel: loss must be one of {', '.join(LOSSES)}, got {loss!r:.40}")
    if not isinstance(update, bool):
        raise TypeError(f"fused SGD kernel: update must be a bool, got {update!r:.40}")
    if not isinstance(weights, (list, tuple)) or not weights:
        raise TypeError(f"fused SGD kernel: weights must be a non-empty list of tensors, got {weights!r:.80}")
    if not isinstance(n_in, int) or isinstance(n_in, bool) or n_in < 1:
        raise TypeError(f"fused SGD kernel: n_in must be a positive int, got {n_in!r}")
    _tensor("weights[0]", weights[0], f32, dims=3)
    k, fan_in = weights[0].shape[0], n_in
    for i, w in enumerate(weights):
        _tensor(f"weights[{i}]", w, f32, dims=3)
        _tensor(f"weights[{i}]", w, f32, (k, w.shape[1], fan_in + 1))
        fan_in = w.shape[1]
    _tensor("table", table, f32, dims=2)
    _tensor("table", table, f32, (table.shape[0], n_in + 1 + fan_in))  # image, a one, the one-hot label
    _tensor("idx", idx, torch.int64, dims=2)
    if idx.shape[1] % k:
        raise ValueError(f"fused SGD kernel: idx must have K * B columns (K = {k} models), got {idx.shape[1]}")
    _tensor("lrs", lrs, f32, (k,))
    _tensor("raw", raw, f32, (idx.shape[0], len(weights), k))
    low, high = torch.aminmax(idx)
    if low < 0 or high >= table.shape[0]:
        raise ValueError(f"fused SGD kernel: idx must index the table's {table.shape[0]} rows (0 to "
                         f"{table.shape[0] - 1}), got values from {int(low)} to {int(high)}")


class FusedKernel:
    def __init__(self, lib: ctypes.CDLL):
        self.fn = lib.fused_sgd_steps
        i64, ptr = ctypes.c_int64, ctypes.c_void_p
        self.fn.argtypes = [ptr, i64, i64, ptr, i64, i64, i64, i64, ptr, ptr, ptr, ptr,
                            ctypes.c_int, ctypes.c_int, ctypes.c_int, ptr]
        self.fn.restype = ctypes.c_int
        bits = lib.fused_sgd_vector_bits
        bits.restype = ctypes.c_int
        # training.contract.STEP_PATHS' name for this build: its widest vectors, as it was compiled.
        self.path = {512: "native-avx512", 256: "native-avx2"}.get(bits(), "native")
        self._pool: ThreadPoolExecutor | None = None
        self._workers = 0

    def steps(self, table, n_in: int, idx, weights: list, lrs, raw, activation: str, loss: str, update: bool) -> None:
        """Run the chunk: idx (S, K*B) int64, weights[i] (K, units, fan_in + 1), lrs (K,), raw (S, L, K);
        every tensor contiguous float32 (idx int64).  Torch's thread count of threads claim the models."""
        import torch  # not at the top: `python -m training.engine.native_kernel` (make install) needs no torch
        check_args(table, n_in, idx, weights, lrs, raw, activation, loss, update)
        n_steps, k = idx.shape[0], weights[0].shape[0]
        b = idx.shape[1] // k
        units = (ctypes.c_int64 * len(weights))(*[w.shape[1] for w in weights])
        pointers = (ctypes.c_void_p * len(weights))(*[w.data_ptr() for w in weights])
        args = (table.data_ptr(), table.shape[1], n_in, idx.data_ptr(), n_steps, k, b, len(weights), units,
                pointers, lrs.data_ptr(), raw.data_ptr(), ACTIVATIONS[activation], LOSSES[loss], int(update))
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
    """`python -m training.engine.native_kernel` (make install): build it now, so the first training doesn't.
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
