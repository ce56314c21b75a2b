"""The official GRU4Rec optimiser (``model/optimizer=adagrad``)."""

from __future__ import annotations

import torch

from recsys.errors import ConfigError


class AdagradM(torch.optim.Optimizer):
    """Adagrad with ``eps`` inside the square root and optional momentum, as GRU4Rec's official code;
    sparse gradients update only their rows (accumulator and momentum of untouched rows stay as they are).

    ``acc += g²``; ``u = g / sqrt(acc + eps)``; without momentum ``p −= lr · u``, with momentum
    ``m = momentum · m − lr · u``, ``p += m``. The state ``sum`` holds ``eps + acc``: ``eps`` is added once, when
    the state is created (changing ``eps`` later leaves existing state as it is; a state saved by an earlier
    release, ``acc`` alone, is converted on the first step; earlier releases cannot read this one's). Dense
    parameters on the CPU without momentum take torch's fused Adagrad kernel (one pass over each tensor); other
    dense parameters are updated together with ``torch._foreach_*`` ops, sparse ones row by row.
    """

    supports_sparse_gradients = True

    def __init__(self, params, lr: float = 0.05, momentum: float = 0.0, eps: float = 1e-6) -> None:
        if lr <= 0.0 or momentum < 0.0 or eps <= 0.0:
            raise ConfigError(f"optimizer: need lr > 0, momentum >= 0, eps > 0; got {lr}, {momentum}, {eps}")
        super().__init__(params, {"lr": lr, "momentum": momentum, "eps": eps})
        self._no_step = torch.zeros(())

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum, eps = group["lr"], group["momentum"], group["eps"]
            fused: list[torch.Tensor] = []
            dense: list[torch.Tensor] = []
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "sum" not in state:  # checkpoints of earlier releases hold "acc" = Σg², without eps
                    state["sum"] = state.pop("acc", torch.zeros_like(p)) + eps
                if momentum > 0 and "mom" not in state:
                    state["mom"] = torch.zeros_like(p)
                if p.grad.is_sparse:
                    self._sparse_update(p, state, lr, momentum)
                elif momentum == 0 and p.device.type == "cpu" and p.is_contiguous() and state["sum"].is_contiguous():
                    fused.append(p)
                else:
                    dense.append(p)
            if fused:
                self._fused_update(fused, lr)
            if dense:
                self._foreach_update(dense, lr, momentum)
        return loss

    def _fused_update(self, params: list[torch.Tensor], lr: float) -> None:
        """torch's fused CPU Adagrad kernel (that of ``torch.optim.Adagrad(fused=True)``), one pass per tensor:
        ``sum += g²``, ``p −= lr · g / (sqrt(sum) + 0)``. It walks memory linearly: every tensor contiguous."""
        grads = [p.grad.contiguous() for p in params]
        sums = [self.state[p]["sum"] for p in params]
        steps = [self._no_step] * len(params)  # read only for lr_decay, which is 0
        torch._fused_adagrad_(params, grads, sums, steps, lr=lr, lr_decay=0.0, weight_decay=0.0, eps=0.0,
                              maximize=False)

    def _foreach_update(self, params: list[torch.Tensor], lr: float, momentum: float) -> None:
        grads = [p.grad for p in params]
        sums = [self.state[p]["sum"] for p in params]
        torch._foreach_addcmul_(sums, grads, grads)
        denom = torch._foreach_sqrt(sums)
        if momentum > 0:
            moms = [self.state[p]["mom"] for p in params]
            torch._foreach_mul_(moms, momentum)
            torch._foreach_addcdiv_(moms, grads, denom, value=-lr)
            torch._foreach_add_(params, moms)
        else:
            torch._foreach_addcdiv_(params, grads, denom, value=-lr)

    def _sparse_update(self, p: torch.Tensor, state: dict, lr: float, momentum: float) -> None:
        grad = p.grad.coalesce()
        rows, values = grad.indices()[0], grad.values()
        total = state["sum"].index_select(0, rows)
        if momentum == 0 and p.device.type == "cpu":  # the fused kernel on the rows
            part = p.index_select(0, rows)
            torch._fused_adagrad_([part], [values.contiguous()], [total], [self._no_step], lr=lr, lr_decay=0.0,
                                  weight_decay=0.0, eps=0.0, maximize=False)
            p.index_copy_(0, rows, part)
            state["sum"].index_copy_(0, rows, total)
            return
        total.addcmul_(values, values)
        state["sum"].index_copy_(0, rows, total)
        update = values / total.sqrt()
        if momentum > 0:
            mom = state["mom"].index_select(0, rows).mul_(momentum).add_(update, alpha=-lr)
            state["mom"].index_copy_(0, rows, mom)
            p.index_add_(0, rows, mom)
        else:
            p.index_add_(0, rows, update, alpha=-lr)
