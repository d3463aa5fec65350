"""Any smoothing noise as a ``torch.nn.Module`` / data transform, for training loops that are not ours.

``NoiseTransform(noise)`` adds ``noise`` to its input exactly as the estimator does (``noise.perturb``), so a
model trained through it in a user's own loop, a timm script or a Lightning module sees the noise it will be
certified with::

    add_noise = NoiseTransform(noises.get("gaussian", sigma=0.5), seed=0)
    loss = criterion(model(add_noise(images)), labels)             # a batch, in a training step
    transforms.Compose([transforms.ToTensor(), NoiseTransform(noise, batched=False)])   # per example

The generator is explicit: pass one (``generator=``), or a ``seed`` from which the transform makes its own on
the first input's device; with neither, torch's default generator is used. The module has no parameters and
is active in train and eval mode alike (leave it out of evaluation-time models).
"""

from __future__ import annotations

import torch
from torch import nn

from manifoldcert.noises.base import AbstractNoise


class NoiseTransform(nn.Module):
    """``x ↦ noise.perturb(x)``: one independent draw of ``noise`` per example.

    Parameters
    ----------
    noise : AbstractNoise
        Any registered noise (``manifoldcert.noises.get(name, ...)``), additive or not.
    generator : torch.Generator, optional
        Where the draws come from; it must live on the inputs' device.
    seed : int, optional
        Instead of ``generator``: seed of a generator made on the first input's device.
    batched : bool
        True (default): inputs are batches of shape (b, *input_shape). False: single examples of shape
        ``input_shape``, as per-example dataset transforms receive them.
    """

    def __init__(
        self,
        noise: AbstractNoise,
        *,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        batched: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(noise, AbstractNoise):
            raise TypeError(
                f"noise must be an AbstractNoise (manifoldcert.noises.get), got {type(noise).__name__}"
            )
        if generator is not None and seed is not None:
            raise ValueError("give a generator or a seed, not both")
        self.noise = noise
        self.generator = generator
        self.seed = seed
        self.batched = batched

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Return ``inputs`` with noise added (same shape and dtype)."""
        if not isinstance(inputs, torch.Tensor) or not inputs.is_floating_point():
            raise TypeError(f"NoiseTransform takes float tensors in [0, 1], got {type(inputs).__name__}")
        if self.generator is None and self.seed is not None:
            self.generator = torch.Generator(device=inputs.device)
            self.generator.manual_seed(self.seed)
        if self.batched:
            if inputs.dim() < 2:
                raise ValueError(
                    f"a batched NoiseTransform takes inputs of shape (b, *input_shape), got {tuple(inputs.shape)}; "
                    "use batched=False for single examples"
                )
            return self.noise.perturb(inputs, generator=self.generator)
        return self.noise.perturb(inputs.unsqueeze(0), generator=self.generator).squeeze(0)

    def extra_repr(self) -> str:
        """The noise, as ``print(module)`` shows it."""
        return f"{self.noise!r}, batched={self.batched}"
