"""Optimizers as pure functions over float64 arrays (optax style).

An :class:`Optimizer` is ``init(theta0) -> state`` and
``update(grad, state, lr) -> (delta, state)``; the runner applies θ ← θ + delta. State is a
small NamedTuple of arrays, nothing hidden in objects, so a batched runner can give every
array a batch axis (reductions over samples, as in ``begin_epoch``, then name their axis).

Two optional hooks carry the epoch and reparametrization logic:

``begin_epoch(sample_grads, state) -> state``
    called at the start of every epoch with the per-sample gradients ∇f_j(θ) at the
    epoch's starting point, shape (n, d). With full-batch steps an epoch is one step.
``reparametrize(problem) -> (problem', s)``
    the optimizer runs on ``problem'`` in coordinates θ' with θ = s ⊙ θ'.

The registry :data:`OPTIMIZERS` maps config names (``conf/optimizer/<name>.yaml``) to
factories and their parameter constraints.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

import numpy as np

from .params import Real, Spec
from .problems import Problem, rescale_features


class Optimizer(NamedTuple):
    init: Callable[[np.ndarray], Any]
    update: Callable[[np.ndarray, Any, float], tuple[np.ndarray, Any]]
    begin_epoch: Callable[[np.ndarray, Any], Any] | None = None
    reparametrize: Callable[[Problem], tuple[Problem, np.ndarray]] | None = None
    #: choices that change the answer but are not parameters (THEORY.md §4); recorded with every run
    conventions: Mapping[str, str] = MappingProxyType({})


class EmptyState(NamedTuple):
    pass


class EpochRMSState(NamedTuple):
    """Diagonal of M_t = diag(1/(√v_i + ε)), v_i the epoch mean of the squared gradients."""

    scale: np.ndarray


def _no_state(theta0: np.ndarray) -> EmptyState:
    return EmptyState()


def _sgd_update(grad: np.ndarray, state: EmptyState, lr: float) -> tuple[np.ndarray, EmptyState]:
    return grad * -lr, state


def sgd() -> Optimizer:
    """Gradient descent θ ← θ − α_t ∇f(θ) (SGD; with n = 1 or full batch, plain GD)."""
    return Optimizer(_no_state, _sgd_update)


def sign_sgd() -> Optimizer:
    """signSGD θ ← θ − α_t sign(∇f(θ)), with sign(0) = 0 (Bernstein et al. 2018).

    Every step has ℓ∞ length α_t whatever the gradient, so with a constant step it never
    settles; it needs α_t → 0 (THEORY.md §1).
    """

    def update(grad: np.ndarray, state: EmptyState, lr: float) -> tuple[np.ndarray, EmptyState]:
        return np.sign(grad) * -lr, state

    return Optimizer(_no_state, update, conventions={"sign(0)": "0"})


def epoch_rms_adam(eps: float) -> Optimizer:
    """The homework's simplified Adam ("O"): θ ← θ − α_t M_t ∇f(θ).

    M_t = diag(1/(√v_i + ε)) with v_i = mean over the epoch's samples of (∂_i f_j)²,
    recomputed at the start of each epoch from the per-sample gradients at that point.
    Coordinates with v_i = 0 get M_ii = 0 (their gradient is 0, matching sign(0) = 0).
    With n = 1, M_t ∇f = sign(∇f) exactly when ε = 0 (THEORY.md §1).
    """

    def init(theta0: np.ndarray) -> EpochRMSState:
        return EpochRMSState(np.zeros_like(theta0))

    def begin_epoch(sample_grads: np.ndarray, state: EpochRMSState) -> EpochRMSState:
        root = np.sqrt(np.mean(sample_grads * sample_grads, axis=0)) + eps
        scale = np.zeros_like(root)
        np.divide(1.0, root, out=scale, where=root > 0)
        return EpochRMSState(scale)

    def update(grad: np.ndarray, state: EpochRMSState, lr: float) -> tuple[np.ndarray, EpochRMSState]:
        return grad * state.scale * -lr, state

    conventions = {
        "eps": "added to √v (outside the square root)",
        "M_t from": "per-sample gradients at the start of the epoch (this epoch's, not the previous one's)",
        "epoch": "one full-batch step",
        "momentum": "none",
        "bias correction": "none",
        "v_i = 0": "M_ii = 0 (as sign(0) = 0)",
    }
    return Optimizer(init, update, begin_epoch=begin_epoch, conventions=conventions)


def rescaled_sgd() -> Optimizer:
    """Rescale every feature to unit second moment, run SGD on θ', map back θ = s ⊙ θ'.

    s_i = 1/rms(column i of A). Literally the homework's recipe; equivalent to GD
    preconditioned by P = diag(s)² (THEORY.md §2).
    """
    conventions = {"rescaling": "s_i = 1/rms(column i of A), computed once from the data; zero columns keep s_i = 1"}
    return Optimizer(_no_state, _sgd_update, reparametrize=rescale_features, conventions=conventions)


OPTIMIZERS = {
    "sgd": Spec(sgd),
    "sign_sgd": Spec(sign_sgd),
    "epoch_rms_adam": Spec(epoch_rms_adam, {"eps": Real(0.0, closed="left")}),
    "rescaled_sgd": Spec(rescaled_sgd),
}
