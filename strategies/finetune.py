"""finetune: the encoder learns too. One class covers three presets (conf/strategy/):
- full fine-tuning (trainable_layers: null),
- partial fine-tuning (trainable_layers: k — the top k blocks and the head train, the rest stays frozen),
- parameter-efficient fine-tuning (peft: any peft config with a _target_, e.g. LoRA in lora.yaml),
- bias-only training (train_only: bias — BitFit, bitfit.yaml),
each optionally with ULMFiT's layer-wise learning rates and gradual unfreezing (layerwise.py, ulmfit.yaml).

Training is a plain loop (AdamW, warm-up + linear decay, gradient clipping, autocast) over length-bucketed,
dynamically padded batches: shorter than the HF Trainer and faster, since no batch is padded much beyond
its own longest review."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from . import checkpoint, layerwise, progress
from . import distributed as ddp
from .backbone import (
    auto_batch_size,
    autocast,
    collate,
    count_parameters,
    encoder_layers,
    forward_features,
    length_batches,
    max_tokens,
    to_device,
    tokenize,
)
from .base import EpochCallback, FitReport, Split, _no_callback
from .encoder_base import (
    ClassifierHead,
    EarlyStopping,
    EncoderStrategy,
    check_head,
    check_loss,
    check_positive,
    grad_scaler,
    loss_check_due,
    make_optimizer,
    numpy_rng,
)


def check_prompt_length(model: nn.Module, spec) -> None:
    """Prompt and prefix tuning put their virtual tokens before the text: they take positions too."""
    cfg = getattr(model, "active_peft_config", None)
    limit = max_tokens(model.get_base_model()) if cfg is not None else None
    if getattr(cfg, "is_prompt_learning", False) and limit and cfg.num_virtual_tokens + spec.max_length > limit:
        raise ValueError(
            f"strategy.peft.num_virtual_tokens={cfg.num_virtual_tokens} + model.max_length={spec.max_length} "
            f"exceed the {limit} positions of '{spec.name}'; lower one of them"
        )


class EncoderClassifier(nn.Module):
    def __init__(self, encoder: nn.Module, head: ClassifierHead, layers, pooling: str, combine: str):
        super().__init__()
        self.encoder, self.head = encoder, head
        self.layers, self.pooling, self.combine = layers, pooling, combine

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(forward_features(self.encoder, batch, self.layers, self.pooling, self.combine))


class FineTuneStrategy(EncoderStrategy):
    def __init__(
        self,
        num_labels: int,
        encoder,
        trainable_layers: int | None = None,
        peft=None,
        head: str = "linear",
        hidden_size: int = 256,
        dropout: float = 0.1,
        epochs: int = 3,
        lr: float = 5e-5,
        head_lr: float | None = None,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.1,
        batch_size: int = 16,
        micro_batch_size: int | None = None,
        max_grad_norm: float | None = 1.0,
        gradient_checkpointing: bool = False,
        early_stopping_patience: int | None = None,
        layer_lr_decay: float | None = None,
        gradual_unfreeze: bool = False,
        train_only: str | None = None,
        **encoder_kwargs,
    ):
        super().__init__(num_labels, encoder, **encoder_kwargs)
        check_positive(epochs=epochs, lr=lr, batch_size=batch_size)
        check_head(head, dropout, warmup_ratio)
        if head_lr is not None:
            check_positive(head_lr=head_lr)
        if trainable_layers is not None and trainable_layers < 0:
            raise ValueError(f"strategy.trainable_layers={trainable_layers}: must be null (all) or >= 0")
        if peft is not None and trainable_layers is not None:
            raise ValueError("strategy.peft and strategy.trainable_layers exclude each other; set one to null")
        layerwise.check_layerwise(layer_lr_decay)
        if train_only not in (None, "bias"):
            raise ValueError(f"strategy.train_only={train_only}: must be null (all weights) or bias (BitFit)")
        if train_only is not None and peft is not None:
            raise ValueError("strategy.train_only and strategy.peft exclude each other (the peft config decides "
                             "what trains, e.g. its bias field); set one to null")
        self.layer_lr_decay, self.gradual_unfreeze, self.train_only = layer_lr_decay, gradual_unfreeze, train_only
        if isinstance(peft, dict):  # built without Hydra's recursive instantiation
            from hydra.utils import instantiate

            peft = instantiate(peft)
        self.trainable_layers, self.peft_config = trainable_layers, peft
        self.head_kind, self.hidden_size, self.dropout = head, hidden_size, dropout
        self.epochs, self.lr, self.head_lr = epochs, lr, head_lr
        self.weight_decay, self.warmup_ratio, self.batch_size = weight_decay, warmup_ratio, batch_size
        self.max_grad_norm, self.gradient_checkpointing = max_grad_norm, gradient_checkpointing
        self.micro_batch_size = auto_batch_size(micro_batch_size, "micro", self.device)
        self.early_stopping_patience = early_stopping_patience
        EarlyStopping(early_stopping_patience)  # validates the value now, not after loading the encoder
        self._net: EncoderClassifier | None = None
        self._ckpt_dir: Path | None = None
        self._ckpt_every = 0
        self.resumed_from_step, self.train_time_before_resume_s = 0, 0.0
        self._trained = False  # the head is random until fit() or load(): predicting from it is an error

    # ------------------------------------------------------------------ building
    def prepare_encoder(self, encoder: nn.Module) -> nn.Module:
        encoder = super().prepare_encoder(encoder)
        if self.gradient_checkpointing:
            encoder.gradient_checkpointing_enable()
        if self.peft_config is not None:
            from peft import get_peft_model

            try:
                wrapped = get_peft_model(encoder, self.peft_config)
            except ValueError as e:  # e.g. target modules that this architecture does not have
                raise ValueError(f"strategy.peft does not fit model '{self.spec.name}': {e}") from e
            check_prompt_length(wrapped, self.spec)
            return wrapped
        if self.trainable_layers is not None:
            blocks = encoder_layers(encoder)
            if self.trainable_layers > len(blocks):
                raise ValueError(
                    f"strategy.trainable_layers={self.trainable_layers} but '{self.spec.name}' has {len(blocks)} layers"
                )
            encoder.requires_grad_(False)
            for block in blocks[len(blocks) - self.trainable_layers :]:
                block.requires_grad_(True)
        if self.train_only == "bias":  # BitFit (Ben Zaken et al. 2022): of what may train, only bias terms
            for name, p in encoder.named_parameters():
                p.requires_grad_(p.requires_grad and name.rsplit(".", 1)[-1] == "bias")
        return encoder

    @property
    def net(self) -> EncoderClassifier:
        if self._net is None:
            head = ClassifierHead(self.feature_dim, self.num_labels, self.head_kind, self.hidden_size, self.dropout)
            self._net = EncoderClassifier(self.encoder, head.to(self.device), self.layers, self.pooling, self.combine)
        return self._net

    # ------------------------------------------------------------------ training
    def enable_checkpoints(self, directory: Path, every_steps: int) -> None:
        self._ckpt_dir, self._ckpt_every = Path(directory), int(every_steps)

    def fit(self, train: Split, val: Split | None = None, on_epoch: EpochCallback = _no_callback) -> None:
        net, tok = self.net, self.tokenizer
        items = tokenize(tok, train.texts, self.spec.max_length)
        lengths = [len(x["input_ids"]) for x in items]
        labels = torch.as_tensor(train.labels, dtype=torch.long)
        val_items = tokenize(tok, val.texts, self.spec.max_length) if val is not None else None
        steps_per_epoch = -(-len(items) // self.batch_size)
        opt, sched = make_optimizer(
            layerwise.param_groups(net.encoder, net.head, self.lr, self.head_lr or self.lr, self.layer_lr_decay),
            weight_decay=self.weight_decay, total_steps=steps_per_epoch * self.epochs,
            warmup_ratio=self.warmup_ratio,
        )
        trainable = {n: p for n, p in net.named_parameters() if p.requires_grad}
        scaler = grad_scaler(self.device, self.precision)
        rng, stopper = numpy_rng(), EarlyStopping(self.early_stopping_patience, keep=set(trainable))
        may_train = {id(p) for p in trainable.values()}  # what gradual unfreezing opens, block by block
        # Resumable state: with the batch order of the epoch replayed from the saved generator state and
        # the torch RNG (dropout) restored, a resumed run takes exactly the steps an uninterrupted one would.
        pos = {"epoch": 1, "batch": 0, "step": 0, "total": 0.0, "seconds": 0.0}
        t_fit = time.perf_counter()
        saved = ddp.from_main(lambda: checkpoint.load(self._ckpt_dir))  # rank 0 reads, every rank resumes
        if saved is not None:
            net.load_state_dict(saved["trainable"], strict=False)
            opt.load_state_dict(saved["optimizer"])
            sched.load_state_dict(saved["scheduler"])
            if saved.get("scaler"):  # empty when saved without fp16 (e.g. resumed on a GPU where auto = fp16)
                scaler.load_state_dict(saved["scaler"])
            stopper.__dict__.update(saved["stopper"])
            pos = saved["pos"]
            rng.bit_generator.state = saved["epoch_rng"]
            # Each rank's own dropout stream; under another world size than the checkpoint's, the ranks
            # take rank 0's (same batches and steps, other dropout draws).
            ranks = saved.get("rank_rng") or [{"torch": saved["torch_rng"], "cuda": saved.get("cuda_rng")}]
            own = ranks[ddp.rank()] if len(ranks) == ddp.world_size() else ranks[0]
            torch.set_rng_state(own["torch"])
            if own.get("cuda") and torch.cuda.is_available():  # dropout on a GPU draws from these
                torch.cuda.set_rng_state_all(own["cuda"])
            if not ddp.is_main():  # the saved loss sum is all ranks' together: rank 0 carries it on
                pos = pos | {"total": 0.0}
            self.resumed_from_step, self.train_time_before_resume_s = pos["step"], pos.get("seconds", 0.0)
        model = None
        for epoch in range(pos["epoch"], self.epochs + 1):
            net.train()
            if self.gradual_unfreeze:
                layerwise.unfreeze(net.encoder, may_train, epoch)
            if model is None or self.gradual_unfreeze:  # DDP all-reduces the tensors that train when built
                # Under torchrun: DDP, each rank a share of every batch (ddp.batch_share); else net itself.
                model = ddp.wrap(net, every_parameter_used=self._uses_top_layer(net))
            epoch_rng = rng.bit_generator.state  # replaying from here regenerates this epoch's batches
            batches = list(length_batches(lengths, self.batch_size, shuffle=True, rng=rng))
            first, total = (pos["batch"], pos["total"]) if epoch == pos["epoch"] else (0, 0.0)
            # Summed on the device and read only when checked: a loss.item() per step would stall a GPU.
            total = torch.tensor(total, device=self.device)
            seen = sum(len(batches[i]) for i in range(first))
            # under torchrun rank 0 alone shows it (its loss sum holds only its share of each batch: no loss)
            bar = progress.bar(len(items) if ddp.is_main() else 0, f"epoch {epoch}/{self.epochs}", unit="seq")
            bar.update(seen)
            for b in range(first, len(batches)):
                idx = batches[b]
                seen += len(idx)
                opt.zero_grad(set_to_none=True)
                # Gradient accumulation over micro-batches: the same step as one batch (each part's loss is
                # its share of the batch mean), but each part is padded only to about its own longest text and its
                # activations fit in cache — 1.6-1.8x faster on a 2-core CPU (see backbone.AUTO_BATCH).
                mine, weight = ddp.batch_share(idx)
                micro = self.micro_batch_size or len(mine)
                for start in range(0, len(mine), micro):
                    part = mine[start : start + micro]
                    with ddp.sync_gradients(model, last_micro_batch=start + micro >= len(mine)):
                        with autocast(self.device, self.precision):
                            logits = model(collate(tok, [items[i] for i in part], self.device, self.spec.max_length))
                        loss = nn.functional.cross_entropy(
                            logits.float(), to_device(labels[part], self.device), reduction="sum"
                        )
                        if weight:
                            total += loss.detach()
                        scaler.scale(loss / len(idx) * weight).backward()
                if self.max_grad_norm:
                    scaler.unscale_(opt)  # clip the true gradients, not the fp16 loss-scaled ones
                    torch.nn.utils.clip_grad_norm_(list(trainable.values()), self.max_grad_norm)
                scaler.step(opt)  # = opt.step(), unless fp16 gradients overflowed (then skipped, scale lowered)
                scaler.update()
                sched.step()
                pos["step"] += 1
                if loss_check_due(self.device, pos["step"]):
                    check_loss(total, pos["step"])  # the loss is read here anyway: show its running mean
                    bar.update(len(idx), **({"loss": total.item() / seen} if ddp.world_size() == 1 else {}))
                else:
                    bar.update(len(idx))
                if self._ckpt_every and pos["step"] % self._ckpt_every == 0:
                    check_loss(total, pos["step"])  # never checkpoint NaN weights (this reads total anyway)
                    pos_now = {"epoch": epoch, "batch": b + 1, "step": pos["step"],
                               "total": ddp.all_sum(total).item(),
                               "seconds": self.train_time_before_resume_s + time.perf_counter() - t_fit}
                    rank_rng = ddp.gather({
                        "torch": torch.get_rng_state(),
                        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                    })
                    if ddp.is_main():  # one writer; the other ranks' RNG states travel in rank_rng
                        checkpoint.save(self._ckpt_dir, {
                            "trainable": {n: p.detach().cpu() for n, p in trainable.items()},
                            "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                            "scaler": scaler.state_dict(), "stopper": dict(stopper.__dict__), "pos": pos_now,
                            "epoch_rng": epoch_rng, "torch_rng": rank_rng[0]["torch"],
                            "cuda_rng": rank_rng[0]["cuda"], "rank_rng": rank_rng,
                        })
            bar.close()
            check_loss(total, pos["step"])
            total = ddp.all_sum(total)  # every rank's share of the epoch's loss
            val_proba = self._proba(val_items) if val_items is not None else None
            on_epoch(epoch, {"train_loss": total.item() / len(items), "lr": sched.get_last_lr()[0]}, val_proba)
            if stopper.step(net, epoch, val_proba, val.labels if val is not None else None):
                break
        stopper.restore(net)
        self.best_epoch = stopper.best_epoch
        self._trained = True

    def _uses_top_layer(self, net: EncoderClassifier) -> bool:
        """Whether every trainable parameter gets a gradient (DDP must search for unused ones otherwise):
        not when the head reads lower layers only and the blocks above them are trainable."""
        top = net.encoder.config.num_hidden_layers
        return any(i in (-1, top) for i in self.layers)

    def _proba(self, items: list[dict]) -> np.ndarray:
        """Split across ranks under torchrun and gathered once; all rows on every rank."""
        return ddp.map_shards(self._proba_local, items, [len(x["input_ids"]) for x in items])

    @torch.inference_mode()
    def _proba_local(self, items: list[dict]) -> np.ndarray:
        net = self.net.eval()
        lengths = [len(x["input_ids"]) for x in items]
        out = np.empty((len(items), self.num_labels), dtype=np.float32)
        with progress.bar(len(items) if ddp.is_main() else 0, "predict", unit="text") as bar:  # this rank's share
            for idx in length_batches(lengths, self.encode_batch_size):
                batch = collate(self.tokenizer, [items[i] for i in idx], self.device, self.spec.max_length)
                with autocast(self.device, self.precision):
                    logits = net(batch)
                out[idx] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
                bar.update(len(idx))
        return out

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        if not self._trained:
            raise RuntimeError("call fit() or load() before predict_proba()")
        return self._proba(tokenize(self.tokenizer, texts, self.spec.max_length))

    def fit_report(self) -> FitReport:
        if not self.resumed_from_step:
            return super().fit_report()
        return replace(super().fit_report(), resumed_from_step=self.resumed_from_step,
                       train_time_before_resume_s=round(self.train_time_before_resume_s, 3))

    def parameter_counts(self) -> dict[str, int]:
        trainable, total = count_parameters(self.net)
        return {"trainable": trainable, "total": total}

    # ------------------------------------------------------------------ persistence
    def save(self, path: Path) -> None:
        """Only what training changed: the trainable tensors (LoRA adapters + head, the top-k blocks + head,
        or everything for full fine-tuning). The rest is the verified pretrained checkpoint."""
        state = {n: p.detach().contiguous().cpu() for n, p in self.net.named_parameters() if p.requires_grad}
        save_file(state, str(Path(path) / "trainable.safetensors"))

    def load(self, path: Path) -> None:
        state = load_file(str(Path(path) / "trainable.safetensors"), device=str(self.device))
        missing = set(state) - {n for n, _ in self.net.named_parameters()}
        if missing:
            raise ValueError(f"saved weights do not match this strategy config: unexpected {sorted(missing)[:5]}")
        self.net.load_state_dict(state, strict=False)
        for name, p in self.net.named_parameters():  # what trained (gradual unfreezing may stop short of all)
            p.requires_grad_(name in state)
        self.net.eval()
        self._trained = True
