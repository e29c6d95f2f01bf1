"""ONNX export of models built with ``groupnorm`` layers, and a check of the result in onnxruntime.

``torch.onnx.export`` works on such models as they are: under export, ``groupnorm.functional.group_norm``
takes its plain PyTorch path (``groupnorm.kernels.kernel_takes`` is False while
``torch.onnx.is_in_onnx_export()``), so the graph holds ``aten.group_norm`` and the activation, never the
compiled kernels' custom ops. What this module adds is the choice of opset:

- opset >= 21 (if the installed onnx and onnxruntime both support it): torch's exporter emits ONNX's native
  ``GroupNormalization`` (per-channel scale and bias, as defined since opset 21);
- otherwise (opset 18 to 20): the standard decomposition, ``Reshape -> InstanceNormalization -> Reshape``
  followed by a per-channel ``Mul``/``Add`` (this module's own translation, :func:`_group_norm_opset18`, which
  reshapes back to a constant shape instead of torch's ``Shape(x)``). ONNX's opset-18 ``GroupNormalization``
  had per-*group* scale and bias, which is not GN's per-channel affine, so it is not used.

Either way a GN layer exports as those nodes and its activation's (SiLU: ``Sigmoid``, ``Mul``) and nothing else:
the plain path's large-mean shift is never exported (see ``groupnorm.plain``).

The export uses torch's ``torch.export``-based exporter (``dynamo=True``, which needs the ``onnxscript``
package); the optional dependencies are in the ``onnx`` extra (``pip install groupnorm[onnx]``).
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import torch

__all__ = ["NATIVE_GROUPNORM_OPSET", "FALLBACK_OPSET", "preferred_opset", "export_onnx", "run_onnx",
           "verify_onnx"]

NATIVE_GROUPNORM_OPSET = 21
"""First opset whose ``GroupNormalization`` has GN's per-channel scale and bias."""
FALLBACK_OPSET = 18
"""Opset used when the native GroupNormalization is not available (decomposed GN)."""


def _require(module: str):
    try:
        return __import__(module)
    except ImportError as exc:
        raise RuntimeError(
            f"ONNX export needs the optional package {module!r} ({exc}); install the extra: "
            "pip install 'groupnorm[onnx]'"
        ) from None


@functools.lru_cache(maxsize=None)
def _onnxruntime_runs_native_groupnorm() -> bool:
    """Whether the installed onnxruntime builds and runs a one-node opset-21 GroupNormalization model."""
    try:
        import numpy as np
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper
    except ImportError:
        return False
    if onnx.defs.onnx_opset_version() < NATIVE_GROUPNORM_OPSET:
        return False
    node = helper.make_node("GroupNormalization", ["x", "scale", "bias"], ["y"], num_groups=2, epsilon=1e-5)
    graph = helper.make_graph(
        [node], "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 2]),
         helper.make_tensor_value_info("scale", TensorProto.FLOAT, [4]),
         helper.make_tensor_value_info("bias", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", NATIVE_GROUPNORM_OPSET)])
    model.ir_version = min(model.ir_version, 10)
    try:
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        x = np.arange(8, dtype=np.float32).reshape(1, 4, 2)
        scale = np.array([1, 2, 3, 4], dtype=np.float32)
        (y,) = sess.run(None, {"x": x, "scale": scale, "bias": np.zeros(4, np.float32)})
    except Exception:  # noqa: BLE001  (any failure means: not supported here)
        return False
    # per-channel scale (opset 21 semantics): channel 3 of group 1 is scaled by 4
    xg = x.reshape(1, 2, 4)
    want = ((xg - xg.mean(-1, keepdims=True)) / np.sqrt(xg.var(-1, keepdims=True) + 1e-5)).reshape(1, 4, 2)
    return bool(np.allclose(y, want * scale[None, :, None], atol=1e-4))


def preferred_opset() -> int:
    """``NATIVE_GROUPNORM_OPSET`` (21) if onnx and onnxruntime support the native op, else 18."""
    return NATIVE_GROUPNORM_OPSET if _onnxruntime_runs_native_groupnorm() else FALLBACK_OPSET


def export_onnx(model: torch.nn.Module, args, path: str | os.PathLike, *, opset: int | None = None,
                input_names=("input",), output_names=("output",), dynamic_batch: bool = True) -> Path:
    """Export ``model`` (called as ``model(*args)``) to the ONNX file ``path`` and check it with onnx.

    Args:
        model: an ``nn.Module``; put it in eval mode first (BN and dropout are exported as they run now).
        args: a tensor or tuple of example inputs.
        path: the ``.onnx`` file to write (its folder must exist).
        opset: ONNX opset; default :func:`preferred_opset` (21 with native GroupNormalization where
            supported, else 18 with the decomposition).
        input_names: graph input names.
        output_names: graph output names.
        dynamic_batch: make dim 0 of every input dynamic (``"batch"``).

    Returns the path. Raises RuntimeError if onnx / onnxscript are missing or the export fails, and
    ValueError for a bad opset or a path whose folder does not exist.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"export_onnx expects a torch.nn.Module, got {type(model).__name__}")
    if opset is None:
        opset = preferred_opset()
    if not isinstance(opset, int) or opset < FALLBACK_OPSET:
        raise ValueError(f"opset must be an integer >= {FALLBACK_OPSET}, got opset={opset!r}")
    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"the folder of the output path does not exist: {str(path.parent)!r}")
    onnx = _require("onnx")
    _require("onnxscript")
    args = (args,) if isinstance(args, torch.Tensor) else tuple(args)
    input_names = list(input_names)[: len(args)] + [f"input_{i}" for i in range(len(input_names), len(args))]
    dynamic_shapes = None
    if dynamic_batch:
        batch = torch.export.Dim("batch")
        dynamic_shapes = tuple({0: batch} for _ in args)
    table = None if opset >= NATIVE_GROUPNORM_OPSET else {
        torch.ops.aten.group_norm.default: _group_norm_opset18,
        torch.ops.aten.native_group_norm.default: _native_group_norm_opset18}
    try:
        torch.onnx.export(model, args, str(path), dynamo=True, opset_version=opset, input_names=input_names,
                          output_names=list(output_names), dynamic_shapes=dynamic_shapes, external_data=False,
                          custom_translation_table=table, verbose=False)
    except Exception as exc:  # noqa: BLE001
        raise RuntimeError(f"torch.onnx.export failed at opset {opset}: {type(exc).__name__}: {exc}") from exc
    onnx.checker.check_model(str(path))
    return path


def _group_norm_opset18(input, num_groups: int, weight=None, bias=None, eps: float = 1e-5,
                        cudnn_enabled: bool = True):
    """``aten.group_norm`` as ``Reshape(x, [0, G, -1]) -> InstanceNormalization -> Reshape(to x's shape) ->
    Mul(gamma) -> Add(beta)`` (an ONNX Script trace-only translation, for opsets 18 to 20).

    torch's own translation reshapes back to ``Shape(x)``, one node more for every GN; here the shape is a
    constant whenever every dimension but the batch is static (``0`` in an ONNX Reshape copies the batch).
    """
    import numpy as np
    from onnxscript import ir
    from onnxscript import opset18 as op

    dims = list(input.shape)
    dtype = input.dtype.numpy()
    flat = op.Reshape(input, op.Constant(value_ints=[0, num_groups, -1]))
    norm = op.InstanceNormalization(flat, op.Constant(value=ir.tensor(np.ones(num_groups, dtype))),
                                    op.Constant(value=ir.tensor(np.zeros(num_groups, dtype))), epsilon=eps)
    static = all(isinstance(d, int) for d in dims[1:])
    y = op.Reshape(norm, op.Constant(value_ints=[0, *dims[1:]]) if static else op.Shape(input))
    axes = op.Constant(value_ints=list(range(1, len(dims) - 1)))  # (C,) -> (C, 1, ...) for broadcasting
    if weight is not None:
        y = op.Mul(y, op.CastLike(op.Unsqueeze(weight, axes), y))
    if bias is not None:
        y = op.Add(y, op.CastLike(op.Unsqueeze(bias, axes), y))
    return y


def _native_group_norm_opset18(input, weight=None, bias=None, N=None, C=None, HxW=None, group: int = 1,
                               eps: float = 1e-5):
    """``aten.native_group_norm``: :func:`_group_norm_opset18`'s output, and the per-group mean and 1/std
    (which the models' graphs never use; the exporter's optimizer removes them)."""
    from onnxscript import opset18 as op

    y = _group_norm_opset18(input, group, weight, bias, eps)
    flat = op.Reshape(input, op.Constant(value_ints=[0, group, -1]))
    mean = op.ReduceMean(flat, op.Constant(value_ints=[2]), keepdims=0)
    centered = op.Sub(flat, op.Unsqueeze(mean, op.Constant(value_ints=[2])))
    var = op.ReduceMean(op.Mul(centered, centered), op.Constant(value_ints=[2]), keepdims=0)
    rstd = op.Reciprocal(op.Sqrt(op.Add(var, op.CastLike(op.Constant(value_float=eps), var))))
    return y, mean, rstd


def run_onnx(path: str | os.PathLike, *inputs: torch.Tensor) -> list:
    """Run the ONNX model at ``path`` in onnxruntime (CPU) on ``inputs``; returns the outputs (NumPy)."""
    ort = _require("onnxruntime")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    if len(names) != len(inputs):
        raise ValueError(f"the model at {str(path)!r} has {len(names)} inputs, got {len(inputs)}")
    return sess.run(None, {n: t.detach().cpu().numpy() for n, t in zip(names, inputs)})


def verify_onnx(path: str | os.PathLike, model: torch.nn.Module, *inputs: torch.Tensor) -> float:
    """Largest absolute difference between onnxruntime's outputs and ``model(*inputs)`` (under no_grad)."""
    with torch.no_grad():
        out = model(*inputs)
    outs = [out] if isinstance(out, torch.Tensor) else list(out)
    got = run_onnx(path, *inputs)
    if len(got) != len(outs):
        raise ValueError(f"onnxruntime returned {len(got)} outputs, the model {len(outs)}")
    return max(float((torch.from_numpy(g) - o.float()).abs().max()) if o.numel() else 0.0
               for g, o in zip(got, outs))
