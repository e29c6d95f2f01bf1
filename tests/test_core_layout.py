"""The core library's layout: each rule and helper in one home, old public names kept as deprecated aliases, the
``groupnorm.convert`` package exporting what the former module did, and no import cycle between the benches."""
import importlib
import subprocess
import sys
import warnings

import pytest
import torch

import groupnorm
from groupnorm import args, layout
from groupnorm.args import resolve_num_groups


# ------------------------------------------------------------------------------------------ the group-count rule
def _divisors(c):
    return [d for d in range(1, c + 1) if c % d == 0]


@pytest.mark.parametrize("c", [1, 2, 6, 12, 24, 32, 48, 64, 96])
def test_group_policies_on_every_request(c):
    """Each policy against its definition, written independently here, for every request up to 2C."""
    for g in range(1, 2 * c + 1):
        if c % g == 0:
            assert resolve_num_groups(c, g) == g
        else:
            with pytest.raises(ValueError, match=f"num_groups={g} does not divide num_channels={c}"):
                resolve_num_groups(c, g)
        if g > c or c % g == 0:
            assert resolve_num_groups(c, g, policy="clamp") == min(g, c)
        else:
            with pytest.raises(ValueError, match=f"num_groups={g} does not divide num_channels={c}"):
                resolve_num_groups(c, g, policy="clamp")
        assert resolve_num_groups(c, g, policy="largest_divisor") == max(d for d in _divisors(c) if d <= g)
        k = g  # the same numbers as a group size
        if k > c:
            assert resolve_num_groups(c, group_size=k, policy="clamp") == 1
            with pytest.raises(ValueError, match=f"group_size={k} is larger than num_channels={c}"):
                resolve_num_groups(c, group_size=k, policy="largest_divisor")
        else:
            want = max(d for d in _divisors(c) if d <= c // k)
            assert resolve_num_groups(c, group_size=k, policy="largest_divisor") == want
            if c % k == 0:
                assert resolve_num_groups(c, group_size=k) == c // k == want


@pytest.mark.parametrize("bad, message", [
    (dict(num_groups=0), "num_groups must be a positive integer, got num_groups=0"),
    (dict(group_size=-2), "group_size must be a positive integer, got group_size=-2"),
    (dict(num_groups=True), "num_groups must be a positive integer, got num_groups=True"),
    (dict(num_groups=2.0), "num_groups must be a positive integer, got num_groups=2.0"),
    (dict(), "give exactly one of num_groups and group_size"),
    (dict(num_groups=2, group_size=4), "give exactly one of num_groups and group_size"),
    (dict(num_groups=2, policy="nearest"), "unknown policy 'nearest'"),
])
def test_group_requests_that_are_errors_name_the_value(bad, message):
    with pytest.raises(ValueError, match=message):
        resolve_num_groups(8, **bad)


def test_make_norm_and_convert_use_the_one_rule():
    """make_norm's GroupNorm gets the ``clamp`` policy's count, convert_bn_to_gn the ``largest_divisor`` one
    (its fallback, reported), on the same requests."""
    from groupnorm.convert import convert_bn_to_gn, fallback_num_groups
    from groupnorm.nn import make_norm

    for c in (4, 24, 32):
        for g in (1, 3, 16, 32, 64):
            try:
                want = resolve_num_groups(c, g, policy="clamp")
            except ValueError as exc:
                with pytest.raises(ValueError, match=str(exc)):
                    make_norm("gn", c, groups=g)
            else:
                assert make_norm("gn", c, groups=g).num_groups == want
            largest = resolve_num_groups(c, g, policy="largest_divisor")
            assert fallback_num_groups(c, g) == largest
            gn, report = convert_bn_to_gn(torch.nn.BatchNorm2d(c), g, return_report=True)
            assert gn.num_groups == largest and report.layers[0].fallback is (largest != g)
        assert make_norm("gn", c, groups=5, group_size=c).num_groups == 1  # group_size wins over groups


# ------------------------------------------------------------------------------------------ layouts
@pytest.mark.parametrize("shape", [(2, 3), (2, 6, 5), (2, 6, 4, 3), (1, 6, 2, 3, 4), (2, 4, 2, 1, 3, 2)])
def test_to_layout_and_layout_of(shape):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen)
    nsc = layout.to_layout(x, layout.LAYOUT_NSC)
    assert torch.equal(nsc, x)
    assert layout.layout_of(layout.to_layout(nsc, layout.LAYOUT_NCS)) == layout.LAYOUT_NCS
    if len(shape) >= 3:
        assert not nsc.is_contiguous() and layout.layout_of(nsc) == layout.LAYOUT_NSC
        assert nsc.movedim(1, -1).is_contiguous()
        fmt = layout.torch_format(layout.LAYOUT_NSC, len(shape))
        assert layout.memory_format(nsc) == fmt
        if fmt is not torch.contiguous_format:
            assert nsc.is_contiguous(memory_format=fmt)
    if shape[0] > 1:
        assert layout.layout_of(x.transpose(0, 1)) is None  # other strides
    with pytest.raises(ValueError, match="unknown layout 7"):
        layout.to_layout(x, 7)


def test_layout_helpers_have_one_home():
    from groupnorm import bench_cases, plain
    from groupnorm.kernels import _lib

    assert _lib.layout_of is layout.layout_of and _lib.to_layout is layout.to_layout
    assert (_lib.LAYOUT_NCS, _lib.LAYOUT_NSC) == (layout.LAYOUT_NCS, layout.LAYOUT_NSC)
    assert plain.memory_format is layout.memory_format
    assert bench_cases.to_layout is layout.to_layout and set(bench_cases.LAYOUTS) == set(layout.LAYOUTS)


# ------------------------------------------------------------------------------------------ names
DEPRECATED = [
    ("groupnorm.nn", "BatchNormAct2d", "BatchNormAct"),
    ("groupnorm.nn", "WorkerBatchNorm2d", "WorkerBatchNorm"),
    ("groupnorm.nn.norm_act", "BatchNormAct2d", "BatchNormAct"),
    ("groupnorm.nn.worker_bn", "WorkerBatchNorm2d", "WorkerBatchNorm"),
    ("groupnorm.convert_cli", "build_model", "model_from_entry_point"),
]


@pytest.mark.parametrize("module, old, new", DEPRECATED)
def test_old_names_are_the_new_objects_with_a_deprecation_warning(module, old, new):
    mod = importlib.import_module(module)
    with pytest.warns(DeprecationWarning, match=f"{module}.{old} is deprecated; use {module}.{new}"):
        got = getattr(mod, old)
    assert got is getattr(mod, new)
    with pytest.raises(AttributeError, match="no_such_name"):
        getattr(mod, "no_such_name")


def test_new_names_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from groupnorm.nn import BatchNormAct, WorkerBatchNorm  # noqa: F401
        from groupnorm.nn.precise_bn import precise_bn

        assert groupnorm.precise_bn is precise_bn


def test_can_handle_is_a_deprecated_kernel_takes():
    from groupnorm import kernels

    x = torch.randn(2, 4, 3)
    with pytest.warns(DeprecationWarning, match="use groupnorm.kernels.kernel_takes"):
        assert kernels.can_handle(x) is kernels.kernel_takes(x)
    with pytest.warns(DeprecationWarning):
        assert kernels.can_handle(x, torch.randn(4, dtype=torch.float64)) is False  # mixed dtypes: not taken


def test_bn_stats_module_is_a_deprecated_alias():
    r = subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-c", "import groupnorm.bn_stats"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "groupnorm.bn_stats is deprecated" in r.stderr
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        bn_stats = importlib.import_module("groupnorm.bn_stats")
    assert bn_stats.precise_bn is groupnorm.precise_bn


def test_convert_package_exports_what_the_module_did():
    import groupnorm.convert as C

    names = ["ConvertedLayer", "ConversionReport", "convert_bn_to_gn", "convert_group_norm", "fallback_num_groups",
             "freeze_batch_norm", "unfreeze_batch_norm", "convert_sync_batchnorm", "convert_conv_to_ws"]
    assert sorted(C.__all__) == sorted(names)
    for name in names + ["DEFAULT_NUM_GROUPS", "GROUP_NORM_SUBCLASSES", "log"]:
        assert getattr(C, name) is not None
    assert C.log.name == "groupnorm.convert"
    for name in ("convert_bn_to_gn", "convert_conv_to_ws", "convert_group_norm", "convert_sync_batchnorm",
                 "freeze_batch_norm", "unfreeze_batch_norm"):
        assert getattr(groupnorm, name) is getattr(C, name)


@pytest.mark.parametrize("module", ["groupnorm.bench_small", "groupnorm.bench_gpu"])
def test_the_other_benches_do_not_import_bench(module):
    """The timing helpers live in groupnorm.timing and the shared case helpers in groupnorm.bench_cases: the
    small-input and GPU benches need nothing from groupnorm.bench (which imports them), so there is no cycle."""
    code = f"import sys, {module}; assert 'groupnorm.bench' not in sys.modules, sorted(sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]


def test_args_module_lists_its_policies():
    assert args.GROUP_POLICIES == ("exact", "clamp", "largest_divisor")
