"""The official GRU4Rec optimiser (``model/optimizer=adagrad``)."""

from __future__ import annotations

import torch

from recsys.errors import ConfigError


class AdagradM(torch.optim.Optimizer):
    """Adagrad with ``eps`` inside the square root and optional momentum, as GRU4Rec's official code;
    sparse gradients update only their rows (accumulator and momentum of untouched rows stay as they are).

    ``acc += g²``; ``u = g / sqrt(acc + eps)``; without momentum ``p −= lr · u``, with momentum
    ``m = momentum · m − lr · u``, ``p += m``. Dense parameters are updated together with ``torch._foreach_*``
    ops (one kernel launch per operation for all of them), sparse ones row by row.
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
            dense: list[torch.Tensor] = []
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["acc"] = torch.zeros_like(p)
                    if momentum > 0:
                        state["mom"] = torch.zeros_like(p)
                if p.grad.is_sparse:
                    self._sparse_update(p, state, lr, momentum, eps)
                else:
                    dense.append(p)
            if dense:
                self._dense_update(dense, lr, momentum, eps)
        return loss

    def _dense_update(self, params: list[torch.Tensor], lr: float, momentum: float, eps: float) -> None:
        grads = [p.grad for p in params]
        accs = [self.state[p]["acc"] for p in params]
        torch._foreach_addcmul_(accs, grads, grads)
        denom = torch._foreach_add(accs, eps)
        torch._foreach_sqrt_(denom)
        if momentum > 0:
            moms = [self.state[p]["mom"] for p in params]
            torch._foreach_mul_(moms, momentum)
            torch._foreach_addcdiv_(moms, grads, denom, value=-lr)
            torch._foreach_add_(params, moms)
        else:
            torch._foreach_addcdiv_(params, grads, denom, value=-lr)

    def _sparse_update(self, p: torch.Tensor, state: dict, lr: float, momentum: float, eps: float) -> None:
        grad = p.grad.coalesce()
        rows, values = grad.indices()[0], grad.values()
        acc = state["acc"][rows] + values.pow(2)
        state["acc"].index_copy_(0, rows, acc)
        update = values / (acc + eps).sqrt()
        if momentum > 0:
            mom = state["mom"][rows].mul_(momentum).add_(update, alpha=-lr)
            state["mom"].index_copy_(0, rows, mom)
            p.index_add_(0, rows, mom)
        else:
            p.index_add_(0, rows, update, alpha=-lr)
