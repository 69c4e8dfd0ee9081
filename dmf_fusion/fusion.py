"""Fusion blocks for RGB + optical-flow snippet features.

From "Temporal RPN learning for weakly-supervised temporal action localization" (ACML 2023):

* :class:`DualModalityFusion` (DMF): RGB generates a channel attention that enhances Flow, Flow
  generates a temporal attention that enhances RGB; ``alpha`` sets the strength. Two forms, two
  classes: :class:`DMFGate` and :class:`DMFDot`; ``DualModalityFusion(..., attention=...)`` builds
  either.
* :class:`ConcatFusion`: ``C_con(cat(rgb, flow))``, a 1x1 convolution over the joint channels.
* :class:`MutualFusion`: ``h_r(C_r(rgb)) + h_f(C_f(flow))``, a shared space plus per-modality projectors
  (train it with :class:`~dmf_fusion.MutualLoss` on ``C_r(rgb)`` and ``C_f(flow)``).

The math lives in :mod:`dmf_fusion.functional`; these modules own the parameters, validate input,
pick the fused or the plain path per instance (``module.fused``) and call one public op per block.

Axis legend: b batch, t time (snippets), c channels.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import functional as DF
from ._checks import (
    check_choice,
    check_features,
    check_mask,
    check_non_negative,
    check_pair,
    check_positive,
    check_positive_int,
)

__all__ = [
    "ConcatFusion",
    "DMFAttentionOutput",
    "DMFDot",
    "DMFGate",
    "DMFOutput",
    "DualModalityFusion",
    "MutualFusion",
    "MutualOutput",
]


class DMFOutput(NamedTuple):
    """Enhanced features: ``rgb = rgb + alpha * enhance_rgb``, ``flow = flow + alpha * enhance_flow``."""

    rgb: Tensor
    flow: Tensor


class DMFAttentionOutput(NamedTuple):
    """Enhanced features plus the two attention maps.

    ``channel_attention`` is ``(b, c_flow)`` for ``gate`` and ``(b, c, c)`` for ``dot``;
    ``temporal_attention`` is ``(b, t)`` for ``gate`` and ``(b, t, s)`` for ``dot``.
    """

    rgb: Tensor
    flow: Tensor
    channel_attention: Tensor
    temporal_attention: Tensor


class MutualOutput(NamedTuple):
    """``fused = h_r(rgb_embed) + h_f(flow_embed)``, ``rgb_embed = C_r(rgb)``, ``flow_embed = C_f(flow)``."""

    fused: Tensor
    rgb_embed: Tensor
    flow_embed: Tensor


def _check_inputs(rgb: object, flow: object, mask: object, dim_rgb: int, dim_flow: int) -> Optional[Tensor]:
    rgb = check_features("rgb", rgb, dim_rgb)
    flow = check_features("flow", flow, dim_flow)
    check_pair(rgb, flow)
    return check_mask(mask, rgb.shape[0], rgb.shape[1])


# the options that only one form has (both share dim_rgb, dim_flow, alpha, fused, device, dtype)
_OPTIONS = {"gate": ("reduction", "kernel_size"), "dot": ("attn_dim", "temperature")}


class _Constructor(type(nn.Module)):  # type: ignore[misc]
    """Lets ``DualModalityFusion(..., attention=...)`` build the class of the chosen form, and refuses
    an option of the form not chosen (it would be silently unused).

    Type checkers are not shown the ``__call__`` below, so they read each class's ``__init__``; for
    ``inspect.signature`` and ``help()``, :attr:`__signature__` gives the same (a property of the
    metaclass, so it answers for the classes only, never for an instance, whose signature is its
    ``forward``'s)."""

    @property
    def __signature__(cls) -> inspect.Signature:
        signature = inspect.signature(cls.__init__)
        return signature.replace(parameters=list(signature.parameters.values())[1:])  # no ``self``

    if not TYPE_CHECKING:

        def __call__(cls, *args: Any, **kwargs: Any) -> Any:
            if cls is not DualModalityFusion:
                return super().__call__(*args, **kwargs)
            attention = check_choice("attention", kwargs.pop("attention", "gate"), ("gate", "dot"))
            forms = {"gate": DMFGate, "dot": DMFDot}
            other = "dot" if attention == "gate" else "gate"
            for name in _OPTIONS[other]:
                if name in kwargs:
                    raise TypeError(
                        f"{name}={kwargs[name]!r} is an option of attention={other!r} ({forms[other].__name__}), "
                        f"not of attention={attention!r} ({forms[attention].__name__}), which takes "
                        f"{' and '.join(_OPTIONS[attention])}: drop {name} or choose attention={other!r}"
                    )
            return forms[attention](*args, **kwargs)


class DualModalityFusion(nn.Module, metaclass=_Constructor):
    """Dual-Modality Fusion: RGB-generated channel attention enhances Flow, Flow-generated temporal
    attention enhances RGB.

    ``rgb_plus = rgb + alpha * enhance_rgb`` and ``flow_plus = flow + alpha * enhance_flow``, so
    ``alpha = 0`` returns every valid snippet unchanged, bit for bit.

    ``DualModalityFusion(dim_rgb, dim_flow, attention=..., **options)`` builds one of the two forms,
    both subclasses of this class:

    * ``attention="gate"`` (default): :class:`DMFGate`, a squeeze-excitation channel gate and a
      convolutional temporal gate (options ``reduction``, ``kernel_size``);
    * ``attention="dot"``: :class:`DMFDot`, Gram-matrix channel attention and scaled-dot-product
      temporal attention (options ``attn_dim``, ``temperature``).

    An option of the form not chosen raises ``TypeError`` naming it and the form (it would have no
    effect). Common to both: the arguments below and the factory kwargs ``device`` and ``dtype`` (as in
    ``torch.nn``).

    Args:
        dim_rgb: RGB channels.
        dim_flow: Flow channels.
        alpha: enhancement strength, ``>= 0``.
        attention: the form, ``"gate"`` or ``"dot"``.
        fused: fast path (True) or the plain reference path (False); an attribute, change it any time.
        **options: the chosen form's own options and the factory kwargs.

    Shape:
        rgb: (b, t, dim_rgb); flow: (b, t, dim_flow); mask: (b, t) bool, True = valid.
        Returns ``DMFOutput(rgb, flow)`` of the input shapes and dtype, zero at padded snippets.

    Example:
        >>> dmf = DualModalityFusion(32, 32, alpha=0.5)
        >>> type(dmf).__name__, isinstance(dmf, DualModalityFusion)
        ('DMFGate', True)
        >>> rgb, flow = torch.randn(2, 10, 32), torch.randn(2, 10, 32)
        >>> mask = torch.arange(10) < torch.tensor([[10], [6]])
        >>> out = dmf(rgb, flow, mask)
        >>> out.rgb.shape, out.flow.shape
        (torch.Size([2, 10, 32]), torch.Size([2, 10, 32]))
        >>> bool(out.rgb[1, 6:].eq(0).all())
        True
        >>> DualModalityFusion(32, 32, alpha=0.0)(rgb, flow).rgb.equal(rgb)
        True
    """

    attention: str

    def __init__(
        self,
        dim_rgb: int,
        dim_flow: int,
        *,
        alpha: float = 0.5,
        attention: Literal["gate", "dot"] = "gate",
        fused: bool = True,
        **options: Any,
    ) -> None:
        # ``DualModalityFusion(...)`` never runs this directly: the metaclass builds the chosen form,
        # whose ``__init__`` passes its own ``attention`` and has taken its ``options``.
        if options:
            raise TypeError(f"unexpected options for attention={attention!r}: {', '.join(options)}")
        super().__init__()
        self.dim_rgb = check_positive_int("dim_rgb", dim_rgb)
        self.dim_flow = check_positive_int("dim_flow", dim_flow)
        self.alpha = check_non_negative("alpha", alpha)
        self.fused = fused

    def reset_parameters(self) -> None:
        for module in self.children():
            module.reset_parameters()

    def forward(
        self, rgb: Tensor, flow: Tensor, mask: Optional[Tensor] = None, *, return_attention: bool = False
    ) -> Union[DMFOutput, DMFAttentionOutput]:
        """Enhance both modalities.

        Args:
            rgb: RGB snippet features.
            flow: Flow snippet features.
            mask: True = valid snippet; None means all valid.
            return_attention: also return the two attention maps (for ``dot`` this builds the
                ``(b, t, s)`` temporal map).

        Shape:
            rgb: (b, t, dim_rgb); flow: (b, t, dim_flow); mask: (b, t).
        """
        mask = _check_inputs(rgb, flow, mask, self.dim_rgb, self.dim_flow)
        out = self._fuse(rgb, flow, mask, return_attention)
        return DMFAttentionOutput(*out) if return_attention else DMFOutput(*out)

    def _fuse(self, rgb: Tensor, flow: Tensor, mask: Optional[Tensor], return_attention: bool) -> tuple[Tensor, ...]:
        raise NotImplementedError  # pragma: no cover


class DMFGate(DualModalityFusion):
    """Dual-Modality Fusion, gate form (``DualModalityFusion(..., attention="gate")``).

    * ``a_c = sigmoid(MLP(masked_mean_t(rgb)))``, ``(b, c_flow)``, squeeze-excitation style with
      hidden width ``dim_rgb // reduction``; ``flow_plus = flow + alpha * a_c * flow``;
    * ``a_t = sigmoid(conv(relu(conv(flow))))``, ``(b, t)``, two masked temporal convolutions of
      ``kernel_size`` with hidden width ``dim_flow // reduction``; ``rgb_plus = rgb + alpha * a_t * rgb``.

    The math is :func:`dmf_fusion.functional.dmf_gate`.

    Args:
        dim_rgb: RGB channels.
        dim_flow: Flow channels.
        alpha: enhancement strength, ``>= 0``.
        reduction: hidden-width divisor of the channel MLP and the temporal convolutions.
        kernel_size: odd temporal kernel of the convolutions.
        fused: fast path (True) or the plain reference path (False); an attribute, change it any time.
        device: parameter device, a factory kwarg as in ``torch.nn``.
        dtype: parameter dtype, a factory kwarg as in ``torch.nn``.

    Shape:
        rgb: (b, t, dim_rgb); flow: (b, t, dim_flow); mask: (b, t) bool, True = valid. Returns
        ``DMFOutput(rgb, flow)``; with ``return_attention=True`` ``DMFAttentionOutput`` with
        ``channel_attention (b, dim_flow)`` and ``temporal_attention (b, t)``.

    Example:
        >>> dmf = DMFGate(32, 16, alpha=0.5, reduction=4)
        >>> out = dmf(torch.randn(2, 10, 32), torch.randn(2, 10, 16), return_attention=True)
        >>> out.channel_attention.shape, out.temporal_attention.shape
        (torch.Size([2, 16]), torch.Size([2, 10]))
    """

    attention = "gate"

    def __init__(
        self,
        dim_rgb: int,
        dim_flow: int,
        *,
        alpha: float = 0.5,
        reduction: int = 4,
        kernel_size: int = 3,
        fused: bool = True,
        device: Optional[Union[torch.device, str]] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__(dim_rgb, dim_flow, alpha=alpha, attention=self.attention, fused=fused)
        factory = {"device": device, "dtype": dtype}
        self.reduction = check_positive_int("reduction", reduction)
        self.kernel_size = check_positive_int("kernel_size", kernel_size)
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd so the output keeps its length, got {kernel_size}")
        hidden_rgb = max(dim_rgb // reduction, 1)
        hidden_flow = max(dim_flow // reduction, 1)
        self.channel_fc1 = nn.Linear(dim_rgb, hidden_rgb, **factory)
        self.channel_fc2 = nn.Linear(hidden_rgb, dim_flow, **factory)
        pad = kernel_size // 2
        self.temporal_conv1 = nn.Conv1d(dim_flow, hidden_flow, kernel_size, padding=pad, **factory)
        self.temporal_conv2 = nn.Conv1d(hidden_flow, 1, kernel_size, padding=pad, **factory)

    def extra_repr(self) -> str:
        return (
            f"{self.dim_rgb}, {self.dim_flow}, alpha={self.alpha}, reduction={self.reduction}, "
            f"kernel_size={self.kernel_size}, fused={self.fused}"
        )

    def _fuse(self, rgb: Tensor, flow: Tensor, mask: Optional[Tensor], return_attention: bool) -> tuple[Tensor, ...]:
        fc1, fc2 = self.channel_fc1, self.channel_fc2
        convs = (self.temporal_conv1, self.temporal_conv2)
        return DF.dmf_gate(
            rgb,
            flow,
            mask,
            weight1=fc1.weight,
            bias1=fc1.bias,
            weight2=fc2.weight,
            bias2=fc2.bias,
            conv_weights=[c.weight for c in convs],
            conv_biases=[c.bias for c in convs],
            alpha=self.alpha,
            fused=self.fused,
            return_attention=return_attention,
        )


class DMFDot(DualModalityFusion):
    """Dual-Modality Fusion, dot-product form (``DualModalityFusion(..., attention="dot")``).

    * ``A_c = softmax_e(<rgb_c, rgb_e>_t / n_valid / temperature)``, ``(b, c, c)``;
      ``flow_plus = flow + alpha * flow @ A_c.T`` (RGB is first projected to ``dim_flow`` when the
      widths differ);
    * ``A_t = softmax_s(q_t . k_s / sqrt(attn_dim))`` over valid ``s``, ``q``/``k`` linear projections
      of flow; ``rgb_plus = rgb + alpha * A_t @ rgb``. The fused path never builds the ``(t, s)`` matrix.

    The math is :func:`dmf_fusion.functional.dmf_dot`.

    Args:
        dim_rgb: RGB channels.
        dim_flow: Flow channels.
        alpha: enhancement strength, ``>= 0``.
        attn_dim: query/key width ``d`` of the temporal attention.
        temperature: softmax temperature of the channel attention.
        fused: fast path (True) or the plain reference path (False); an attribute, change it any time.
        device: parameter device, a factory kwarg as in ``torch.nn``.
        dtype: parameter dtype, a factory kwarg as in ``torch.nn``.

    Shape:
        rgb: (b, t, dim_rgb); flow: (b, t, dim_flow); mask: (b, t) bool, True = valid. Returns
        ``DMFOutput(rgb, flow)``; with ``return_attention=True`` ``DMFAttentionOutput`` with
        ``channel_attention (b, dim_flow, dim_flow)`` and ``temporal_attention (b, t, s)``.

    Example:
        >>> dmf = DMFDot(32, 16, alpha=0.5, attn_dim=8)
        >>> out = dmf(torch.randn(2, 10, 32), torch.randn(2, 10, 16), return_attention=True)
        >>> out.channel_attention.shape, out.temporal_attention.shape
        (torch.Size([2, 16, 16]), torch.Size([2, 10, 10]))
    """

    attention = "dot"

    def __init__(
        self,
        dim_rgb: int,
        dim_flow: int,
        *,
        alpha: float = 0.5,
        attn_dim: int = 64,
        temperature: float = 1.0,
        fused: bool = True,
        device: Optional[Union[torch.device, str]] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__(dim_rgb, dim_flow, alpha=alpha, attention=self.attention, fused=fused)
        factory = {"device": device, "dtype": dtype}
        self.attn_dim = check_positive_int("attn_dim", attn_dim)
        self.temperature = check_positive("temperature", temperature)
        self.rgb_to_flow = nn.Linear(dim_rgb, dim_flow, bias=False, **factory) if dim_rgb != dim_flow else None
        self.to_q = nn.Linear(dim_flow, attn_dim, bias=False, **factory)
        self.to_k = nn.Linear(dim_flow, attn_dim, bias=False, **factory)

    def extra_repr(self) -> str:
        return (
            f"{self.dim_rgb}, {self.dim_flow}, alpha={self.alpha}, attn_dim={self.attn_dim}, "
            f"temperature={self.temperature}, fused={self.fused}"
        )

    def _fuse(self, rgb: Tensor, flow: Tensor, mask: Optional[Tensor], return_attention: bool) -> tuple[Tensor, ...]:
        return DF.dmf_dot(
            rgb,
            flow,
            mask,
            weight_q=self.to_q.weight,
            weight_k=self.to_k.weight,
            weight_proj=None if self.rgb_to_flow is None else self.rgb_to_flow.weight,
            alpha=self.alpha,
            temperature=self.temperature,
            fused=self.fused,
            return_attention=return_attention,
        )


class ConcatFusion(nn.Module):
    """Concat fusion ``C_con(cat(rgb, flow))``: a 1x1 convolution (channel-wise linear map) over the
    concatenated channels.

    The fused path never builds the concatenation: the weight is split by modality and two GEMMs
    accumulate into the output (``rgb @ W_r.T + flow @ W_f.T + b``).

    Args:
        dim_rgb: RGB channels.
        dim_flow: Flow channels.
        dim_out: output channels; default ``dim_rgb + dim_flow``.
        bias: learn an additive bias.
        fused: split-weight path (True) or the plain concatenate-then-project path (False).
        device: parameter device, a factory kwarg as in ``torch.nn``.
        dtype: parameter dtype, a factory kwarg as in ``torch.nn``.

    Shape:
        rgb: (b, t, dim_rgb); flow: (b, t, dim_flow); mask: (b, t); returns (b, t, dim_out), zero at
        padded snippets.

    Example:
        >>> concat = ConcatFusion(32, 16, 24)
        >>> concat(torch.randn(2, 10, 32), torch.randn(2, 10, 16)).shape
        torch.Size([2, 10, 24])
    """

    def __init__(
        self,
        dim_rgb: int,
        dim_flow: int,
        dim_out: Optional[int] = None,
        *,
        bias: bool = True,
        fused: bool = True,
        device: Optional[Union[torch.device, str]] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        self.dim_rgb = check_positive_int("dim_rgb", dim_rgb)
        self.dim_flow = check_positive_int("dim_flow", dim_flow)
        self.dim_out = dim_rgb + dim_flow if dim_out is None else check_positive_int("dim_out", dim_out)
        self.fused = fused
        self.proj = nn.Linear(dim_rgb + dim_flow, self.dim_out, bias=bias, device=device, dtype=dtype)

    def reset_parameters(self) -> None:
        self.proj.reset_parameters()

    def extra_repr(self) -> str:
        return f"{self.dim_rgb}, {self.dim_flow}, dim_out={self.dim_out}, fused={self.fused}"

    def forward(self, rgb: Tensor, flow: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        mask = _check_inputs(rgb, flow, mask, self.dim_rgb, self.dim_flow)
        rgb, flow = DF.zero_padding(rgb, mask), DF.zero_padding(flow, mask)
        out = DF.concat_linear(rgb, flow, self.proj.weight, self.proj.bias, fused=self.fused)
        return DF.zero_padding(out, mask)


class MutualFusion(nn.Module):
    """Mutual fusion ``h_r(C_r(rgb)) + h_f(C_f(flow))``.

    ``C_r``/``C_f`` (linear + ReLU) map each modality into a shared ``dim``-wide space, where
    :class:`~dmf_fusion.MutualLoss` pulls them together; the projectors ``h_r``/``h_f`` (linear) keep the
    fused feature from collapsing onto one modality. The two projectors run as one split-weight
    GEMM pair on the fused path (see :func:`~dmf_fusion.functional.concat_linear`).

    Args:
        dim_rgb: RGB channels.
        dim_flow: Flow channels.
        dim: width of the shared space and of the output.
        dropout: dropout on the embeddings before the projectors (training only).
        fused: fast path (True) or plain path (False).
        device: parameter device, a factory kwarg as in ``torch.nn``.
        dtype: parameter dtype, a factory kwarg as in ``torch.nn``.

    Shape:
        rgb: (b, t, dim_rgb); flow: (b, t, dim_flow); mask: (b, t). Returns
        ``MutualOutput(fused, rgb_embed, flow_embed)``, each (b, t, dim), zero at padded snippets.

    Example:
        >>> mutual = MutualFusion(32, 16, 8)
        >>> fused, rgb_embed, flow_embed = mutual(torch.randn(2, 10, 32), torch.randn(2, 10, 16))
        >>> fused.shape, rgb_embed.shape
        (torch.Size([2, 10, 8]), torch.Size([2, 10, 8]))
    """

    def __init__(
        self,
        dim_rgb: int,
        dim_flow: int,
        dim: int,
        *,
        dropout: float = 0.0,
        fused: bool = True,
        device: Optional[Union[torch.device, str]] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.dim_rgb = check_positive_int("dim_rgb", dim_rgb)
        self.dim_flow = check_positive_int("dim_flow", dim_flow)
        self.dim = check_positive_int("dim", dim)
        self.dropout = check_non_negative("dropout", dropout)
        if dropout >= 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.fused = fused
        self.embed_rgb = nn.Linear(dim_rgb, dim, **factory)
        self.embed_flow = nn.Linear(dim_flow, dim, **factory)
        self.head_rgb = nn.Linear(dim, dim, **factory)
        self.head_flow = nn.Linear(dim, dim, bias=False, **factory)

    def reset_parameters(self) -> None:
        for module in self.children():
            module.reset_parameters()

    def extra_repr(self) -> str:
        return f"{self.dim_rgb}, {self.dim_flow}, dim={self.dim}, dropout={self.dropout}, fused={self.fused}"

    def embed(self, rgb: Tensor, flow: Tensor, mask: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """The shared-space embeddings ``(C_r(rgb), C_f(flow))`` alone, each (b, t, dim), zero at padded
        snippets: what :class:`~dmf_fusion.MutualLoss` reads, without the projectors.

        Example:
            >>> mutual = MutualFusion(32, 16, 8)
            >>> rgb_embed, flow_embed = mutual.embed(torch.randn(2, 10, 32), torch.randn(2, 10, 16))
            >>> rgb_embed.shape, bool((rgb_embed >= 0).all())
            (torch.Size([2, 10, 8]), True)
        """
        mask = _check_inputs(rgb, flow, mask, self.dim_rgb, self.dim_flow)
        return self._embed(rgb, flow, mask)

    def _embed(self, rgb: Tensor, flow: Tensor, mask: Optional[Tensor]) -> tuple[Tensor, Tensor]:
        dtype, fused = rgb.dtype, self.fused
        rgb_embed = F.relu(DF.linear(rgb, self.embed_rgb.weight.to(dtype), self.embed_rgb.bias.to(dtype), fused=fused))
        flow_embed = F.relu(DF.linear(flow, self.embed_flow.weight.to(dtype), self.embed_flow.bias.to(dtype), fused=fused))
        return DF.zero_padding(rgb_embed, mask), DF.zero_padding(flow_embed, mask)

    def forward(self, rgb: Tensor, flow: Tensor, mask: Optional[Tensor] = None) -> MutualOutput:
        mask = _check_inputs(rgb, flow, mask, self.dim_rgb, self.dim_flow)
        dtype, fused = rgb.dtype, self.fused
        rgb_embed, flow_embed = self._embed(rgb, flow, mask)
        a = F.dropout(rgb_embed, self.dropout, self.training) if self.dropout > 0 else rgb_embed
        b = F.dropout(flow_embed, self.dropout, self.training) if self.dropout > 0 else flow_embed
        h_r, h_f = self.head_rgb, self.head_flow
        head_r = DF.linear(a, h_r.weight.to(dtype), h_r.bias.to(dtype), fused=fused)
        head_f = DF.linear(b, h_f.weight.to(dtype), fused=fused)
        # the two projectors as split-weight GEMMs into one output, no concatenation: the second is
        # added in place on the fused path (the GEMM keeps no output for backward)
        out = head_r.add_(head_f) if fused else head_r + head_f
        return MutualOutput(DF.zero_padding(out, mask), rgb_embed, flow_embed)
