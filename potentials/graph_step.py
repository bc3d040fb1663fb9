"""A training step captured in one CUDA graph (``screen train --cuda-graphs``, issue 3).

An eager step of the ``large`` preset is bound by kernel launches on a GPU (docs/gpu.md): the H100 measured
0.97 s per step of 5 acac molecules eagerly and 0.13 s replayed from a graph. A graph replays fixed kernels
on fixed memory, so

- every batch must have the same shapes: molecules of one size, species in the same order, no periodic
  cell, every ordered atom pair an edge (:func:`potentials.data.all_pairs_graph`; pairs beyond the cutoff
  get a zero envelope, so energies and forces are those of the cutoff graph). :func:`static_graphs` checks
  that and says why when it does not hold;
- nothing in the step may wait for the host: the loss is computed branch-free (``compute_loss(...,
  floats=False)``), AdamW is ``capturable`` with its learning rate in a device tensor that the schedule
  fills, and the EMA update runs inside the graph.

Capturing needs a few warm-up steps on a side stream. They would change the weights, so the parameters,
the EMA and the optimizer state are copied before and written back after: the first replay starts from
exactly the state an eager step would have seen.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from structures.common import InputError

from . import keys as K
from .data import GraphDict, all_pairs_graph
from .losses import LossConfig, compute_loss

# batch entries a replay refreshes (the rest is fixed by the shapes: species, edges, batch index)
_LABEL_KEYS = (K.POSITIONS, K.ENERGY, K.FORCES, K.WEIGHT, K.ENERGY_WEIGHT)


def static_graphs(graphs: Sequence[GraphDict]) -> list[GraphDict]:
    """``graphs`` as all-pairs graphs of identical shapes, or an InputError saying which structure differs."""
    if not graphs:
        raise InputError("--cuda-graphs: no training structures")
    first = graphs[0]
    for i, g in enumerate(graphs):
        if bool(g[K.PBC].any()):
            raise InputError(
                f"--cuda-graphs: training structure {i} is periodic; allowed: open molecules of one size "
                "(a captured step needs static shapes)"
            )
        if g[K.SPECIES].shape != first[K.SPECIES].shape or not torch.equal(g[K.SPECIES], first[K.SPECIES]):
            raise InputError(
                f"--cuda-graphs: training structure {i} has {g[K.SPECIES].shape[0]} atoms or another species "
                f"order than structure 0 ({first[K.SPECIES].shape[0]}); allowed: molecules of one size and order"
            )
    return [all_pairs_graph(g) for g in graphs]


def make_capturable(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Switch an AdamW to ``capturable`` with device-tensor learning rates and step counters (in place)."""
    if not isinstance(optimizer, torch.optim.AdamW):
        raise InputError("--cuda-graphs trains with the default AdamW only (not IVON or another optimizer)")
    for group in optimizer.param_groups:
        group["capturable"] = True
        group["foreach"] = True
        # in the parameters' dtype: a float32 rate would round a float64 model's updates
        group["lr"] = torch.tensor(float(group["lr"]), dtype=group["params"][0].dtype, device=device)
        for p in group["params"]:
            state = optimizer.state[p]
            if not state:  # what AdamW's first step would create
                state["step"] = torch.zeros((), dtype=torch.float32, device=device)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                if group["amsgrad"]:
                    state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            else:
                state["step"] = state["step"].to(device=device, dtype=torch.float32)


def portable_optimizer_state(state_dict: dict[str, Any]) -> dict[str, Any]:
    """An optimizer state dict that an eager run on any device can load: float learning rates and
    ``capturable`` off (a captured run turns them back on with :func:`make_capturable`)."""
    groups = []
    for group in state_dict["param_groups"]:
        group = dict(group)
        if torch.is_tensor(group["lr"]):
            group["lr"] = float(group["lr"])
        if "capturable" in group:
            group["capturable"] = False
        groups.append(group)
    return {**state_dict, "param_groups": groups}


def set_group_lr(group: dict[str, Any], lr: float) -> None:
    """Set a parameter group's learning rate, in place when it is a (captured) tensor."""
    if torch.is_tensor(group["lr"]):
        group["lr"].fill_(lr)
    else:
        group["lr"] = lr


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's learning rate (:func:`set_group_lr`)."""
    for group in optimizer.param_groups:
        set_group_lr(group, lr)


class CapturedStep:
    """One optimisation step (forward, forces, loss, backward, clip, AdamW, EMA) replayed from a CUDA graph.

    ``template``: a collated batch with the shapes of every batch to come. ``load(batch)`` copies a batch's
    positions and labels into the static inputs; ``replay()`` runs the step and returns the loss (a device
    tensor, read it when convenient). ``kind`` is the loss phase the graph was captured for.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        ema: Any,
        loss_config: LossConfig,
        epoch: int,
        grad_clip: float,
        template: dict[str, torch.Tensor],
        warmup: int = 3,
    ):
        self.model, self.optimizer, self.ema = model, optimizer, ema
        self.loss_config, self.epoch, self.grad_clip = loss_config, epoch, grad_clip
        self.static = {k: v.clone() for k, v in template.items()}
        self.params = [p for p in model.parameters() if p.requires_grad]
        saved = self._snapshot()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup):
                self._step()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.loss = self._step()
        self._restore(saved)

    def _tensors(self) -> list[torch.Tensor]:
        out = [p.data for p in self.model.parameters()]
        out += list(self.ema.shadow.values())
        for p in self.params:
            out += [v for v in self.optimizer.state[p].values() if torch.is_tensor(v)]
        return out

    def _snapshot(self) -> list[torch.Tensor]:
        return [t.detach().clone() for t in self._tensors()]

    @torch.no_grad()
    def _restore(self, saved: list[torch.Tensor]) -> None:
        for t, s in zip(self._tensors(), saved, strict=True):
            t.copy_(s)
        for p in self.params:
            if p.grad is not None:
                p.grad.zero_()

    def _step(self) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=False)
        out = self.model(self.static)
        loss, _ = compute_loss(out, self.static, self.loss_config, self.epoch, floats=False)
        loss.backward()
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip, foreach=True)
        self.optimizer.step()
        if self.ema.decay > 0:
            self.ema.update(self.model)
        return loss.detach()

    def load(self, batch: dict[str, torch.Tensor]) -> None:
        for key in _LABEL_KEYS:
            if key in self.static:
                self.static[key].copy_(batch[key], non_blocking=True)

    def replay(self) -> torch.Tensor:
        self.graph.replay()
        return self.loss
