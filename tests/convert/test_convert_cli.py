"""``groupnorm convert`` end to end: entry point, checkpoint, gn / frozen-bn, saved and rebuilt model, errors."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from groupnorm import convert_bn_to_gn
from groupnorm.cli import main
from groupnorm.convert_cli import load_converted
from groupnorm.nn import FrozenBatchNorm, GroupNorm

MODELS = '''
import torch
from torch import nn


def build(width=24, classes=5):
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                         nn.Conv2d(width, 16, 1), nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(1),
                         nn.Linear(16, classes))


def build_small():
    return nn.Sequential(nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8))


def not_a_model():
    return 42
'''


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    (tmp_path / "cli_models.py").write_text(textwrap.dedent(MODELS))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("cli_models", None)
    yield tmp_path
    sys.modules.pop("cli_models", None)


def _trained_checkpoint(path, ddp_wrapped=False):
    import cli_models

    torch.manual_seed(0)
    model = cli_models.build_small()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    model.train()
    model(torch.randn(4, 3, 5, 5) * 2 + 1)  # non-trivial running statistics
    state = model.state_dict()
    if ddp_wrapped:
        state = {"state_dict": {"module." + k: v for k, v in state.items()}, "epoch": 3}
    torch.save(state, path)
    return model


def test_convert_to_gn_and_rebuild(workdir, capsys):
    bn_model = _trained_checkpoint(workdir / "bn.pt", ddp_wrapped=True)
    rc = main(["convert", "--model", "cli_models:build_small", "--checkpoint", "bn.pt", "--to", "gn",
               "--groups", "3", "--out", "gn.pt", "-v"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "converted 1 layer to GroupNorm; 1 used a fallback: 1 (C=8, num_groups=3 -> 2 groups)" in out
    assert "BatchNorm2d" in out and os.path.isfile("gn.pt")
    saved = torch.load("gn.pt", weights_only=True)
    assert saved["groupnorm_convert"]["report"][0]["groups"] == 2
    model = load_converted("gn.pt")
    assert isinstance(model[1], GroupNorm) and model[1].num_groups == 2
    want = convert_bn_to_gn(bn_model, 2)
    torch.testing.assert_close(model[1].weight, bn_model[1].weight, rtol=0, atol=0)
    x = torch.randn(2, 3, 5, 5)
    torch.testing.assert_close(model(x), want(x), rtol=0, atol=0)


def test_convert_to_frozen_bn_with_file_entry_point(workdir, capsys):
    bn_model = _trained_checkpoint(workdir / "bn.pt")
    rc = main(["convert", "--model", str(workdir / "cli_models.py") + ":build_small", "--checkpoint", "bn.pt",
               "--to", "frozen-bn", "--out", "frozen.pt"])
    assert rc == 0 and "converted 1 layer to FrozenBatchNorm" in capsys.readouterr().out
    model = load_converted("frozen.pt")
    assert isinstance(model[1], FrozenBatchNorm)
    x = torch.randn(2, 3, 5, 5)
    bn_model.eval()
    torch.testing.assert_close(model.train()(x), bn_model(x))  # frozen: eval-mode BN even in train mode


def test_group_size_and_kwargs_as_a_subprocess(workdir):
    cmd = [sys.executable, "-m", "groupnorm", "convert", "--model", "cli_models:build",
           "--model-kwargs", '{"width": 32}', "--group-size", "8", "--out", "gs.pt"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "converted 2 layers to GroupNorm; wrote gs.pt"
    model = load_converted(workdir / "gs.pt")
    assert (model[1].num_channels, model[1].num_groups, model[4].num_groups) == (32, 4, 2)
    assert model(torch.randn(2, 3, 4, 4)).shape == (2, 5)


def test_errors(workdir, capsys):
    _trained_checkpoint(workdir / "bn.pt")

    def fails(argv, message):
        assert main(["convert"] + argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("groupnorm convert: error:") and message in err, err

    fails(["--model", "cli_models", "--out", "o.pt"], "must look like 'package.module:function'")
    fails(["--model", "no_such_mod:build", "--out", "o.pt"], "cannot import module 'no_such_mod'")
    fails(["--model", "cli_models:nope", "--out", "o.pt"], "has no callable 'nope'")
    fails(["--model", "cli_models:not_a_model", "--out", "o.pt"], "returned int, not a torch.nn.Module")
    fails(["--model", "missing.py:build", "--out", "o.pt"], "'missing.py'")
    fails(["--model", "cli_models:build_small", "--checkpoint", "nope.pt", "--out", "o.pt"],
          "checkpoint 'nope.pt' does not exist")
    fails(["--model", "cli_models:build", "--checkpoint", "bn.pt", "--out", "o.pt"], "does not fit the model")
    fails(["--model", "cli_models:build_small", "--groups", "0", "--out", "o.pt"], "num_groups=0")
    fails(["--model", "cli_models:build_small", "--group-size", "16", "--out", "o.pt"],
          "group_size=16 is larger than num_channels=8")
    fails(["--model", "cli_models:build_small", "--to", "frozen-bn", "--groups", "4", "--out", "o.pt"],
          "--to gn only")
    fails(["--model", "cli_models:build", "--model-kwargs", "{width: 3}", "--out", "o.pt"], "not valid JSON")
    fails(["--model", "cli_models:build", "--model-kwargs", '{"depth": 3}', "--out", "o.pt"], "depth")
    fails(["--model", "cli_models:build_small", "--out", "no_dir/o.pt"], "does not exist")
    (workdir / "exists.pt").write_bytes(b"x")
    fails(["--model", "cli_models:build_small", "--out", "exists.pt"], "pass --force")
    fails(["--model", "cli_models:build_small", "--checkpoint", "exists.pt", "--out", "o2.pt"],
          "cannot read checkpoint")
    assert not os.path.exists("o.pt") and not os.path.exists("o2.pt")
    with pytest.raises(SystemExit):  # argparse: --groups and --group-size are exclusive
        main(["convert", "--model", "cli_models:build", "--groups", "2", "--group-size", "4", "--out", "o.pt"])
    with pytest.raises(ValueError, match="not written by 'groupnorm convert'"):
        load_converted(workdir / "bn.pt")
