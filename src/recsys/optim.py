"""The official GRU4Rec optimiser (``model/optimizer=adagrad``)."""

from __future__ import annotations

import torch
from torch.optim.adagrad import adagrad

from recsys.errors import ConfigError


class AdagradM(torch.optim.Optimizer):
    """Adagrad with ``eps`` inside the square root and optional momentum, as GRU4Rec's official code (Hidasi &
    Karatzoglou, CIKM'18); sparse gradients update only their rows (accumulator and momentum of untouched rows
    stay as they are).

    ``acc += g²``; ``u = g / sqrt(acc + eps)``; without momentum ``p −= lr · u``, with momentum
    ``m = momentum · m − lr · u``, ``p += m``. The state ``sum`` holds ``eps + acc`` (``eps`` is added once, when the
    state is created), so without momentum a dense update is torch's Adagrad with ``eps = 0`` over that state: it
    runs through ``torch.optim.adagrad.adagrad`` (torch's fused kernel, ``fused=True``, or its foreach one).
    Momentum and row-sparse gradients are updated tensor by tensor.
    """

    supports_sparse_gradients = True

    def __init__(self, params, lr: float = 0.05, momentum: float = 0.0, eps: float = 1e-6) -> None:
        if lr <= 0.0 or momentum < 0.0 or eps <= 0.0:
            raise ConfigError(f"optimizer: need lr > 0, momentum >= 0, eps > 0; got {lr}, {momentum}, {eps}")
        super().__init__(params, {"lr": lr, "momentum": momentum, "eps": eps})

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum, eps = group["lr"], group["momentum"], group["eps"]
            plain: list[torch.Tensor] = []
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "sum" not in state:
                    state["sum"] = torch.full_like(p, eps, memory_format=torch.preserve_format)
                    state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                if momentum > 0 and "mom" not in state:
                    state["mom"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                if p.grad.is_sparse:
                    self._sparse_update(p, state, lr, momentum)
                elif momentum > 0:
                    self._momentum_update(p, state, lr, momentum)
                else:
                    plain.append(p)
            if plain:
                self._plain_update(plain, lr)
        return loss

    def _plain_update(self, params: list[torch.Tensor], lr: float) -> None:
        """``sum += g²``, ``p −= lr · g / sqrt(sum)``: torch's Adagrad with ``eps = 0`` (no ``lr_decay``, so its
        step counts do not enter the update). Contiguous parameters on the CPU or CUDA take the fused kernel, which
        walks parameter, gradient and state memory linearly (so the gradient is made contiguous); the others the
        foreach implementation."""
        fusable = [p.device.type in ("cpu", "cuda") and p.is_contiguous() for p in params]
        fused = [p for p, f in zip(params, fusable, strict=True) if f]
        rest = [p for p, f in zip(params, fusable, strict=True) if not f]
        for group, kind in ((fused, {"fused": True}), (rest, {"foreach": True})):
            if group:
                adagrad(group, [p.grad.contiguous() if "fused" in kind else p.grad for p in group],
                        [self.state[p]["sum"] for p in group], [self.state[p]["step"] for p in group], **kind,
                        lr=lr, weight_decay=0.0, lr_decay=0.0, eps=0.0, maximize=False)

    @staticmethod
    def _momentum_update(p: torch.Tensor, state: dict, lr: float, momentum: float) -> None:
        g = p.grad
        state["sum"].addcmul_(g, g)
        state["mom"].mul_(momentum).addcdiv_(g, state["sum"].sqrt(), value=-lr)
        p.add_(state["mom"])

    @staticmethod
    def _sparse_update(p: torch.Tensor, state: dict, lr: float, momentum: float) -> None:
        grad = p.grad.coalesce()
        rows, values = grad.indices()[0], grad.values()
        total = state["sum"].index_select(0, rows).addcmul_(values, values)
        state["sum"].index_copy_(0, rows, total)
        update = values / total.sqrt()
        if momentum > 0:
            mom = state["mom"].index_select(0, rows).mul_(momentum).add_(update, alpha=-lr)
            state["mom"].index_copy_(0, rows, mom)
            p.index_add_(0, rows, mom)
        else:
            p.index_add_(0, rows, update, alpha=-lr)
