"""Learning-rate decay, one rate per member for the epoch about to run (epoch counts from 0)."""

from __future__ import annotations

import math

import torch

from ..hyperparams import LR_DECAYS

DECAY_CODES = {name: code for code, name in enumerate(LR_DECAYS)}


def learning_rate_at(epoch: torch.Tensor, lr0: torch.Tensor, decay: torch.Tensor,
                     decay_rate: torch.Tensor, decay_steps: torch.Tensor,
                     epochs: torch.Tensor) -> torch.Tensor:
    """α for each member, all ``(P,)`` tensors; ``decay`` holds codes from DECAY_CODES.

    none:          α = α₀
    inverse_time:  α = α₀ / (1 + decay_rate·epoch)
    exponential:   α = α₀ · decay_rate^epoch
    step:          α = α₀ · decay_rate^⌊epoch / decay_steps⌋
    cosine:        α = α₀ · ½(1 + cos(π·epoch / epochs))
    """
    e = epoch.to(lr0.dtype)
    candidates = torch.stack([
        lr0,
        lr0 / (1.0 + decay_rate * e),
        lr0 * decay_rate.pow(e),
        lr0 * decay_rate.pow(torch.div(e, decay_steps, rounding_mode="floor")),
        lr0 * 0.5 * (1.0 + torch.cos(math.pi * e / epochs)),
    ])
    return candidates.gather(0, decay.view(1, -1)).squeeze(0)
