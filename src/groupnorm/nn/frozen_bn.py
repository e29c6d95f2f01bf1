"""``FrozenBatchNorm``: BatchNorm with fixed statistics (the paper's BN*), for any input rank."""
from __future__ import annotations

import torch
from torch import nn


class FrozenBatchNorm(nn.Module):
    r"""BatchNorm whose statistics never change: the "BN*" of Wu & He (2018), Sec. 6.

    .. math::

        y = \frac{x - \mu_{\mathrm{run}}}{\sqrt{\sigma^2_{\mathrm{run}} + \epsilon}} * \gamma + \beta
          = x * s + t, \quad s = \gamma / \sqrt{\sigma^2_{\mathrm{run}} + \epsilon}, \quad
          t = \beta - \mu_{\mathrm{run}} * s

    In train *and* eval mode it computes exactly what ``torch.nn.BatchNorm*d`` computes in eval mode
    (``groupnorm.reference.batch_norm_inference``): the running statistics are buffers that no forward pass
    updates. ``gamma`` and ``beta`` (``weight`` and ``bias``) are Parameters; they are trained only if
    ``trainable_affine=True`` (otherwise ``requires_grad=False``, as in detectron2's ``FrozenBatchNorm2d``).

    The state_dict has the keys of a BatchNorm (``weight``, ``bias``, ``running_mean``, ``running_var``,
    ``num_batches_tracked``), so a BatchNorm state_dict loads into it and back. One class serves every rank:
    the input is ``(N, C)`` or ``(N, C, *)``.

    torch has no frozen BatchNorm class to subclass. This one is a plain ``nn.Module``, deliberately not a
    ``torch.nn.modules.batchnorm._BatchNorm`` (as detectron2's and torchvision's ``FrozenBatchNorm2d``): code
    that finds BatchNorms by that base class re-estimates, synchronizes or re-freezes their statistics
    (``groupnorm.precise_bn``, ``convert_sync_batchnorm``, ``freeze_batch_norm``), which must not touch these.

    Args:
        num_features: number of channels C.
        eps: added to the running variance. Default: 1e-5.
        affine: has ``weight`` and ``bias``. Default: True.
        trainable_affine: ``weight`` and ``bias`` require grad. Default: False.
        bias: with ``affine``, also has ``bias`` (as torch's BatchNorm ``bias=`` keyword). Default: True.

    Shape:
        - Input: ``(N, C)`` or ``(N, C, *)``.
        - Output: same shape, dtype and memory format as the input.

    Examples::

        >>> bn = torch.nn.BatchNorm2d(64).eval()
        >>> frozen = FrozenBatchNorm.from_batch_norm(bn)   # same output as bn in eval mode, in any mode
        >>> frozen = FrozenBatchNorm(64, trainable_affine=True)
    """

    _version = 1

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True, *,
                 trainable_affine: bool = False, bias: bool = True, device=None, dtype=None):
        super().__init__()
        if not isinstance(num_features, int) or isinstance(num_features, bool) or num_features <= 0:
            raise ValueError(f"FrozenBatchNorm needs num_features > 0, got num_features={num_features!r}")
        if not eps > 0:
            raise ValueError(f"FrozenBatchNorm needs eps > 0, got eps={eps!r}")
        factory = {"device": device, "dtype": dtype}
        self.num_features = num_features
        self.eps = float(eps)
        self.affine = bool(affine)
        if self.affine:
            self.weight = nn.Parameter(torch.ones(num_features, **factory), requires_grad=trainable_affine)
            if bias:
                self.bias = nn.Parameter(torch.zeros(num_features, **factory), requires_grad=trainable_affine)
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.register_buffer("running_mean", torch.zeros(num_features, **factory))
        self.register_buffer("running_var", torch.ones(num_features, **factory))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device))
        # The BatchNorm class (and its momentum) this layer was frozen from: what unfreeze_batch_norm rebuilds.
        self.source_class: type | None = None
        self.source_momentum: float | None = 0.1

    @property
    def trainable_affine(self) -> bool:
        return self.affine and self.weight.requires_grad

    @classmethod
    def from_batch_norm(cls, bn: nn.Module, *, trainable_affine: bool = False) -> "FrozenBatchNorm":
        """A FrozenBatchNorm with the statistics, affine and eps of ``bn`` (any ``_BatchNorm``).

        ``bn`` must track running statistics (a BN without them has nothing to freeze).
        """
        if not isinstance(bn, nn.modules.batchnorm._BatchNorm):
            raise TypeError(f"from_batch_norm expects a BatchNorm module, got {type(bn).__name__}")
        if bn.running_mean is None or bn.running_var is None:
            raise ValueError(
                f"cannot freeze {type(bn).__name__}({bn.num_features}) with track_running_stats=False: "
                "it has no running statistics"
            )
        ref = bn.running_mean
        has_bias = getattr(bn, "bias", None) is not None
        frozen = cls(bn.num_features, bn.eps, bn.affine, trainable_affine=trainable_affine, bias=has_bias,
                     device=ref.device, dtype=ref.dtype)
        with torch.no_grad():
            frozen.running_mean.copy_(bn.running_mean)
            frozen.running_var.copy_(bn.running_var)
            if bn.num_batches_tracked is not None:
                frozen.num_batches_tracked.copy_(bn.num_batches_tracked)
            if bn.affine:
                frozen.weight.data = bn.weight.detach().clone()
                if has_bias:
                    frozen.bias.data = bn.bias.detach().clone()
        frozen.source_class = type(bn)
        frozen.source_momentum = bn.momentum
        frozen.train(bn.training)
        return frozen

    def scale_and_shift(self, dtype=None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(s, t)`` of shape ``(C,)`` with ``y = x * s + t``; computed in at least float32, then cast."""
        acc = torch.promote_types(self.running_var.dtype, torch.float32)
        scale = torch.rsqrt(self.running_var.to(acc) + self.eps)
        mean = self.running_mean.to(acc)
        if self.affine:
            scale = scale * self.weight.to(acc)
        shift = -mean * scale
        if self.bias is not None:
            shift = shift + self.bias.to(acc)
        if dtype is not None:
            scale, shift = scale.to(dtype), shift.to(dtype)
        return scale, shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2 or x.shape[1] != self.num_features:
            raise ValueError(
                f"FrozenBatchNorm expected an input of shape (N, {self.num_features}, *), "
                f"got shape {tuple(x.shape)}"
            )
        scale, shift = self.scale_and_shift(x.dtype)
        view = (1, -1) + (1,) * (x.dim() - 2)
        return x * scale.view(view) + shift.view(view)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # Old BatchNorm checkpoints (version < 2) lack num_batches_tracked: accept them.
        key = prefix + "num_batches_tracked"
        if key not in state_dict:
            state_dict[key] = torch.tensor(0, dtype=torch.long)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, affine={self.affine}, "
                f"trainable_affine={self.trainable_affine}")
