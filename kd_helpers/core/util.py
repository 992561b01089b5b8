"""Small shared utilities: atomic writes, device and thread set-up, environment record."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import platform
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[2]   # kd_helpers/core/util.py
_THREADS_SET = False


class DiskFull(OSError):
    """Writing a file failed because its file system is full."""


def _is_disk_full(e: BaseException) -> bool:
    while e is not None:  # torch.save wraps ENOSPC in a RuntimeError from its zip writer
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            return True
        e = e.__cause__ or e.__context__
    return False


def _atomic(path: Path, write) -> None:
    """Write to a temp file in the same directory, then rename: readers never see half a file.

    Temp files left by a killed earlier write of the same file on this host are removed first;
    another process's (a live writer here, or any on another host) are left alone."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    host = platform.node().replace(".", "_")
    for stale in path.parent.glob(f".{path.name}.{host}-*.tmp"):
        pid = stale.name[len(f".{path.name}.{host}-"):].split(".")[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{host}-{os.getpid()}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if _is_disk_full(e):
            raise DiskFull(errno.ENOSPC, f"No space left on device while writing {path}. Free space on that "
                                         f"file system (or point KD_RESULTS_DIR elsewhere) and rerun: finished "
                                         f"runs and the last epoch checkpoint are intact") from e
        raise


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sha256(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def atomic_write_text(path, text: str) -> None:
    _atomic(path, lambda f: f.write(text.encode()))


def atomic_write_bytes(path, data: bytes) -> None:
    _atomic(path, lambda f: f.write(data))


def atomic_write_json(path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_torch_save(obj, path) -> None:
    _atomic(path, lambda f: torch.save(obj, f))


def device_default() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cpu_has_native_bf16() -> bool:
    """AMX or AVX512-BF16: bfloat16 matmuls/convs run several times faster than fp32 there
    (elsewhere oneDNN emulates bf16 and mixed precision would be slower, not faster)."""
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, p, lambda: False)() for p in probes)


_PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(precision: str, device: torch.device | None = None) -> str:
    """The concrete precision (``fp32``/``bf16``/``fp16``) a setting means on ``device``.

    ``auto``: fp16 on CUDA, bf16 on CPUs with native bf16 (the speed-up on this project's
    machines is measured in benchmarks/README.md), fp32 otherwise. Runs store the resolved
    value: "auto" trains differently on different machines. ``KD_PRECISION`` (fp32, bf16,
    fp16) replaces "auto" everywhere, e.g. ``KD_PRECISION=fp32`` for bit-identical CPU runs.
    """
    device = device or device_default()
    if precision == "auto" and os.environ.get("KD_PRECISION", "auto") != "auto":   # e.g. fp32 for bit-exact runs
        precision = os.environ["KD_PRECISION"]
    if precision == "auto":
        if device.type == "cuda":
            return "fp16"
        return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "fp32"
    if precision not in _PRECISIONS:
        raise ValueError(f"Unknown precision '{precision}'. Use auto, fp32, bf16 or fp16.")
    return precision


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a precision setting; ``None`` means plain fp32."""
    return _PRECISIONS[resolve_precision(precision, device)]


_NAMES = {None: "fp32", torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
# what runs recorded before the records used the config's vocabulary (torch's dtype names)
_LEGACY = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def dtype_name(dtype: torch.dtype | None) -> str:
    """How a run records its training precision, in the config's vocabulary (fp32, bf16, fp16)."""
    return _NAMES[dtype]


def precision_label(recorded) -> str:
    """A run's recorded training precision in the config's vocabulary: older runs recorded torch's
    dtype names (``bfloat16``), runs from before mixed precision nothing (they trained in fp32)."""
    if recorded is None or recorded != recorded:   # None, or NaN from a table
        return "fp32"
    return _LEGACY.get(str(recorded), str(recorded))


def physical_cores() -> int:
    """Physical cores (hyper-threads share FPUs, so more threads than cores slows GEMMs down)."""
    try:
        pairs = set()
        phys = core = None
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("physical id"):
                phys = line.split(":")[1].strip()
            elif line.startswith("core id"):
                core = line.split(":")[1].strip()
                pairs.add((phys, core))
        return max(len(pairs), 1) if pairs else os.cpu_count() or 1
    except OSError:
        return os.cpu_count() or 1


def cpu_model() -> str:
    """The CPU's marketing name (``platform.processor()`` is empty on most Linux systems)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def setup_threads(n: int | None = None) -> None:
    """Set torch's intra-op threads once per process: ``n`` (a worker's share of the cores, given
    by the executor before its first run), else ``KD_THREADS``, else the physical cores."""
    global _THREADS_SET
    if n is not None or not _THREADS_SET:
        torch.set_num_threads(n or threads_wanted())
        _THREADS_SET = True


def threads_wanted() -> int:
    """``KD_THREADS`` (a positive integer), else the physical cores."""
    raw = os.environ.get("KD_THREADS")
    if raw is None or raw == "":
        return physical_cores()
    if not raw.strip().isdigit() or int(raw) < 1:
        raise ValueError(f"KD_THREADS={raw!r} is not a positive integer: set it to the threads each run may use "
                         f"(e.g. KD_THREADS=2), or unset it for one per physical core ({physical_cores()} here).")
    return int(raw)


# what decides a result: edits elsewhere (executed reports, figures, the published store, docs)
# are the study's own outputs and do not make the code that trained a run "dirty"
CODE_PATHS = ("kd_helpers", "notebooks", "pyproject.toml", "requirements.txt", "environment.yml")


def git_commit() -> str | None:
    """HEAD, with ``-dirty`` if the code (``CODE_PATHS``) differs from it."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                             timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS],
                               cwd=REPO_ROOT, capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


# A process runs the code it imported: a worker that outlives a commit records the commit (and
# dirty state) it loaded, not whatever HEAD is when its run finishes hours later.
LOADED_COMMIT = git_commit()

# what trains a run: the losses, the loop, the networks, the data path. A published table must come
# from one fingerprint of these (the study's rule: no training-code change while a table trains)
TRAINING_CODE = ("losses", "train.py", "models.py", "zoo.py", "data.py", "teacher_cache.py")


def code_fingerprint(root: Path = Path(__file__).parent, parts=TRAINING_CODE) -> str:
    """A digest of the training code as Python sees it: each file's syntax tree without its
    docstrings (comments are not in the tree), so documentation edits keep the fingerprint and
    any change to what runs gives a new one."""
    import ast
    h = hashlib.sha256()
    files = sorted(f for p in parts for f in ((root / p).rglob("*.py") if (root / p).is_dir() else [root / p]))
    for f in files:
        tree = ast.parse(f.read_text())
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                    and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant)
                    and isinstance(body[0].value.value, str)):
                node.body = body[1:] or [ast.Pass()]
        h.update(f.relative_to(root).as_posix().encode() + b"\0" + ast.dump(tree).encode() + b"\0")
    return h.hexdigest()[:16]


TRAINING_CODE_FINGERPRINT = code_fingerprint()


def environment() -> dict:
    """What produced a result: package versions, git commit, device, threads."""
    pkgs = {}
    for name in ("torch", "torchvision", "numpy", "pandas", "torch-pruning", "scipy", "statsmodels"):
        try:
            pkgs[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    dev = device_default()
    return {"python": platform.python_version(), "platform": platform.platform(), "packages": pkgs,
            "git_commit": LOADED_COMMIT, "training_code": TRAINING_CODE_FINGERPRINT, "device": str(dev),
            "device_name": torch.cuda.get_device_name() if dev.type == "cuda" else cpu_model(),
            "threads": torch.get_num_threads(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu_native_bf16": cpu_has_native_bf16()}
