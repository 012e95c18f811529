"""The model wrapper that owns the input domain: raw inputs in, logits out, normalisation inside.

Attacks see a :class:`Classifier`, so eps is always measured in raw input space (pixels in [0, 1]) whatever
normalisation the network expects. :meth:`Classifier.attack_mode` puts the network in eval mode with parameter
gradients off and restores everything afterwards.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any, cast

import torch
from torch import nn

from advlab import devices, validation
from advlab.passes import PassCounter

log = logging.getLogger(__name__)

CHUNK_ACTIVATION_BYTES = 6 * 2**20
"""Eval-mode forwards of convolutional networks on CPU run in chunks whose largest activation (the largest output
of one layer, over the chunk's examples) holds about this many bytes. One batch of a hundred images or more spills
its activations out of the CPU caches and each image then costs up to 1.8x more without gradients and up to 1.4x
more with them. The chunk follows the network, not a fixed count of examples, because that is what the caches see:
measured on the Madry MNIST CNN (largest activation 98 KiB per image), the CIFAR CNN (225 KiB) and the CIFAR
PreAct ResNet-18 (256 KiB), at batch 100 and 500 with one and two threads (bench/forward_chunks.py, BENCHMARKS.md
"PGD speed"), chunks of 4-12 MiB run forward and input gradient in 0.71-0.98x the time of the whole batch and
gradient-free forwards in 0.56-0.85x, while the small Wong CNN (12 KiB per image), for which a chunk would have to
be several hundred images, loses 5-30% to chunks of 128 and is left whole. Score-based attacks such as Square spend
nearly all their time in gradient-free forwards, gradient attacks in forwards with gradients, whose backward pass
then runs chunk by chunk as well. Networks without convolutions (an MLP, bound by its matrix products, loses 4-8%
to the extra calls), train mode (batch norm statistics), other devices and torch running more than
:data:`CPU_CHUNK_MAX_THREADS` threads are left as they are.
"""

CHUNK_MIN_EXAMPLES = 32
"""The chunk the activations call for is raised to at least this many examples, however large the network's
activations (the batch is then cut into the nearest whole number of chunks, so a chunk holds at least two thirds of
this): every chunk costs a call of the module and, with several threads, a synchronisation of them, and chunks were
measured only down to 25 images."""

CPU_CHUNK_MAX_THREADS = 2
"""Forwards are chunked only while torch runs at most this many threads (``torch.get_num_threads()``): chunks were
measured to pay with one and two threads on two otherwise idle cores. On cores other processes share, two threads
wait for each other at every chunk, and chunks of 128 images were measured at 1.2-2.5x the time of the whole batch
(a machine running eight jobs on two cores): set ``torch.set_num_threads(1)`` there, which is faster anyway."""

CPU_CHANNELS_LAST = True
"""Inside :meth:`Classifier.attack_mode` on CPU, the module's 4-D weights (convolution kernels) are held in
channels-last memory format, and put back as they were afterwards (:attr:`Classifier.cpu_channels_last`). torch's
CPU convolutions then run in the layout they are fastest in: measured at batch 100 (bench/cpu_layout.py,
BENCHMARKS.md "Issue 18, eighth round"), a forward with input gradient takes 0.74-0.88x the time on the Madry MNIST
CNN, the CIFAR CNN, a batch-norm CNN and a depthwise-separable one, and a gradient-free forward 0.47-0.72x; the
small Wong CNN and the PreAct ResNet-18 are about even (0.96-0.99x with gradients, 0.99-1.03x without). The logits
and gradients are the same up to float rounding; the forwards whose results are reported (the clean prediction, the
success check, :func:`predict`) run in the module's own layout (:func:`advlab.devices.own_layout`), so they are
exactly what the module computes. Set it to ``False`` (or a classifier's ``cpu_channels_last``) to attack in the
module's own layout."""

PREDICT_BATCH = 512
"""Examples per forward pass of :func:`predict`."""


def probe_layers(module: nn.Module, example: torch.Tensor) -> tuple[int, int, int]:
    """What chunking needs to know of ``module``, from one gradient-free forward of ``example`` (one example).

    Returns:
        ``(largest, head, length)``: the bytes of the largest tensor a layer (a module without children) outputs, 0
        if none is seen or the forward fails; for a plain ``nn.Sequential`` (:func:`plain_sequential`), the index in
        its :func:`sequence_layers` of the first layer from which every layer's input is flat (``(1, features)``,
        what follows a ``Flatten``), 0 when there is none (or the module is not such a sequence); and the number of
        those layers (0 when the head is 0).
    """
    sizes: list[int] = []
    flat: list[bool] = []

    def record(_module: nn.Module, _inputs: Any, out: Any) -> None:
        if isinstance(out, torch.Tensor):
            sizes.append(out.numel() * out.element_size())

    def record_child(_module: nn.Module, _inputs: Any, out: Any) -> None:
        flat.append(isinstance(out, torch.Tensor) and out.dim() <= 2)

    layers = [m for m in module.modules() if next(m.children(), None) is None]
    children = sequence_layers(module)
    handles = []
    try:
        handles += [layer.register_forward_hook(record) for layer in layers]
        handles += [child.register_forward_hook(record_child) for child in children]
        with torch.no_grad():
            module(example)
    except Exception:  # a module that cannot run one example alone is run whole, never broken
        return 0, 0, 0
    finally:
        for handle in handles:
            handle.remove()
    largest = max(sizes, default=0)
    if len(flat) != len(children):  # a child ran twice or not at all: the outputs are not the sequence's, in order
        return largest, 0, 0
    spatial = [i for i, is_flat in enumerate(flat[:-1]) if not is_flat]  # children whose output is not flat
    head = spatial[-1] + 2 if spatial else 1  # the first child whose input, and every later one's, is flat
    return (largest, head, len(children)) if head < len(children) else (largest, 0, 0)


_GLOBAL_HOOKS = tuple(
    getattr(nn.modules.module, name, {})
    for name in (
        "_global_forward_hooks",
        "_global_forward_pre_hooks",
        "_global_backward_hooks",
        "_global_backward_pre_hooks",
    )
)
"""torch's registries of hooks on every module (``register_module_forward_hook``...): dicts it fills in place."""


def plain_sequential(module: nn.Module) -> bool:
    """Whether ``module`` is an ``nn.Sequential`` that calling its layers one by one reproduces exactly.

    That is: its ``forward`` is ``nn.Sequential``'s, and neither it nor the global module registry holds hooks that
    a call of the sequence itself would run (a hook on one of its layers runs either way).
    """
    if not isinstance(module, nn.Sequential) or type(module).forward is not nn.Sequential.forward:
        return False
    own = (module._forward_hooks, module._forward_pre_hooks, module._backward_hooks, module._backward_pre_hooks)
    return not any(own) and not any(_GLOBAL_HOOKS)


def sequence_layers(module: nn.Module) -> list[nn.Module]:
    """The layers a plain ``nn.Sequential`` (:func:`plain_sequential`) runs, in order, with every plain sequence
    inside it opened up in its place (``nn.Sequential(normalise, nn.Sequential(conv, ..., linear))`` gives
    ``[normalise, conv, ..., linear]``); ``[]`` for any other module. A sequence with hooks of its own or its own
    ``forward`` stays one layer, so that it runs as a call of its own."""
    if not plain_sequential(module):
        return []
    layers: list[nn.Module] = []
    for child in cast(nn.Sequential, module):
        layers += sequence_layers(child) or [child]
    return layers


def channels_last_strides(shape: Sequence[int]) -> tuple[int, ...]:
    """The strides of a 4-D tensor of ``shape`` laid out channels-last, ``(H*W*C, 1, W*C, C)``.

    A tensor with one channel (a kernel over a grey image) is contiguous in both formats, and torch then reads the
    format off its strides: a convolution with a ``(64, 1, 5, 5)`` kernel strided so passes channels-last outputs on
    to the next layer, one strided the usual way does not.
    """
    _, c, h, w = shape
    return (h * w * c, 1, w * c, c)


def run_layers(layers: Sequence[nn.Module], z: torch.Tensor) -> torch.Tensor:
    """``z`` through ``layers`` in order: a part of an ``nn.Sequential``, as its ``forward`` runs it."""
    for layer in layers:
        z = layer(z)
    return z


class Classifier(nn.Module):
    """A classifier on raw inputs: ``logits = module((x - mean) / std)``.

    Args:
        module: any ``torch.nn.Module`` mapping a batch to logits of shape ``(N, num_classes)``, or to one logit
            per example (shape ``(N, 1)`` or ``(N,)``: a binary classifier, sigmoid over that logit).
        mean: optional per-channel mean subtracted before ``module`` (sequence, one value per channel, or one
            value for all channels).
        std: optional per-channel standard deviation divided by before ``module``.
        bounds: the valid input range, used as the box of threat models built without bounds for this model. Either
            side may be infinite: ``(float("-inf"), float("inf"))`` for standardised tabular features, whose
            perturbations the norm ball alone then bounds.
        num_classes: number of output classes; inferred from the first forward pass when omitted (a single-logit
            model has two; ``num_classes=1`` is read as two).
        input_shape: per-example input shape ``(C, H, W)`` or ``(D,)``; checked by attacks when given.
        card: optional metadata (the model card saved with the weights).
        precision: ``"fp32"`` (the default: forwards exactly as ``module`` computes them), ``"bf16"`` or ``"fp16"``:
            the forward passes run under autocast to that dtype on the module's device (bf16 on CPUs and recent
            GPUs, fp16 on CUDA only) and return float32 logits; inputs, gradients and adversarial points stay in
            the attack's dtype. Predictions that are reported (:func:`predict`, the success check of every
            attack) are made at full precision all the same (:func:`advlab.devices.full_precision`).
        channels_last: convert the module's 4-D weights, and give it 4-D inputs, in channels-last memory format
            (faster convolutions on GPUs; the same logits up to float rounding).
        compile: run ``torch.compile(module)`` (compiled at the first call); where compilation cannot run, a
            one-line note is logged and the module runs uncompiled.

    A single-logit binary classifier (output ``(N, 1)`` or ``(N,)``, class 1 when the logit is positive) is
    presented as two classes with logits ``[0, z]``: softmax over them is ``[1 - sigmoid(z), sigmoid(z)]``, so
    cross-entropy on them is the binary cross-entropy, and every attack, loss and evaluation works unchanged.

    The module's mode is what ``train()``/``eval()`` set, except for a program from ``torch.export``
    (``ExportedProgram.module()``), which keeps the mode it was exported in (export it in eval mode).

    Calls in eval mode on CPU with at most two torch threads run a convolutional ``module`` on chunks of examples
    whose largest activation holds about :data:`CHUNK_ACTIVATION_BYTES` (the same logits and gradients, up to float
    rounding, at up to half the cost); ``module`` must therefore treat examples independently in eval mode, as
    classifiers do. The chunk is found once per input shape by a gradient-free forward of one example with forward
    hooks on the module's layers (a module that counts its calls sees that one).

    While :attr:`pass_counter` holds a :class:`~advlab.passes.PassCounter` (:func:`advlab.passes.count_passes`,
    :func:`advlab.passes.counting`), every call counts its examples as forward passes and every gradient that
    reaches its output its examples as backward passes (a chunked forward counts its examples once).

    Raises:
        TypeError: ``module`` is not a ``torch.nn.Module`` (or is already a ``Classifier``).
        ValueError: ``mean``/``std`` given alone, of different lengths, with a non-positive ``std``, or with a
            length other than one or the number of channels of ``input_shape``; an unknown ``precision``.

    Examples:
        >>> clf = Classifier(net, mean=[0.1307], std=[0.3081], num_classes=10, input_shape=(1, 28, 28))
        >>> with clf.attack_mode():
        ...     logits = clf(x)
        >>> fast = Classifier(net, precision="bf16", channels_last=True, compile=True)
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        module: nn.Module,
        *,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        bounds: tuple[float, float] = (0.0, 1.0),
        num_classes: int | None = None,
        input_shape: tuple[int, ...] | None = None,
        card: dict[str, Any] | None = None,
        precision: str = "fp32",
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(module, nn.Module):
            raise TypeError(f"module: expected a torch.nn.Module, got {type(module).__name__}")
        if isinstance(module, Classifier):
            raise TypeError("module: already a Classifier; pass it directly instead of wrapping it twice")
        self.module = module
        self.chunked = any(isinstance(m, nn.modules.conv._ConvNd) for m in module.modules())
        """Whether eval-mode CPU forwards may run in chunks (networks with convolutions): see :meth:`chunk_count`."""
        self._chunk_plan: dict[tuple[Any, ...], tuple[int, int, int]] = {}
        """Per example shape, dtype and autocast state: the examples per chunk (0: whole), where a sequence's flat
        head starts and how many :func:`sequence_layers` the sequence had then (:meth:`chunk_plan`)."""
        self.fixed_mode = has_fixed_mode(module)
        """Whether ``module`` keeps the mode it was built in (a ``torch.export`` program): see :meth:`train`."""
        self.bounds = validation.check_bounds("bounds", bounds)
        self.num_classes = 2 if num_classes == 1 else num_classes
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self.card: dict[str, Any] = dict(card or {})
        if (mean is None) != (std is None):
            raise ValueError("mean/std: give both or neither")
        self.has_normalization = mean is not None
        mean_t, std_t = torch.zeros(0), torch.zeros(0)
        if mean is not None and std is not None:
            mean_t, std_t = _normalization(mean, std, self.input_shape)
        self.register_buffer("mean", mean_t, persistent=False)
        self.register_buffer("std", std_t, persistent=False)
        self.precision = "fp32"
        self.channels_last = False
        self.compile_enabled = False
        self._compiled: nn.Module | None = None
        self.pass_counter: PassCounter | None = None
        """Counts the forward and backward passes while set (:mod:`advlab.passes`; ``None``: not counted)."""
        self.cpu_channels_last = CPU_CHANNELS_LAST
        """Whether :meth:`attack_mode` holds the module's 4-D weights in channels-last format on CPU (see
        :data:`CPU_CHANNELS_LAST`); turned off for good when a forward fails in that layout and succeeds without."""
        self._layout_swap: list[tuple[nn.Parameter, torch.Tensor]] = []
        """While :meth:`attack_mode` holds channels-last weights: each parameter changed, with its own tensor."""
        self.speed_up(precision=precision, channels_last=channels_last, compile=compile)

    # ------------------------------------------------------------------ speed
    def speed_up(self, *, precision: str = "fp32", channels_last: bool = False, compile: bool = False) -> Classifier:
        """Set the precision, memory format and compilation of the forward passes (see the class's Args).

        Args:
            precision: ``"fp32"``, ``"bf16"`` or ``"fp16"``.
            channels_last: channels-last weights and inputs (``False`` turns the weights back to contiguous).
            compile: run the module through ``torch.compile``.

        Returns:
            The classifier itself.

        Raises:
            ValueError: an unknown ``precision``.

        Examples:
            >>> clf.speed_up(precision="bf16", channels_last=True)
        """
        self.precision = devices.check_precision(precision)
        if bool(channels_last) != self.channels_last:
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            cast(Any, self.module).to(memory_format=fmt)  # Module.to takes memory_format; its stubs do not say
        self.channels_last = bool(channels_last)
        self.compile_enabled = bool(compile)
        self._compiled = None  # compiled again at the next call, for the module as it is now
        self._chunk_plan = {}  # the activations' dtype may have changed
        return self

    def speed(self) -> dict[str, Any]:
        """The speed settings, for records: ``{"precision", "channels_last", "cpu_channels_last", "compile"}``.

        ``cpu_channels_last`` is :attr:`cpu_channels_last` (attack mode holds a CPU network's kernels channels-last),
        ``False`` once the module has failed in that layout; ``compile`` is ``False`` once compilation has failed and
        the module runs uncompiled.
        """
        return {
            "precision": self.precision,
            "channels_last": self.channels_last,
            "cpu_channels_last": self.cpu_channels_last,
            "compile": self.compile_enabled,
        }

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()  # a copy (deepcopy, pickle) compiles its own module at its first call
        return {**state, "_compiled": None, "_layout_swap": []}  # a copy made in attack mode keeps the layout it has

    # ------------------------------------------------------------------ forward
    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the per-channel normalisation (identity when none was given).

        Raises:
            ValueError: ``mean``/``std`` have neither one value nor one per channel of ``x`` (axis 1).
        """
        if not self.has_normalization:
            return x
        channels = x.shape[1] if x.dim() >= 2 else 0
        if self.mean.numel() not in (1, channels):
            raise ValueError(
                f"mean/std: {self.mean.numel()} values, but the input has {channels} channel(s) "
                f"(x of shape {tuple(x.shape)}, channels on axis 1); give one value per channel, or one for all"
            )
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return (x - self.mean.view(shape)) / self.std.view(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.normalize(x)
        if self.channels_last and z.dim() == 4:
            z = z.contiguous(memory_format=torch.channels_last)
        with devices.autocast(z.device.type, self.precision):
            out = self.run_module(z)
        if self.precision != "fp32" and out.is_floating_point():
            out = out.float()  # logits (and the losses on them) in float32 whatever the autocast dtype
        if is_single_logit(out):
            out = two_class_logits(out)
        counter = self.pass_counter
        if counter is not None:  # examples, not calls: a chunked forward counts once, whole
            counter.count(x.shape[0], out)
        return out

    def run_module(self, z: torch.Tensor) -> torch.Tensor:
        """The module on normalised inputs, and back in its own layout if it fails in the channels-last one."""
        if not self._layout_swap:
            return self.run_module_as_is(z)
        if devices.is_own_layout():  # a forward whose result is reported: exactly what the module computes
            with self.layout_given_back():
                return self.run_module_as_is(z)
        try:
            return self.run_module_as_is(z)
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception:
            self.restore_layout()  # a module that reshapes its own kernels with view(), say: its layout, for good
            out = self.run_module_as_is(z)
            self.cpu_channels_last = False
            log.info("the model failed with channels-last weights and runs in its own memory format from now on")
            return out

    def run_module_as_is(self, z: torch.Tensor) -> torch.Tensor:
        """The module (compiled when asked) on normalised inputs; in chunks for eval-mode CPU convolutions."""
        module = self.compiled_module() if self.compile_enabled else self.module
        try:
            return self.call_chunked(module, z)
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as exc:
            if module is self.module:
                raise
            devices.note_compile_failure(exc)  # the compiler failed: run (and from now on stay) uncompiled
            self.compile_enabled, self._compiled = False, None
            return self.call_chunked(self.module, z)

    def call_chunked(self, module: nn.Module, z: torch.Tensor) -> torch.Tensor:
        """``module(z)``, in :meth:`chunk_count` chunks of nearly equal size.

        In a plain ``nn.Sequential`` (:func:`plain_sequential`, with the plain sequences inside it opened up:
        :func:`sequence_layers`) the chunks stop where the layers' inputs become flat (after a ``Flatten``): those
        layers are matrix products whose weights each chunk would read again, and they run once on the whole batch (a
        forward, with or without input gradient, 6-16% faster than with the head chunked on the Madry CNN, 2-5% on the
        CIFAR CNN; BENCHMARKS.md "PGD speed"). A user's model behind a normalisation layer,
        ``nn.Sequential(normalise, model)``, is such a sequence too.
        """
        chunks, head, length = self.chunk_plan(z)
        if chunks < 2:
            return module(z)
        layers = sequence_layers(module) if head and module is self.module else []
        if not layers or len(layers) != length:  # not a plain sequence, or one whose layers changed since the probe
            return torch.cat([module(c) for c in z.tensor_split(chunks)])
        out = torch.cat([run_layers(layers[:head], c) for c in z.tensor_split(chunks)])
        return run_layers(layers[head:], out)

    def chunk_count(self, z: torch.Tensor) -> int:
        """How many chunks an eval-mode CPU forward of ``z`` runs in (1: the whole batch at once).

        A convolutional network in eval mode on CPU, with torch on at most :data:`CPU_CHUNK_MAX_THREADS` threads,
        runs ``round(N / k)`` chunks, with ``k`` the examples whose largest activation holds
        :data:`CHUNK_ACTIVATION_BYTES` (at least :data:`CHUNK_MIN_EXAMPLES`); everything else runs whole.
        """
        return self.chunk_plan(z)[0]

    def chunk_plan(self, z: torch.Tensor) -> tuple[int, int, int]:
        """How a forward of ``z`` runs: ``(chunks, head, length)``.

        ``chunks`` is :meth:`chunk_count`'s answer; ``head`` the index in :func:`sequence_layers` of a plain
        sequence's first layer that runs on the whole batch (:func:`probe_layers`; 0: none), and ``length`` the number
        of those layers when the module was probed (the head runs whole only while the sequence still has as many: a
        hook put on an inner sequence afterwards makes it one call again). The module is probed once per example
        shape, dtype and autocast state.
        """
        if not (
            self.chunked
            and z.device.type == "cpu"
            and not self.training
            and 2 * z.shape[0] >= 3 * CHUNK_MIN_EXAMPLES  # fewer round to one chunk whatever the network
            and torch.get_num_threads() <= CPU_CHUNK_MAX_THREADS
        ):
            return 1, 0, 0
        key = (tuple(z.shape[1:]), z.dtype, torch.is_autocast_enabled("cpu"))
        if key not in self._chunk_plan:
            largest, head, length = probe_layers(self.module, z[:1])
            per_chunk = max(CHUNK_MIN_EXAMPLES, CHUNK_ACTIVATION_BYTES // largest) if largest else 0
            self._chunk_plan[key] = (per_chunk, head, length)
        per_chunk, head, length = self._chunk_plan[key]
        return (max(1, round(z.shape[0] / per_chunk)), head, length) if per_chunk else (1, 0, 0)

    def compiled_module(self) -> nn.Module:
        """``torch.compile(module)``, made at the first call; the module itself where compilation cannot run."""
        if self._compiled is None:
            compiled = devices.compile_module(self.module)
            if compiled is None:
                self.compile_enabled = False
                return self.module
            object.__setattr__(self, "_compiled", compiled)  # not a sub-module: no second copy in state_dict()
        return cast(nn.Module, self._compiled)

    def train(self, mode: bool = True) -> Classifier:
        """Set train (or eval) mode; a ``torch.export`` program keeps the mode it was exported in.

        Args:
            mode: ``True`` for train mode, ``False`` for eval mode.

        Returns:
            The classifier itself.
        """
        self.training = mode
        set_mode(self.module, mode)
        return self

    def predict(self, x: torch.Tensor, batch_size: int = PREDICT_BATCH) -> torch.Tensor:
        """Predicted labels for ``x``, batched, without gradients (see :func:`predict`)."""
        return predict(self, x, batch_size=batch_size)

    @property
    def device(self) -> torch.device:
        return device_of(self.module)

    # ------------------------------------------------------------------ attack mode
    @contextlib.contextmanager
    def attack_mode(self, *, warn_train_mode: bool = True) -> Iterator[Classifier]:
        """Eval mode and parameter gradients off for the duration; previous state restored afterwards.

        Warns when the module was in train mode (batch norm and dropout behave differently in train mode,
        which users rarely mean when they attack); trainers crafting examples mid-training pass
        ``warn_train_mode=False``.
        """
        modes = {m: m.training for m in self.modules()}
        # A parameter that is not a leaf (a deep copy of a TorchScript module has such) cannot change its flag.
        grads = {p: p.requires_grad for p in self.parameters() if p.is_leaf}
        if self.module.training and warn_train_mode and not self.fixed_mode:
            validation.warn(
                "model is in train mode; attacking it in eval mode (dropout off, batch-norm running "
                "statistics). Call model.eval() first to silence this warning.",
            )
        try:
            self.eval()
            for p in grads:
                p.requires_grad_(False)
            with self.cpu_layout():
                yield self
        finally:
            for m, mode in modes.items():
                m.training = mode
            for p, flag in grads.items():
                p.requires_grad_(flag)

    @contextlib.contextmanager
    def cpu_layout(self) -> Iterator[None]:
        """The module's 4-D weights in channels-last format for the block, on CPU; the same tensors back afterwards.

        Only while :attr:`cpu_channels_last` is set and the module is on the CPU; kernels strided channels-last
        already (``channels_last=True`` makes them so) are left as they are, and a block inside another one leaves
        the layout to the outer block.
        """
        if self._layout_swap or not self.cpu_channels_last or self.device.type != "cpu":
            yield
            return
        kernels = [p for p in self.module.parameters() if p.dim() == 4 and p.is_floating_point()]
        try:
            for p in kernels:
                if p.stride() != channels_last_strides(p.shape):  # a (64, 1, 5, 5) kernel too: the layout it passes on
                    self._layout_swap.append((p, p.data))
                    p.data = torch.empty_like(p.data, memory_format=torch.channels_last).copy_(p.data)
            yield
        finally:
            self.restore_layout()

    @contextlib.contextmanager
    def layout_given_back(self) -> Iterator[None]:
        """Inside :meth:`cpu_layout`, each parameter's own tensor for the block, then the channels-last one again."""
        held = [p.data for p, _ in self._layout_swap]
        for p, data in self._layout_swap:
            p.data = data
        try:
            yield
        finally:
            for (p, _), data in zip(self._layout_swap, held):
                p.data = data

    def restore_layout(self) -> None:
        """Give back to each parameter :meth:`cpu_layout` changed its own tensor."""
        for p, data in self._layout_swap:
            p.data = data
        self._layout_swap = []

    def extra_repr(self) -> str:
        norm = f"mean={self.mean.tolist()}, std={self.std.tolist()}, " if self.has_normalization else ""
        return f"{norm}bounds={self.bounds}, num_classes={self.num_classes}, input_shape={self.input_shape}"


@torch.no_grad()
def predict(
    model: nn.Module, x: torch.Tensor, *, batch_size: int = PREDICT_BATCH, logits: bool = False
) -> torch.Tensor:
    """The model's predicted labels (or its logits) on ``x``, in batches, without gradients.

    Each batch is moved to the model's device; the result is on the device of ``x``. A batch that runs out of CUDA
    memory is halved and run again (:class:`advlab.devices.Batches`). The model's mode is left as
    it is (call it inside :meth:`Classifier.attack_mode` or after ``model.eval()``). Predictions are what reports
    count, so they are made at full precision whatever the classifier's ``precision``
    (:func:`advlab.devices.full_precision`).

    Args:
        model: the model (a :class:`Classifier` or any module returning logits).
        x: the inputs, shape ``(N, ...)``.
        batch_size: examples per forward pass.
        logits: return the logits instead of the labels.

    Examples:
        >>> labels = predict(model, x_test, batch_size=1000)
        >>> accuracy = (labels == y_test).float().mean()
    """
    device = device_of(model)

    def one_batch(start: int, stop: int) -> torch.Tensor:
        z = model(devices.to_device(x[start:stop], device))
        return (z if logits else z.argmax(1)).to(x.device)

    with devices.full_precision():
        out = devices.Batches(batch_size).run(one_batch, x.shape[0])  # halved after an out-of-memory error
    if not out:
        return torch.empty((0,), dtype=torch.int64, device=x.device)
    return torch.cat(out)


def device_of(model: nn.Module) -> torch.device:
    """The device of the first parameter (or buffer) of ``model``; the CPU for a module with neither."""
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def as_classifier(model: nn.Module | Classifier, bounds: tuple[float, float] | None = None) -> Classifier:
    """Return ``model`` if it is a :class:`Classifier`, otherwise wrap it (no normalisation) with ``bounds``.

    ``bounds=None`` gives a plain module the box ``(0, 1)`` (:data:`advlab.threat.DEFAULT_BOUNDS`).
    """
    if isinstance(model, Classifier):
        return model
    if not isinstance(model, nn.Module):
        if type(model).__module__.split(".")[0] == "sklearn":
            raise TypeError(
                f"model: expected a torch.nn.Module or advlab.Classifier, got the scikit-learn estimator "
                f"{type(model).__name__}. Convert it with advlab.nonneural.from_sklearn(estimator, input_shape=...) "
                "(exact and differentiable for linear models, SVMs and MLPs; trees, forests and kNN have their own "
                "attacks in advlab.nonneural), or query it as a black box with advlab.oracles.SklearnOracle."
            )
        raise TypeError(
            f"model: expected a torch.nn.Module or advlab.Classifier, got {type(model).__name__}. "
            "For scikit-learn estimators use advlab.nonneural.from_sklearn; for remote models or any function "
            "that only answers queries, the oracles in advlab.oracles."
        )
    return Classifier(model, bounds=bounds or (0.0, 1.0))


def parameter_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the first floating parameter of ``model`` (the inputs it expects); float32 when it has none.

    Buffers are not asked: a wrapper that keeps float64 constants (``advlab.nonneural.from_sklearn``) still takes
    float32 inputs.
    """
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def is_single_logit(out: torch.Tensor) -> bool:
    """Whether a model's output is one logit per example: shape ``(N, 1)`` or ``(N,)``."""
    return out.dim() == 1 or (out.dim() == 2 and out.shape[1] == 1)


def two_class_logits(z: torch.Tensor) -> torch.Tensor:
    """One logit per example (``(N, 1)`` or ``(N,)``) as two-class logits ``[0, z]`` of shape ``(N, 2)``.

    Softmax over ``[0, z]`` is ``[1 - sigmoid(z), sigmoid(z)]``: the same binary classifier, in the form attacks
    and losses expect.

    Examples:
        >>> two_class_logits(torch.tensor([[2.0], [-1.0]]))
        tensor([[ 0.,  2.],
                [ 0., -1.]])
    """
    z = z.reshape(-1, 1)
    return torch.cat([torch.zeros_like(z), z], dim=1)


def has_fixed_mode(module: nn.Module) -> bool:
    """Whether ``module`` refuses ``train()``/``eval()`` and keeps the mode it was traced in.

    ``torch.export``'s ``ExportedProgram.module()`` replaces both methods on the instance by ones that raise
    ``NotImplementedError``; its graph already holds the behaviour of the mode it was exported in (batch norm and
    dropout are operations in the graph, not modules that read a ``training`` flag). A deep copy of it keeps the
    graph but loses the replaced methods; both carry the input and output specs of an exported program.
    """
    return isinstance(module, torch.fx.GraphModule) and ("train" in vars(module) or hasattr(module, "_in_spec"))


def set_mode(module: nn.Module, mode: bool) -> None:
    """``module.train(mode)``, leaving alone the ``torch.export`` programs in it (see :func:`has_fixed_mode`).

    Args:
        module: the module.
        mode: ``True`` for train mode, ``False`` for eval mode.
    """
    if has_fixed_mode(module):  # ExportedProgram.module() refuses train()/eval(): its graph was traced in one mode
        return
    if not any(has_fixed_mode(m) for m in module.modules()):
        module.train(mode)
        return
    module.training = mode  # a wrapper around an exported program (an EOT average, an ensemble): one level down
    for child in module.children():
        set_mode(child, mode)


def _normalization(
    mean: Sequence[float], std: Sequence[float], input_shape: tuple[int, ...] | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``mean`` and ``std`` as float32 vectors, checked against each other and the channels of ``input_shape``."""
    mean_t = torch.as_tensor(mean, dtype=torch.float32).flatten()
    std_t = torch.as_tensor(std, dtype=torch.float32).flatten()
    if mean_t.shape != std_t.shape:
        raise ValueError(f"mean/std: expected the same length, got {mean_t.numel()} and {std_t.numel()}")
    if bool((std_t <= 0).any()):
        raise ValueError(f"std: expected positive values, got {std_t.tolist()}")
    if input_shape is not None and mean_t.numel() not in (1, input_shape[0]):
        raise ValueError(
            f"mean/std: {mean_t.numel()} values, but input_shape {input_shape} has {input_shape[0]} channel(s) "
            "(the first axis); give one value per channel, or one for all"
        )
    return mean_t, std_t


def check_suspicious_outputs(logits: torch.Tensor) -> None:
    """Warn when the outputs look like probabilities rather than logits (rows summing to one)."""
    if logits.shape[1] < 2:
        return
    with torch.no_grad():
        sums = logits.detach().sum(1)
        nonneg = bool((logits.detach() >= 0).all())
        if nonneg and torch.allclose(sums, torch.ones_like(sums), atol=1e-4):
            validation.warn(
                "model outputs are non-negative and sum to one: they look like probabilities. Attacks and "
                "losses expect logits; remove the final softmax (cross-entropy on probabilities gives "
                "vanishing gradients and a falsely robust model).",
            )
