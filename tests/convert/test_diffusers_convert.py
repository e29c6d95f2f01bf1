"""A real client of convert_group_norm: diffusers' UNet2DModel and AutoencoderKL (small configs, random weights,
nothing downloaded) give the same outputs after conversion and keep loading the original state_dict."""
import pytest
import torch

from groupnorm import convert_group_norm
from groupnorm.nn import GroupNorm

diffusers = pytest.importorskip("diffusers", reason="diffusers is in the package's test extra")


def _unet():
    return diffusers.UNet2DModel(
        sample_size=16, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8, attention_head_dim=8)


def _vae():
    return diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(16, 32), latent_channels=4,
        norm_num_groups=8, layers_per_block=1, sample_size=16)


def _run(name, model, x):
    if name == "unet":
        return model(x, 7).sample
    return model(x, sample_posterior=False).sample


@pytest.mark.parametrize("name", ["unet", "vae"])
def test_converted_diffusers_model_same_outputs_and_state_dict(name, gn_path):
    torch.manual_seed(0)
    model = (_unet() if name == "unet" else _vae()).eval()
    with torch.no_grad():  # GN affines away from (1, 0), so that carrying them matters
        for pname, p in model.named_parameters():
            if "norm" in pname:
                p.add_(torch.randn_like(p) * 0.2)
    n_gn = sum(type(m) is torch.nn.GroupNorm for m in model.modules())
    conv, report = convert_group_norm(model, fuse_activation=True, return_report=True)
    assert n_gn > 10 and len(report) == n_gn
    assert not any(type(m) is torch.nn.GroupNorm for m in conv.modules())
    assert sum(type(m) is GroupNorm for m in conv.modules()) == n_gn
    conv.load_state_dict(model.state_dict())          # strict: the same keys
    model.load_state_dict(conv.state_dict())

    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        ours, theirs = _run(name, conv, x), _run(name, model, x)
        truth = _run(name, model.double(), x.double())  # torch's model in float64: the reference
    scale = truth.abs().max().item()
    err_ours = (ours.double() - truth).abs().max().item()
    err_torch = (theirs.double() - truth).abs().max().item()
    # within float32 rounding: our model is as close to the float64 result as torch's own float32 run is
    assert err_ours <= 4 * err_torch + 1e-6 * scale, (err_ours, err_torch, scale)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5 * scale)
    # channels-last input through the converted model: same result
    with torch.no_grad():
        cl = _run(name, conv.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(cl, ours, rtol=1e-4, atol=1e-5 * scale)
