"""Parameter and FLOP counts of a model, by torch's own flop counter."""

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count(model: nn.Module, image_shape: tuple[int, int, int]) -> tuple[int, int]:
    """(parameters, forward FLOPs for one image), counted by torch's own flop counter."""
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, *image_shape))
    model.train(was_training)
    params = sum(p.numel() for p in model.parameters())  # after the forward: lazy layers exist
    return params, counter.get_total_flops()
