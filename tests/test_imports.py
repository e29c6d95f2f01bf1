"""What ``import groupnorm`` loads: nothing heavy until a name is used (PEP 562), and every exported name is the
right object whichever submodules were imported before or after. Each case runs in a fresh interpreter."""
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import groupnorm

SRC = Path(groupnorm.__file__).resolve().parent

# A meta-path finder that makes `import torch` (and any torch.*) fail, as on a machine without torch.
BLOCK_TORCH = textwrap.dedent("""
    import sys

    class _NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
            return None

    sys.meta_path.insert(0, _NoTorch())
""")


def _run(*parts: str) -> str:
    code = "".join(textwrap.dedent(p) for p in parts)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return r.stdout


def test_import_groupnorm_loads_neither_torch_nor_the_kernels():
    _run("""
        import sys
        import groupnorm
        heavy = sorted(m for m in sys.modules if m == "torch" or m.startswith(("torch.", "groupnorm.")))
        assert not heavy, heavy
        assert groupnorm.__version__
    """)


def test_reference_and_demo_work_without_torch():
    out = _run(BLOCK_TORCH, """
        import numpy as np
        import groupnorm
        from groupnorm import reference as R
        assert groupnorm.reference is R
        x = np.arange(24, dtype=np.float64).reshape(2, 4, 3)
        y = R.group_norm(x, 2)
        assert y.shape == x.shape and abs(float(y.mean())) < 1e-12
        from groupnorm import demo
        try:
            import torch  # noqa: F401
        except ModuleNotFoundError:
            print("torch blocked")
        assert "torch" not in sys.modules
    """)
    assert "torch blocked" in out


def test_torch_names_say_what_is_missing_without_torch():
    _run(BLOCK_TORCH, """
        import groupnorm
        try:
            groupnorm.convert_bn_to_gn
        except ModuleNotFoundError as exc:
            assert "torch" in str(exc), exc
        else:
            raise AssertionError("convert_bn_to_gn loaded without torch")
    """)


@pytest.mark.slow  # imports every submodule in a fresh interpreter
def test_every_export_is_the_right_object_before_and_after_importing_all_submodules():
    """A submodule imported after the lazy name was resolved (or before) must not shadow it: e.g. the function
    ``groupnorm.precise_bn`` lives in ``groupnorm.nn.precise_bn``, so importing every submodule leaves it a function."""
    _run("""
        import importlib, pkgutil, types
        import groupnorm

        def check():
            for name, (module, attr) in groupnorm._LAZY.items():
                got = getattr(groupnorm, name)
                want = importlib.import_module(module)
                if attr is not None:
                    want = getattr(want, attr)
                    assert not isinstance(got, types.ModuleType), (name, got)
                assert got is want, (name, got, want)

        first = [n for i, n in enumerate(sorted(groupnorm._LAZY)) if i % 2 == 0]
        for name in first:  # half resolved before the submodules are imported
            getattr(groupnorm, name)
        names = [m.name for m in pkgutil.walk_packages(groupnorm.__path__, "groupnorm.")]
        skip = {"groupnorm.__main__"}  # runs the CLI
        for name in names:
            if name not in skip:
                importlib.import_module(name)
        check()
        assert set(groupnorm.__all__) == {"__version__", *groupnorm._LAZY}
        assert set(groupnorm.__all__) <= set(dir(groupnorm))
        print(len(names))
    """)


def test_unknown_attribute_names_itself():
    try:
        groupnorm.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("no AttributeError")


def test_py_typed_is_shipped():
    assert (SRC / "py.typed").is_file()
