"""The one Monte Carlo estimator every certifier draws its samples through.

Given a base classifier ``f`` (any ``torch.nn.Module`` returning logits), one input ``x`` and a noise, it
evaluates ``f`` on noisy copies of ``x`` in memory-bounded batches on the model's device (CUDA when the model
is there, CPU otherwise) and returns

- top-1 vote counts per class (hard smoothing, Cohen et al. 2019), counted with ``torch.bincount``;
- the mean softmax vector (soft smoothing, Salman et al. 2019);
- the mean softmax together with the gradient of a weighted sum of it with respect to the noise's parameters
  (σ, a diagonal, a covariance factor), by the reparameterisation ``z = g(θ, ε)`` — what DDRS, ANCER and RDDRS
  ascend. The gradient is accumulated batch by batch, so memory stays bounded by ``batch_size``.

Randomness comes only from the ``generator`` argument; :meth:`MonteCarloEstimator.generator` makes one on the
model's device from a seed.

:meth:`MonteCarloEstimator.run_jobs` is the cross-input scheduler: many inputs' vote requests (:class:`VoteJob`)
packed into shared forward batches of at most ``batch_size`` noisy inputs, slots refilled from unfinished inputs
as others stop. Each job's noise is drawn from its own generator in pieces that depend on the job alone, so its
votes do not depend on which other inputs share its batches.

The forward pass can be made faster on accelerators, each opt-in: ``autocast`` (bf16 / fp16 mixed precision),
``channels_last`` (NHWC memory layout for convolutions) and ``compile`` (``torch.compile``).
"""

from __future__ import annotations

import abc
import contextlib
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence

import torch
from torch import nn

from manifoldcert._validation import check_positive_int
from manifoldcert.noises import AbstractNoise
from manifoldcert.noises.base import AbstractFiniteNoise


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a parameter-free model)."""
    for parameter in model.parameters():
        return parameter.device
    for buffer in model.buffers():
        return buffer.device
    return torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's first floating parameter or buffer (torch's default when there is none)."""
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.get_default_dtype()


def batch_sizes(n_samples: int, batch_size: int) -> Iterator[int]:
    """Split ``n_samples`` into batches of at most ``batch_size``."""
    full, rest = divmod(n_samples, batch_size)
    yield from [batch_size] * full
    if rest:
        yield rest


#: Mixed-precision dtypes ``autocast`` accepts per device type (CPU autocast in fp16 is not offered: it is slow
#: and partial); CUDA bf16 also needs a device that supports it.
AUTOCAST_DTYPES = {"cuda": (torch.float16, torch.bfloat16), "cpu": (torch.bfloat16,)}


def resolve_autocast(autocast: torch.dtype | str | None, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``device`` (``None``: full precision); a clear error for one it does not support."""
    if autocast is None:
        return None
    names = {
        "bf16": torch.bfloat16,
        "bfloat16": torch.bfloat16,
        "fp16": torch.float16,
        "float16": torch.float16,
    }
    dtype = names.get(autocast) if isinstance(autocast, str) else autocast
    supported = AUTOCAST_DTYPES.get(device.type, ())
    if dtype not in supported or (
        device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported()
    ):
        offered = ", ".join(str(d).removeprefix("torch.") for d in supported) or "none"
        raise ValueError(f"autocast={autocast!r} is not supported on {device.type} (supported: {offered})")
    return dtype


class ModelOutputError(ValueError):
    """The base classifier returned something that is not a batch of finite logits ``(b, num_classes)``.

    Raised instead of certifying: the argmax of NaN logits is class 0, so a broken model would otherwise be
    certified with the largest radius.
    """


def _describe(model: nn.Module) -> str:
    return f"the model {type(model).__name__}"


class VoteJob(abc.ABC):
    """One input's vote counting as :meth:`MonteCarloEstimator.run_jobs` serves it.

    The job asks for a number of votes (:meth:`request`), receives their counts (:meth:`receive`), and asks again
    until it is done. ``x``, ``noise`` and ``generator`` say what to draw; ``noise`` may change between requests.
    """

    x: torch.Tensor
    noise: AbstractNoise
    generator: torch.Generator | None
    #: Time spent on this job: its share (by votes) of each forward batch it was in, plus its own ``receive``.
    seconds: float = 0.0

    @abc.abstractmethod
    def request(self) -> int | None:
        """Votes wanted before the job looks at its counts again; ``None`` when it is finished."""

    @abc.abstractmethod
    def receive(self, counts: torch.Tensor) -> None:
        """Counts ``(num_classes,)`` (int64, CPU) of exactly the votes last requested."""


class _Slot:
    """A job in the scheduler: its input on the device, the pieces of its request not yet drawn, their counts."""

    def __init__(self, job: VoteJob, x: torch.Tensor, batch_size: int) -> None:
        self.job, self.x, self.batch_size = job, x, batch_size
        self.pieces: deque[int] = deque()
        self.counts: torch.Tensor | None = None

    def advance(self) -> bool:
        """Take the job's next request; False when it is finished."""
        wanted = self.job.request()
        if wanted is None:
            return False
        self.pieces.extend(batch_sizes(check_positive_int(wanted, "requested votes"), self.batch_size))
        self.counts = None
        return True


class MonteCarloEstimator:
    """Batched Monte Carlo estimates of a smoothed classifier at one input (or many, through :meth:`run_jobs`).

    Parameters
    ----------
    model : nn.Module
        Base classifier mapping a batch ``(b, *input_shape)`` to logits ``(b, num_classes)``. It is put in
        eval mode.
    batch_size : int
        Largest number of noisy inputs evaluated at once (the memory knob).
    num_classes : int, optional
        Number of classes; read from the first batch of logits when omitted.
    autocast : torch.dtype or {"bf16", "fp16"}, optional
        Run the forward passes of vote counting under ``torch.autocast`` in this dtype (CUDA: fp16 or bf16;
        CPU: bf16). Votes then come from the reduced-precision model — a different base classifier, certified
        as such. Gradients and soft smoothing stay in full precision.
    channels_last : bool
        Put the model and 4-D inputs in channels-last memory layout (faster convolutions on GPUs).
    compile : bool
        Run the forward passes through ``torch.compile(model)``.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        batch_size: int = 1000,
        num_classes: int | None = None,
        autocast: torch.dtype | str | None = None,
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        self.model = model.eval()
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.num_classes = None if num_classes is None else check_positive_int(num_classes, "num_classes")
        self.device = model_device(model)
        self.dtype = model_dtype(model)
        self.autocast = resolve_autocast(autocast, self.device)
        self.channels_last = bool(channels_last)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self._forward_model = torch.compile(self.model) if compile else self.model

    def generator(self, seed: int) -> torch.Generator:
        """A ``torch.Generator`` on the model's device, seeded with ``seed``."""
        generator = torch.Generator(device=self.device)
        generator.manual_seed(int(seed))
        return generator

    def _prepare(self, x: torch.Tensor, n_samples: int, batch_size: int | None) -> tuple[torch.Tensor, int]:
        check_positive_int(n_samples, "n_samples")
        batch_size = self.batch_size if batch_size is None else check_positive_int(batch_size, "batch_size")
        return x.to(device=self.device, dtype=self.dtype), batch_size

    def _check_logits(self, logits: object, batch: int) -> torch.Tensor:
        """Refuse an output that is not ``(batch, num_classes)`` floating-point logits (shape only: no host sync);
        the first output fixes ``num_classes`` when it was not given."""
        if not isinstance(logits, torch.Tensor):
            structured = isinstance(logits, (dict, tuple, list)) or hasattr(logits, "logits")
            hint = (
                "wrap it in manifoldcert.sources.LogitsAdapter(model, key='logits'), which returns the logits "
                "tensor of a dict, a .logits output or a tuple"
                if structured
                else "wrap it so that it returns the logits tensor"
            )
            raise ModelOutputError(
                f"{_describe(self.model)} returned a {type(logits).__name__}, not a tensor of logits ({hint})"
            )
        expected = "num_classes" if self.num_classes is None else self.num_classes
        if logits.dim() != 2 or logits.shape[0] != batch or not logits.is_floating_point():
            raise ModelOutputError(
                f"{_describe(self.model)} returned {logits.dtype} logits of shape {tuple(logits.shape)} for a "
                f"batch of {batch} inputs; expected floating-point logits of shape ({batch}, {expected})"
            )
        if self.num_classes is None:
            self.num_classes = int(logits.shape[1])
        elif logits.shape[1] != self.num_classes:
            raise ModelOutputError(
                f"{_describe(self.model)} returned {logits.shape[1]} logits per input, but num_classes is "
                f"{self.num_classes}: its classes would fall outside 0..{self.num_classes - 1}"
            )
        return logits

    def _refuse_non_finite(self, inputs: int) -> None:
        raise ModelOutputError(
            f"{_describe(self.model)} returned NaN or infinite logits for {inputs} noisy input(s); nothing is "
            "certified from a model whose output is not finite"
        )

    def _forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Logits of the base classifier (full precision, for gradients and soft smoothing), checked finite."""
        logits = self._check_logits(self.model(inputs), inputs.shape[0])
        bad = int((~torch.isfinite(logits.detach()).all(1)).sum())
        if bad:
            self._refuse_non_finite(bad)
        return logits

    def _checked_counts(self, counts: torch.Tensor) -> torch.Tensor:
        """Counts ``(..., num_classes + 1)`` whose last column counts non-finite outputs → ``(..., num_classes)``,
        refused when that column is not zero. Called where the counts reach the CPU anyway."""
        bad = int(counts[..., -1].sum())
        if bad:
            self._refuse_non_finite(bad)
        return counts[..., :-1]

    def _votes(self, inputs: torch.Tensor) -> torch.Tensor:
        """Top-1 classes of a batch, through the opt-in fast forward (autocast, channels-last, compile); class
        ``num_classes`` for a non-finite output."""
        if self.channels_last and inputs.dim() == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        precision = (
            torch.autocast(self.device.type, dtype=self.autocast)
            if self.autocast is not None
            else contextlib.nullcontext()
        )
        with precision:
            logits = self._check_logits(self._forward_model(inputs), inputs.shape[0])
        # A row with a NaN or infinite logit votes for the extra class ``num_classes``, which
        # :meth:`_checked_counts` refuses once the counts are on the host (no extra device sync here).
        finite = torch.isfinite(logits).all(1)
        return torch.where(finite, logits.argmax(1), self._classes)

    @property
    def _classes(self) -> int:
        """``num_classes`` once known (given, or fixed by the first output, which every vote follows)."""
        if self.num_classes is None:
            raise RuntimeError("num_classes is known only after the model's first output")
        return self.num_classes

    def _noisy_logits(self, x: torch.Tensor, noise: AbstractNoise, size: int, generator) -> torch.Tensor:
        return self._forward(noise.perturb(x.unsqueeze(0).expand(size, *x.shape), generator=generator))

    def _count_votes(self, batches: Iterator[torch.Tensor]) -> torch.Tensor:
        """Sum of top-1 votes over batches of noisy inputs (``torch.bincount``, no loop over samples)."""
        counts: torch.Tensor | None = None
        with torch.inference_mode():
            for inputs in batches:
                votes = self._votes(inputs)
                batch_counts = torch.bincount(votes, minlength=self._classes + 1)
                counts = batch_counts if counts is None else counts + batch_counts
        if counts is None:
            raise ValueError("no noisy inputs were drawn (n_samples must be >= 1)")
        return self._checked_counts(counts.cpu())

    def base_prediction(self, x: torch.Tensor) -> int:
        """The base classifier's top-1 class on the clean input ``x`` (one forward pass, no noise)."""
        x, _ = self._prepare(x, 1, None)
        return int(self._count_votes(iter([x.unsqueeze(0)])).argmax())

    def class_counts(
        self,
        x: torch.Tensor,
        noise: AbstractNoise,
        n_samples: int,
        *,
        generator: torch.Generator | None = None,
        batch_size: int | None = None,
    ) -> torch.Tensor:
        """Top-1 votes of the base classifier over ``n_samples`` noisy copies of ``x``.

        Returns
        -------
        Tensor, shape (num_classes,), int64, on the CPU
        """
        x, batch_size = self._prepare(x, n_samples, batch_size)
        batches = (
            noise.perturb(x.unsqueeze(0).expand(size, *x.shape), generator=generator)
            for size in batch_sizes(n_samples, batch_size)
        )
        return self._count_votes(batches)

    def exact_class_counts(
        self, x: torch.Tensor, noise: AbstractFiniteNoise, *, batch_size: int | None = None
    ) -> torch.Tensor:
        """Top-1 votes over every point of a finite, uniform noise support (derandomised smoothing).

        ``counts / noise.support_size`` are the smoothed class scores exactly, with no sampling error.

        Returns
        -------
        Tensor, shape (num_classes,), int64, on the CPU
        """
        x, batch_size = self._prepare(x, noise.support_size, batch_size)
        starts = range(0, noise.support_size, batch_size)
        batches = (noise.support(x, start, min(start + batch_size, noise.support_size)) for start in starts)
        return self._count_votes(batches)

    def mean_softmax(
        self,
        x: torch.Tensor,
        noise: AbstractNoise,
        n_samples: int,
        *,
        generator: torch.Generator | None = None,
        batch_size: int | None = None,
    ) -> torch.Tensor:
        """Soft smoothing: the average softmax vector over ``n_samples`` noisy copies (float64, CPU)."""
        x, batch_size = self._prepare(x, n_samples, batch_size)
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        with torch.inference_mode():
            for size in batch_sizes(n_samples, batch_size):
                probs = torch.softmax(self._noisy_logits(x, noise, size, generator).double(), dim=1).sum(0)
                total = total + probs
        return (total / n_samples).cpu()

    def mean_softmax_and_gradient(
        self,
        x: torch.Tensor,
        noise: AbstractNoise,
        n_samples: int,
        wrt: Sequence[torch.Tensor],
        *,
        weights: torch.Tensor,
        generator: torch.Generator | None = None,
        batch_size: int | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """The mean softmax and the reparameterised gradient of ``weights · mean softmax`` w.r.t. ``wrt``.

        With ``weights`` a one-hot vector of class ``c`` this is the estimate of ``∂/∂θ E_z[softmax_c(f(x+z))]``
        for the noise parameters ``θ`` in ``wrt`` (tensors that require grad and that ``noise`` samples through).
        Each batch is differentiated and released before the next, so memory is bounded by ``batch_size``; the
        model's own parameter gradients are neither computed nor accumulated.

        Returns
        -------
        mean_softmax : Tensor, shape (num_classes,), float64, CPU
        gradients : tuple of Tensor
            One per entry of ``wrt``, same shapes.
        """
        x, batch_size = self._prepare(x, n_samples, batch_size)
        wrt = tuple(wrt)
        if not wrt or not all(t.requires_grad for t in wrt):
            raise ValueError("wrt must be a non-empty sequence of tensors that require grad")
        weights = weights.to(device=self.device, dtype=torch.float64)
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        gradients = [torch.zeros_like(t) for t in wrt]
        for size in batch_sizes(n_samples, batch_size):
            probs = torch.softmax(self._noisy_logits(x, noise, size, generator).double(), dim=1).sum(0)
            batch_grads = torch.autograd.grad((probs * weights).sum(), wrt, allow_unused=True)
            for total_grad, grad in zip(gradients, batch_grads, strict=True):
                if grad is not None:
                    total_grad.add_(grad)
            total = total + probs.detach()
        return (total / n_samples).cpu(), tuple(g / n_samples for g in gradients)

    def run_jobs(
        self, jobs: Iterable[VoteJob], *, batch_size: int | None = None, max_active: int = 64
    ) -> Iterator[VoteJob]:
        """Serve many inputs' vote requests in shared forward batches; yield each job as it finishes.

        Up to ``max_active`` jobs are open at once; each batch packs whole pieces of their requests, oldest job
        first (a request is split into pieces of at most ``batch_size`` exactly as :meth:`class_counts` splits
        ``n_samples``) until the next piece would overflow ``batch_size``, so memory is bounded by ``batch_size``
        noisy inputs and a job's noise does not depend on the other jobs. Each job's ``seconds`` accumulates its
        share of the batches it was in. Finished jobs free their slot for the next one of
        ``jobs`` (read lazily). A single job gets exactly the votes :meth:`class_counts` would give it.
        """
        batch_size = self.batch_size if batch_size is None else check_positive_int(batch_size, "batch_size")
        check_positive_int(max_active, "max_active")
        source = iter(jobs)
        active: deque[_Slot] = deque()
        exhausted = False
        while True:
            while not exhausted and len(active) < max_active:
                job = next(source, None)
                if job is None:
                    exhausted = True
                    break
                slot = _Slot(job, job.x.to(device=self.device, dtype=self.dtype), batch_size)
                if slot.advance():
                    active.append(slot)
                else:
                    yield job
            if not active:
                return
            served, sizes, free = [], [], batch_size
            for slot in active:
                while slot.pieces and slot.pieces[0] <= free:
                    served.append(slot)
                    sizes.append(slot.pieces.popleft())
                    free -= sizes[-1]
                if free == 0:
                    break
            began = time.perf_counter()
            counts = self._count_pieces(served, sizes)
            share = (time.perf_counter() - began) / sum(sizes)
            for slot, size, piece_counts in zip(served, sizes, counts, strict=True):
                slot.counts = piece_counts if slot.counts is None else slot.counts + piece_counts
                slot.job.seconds += share * size
            finished = []
            for slot in dict.fromkeys(served):  # each served job once, oldest first
                if not slot.pieces:
                    began = time.perf_counter()
                    assert slot.counts is not None  # a served slot has received at least one piece
                    slot.job.receive(self._checked_counts(slot.counts.cpu()))  # one host sync per request
                    more = slot.advance()
                    slot.job.seconds += time.perf_counter() - began
                    if not more:
                        active.remove(slot)
                        finished.append(slot.job)
            yield from finished

    def _count_pieces(self, slots: Sequence[_Slot], sizes: Sequence[int]) -> torch.Tensor:
        """Votes per piece ``(len(sizes), num_classes + 1)`` of one packed forward batch (last column: non-finite
        outputs), on the model's device (no host sync: counts move to the CPU once per request)."""
        with torch.inference_mode():
            noisy = [
                slot.job.noise.perturb(
                    slot.x.unsqueeze(0).expand(size, *slot.x.shape), generator=slot.job.generator
                )
                for slot, size in zip(slots, sizes, strict=True)
            ]
            votes = self._votes(noisy[0] if len(noisy) == 1 else torch.cat(noisy))
            k = self._classes + 1  # the classes and the column of non-finite outputs
            if len(sizes) == 1:
                return torch.bincount(votes, minlength=k).unsqueeze(0)
            owners = torch.repeat_interleave(  # output_size given: no device-to-host sync
                torch.arange(len(sizes), device=votes.device),
                torch.tensor(sizes).to(votes.device, non_blocking=True),
                output_size=sum(sizes),
            )
            return torch.bincount(owners * k + votes, minlength=len(sizes) * k).view(len(sizes), k)
