"""Layer-wise training of an encoder + head (ULMFiT, Howard & Ruder 2018), for the fine-tuning family:

- discriminative learning rates: the head at head_lr, block i from the top at lr × decay^i, and everything
  below the blocks (embeddings; any other encoder tensor outside a block) at the lowest rate, lr × decay^L;
- gradual unfreezing: epoch 1 trains the head only, each later epoch one more block from the top, and the
  tensors below the blocks unfreeze last (epoch L + 2).

Blocks are found structurally (encoder.encoder_layers), and a tensor belongs to the block whose module holds
it, so LoRA/IA3 adapters inside a block follow that block and a prompt (outside every block) the embeddings."""

from __future__ import annotations

from torch import nn

from .backbone import encoder_layers


def check_layerwise(layer_lr_decay: float | None) -> None:
    if layer_lr_decay is not None and not 0 < layer_lr_decay <= 1:
        raise ValueError(
            f"strategy.layer_lr_decay={layer_lr_decay}: must be in (0, 1] (1 = one rate for every block) or null"
        )


def depths(encoder: nn.Module) -> tuple[dict[int, int], int]:
    """({id(parameter): depth from the top}, L): block parameters 0 (top) … L-1; the rest of the encoder L."""
    blocks = encoder_layers(encoder)
    depth = {id(p): len(blocks) - 1 - j for j, block in enumerate(blocks) for p in block.parameters()}
    for p in encoder.parameters():
        depth.setdefault(id(p), len(blocks))
    return depth, len(blocks)


def param_groups(encoder: nn.Module, head: nn.Module, lr: float, head_lr: float, decay: float | None) -> list[dict]:
    """Optimizer groups (for encoder_base.make_optimizer): the head, then one group per depth with its rate."""
    if decay is None:
        return [{"params": list(encoder.parameters()), "lr": lr}, {"params": list(head.parameters()), "lr": head_lr}]
    depth, n = depths(encoder)
    groups = [{"params": [p for p in encoder.parameters() if depth[id(p)] == d], "lr": lr * decay**d}
              for d in range(n + 1)]
    return groups + [{"params": list(head.parameters()), "lr": head_lr}]


def unfreeze(encoder: nn.Module, trainable: set[int], epoch: int) -> None:
    """Gradual unfreezing at the start of `epoch` (1-based): of the tensors that may train (ids in
    `trainable`), those at depth < epoch - 1 get gradients; the others none (AdamW then leaves them as they
    are, weight decay included). The head is not in the encoder and always trains."""
    depth, _ = depths(encoder)
    for p in encoder.parameters():
        if id(p) in trainable:
            p.requires_grad_(depth[id(p)] < epoch - 1)
