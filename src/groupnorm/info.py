"""What runs here: versions, the CPU and the kernels' view of it, whether the compiled CPU operators and the
Triton path are available, and which path a ``groupnorm.functional.group_norm`` call with a given input takes
and why. :func:`collect` returns it as a dict (for bug reports), :func:`format_text` as text; the commands
``groupnorm info`` and ``groupnorm build-kernels`` are registered here.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import platform
import sys

PATH_KERNELS, PATH_TRITON, PATH_PLAIN = "compiled CPU kernels", "Triton kernels", "plain PyTorch"
# tensors up to this many bytes are made as given to ask the paths' predicates (which depend on the dtype,
# device and layout, not on the sizes); larger ones with their spatial sizes cut to 2 (same rank and layout)
_ALLOC_LIMIT = 1 << 28


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _triton_module():
    """groupnorm's Triton path (``groupnorm.kernels.triton``), or None where this version has none."""
    try:
        return importlib.import_module("groupnorm.kernels.triton")
    except ImportError:
        return None


def _triton_status() -> dict:
    version = _version("triton") or _version("pytorch-triton")
    mod = _triton_module()
    if mod is None:
        return {"installed": version, "available": False, "reason": "the Triton path is not in this version of groupnorm"}
    if version is None:
        return {"installed": None, "available": False, "reason": "Triton is not installed"}
    ok = mod.is_available()
    return {"installed": version, "available": ok, "reason": None if ok else mod.load_error()}


def _cpu_kernels() -> dict:
    from . import kernels
    from .kernels import _lib

    if not kernels.is_available():
        return {"loaded": False, "reason": kernels.load_error(), "build_command": _lib.BUILD_COMMAND,
                "disabled": kernels.disabled()}
    level = kernels.isa()
    l1, l2, l3 = _lib.cache_sizes()
    return {"loaded": True, "origin": _lib.library_origin(), "disabled": kernels.disabled(),
            "isa_level": level, "isa": kernels.ISA_NAMES[level],
            "max_compiled_isa": _lib.max_compiled_isa(), "cache_bytes": {"l1d": l1, "l2": l2, "l3": l3}}


def _cuda_status() -> dict:
    import torch

    ok = torch.cuda.is_available()
    return {"available": ok, "torch_cuda": torch.version.cuda,
            "device": torch.cuda.get_device_name() if ok else None, "count": torch.cuda.device_count() if ok else 0}


def parse_input(shape: str, dtype: str = "fp32", layout: str = "contiguous", device: str = "cpu",
                groups: int | None = None) -> dict:
    """Check and normalize an example input: ``shape`` as ``"N,C,H,W"`` (rank >= 3), ``dtype`` one of
    ``groupnorm bench``'s names (fp32, bf16, fp16, fp64), ``layout`` contiguous or channels_last, ``device`` a
    torch device string, ``groups`` dividing C (default: 32 if it divides C, else C). Raises ValueError naming
    the bad value."""
    import torch

    from .args import resolve_num_groups
    from .bench_cases import DTYPES, LAYOUTS, parse_shapes

    shapes = parse_shapes(shape)
    if len(shapes) != 1:
        raise ValueError(f"give one input shape, got {shape!r}")
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}: use one of {', '.join(LAYOUTS)}")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}: use cpu, cuda or cuda:N") from None
    c = shapes[0][1]
    g = resolve_num_groups(c, groups if groups is not None else (32 if c % 32 == 0 else c))
    return {"shape": shapes[0], "dtype": dtype, "layout": layout, "device": str(dev), "groups": g}


def _example_tensors(spec: dict, fake: bool):
    """(x, weight, bias) for the input spec: x in its layout, weight and bias (C,) of its dtype (a GroupNorm
    layer's affine). ``fake``: tensors with no storage (FakeTensorMode), for a device this machine lacks."""
    import torch

    from .bench_cases import DTYPES

    shape, dtype = spec["shape"], DTYPES[spec["dtype"]]
    if torch.tensor([], dtype=dtype).element_size() * torch.Size(shape).numel() > _ALLOC_LIMIT:
        shape = shape[:2] + (2,) * (len(shape) - 2)

    # channels-last: (N, *spatial, C) in memory; strides written out (no copy, which a storage-less CUDA tensor
    # on a torch without CUDA cannot make)
    order = [0, *range(2, len(shape)), 1] if spec["layout"] == "channels_last" else list(range(len(shape)))
    strides, step = [0] * len(shape), 1
    for d in reversed(order):
        strides[d], step = step, step * shape[d]

    def make():
        x = torch.empty_strided(shape, strides, dtype=dtype, device=spec["device"])
        c = shape[1]
        return x, torch.ones(c, dtype=dtype, device=spec["device"]), torch.zeros(c, dtype=dtype, device=spec["device"])

    if not fake:
        return make()
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        return make()


def call_path(spec: dict) -> dict:
    """Which path ``groupnorm.functional.group_norm`` takes for the input ``spec`` (:func:`parse_input`) with a
    weight and bias of its dtype, and why: ``{"path": one of PATH_*, "why": ..., "note": ...}``. A CUDA input
    where this machine has no CUDA device is decided on tensors without storage and says so in ``note``."""
    import torch

    from . import kernels

    dev = torch.device(spec["device"])
    note = None
    fake = False
    if dev.type == "cuda" and not torch.cuda.is_available():
        fake = True
        note = (f"no CUDA device here (torch {torch.__version__}, built "
                f"{'with CUDA ' + torch.version.cuda if torch.version.cuda else 'without CUDA'}): "
                "what a CUDA tensor would take")
    elif dev.type not in ("cpu", "cuda"):
        return {"path": PATH_PLAIN, "why": f"device type {dev.type!r}: only CPU and CUDA tensors have kernels",
                "note": None}
    x, w, b = _example_tensors(spec, fake)
    off = kernels.disabled()
    triton = _triton_module()
    status = _triton_status()
    if dev.type == "cuda":
        if off:
            why = "GROUPNORM_DISABLE_KERNELS is set"
        elif not status["available"]:
            why = status["reason"]
        elif triton.takes(x, w, b):
            return {"path": PATH_TRITON, "why": f"a {spec['dtype']} {spec['layout']} CUDA tensor, which the "
                    "Triton kernels cover", "note": note}
        else:
            why = f"the Triton kernels do not cover {spec['dtype']} (they take {_names(triton.DTYPES)})"
        return {"path": PATH_PLAIN, "why": why, "note": note}
    if triton is not None and status["available"] and triton.takes(x, w, b):  # CPU under Triton's interpreter
        return {"path": PATH_TRITON, "why": "CPU tensors routed to the Triton kernels (interpreter)", "note": None}
    if not kernels.is_available():
        return {"path": PATH_PLAIN, "why": f"the compiled CPU kernels are not loaded: {kernels.load_error()}",
                "note": None}
    if off:
        return {"path": PATH_PLAIN, "why": "GROUPNORM_DISABLE_KERNELS is set", "note": None}
    if kernels.kernel_takes(x, w, b):
        level = kernels.isa()
        if spec["dtype"] != "bf16" and level == 3:
            level = 2  # level 3's code is for bfloat16 data; other dtypes run level 2's
        return {"path": PATH_KERNELS, "why": f"a {spec['dtype']} {spec['layout']} CPU tensor, which the kernels "
                f"cover; {kernels.ISA_NAMES[level]} code", "note": None}
    return {"path": PATH_PLAIN, "why": f"the compiled kernels do not cover this call ({spec['dtype']}, "
            f"{spec['layout']})", "note": None}


def _names(dtypes) -> str:
    from .bench_cases import DTYPES

    return ", ".join(name for name, dt in DTYPES.items() if dt in dtypes)


def collect(input_spec: dict | None = None) -> dict:
    """Everything ``groupnorm info`` reports, as a dict: versions, the CPU (model, the kernels' instruction-set
    level and the cache sizes they block for), the compiled CPU kernels (loaded and from where, or why not and
    the command that builds them), Triton and CUDA, and, for ``input_spec`` (:func:`parse_input`), the path a
    call takes (:func:`call_path`)."""
    import torch

    from . import __version__
    from .hostinfo import cpu_model

    info = {
        "versions": {"groupnorm": __version__, "torch": torch.__version__, "triton": _triton_status()["installed"],
                     "python": platform.python_version(), "platform": platform.platform()},
        "cpu": {"model": cpu_model(), "threads": torch.get_num_threads()},
        "cpu_kernels": _cpu_kernels(),
        "triton": _triton_status(),
        "cuda": _cuda_status(),
    }
    if input_spec is not None:
        info["call"] = {"input": input_spec, **call_path(input_spec)}
    return info


def _kib(n: int) -> str:
    return f"{n // 1024} KiB" if n < 1 << 20 else f"{n / (1 << 20):.1f} MiB"


def format_text(info: dict) -> str:
    """:func:`collect`'s dict as the lines ``groupnorm info`` prints."""
    v, k, t, c = info["versions"], info["cpu_kernels"], info["triton"], info["cuda"]
    lines = [f"groupnorm {v['groupnorm']}, torch {v['torch']}, Triton {v['triton'] or 'not installed'}, "
             f"Python {v['python']} ({v['platform']})",
             f"CPU: {info['cpu']['model']}, {info['cpu']['threads']} torch threads"]
    if k["loaded"]:
        cb = k["cache_bytes"]
        lines += [f"CPU kernels: loaded, {k['origin']}",
                  f"  instruction set: {k['isa']} (level {k['isa_level']}; built up to {k['max_compiled_isa']})",
                  f"  caches the blocking uses: L1d {_kib(cb['l1d'])}, L2 {_kib(cb['l2'])}, last level {_kib(cb['l3'])}"]
    else:
        lines += [f"CPU kernels: not loaded: {k['reason']}", f"  build them: {k['build_command']}"]
    if k["disabled"]:
        lines.append("  GROUPNORM_DISABLE_KERNELS is set: every call takes the plain path")
    lines.append("Triton path: " + ("available" if t["available"] else f"unavailable: {t['reason']}"))
    lines.append("CUDA: " + (f"{c['count']} device(s), {c['device']} (CUDA {c['torch_cuda']})" if c["available"]
                             else f"no device (torch built {'with CUDA ' + c['torch_cuda'] if c['torch_cuda'] else 'without CUDA'})"))
    if "call" in info:
        call, i = info["call"], info["call"]["input"]
        lines.append(f"group_norm on {tuple(i['shape'])} {i['dtype']} {i['layout']} on {i['device']}, "
                     f"{i['groups']} groups: {call['path']}")
        lines.append(f"  why: {call['why']}")
        if call.get("note"):
            lines.append(f"  note: {call['note']}")
    return "\n".join(lines)


def _run_info(args) -> int:
    spec = None
    if args.input is not None:
        spec = parse_input(args.input, args.dtype, args.layout, args.device, args.groups)
    info = collect(spec)
    if args.json:
        import json

        print(json.dumps(info, indent=2, default=str))
    else:
        print(format_text(info))
    return 0


def _run_build(args) -> int:
    from . import kernels
    from .kernels import _build, _lib

    if kernels.is_available() and not args.force:
        print(f"groupnorm: the compiled CPU kernels are already loaded: {_lib.library_origin()}")
        return 0
    try:
        path = _lib.build_cached(force=True)
    except _build.BuildError as exc:
        print(f"groupnorm build-kernels: error: {exc}", file=sys.stderr)
        return 1
    print(f"groupnorm: compiled CPU kernels for torch {_build.torch_version()} in {path}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("info", help="versions, CPU, which kernels are loaded, and the path a call takes",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--input", metavar="N,C,H,W", help="an example input's shape: report the path a "
                   "groupnorm.functional.group_norm call on it takes, and why")
    p.add_argument("--dtype", default="fp32", help="fp32, bf16, fp16 or fp64 (default fp32)")
    p.add_argument("--layout", default="contiguous", help="contiguous or channels_last (default contiguous)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--groups", type=int, default=None, help="number of groups (default 32 if it divides C, else C)")
    p.add_argument("--json", action="store_true", help="print the report as JSON (what groupnorm.info.collect returns)")
    p.set_defaults(func=_run_info)
    b = sub.add_parser("build-kernels", help="compile the CPU kernels for the installed torch (if the install did not)",
                       description="Compile the compiled CPU kernels against the installed torch into the build "
                       "cache ($GROUPNORM_KERNEL_CACHE, default ~/.cache/groupnorm/kernels), as the first use "
                       "would. Nothing to do if a library is already loaded, unless --force.")
    b.add_argument("--force", action="store_true", help="build again even if a library loaded or a build failed")
    b.set_defaults(func=_run_build)
