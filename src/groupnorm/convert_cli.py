"""``groupnorm convert``: build a model from a Python entry point, load its checkpoint, convert BN, save.

    groupnorm convert --model mypkg.models:resnet18 --checkpoint bn.pt --to gn --groups 32 --out gn.pt
    groupnorm convert --model ./models.py:build --model-kwargs '{"num_classes": 10}' --to frozen-bn --out f.pt

The output is a ``torch.save`` of a dict: ``state_dict`` (the converted model's) and ``groupnorm_convert``
(how to rebuild it: the entry point, its kwargs, the conversion and its report). :func:`load_converted`
rebuilds the converted model from that file. BN running statistics have no GroupNorm counterpart and are
dropped by ``--to gn`` (see ``groupnorm.convert_bn_to_gn``); ``--to frozen-bn`` keeps them.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
from pathlib import Path

import torch
from torch import nn

from ._deprecated import deprecated_alias
from .atomic import atomic_torch_save
from .convert import convert_bn_to_gn, freeze_batch_norm

FORMAT = "groupnorm-convert-v1"
_DEPRECATED = {"build_model": "model_from_entry_point"}


def model_from_entry_point(spec: str, kwargs: dict | None = None) -> nn.Module:
    """Call the entry point ``spec`` (``package.module:function`` or ``path/to/file.py:function``).

    The current directory is importable (as with ``python -m``). Raises ValueError / FileNotFoundError
    with the spec in the message if it cannot be resolved or does not return an ``nn.Module``.
    """
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"--model must look like 'package.module:function' or 'file.py:function', got {spec!r}")
    if module_name.endswith(".py"):
        path = Path(module_name)
        if not path.is_file():
            raise FileNotFoundError(f"model file {module_name!r} (from --model {spec!r}) does not exist")
        mod_id = f"_groupnorm_convert_{path.stem}"
        loader_spec = importlib.util.spec_from_file_location(mod_id, path)
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[mod_id] = module
        loader_spec.loader.exec_module(module)
    else:
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ValueError(f"cannot import module {module_name!r} (from --model {spec!r}): {exc}") from None
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        raise ValueError(f"{module_name!r} has no callable {attr!r} (from --model {spec!r})")
    try:
        model = fn(**(kwargs or {}))
    except TypeError as exc:
        raise ValueError(f"calling --model {spec!r} with kwargs {kwargs or {}} failed: {exc}") from None
    if not isinstance(model, nn.Module):
        raise ValueError(f"--model {spec!r} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def _extract_state_dict(obj, path: str) -> dict:
    """The state_dict in a checkpoint: the dict itself, or under "state_dict" / "model"; DDP's "module."
    prefixes are stripped."""
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"checkpoint {path!r} holds no state_dict (a dict of tensors, possibly under "
                         "'state_dict' or 'model')")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def load_checkpoint(model: nn.Module, path: str) -> None:
    """Load the state_dict found in the checkpoint file ``path`` into ``model`` (strict)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (a corrupt or foreign file)
        raise ValueError(f"cannot read checkpoint {path!r}: {type(exc).__name__}: {exc}") from None
    state = _extract_state_dict(obj, path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"checkpoint {path!r} does not fit the model: {exc}") from None


def convert_model(model: nn.Module, to: str, num_groups: int | None = None, group_size: int | None = None):
    """Apply the conversion named ``to`` ("gn" or "frozen-bn"); returns ``(model, ConversionReport)``."""
    if to == "gn":
        return convert_bn_to_gn(model, num_groups, group_size=group_size, inplace=True, return_report=True)
    if to == "frozen-bn":
        return freeze_batch_norm(model, inplace=True, return_report=True)
    raise ValueError(f"unknown conversion to={to!r}; expected 'gn' or 'frozen-bn'")


def load_converted(path: str | os.PathLike) -> nn.Module:
    """Rebuild the model saved by ``groupnorm convert``: entry point, same conversion, saved weights.

    The entry point must be importable as it was when the file was written.
    """
    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"converted model {path!r} does not exist")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    meta = obj.get("groupnorm_convert") if isinstance(obj, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path!r} was not written by 'groupnorm convert' (no {FORMAT} metadata)")
    model = model_from_entry_point(meta["model"], meta["model_kwargs"])
    model, _ = convert_model(model, meta["to"], meta["num_groups"], meta["group_size"])
    model.load_state_dict(obj["state_dict"], strict=True)
    return model


def run(args) -> int:
    if args.to != "gn" and (args.groups is not None or args.group_size is not None):
        raise ValueError("--groups / --group-size apply to --to gn only")
    try:
        kwargs = json.loads(args.model_kwargs) if args.model_kwargs else {}
    except json.JSONDecodeError as exc:
        raise ValueError(f"--model-kwargs is not valid JSON: {exc}") from None
    if not isinstance(kwargs, dict):
        raise ValueError(f"--model-kwargs must be a JSON object, got {args.model_kwargs!r}")
    out = Path(args.out)
    if not out.parent.is_dir():
        raise FileNotFoundError(f"the folder of --out {str(out)!r} does not exist")
    if out.exists() and not args.force:
        raise ValueError(f"--out {str(out)!r} exists; pass --force to overwrite it")
    if args.to == "gn" and args.groups is None and args.group_size is None:
        args.groups = 32

    model = model_from_entry_point(args.model, kwargs)
    if args.checkpoint:
        load_checkpoint(model, args.checkpoint)
    model, report = convert_model(model, args.to, args.groups, args.group_size)

    meta = {
        "format": FORMAT, "model": args.model, "model_kwargs": kwargs, "to": args.to,
        "num_groups": args.groups if args.to == "gn" and args.group_size is None else None,
        "group_size": args.group_size if args.to == "gn" else None,
        "checkpoint": args.checkpoint,
        "report": [
            {"names": list(layer.names), "source": layer.source, "target": layer.target,
             "channels": layer.channels, "groups": layer.groups, "fallback": layer.fallback,
             "carried": list(layer.carried), "dropped": list(layer.dropped)}
            for layer in report
        ],
    }
    atomic_torch_save({"state_dict": model.state_dict(), "groupnorm_convert": meta}, str(out))
    if args.verbose:
        print(report.table())
    print(f"{report.summary()}; wrote {out}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "convert",
        help="convert a model's BatchNorm layers to GroupNorm or frozen BN and save the weights",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("--model", required=True, metavar="MODULE:FUNCTION",
                   help="entry point building the model: package.module:function or path/to/file.py:function")
    p.add_argument("--model-kwargs", default=None, metavar="JSON", help="keyword arguments for the entry point")
    p.add_argument("--checkpoint", default=None, metavar="PATH",
                   help="state_dict to load before converting (also under 'state_dict' / 'model'; "
                        "'module.' prefixes stripped)")
    p.add_argument("--to", choices=("gn", "frozen-bn"), default="gn", help="what BN becomes (default: gn)")
    groups = p.add_mutually_exclusive_group()
    groups.add_argument("--groups", type=int, default=None, metavar="G",
                        help="GroupNorm groups per layer (default 32; a G not dividing C falls back to the "
                             "largest divisor of C below G, reported)")
    groups.add_argument("--group-size", type=int, default=None, metavar="S", help="channels per group instead")
    p.add_argument("--out", required=True, metavar="PATH", help="where to write the converted model (.pt)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument("-v", "--verbose", action="store_true", help="print the per-layer report")
    p.set_defaults(func=run)


def __getattr__(name: str):
    """The former name ``build_model`` of :func:`model_from_entry_point`, with a DeprecationWarning."""
    return deprecated_alias(__name__, name, _DEPRECATED, globals())
