"""ONNX export of a small GN ResNet (converted from BN, WS convs, fused activation, frozen BN) and onnxruntime."""
import pytest
import torch
from torch import nn

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from groupnorm import convert_bn_to_gn, convert_conv_to_ws  # noqa: E402
from groupnorm.nn import FrozenBatchNorm, GroupNorm  # noqa: E402
from groupnorm.onnx_export import export_onnx, preferred_opset, run_onnx, verify_onnx  # noqa: E402


class Block(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        return torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))) + self.shortcut(x))


class TinyResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), GroupNorm(4, 16, activation="silu"))
        self.layers = nn.Sequential(Block(16, 16, 1), Block(16, 32, 2))
        self.head_act = nn.Sequential(GroupNorm(8, 32, activation="gelu"), GroupNorm(32, 32, activation="relu"))
        self.head_norm = FrozenBatchNorm(32)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc(self.head_norm(self.head_act(self.layers(self.stem(x)))).mean((2, 3)))


@pytest.fixture(scope="module")
def gn_resnet():
    torch.manual_seed(0)
    model = convert_conv_to_ws(convert_bn_to_gn(TinyResNet(), 8))
    model.head_norm = FrozenBatchNorm(32)  # convert_bn_to_gn turned the frozen BN into GN too: put one back
    with torch.no_grad():  # non-trivial affine and statistics everywhere
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.copy_(torch.randn_like(p) * 0.3 + (1.0 if name.endswith("weight") else 0.0))
        model.head_norm.running_mean.copy_(torch.randn(32) * 0.1)
        model.head_norm.running_var.copy_(torch.rand(32) + 0.5)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    return model.eval()


def _version(v):
    return tuple(int(p) for p in v.split(".")[:2])


def test_preferred_opset_is_native_with_recent_onnxruntime():
    import onnxruntime

    if _version(onnxruntime.__version__) >= (1, 20) and onnx.defs.onnx_opset_version() >= 21:
        assert preferred_opset() == 21
    else:
        assert preferred_opset() in (18, 21)




def test_round_trip_native_groupnorm_kernels_on_and_off(gn_resnet, gn_path, tmp_path):
    if preferred_opset() != 21:
        pytest.skip("this onnxruntime does not run opset-21 GroupNormalization")
    _round_trip(gn_resnet, tmp_path, 21, native=True)


def test_round_trip_decomposed_groupnorm(gn_resnet, tmp_path):
    _round_trip(gn_resnet, tmp_path, 18, native=False)


def _round_trip(gn_resnet, tmp_path, opset, native):
    x = torch.randn(2, 3, 16, 16)
    path = export_onnx(gn_resnet, x, tmp_path / "gn_resnet.onnx", opset=opset)
    graph = onnx.load(str(path)).graph
    ops = {n.op_type for n in graph.node}
    assert {n.domain for n in graph.node} <= {"", "ai.onnx"}  # standard ops only: no kernel custom op leaked
    if native:
        assert "GroupNormalization" in ops and "InstanceNormalization" not in ops
    else:
        assert "InstanceNormalization" in ops and "GroupNormalization" not in ops
    assert "Sigmoid" in ops and "Relu" in ops  # the fused SiLU (x * sigmoid(x)) and ReLU
    xb = torch.randn(5, 3, 16, 16) * 3 + 1  # another batch size: the batch dimension is dynamic
    assert verify_onnx(path, gn_resnet, xb) < 1e-4
    with pytest.raises(ValueError, match="has 1 inputs, got 2"):
        run_onnx(path, x, x)


def test_bad_input(tmp_path, gn_resnet):
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(ValueError, match="opset=11"):
        export_onnx(gn_resnet, x, tmp_path / "m.onnx", opset=11)
    with pytest.raises(ValueError, match="does not exist"):
        export_onnx(gn_resnet, x, tmp_path / "missing" / "m.onnx")
    with pytest.raises(TypeError, match="nn.Module"):
        export_onnx(lambda t: t, x, tmp_path / "m.onnx")
    with pytest.raises(RuntimeError, match="export failed"):
        export_onnx(gn_resnet, torch.randn(1, 4, 8, 8), tmp_path / "m.onnx")  # wrong channel count


def test_legacy_torchscript_exporter(gn_resnet, gn_path, tmp_path):
    """torch.onnx.export(..., dynamo=False) traces with TorchScript, where shapes are tensors."""
    import onnxruntime as ort

    x = torch.randn(2, 3, 16, 16)
    path = tmp_path / "legacy.onnx"
    torch.onnx.export(gn_resnet, (x,), str(path), dynamo=False, opset_version=18,
                      input_names=["x"], output_names=["y"])
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = sess.run(None, {"x": x.numpy()})
    with torch.no_grad():
        ref = gn_resnet(x).numpy()
    assert abs(out - ref).max() < 1e-4


def test_round_trip_reproduction_resnet_with_fused_block_ends(tmp_path):
    """The reproduction's GN ResNet ends each block with GroupNorm(..., residual=shortcut): exported, that is
    standard GroupNormalization / InstanceNormalization, Add and Relu, and onnxruntime gives the same logits."""
    from groupnorm.experiments.models import ResNet

    torch.manual_seed(0)
    model = ResNet(norm="gn", widths=(8, 16), blocks=(1, 1), groups=4).eval()
    assert all(isinstance(block.norm2, GroupNorm) and block.norm2.activation == "relu" for block in model.layers)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.copy_(torch.randn_like(p) * 0.3 + (1.0 if name.endswith("weight") else 0.0))
    x = torch.randn(2, 1, 28, 28)
    path = export_onnx(model, x, tmp_path / "resnet.onnx")
    graph = onnx.load(str(path)).graph
    assert {n.domain for n in graph.node} <= {"", "ai.onnx"}
    assert {"Add", "Relu"} <= {n.op_type for n in graph.node}
    assert verify_onnx(path, model, torch.randn(3, 1, 28, 28)) < 1e-4
