"""Model building blocks."""

import torch

from cifar_sweep.models.norms import DetachedBatchNorm2d


def test_detached_batchnorm_differs_from_batchnorm_only_in_gradients():
    torch.manual_seed(0)
    x = torch.randn(8, 4, 5, 5) * 3 + 1
    plain, detached = torch.nn.BatchNorm2d(4), DetachedBatchNorm2d(4)
    detached.load_state_dict(plain.state_dict())
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = plain(xa), detached(xb)
    torch.testing.assert_close(ya, yb)  # same forward output
    torch.testing.assert_close(plain.running_mean, detached.running_mean)
    torch.testing.assert_close(plain.running_var, detached.running_var)
    weights = torch.randn_like(ya)
    (ya * weights).sum().backward()
    (yb * weights).sum().backward()
    assert not torch.allclose(xa.grad, xb.grad, atol=1e-3)  # different backward
    # without the statistics in the graph the input gradient is just weight / std per channel
    std = torch.sqrt(x.var(dim=(0, 2, 3), unbiased=False) + detached.eps)
    torch.testing.assert_close(xb.grad, weights * (detached.weight / std)[None, :, None, None])
    plain.eval(), detached.eval()
    torch.testing.assert_close(plain(x), detached(x))


def test_detached_batchnorm_trains_under_bf16_autocast_like_batchnorm():
    """Mixed precision hands the norm bf16 activations; its statistics stay float32."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, 3)
    x = torch.randn(8, 3, 10, 10)
    plain, detached = torch.nn.BatchNorm2d(4), DetachedBatchNorm2d(4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = conv(x)
        ya, yb = plain(h), detached(h)
        yb.float().sum().backward()  # the step that failed: float32 running stats, bf16 input
    assert yb.dtype == h.dtype == torch.bfloat16
    torch.testing.assert_close(yb.float(), ya.float(), atol=0.05, rtol=0.05)
    torch.testing.assert_close(detached.running_mean, plain.running_mean, atol=1e-2, rtol=1e-2)
    assert conv.weight.grad is not None and torch.isfinite(conv.weight.grad).all()
