"""The full (unsharded) state dict of a module that may be sharded with FSDP (1 or 2), for saving.

Under FSDP each rank holds a shard of every parameter; ``module.state_dict()`` on rank 0 alone then
either hangs (the gather is a collective the other ranks never join) or returns shards. The gather
here is run by every rank together; rank 0 receives the full tensors on the CPU, the others an empty
dict. Without FSDP it is ``module.state_dict()`` on every rank (nothing collective).
"""

from __future__ import annotations

import torch
from torch import nn


def is_sharded(module: nn.Module) -> bool:
    """Whether ``module`` or a submodule is FSDP-sharded (``FullyShardedDataParallel`` or ``fully_shard``)."""
    kinds: list[type] = []
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel

        kinds.append(FullyShardedDataParallel)
    except ImportError:  # pragma: no cover - torch without distributed
        return False
    try:
        from torch.distributed.fsdp import FSDPModule

        kinds.append(FSDPModule)
    except ImportError:  # pragma: no cover - older torch
        pass
    return any(isinstance(m, tuple(kinds)) for m in module.modules())


def full_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """The full state dict of ``module``: collective under FSDP (call it on every rank; rank 0 gets the
    CPU tensors, other ranks ``{}``), ``module.state_dict()`` otherwise. Keys carry no wrapper prefixes
    (``_fsdp_wrapped_module.``, ``_orig_mod.``, DDP's ``module.`` is the caller's to strip)."""
    if not is_sharded(module):
        return dict(module.state_dict())
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    sd = get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k.replace("_orig_mod.", ""): v for k, v in sd.items()}
