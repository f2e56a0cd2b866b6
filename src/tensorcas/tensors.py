"""What tensorcas accepts as a tensor, and how a record becomes a tensor again."""

from __future__ import annotations

import torch

from . import format as fmt
from .errors import UnsupportedTensorError


def check_tensor(name: str, tensor: object) -> torch.Tensor:
    """Return ``tensor`` as a plain strided tensor whose storage holds its true values.

    Lazy conjugate and negative views are resolved (their storage holds other values); sparse,
    quantized, nested, meta and subclass tensors are refused, as are dtypes without a fixed
    item size.
    """
    if not isinstance(tensor, torch.Tensor):
        raise UnsupportedTensorError(f"tensor {name!r}: expected a torch.Tensor, got {type(tensor).__name__}")
    if type(tensor) not in (torch.Tensor, torch.nn.Parameter):
        raise UnsupportedTensorError(
            f"tensor {name!r}: tensor subclass {type(tensor).__name__} is not supported; "
            "store a plain tensor (for example torch.Tensor(t) or t.as_subclass(torch.Tensor))"
        )
    if tensor.layout != torch.strided:
        raise UnsupportedTensorError(
            f"tensor {name!r}: layout {tensor.layout} is not supported; convert it with .to_dense()"
        )
    if tensor.is_quantized:
        raise UnsupportedTensorError(
            f"tensor {name!r}: quantized tensors are not supported; store .int_repr() and the "
            "quantization parameters, or .dequantize()"
        )
    if getattr(tensor, "is_nested", False):
        raise UnsupportedTensorError(f"tensor {name!r}: nested tensors are not supported; store each component")
    if tensor.device.type == "meta":
        raise UnsupportedTensorError(f"tensor {name!r}: a tensor on the meta device has no data to store")
    if fmt.dtype_name(tensor.dtype) is None:
        raise UnsupportedTensorError(
            f"tensor {name!r}: dtype {tensor.dtype} cannot be stored; supported: {', '.join(fmt.DTYPES)}"
        )
    if tensor.is_conj() or tensor.is_neg():
        tensor = tensor.resolve_conj().resolve_neg()
    return tensor


def record_to_tensor(
    record: fmt.TensorRecord, storage: torch.UntypedStorage, device: torch.device | None = None
) -> torch.Tensor:
    """The view ``record`` describes over ``storage`` (bounds were checked by ``format``), which is
    on ``device`` (given by a caller that knows it: asking the storage costs more than the rest)."""
    tensor = torch.empty(0, dtype=record.torch_dtype, device=storage.device if device is None else device)
    tensor.set_(storage, record.offset, record.shape, record.stride)
    if record.requires_grad:
        tensor.requires_grad_(True)
    return tensor
