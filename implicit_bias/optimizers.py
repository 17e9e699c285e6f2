"""Optimizers as pure functions over float64 arrays (optax style).

An :class:`Optimizer` is ``init(theta0) -> state`` and
``update(grad, state, lr) -> (delta, state)``; the runner applies θ ← θ + delta. State is a
small NamedTuple of arrays, nothing hidden in objects.

Shapes: vectors are columns, (d, 1) for one run and (B, d, 1) for B runs in one loop
(:func:`implicit_bias.runner.run_batch`); ``lr`` and every numeric hyperparameter are
floats, or (B, 1, 1) arrays holding one value per member. Updates are elementwise, so the
same definition serves both; the few reductions (over samples, over coordinates) are
written for the column layout, and reductions over samples are ``matmul`` calls so that a
member's arithmetic does not depend on the batch it runs in. A state field that is an array
with a member axis is dropped for stopped members by :func:`compact_state`.

Two optional hooks carry the epoch and reparametrization logic:

``begin_epoch(sample_grads, state) -> state``
    called at the start of every epoch with the per-sample gradients ∇f_j(θ) at the
    epoch's starting point, one column per sample: shape (d, n), or (B, d, n). With
    full-batch steps an epoch is one step.
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

from . import norms
from .params import Boolean, Choice, ConfigError, Real, Spec, Vector
from .problems import Problem, rescale_features


class Optimizer(NamedTuple):
    init: Callable[[np.ndarray], Any]
    update: Callable[[np.ndarray, Any, float], tuple[np.ndarray, Any]]
    begin_epoch: Callable[[np.ndarray, Any], Any] | None = None
    reparametrize: Callable[[Problem], tuple[Problem, np.ndarray]] | None = None
    #: choices that change the answer but are not parameters (docs/theory.md §4); recorded with every run
    conventions: Mapping[str, str] = MappingProxyType({})
    #: the number of parameters the optimizer was configured for, if its configuration fixes it
    dimension: int | None = None
    #: ``observe(sample_grads, state) -> state``: called every step with the per-sample gradients
    #: of that step's batch, at the point where the step is taken
    observe: Callable[[np.ndarray, Any], Any] | None = None


class EmptyState(NamedTuple):
    pass


def compact_state(state: Any, keep: np.ndarray) -> Any:
    """The state of the members with ``keep`` True: every field with a member axis
    (an array of 3 dimensions, (B, ·, ·)) is indexed; shared fields (counts) are kept."""
    return type(state)(*(field[keep] if isinstance(field, np.ndarray) and field.ndim == 3 else field
                         for field in state))


def sample_sum(values: np.ndarray) -> np.ndarray:
    """Σ_j of the sample columns of ``values`` (…, d, n), as a column (…, d, 1)."""
    return values @ np.ones((values.shape[-1], 1))


class EpochRMSState(NamedTuple):
    """Diagonal of M_t = diag(1/(√v_i + ε)), v_i the epoch mean of the squared gradients;
    with ``epoch_gradients: previous``, also the running sums of the epoch in progress."""

    scale: np.ndarray
    square_sum: np.ndarray
    count: int


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
    settles; it needs α_t → 0 (docs/theory.md §1).
    """

    def update(grad: np.ndarray, state: EmptyState, lr: float) -> tuple[np.ndarray, EmptyState]:
        return np.sign(grad) * -lr, state

    return Optimizer(_no_state, update, conventions={"sign(0)": "0"})


def epoch_rms_adam(eps: float, epoch_gradients: str) -> Optimizer:
    """The homework's simplified Adam ("O"): θ ← θ − α_t M_t ∇f(θ), M_t = diag(1/(√v_i + ε)).

    v_i is the mean of (∂_i f_j)² over the per-sample gradients of one epoch, recomputed at
    the start of every epoch. Which epoch's gradients (docs/theory.md §4):

    ``current``   this epoch's: every sample's gradient at the point where the epoch starts;
    ``previous``  the previous epoch's: each sample's gradient where its step was taken (the
                  first epoch, having no previous one, uses ``current``).

    Coordinates with v_i = 0 get M_ii = 0 (their gradient is 0, matching sign(0) = 0).
    With one sample, full batch and ε = 0, ``current`` gives M_t ∇f = sign(∇f) exactly
    (docs/theory.md §1); ``previous`` does not (it scales by the last step's gradient).
    """

    def inverse_root(mean_square: np.ndarray) -> np.ndarray:
        root = np.sqrt(mean_square) + eps
        scale = np.zeros_like(root)
        np.divide(1.0, root, out=scale, where=root > 0)
        return scale

    def init(theta0: np.ndarray) -> EpochRMSState:
        return EpochRMSState(np.zeros_like(theta0), np.zeros_like(theta0), 0)

    def begin_epoch(sample_grads: np.ndarray, state: EpochRMSState) -> EpochRMSState:
        if epoch_gradients == "previous" and state.count > 0:  # and start the next epoch's sums
            return EpochRMSState(inverse_root(state.square_sum / state.count), np.zeros_like(state.square_sum), 0)
        # `current` (or a first epoch): the sums are not used, so nothing is allocated for them
        mean_square = sample_sum(sample_grads * sample_grads) / sample_grads.shape[-1]
        return EpochRMSState(inverse_root(mean_square), state.square_sum, 0)

    def observe(sample_grads: np.ndarray, state: EpochRMSState) -> EpochRMSState:
        square_sum = state.square_sum + sample_sum(sample_grads * sample_grads)
        return EpochRMSState(state.scale, square_sum, state.count + sample_grads.shape[-1])

    def update(grad: np.ndarray, state: EpochRMSState, lr: float) -> tuple[np.ndarray, EpochRMSState]:
        return grad * state.scale * -lr, state

    conventions = {
        "eps": "added to √v (outside the square root)",
        "M_t from": ("per-sample gradients at the start of the epoch" if epoch_gradients == "current" else
                     "per-sample gradients of the previous epoch, where each step was taken"),
        "momentum": "none",
        "bias correction": "none",
        "v_i = 0": "M_ii = 0 (as sign(0) = 0)",
    }
    return Optimizer(init, update, begin_epoch=begin_epoch, conventions=conventions,
                     observe=observe if epoch_gradients == "previous" else None)


def rescaled_sgd() -> Optimizer:
    """Rescale every feature to unit second moment, run SGD on θ', map back θ = s ⊙ θ'.

    s_i = 1/rms(column i of A). Literally the homework's recipe; equivalent to GD
    preconditioned by P = diag(s)² (docs/theory.md §2.2).
    """
    conventions = {"rescaling": "s_i = 1/rms(column i of A), computed once from the data; zero columns keep s_i = 1"}
    return Optimizer(_no_state, _sgd_update, reparametrize=rescale_features, conventions=conventions)


def steepest(norm: str, p: float, squared: bool) -> Optimizer:
    """Steepest descent under a norm: Δ = argmin_Δ gᵀΔ + (1/α)‖Δ‖² with α = 2·α_t.

    The factor 2 makes ``norm: l2`` exactly SGD with the same rate. ``p`` is used only with
    ``norm: lp`` (1 < p < ∞). See :mod:`implicit_bias.norms` for the closed forms. The ℓ∞
    step −α_t ‖g‖₁ sign(g) shrinks with the gradient, so unlike plain signSGD it converges
    with a constant α_t.
    """
    try:
        norms.check_penalty(squared)
    except ValueError as err:
        raise ConfigError(f"The 'squared' parameter of optimizer 'steepest' must be true: {err}.") from None

    def update(grad: np.ndarray, state: EmptyState, lr: float) -> tuple[np.ndarray, EmptyState]:
        return norms.penalized_step(grad, 2.0 * lr, norm, p), state

    conventions = {"step": "argmin gᵀΔ + (1/(2·lr))‖Δ‖²", "l1 ties": "lowest index", "sign(0)": "0"}
    return Optimizer(_no_state, update, conventions=conventions)


class MomentumState(NamedTuple):
    previous: np.ndarray  # polyak: the last step Δ_{t−1};  torch: the buffer b_{t−1}


#: heavy-ball conventions: they agree for a constant step and differ under a schedule
MOMENTUM_CONVENTIONS = {
    "polyak": "Δ_t = −lr_t g_t + μ Δ_{t−1}",
    "torch": "b_t = μ b_{t−1} + g_t, Δ_t = −lr_t b_t (torch.optim.SGD, optax.sgd(momentum=μ))",
}


def momentum(momentum: float, convention: str) -> Optimizer:
    """Heavy ball (Polyak 1964), in one of two conventions (docs/theory.md §4):

    ``polyak``  Δ_t = −α_t ∇f(θ_t) + μ Δ_{t−1}, i.e. θ_{t+1} = θ_t − α_t ∇f(θ_t) + μ (θ_t − θ_{t−1});
    ``torch``   b_t = μ b_{t−1} + ∇f(θ_t), Δ_t = −α_t b_t (torch.optim.SGD with momentum,
                dampening 0; optax.sgd with momentum).

    With a constant step the two are the same recurrence (Δ_t = −α b_t); under a schedule the
    past gradients are scaled by past rates (polyak) or by the current rate (torch)."""

    def init(theta0: np.ndarray) -> MomentumState:
        return MomentumState(np.zeros_like(theta0))

    if convention == "polyak":
        def update(grad: np.ndarray, state: MomentumState, lr: float) -> tuple[np.ndarray, MomentumState]:
            delta = grad * -lr + state.previous * momentum
            return delta, MomentumState(delta)
    else:
        def update(grad: np.ndarray, state: MomentumState, lr: float) -> tuple[np.ndarray, MomentumState]:
            buffer = state.previous * momentum + grad
            return buffer * -lr, MomentumState(buffer)

    return Optimizer(init, update, conventions={"form": f"{convention}: {MOMENTUM_CONVENTIONS[convention]}"})


class NesterovState(NamedTuple):
    buffer: np.ndarray  # b_t = μ b_{t−1} + g_t


def nesterov(momentum: float) -> Optimizer:
    """Nesterov momentum in the form of Sutskever et al. (2013) as implemented by PyTorch:
    b_t = μ b_{t−1} + g_t,  Δ_t = −α_t (g_t + μ b_t) — Nesterov's method written for the
    look-ahead iterate, so only gradients at the current θ are needed."""

    def init(theta0: np.ndarray) -> NesterovState:
        return NesterovState(np.zeros_like(theta0))

    def update(grad: np.ndarray, state: NesterovState, lr: float) -> tuple[np.ndarray, NesterovState]:
        buffer = state.buffer * momentum + grad
        return (grad + buffer * momentum) * -lr, NesterovState(buffer)

    return Optimizer(init, update, conventions={"form": "b_t = μ b_{t−1} + g_t, Δ_t = −lr (g_t + μ b_t)"})


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, with 0 where the denominator is 0 (the sign(0) = 0 convention)."""
    out = np.zeros_like(numerator)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


class AdamState(NamedTuple):
    m: np.ndarray
    v: np.ndarray
    count: int  # t, the number of updates so far (shared by every member)


def _powers(beta: Any) -> Callable[[int], Any]:
    """t ↦ β^t, computed as torch.optim does (Python's float power, one libm ``pow`` call),
    to within an ulp whatever t. ``beta`` is a float, or a (B, 1, 1) array of per-member
    values: then each distinct value is raised once per step, by the same scalar ``pow``, so
    every member gets the bits it gets when it runs alone (numpy's array power may be a
    different, vectorized implementation)."""
    if not isinstance(beta, np.ndarray):
        return lambda t: beta ** t
    values = sorted(set(beta.ravel().tolist()))
    index = np.searchsorted(np.array(values), beta)  # (B, 1, 1) positions of each member's value
    return lambda t: np.array([value ** t for value in values])[index]


def adam(beta1: float, beta2: float, eps: float, bias_correction: bool, eps_placement: str) -> Optimizer:
    """Adam (Kingma & Ba, ICLR 2015):
    m_t = β1 m + (1 − β1) g,  v_t = β2 v + (1 − β2) g²,
    m̂ = m_t/(1 − β1^t), v̂ = v_t/(1 − β2^t) (or m̂ = m_t, v̂ = v_t without bias correction),
    Δ = −α_t m̂/(√v̂ + ε)  (eps_placement: outside)  or  −α_t m̂/√(v̂ + ε)  (inside).

    β^t is a power of the step count, as in torch.optim and optax (a running product
    β^{t−1}·β would accumulate one rounding per step: about t·eps relative after t steps)."""
    power1, power2 = _powers(beta1), _powers(beta2)

    def init(theta0: np.ndarray) -> AdamState:
        return AdamState(np.zeros_like(theta0), np.zeros_like(theta0), 0)

    def update(grad: np.ndarray, state: AdamState, lr: float) -> tuple[np.ndarray, AdamState]:
        t = state.count + 1
        m = state.m * beta1 + grad * (1.0 - beta1)
        v = state.v * beta2 + grad * grad * (1.0 - beta2)
        m_hat, v_hat = (m / (1.0 - power1(t)), v / (1.0 - power2(t))) if bias_correction else (m, v)
        denominator = np.sqrt(v_hat) + eps if eps_placement == "outside" else np.sqrt(v_hat + eps)
        return _ratio(m_hat, denominator) * -lr, AdamState(m, v, t)

    conventions = {"eps": f"{eps_placement} the square root", "bias correction": "on" if bias_correction else "off",
                   "β^t": "β ** t (libm pow)", "0/0": "0 (as sign(0) = 0)"}
    return Optimizer(init, update, conventions=conventions)


class AccumulatorState(NamedTuple):
    v: np.ndarray  # AdaGrad: Σ g²;  RMSProp: running mean of g²


def adagrad(eps: float) -> Optimizer:
    """AdaGrad (Duchi, Hazan, Singer 2011): v_t = v_{t−1} + g², Δ = −α_t g/(√v_t + ε)."""

    def init(theta0: np.ndarray) -> AccumulatorState:
        return AccumulatorState(np.zeros_like(theta0))

    def update(grad: np.ndarray, state: AccumulatorState, lr: float) -> tuple[np.ndarray, AccumulatorState]:
        v = state.v + grad * grad
        return _ratio(grad, np.sqrt(v) + eps) * -lr, AccumulatorState(v)

    return Optimizer(init, update, conventions={"eps": "outside the square root", "0/0": "0"})


def rmsprop(beta: float, eps: float) -> Optimizer:
    """RMSProp (Tieleman & Hinton 2012): v_t = β v + (1 − β) g², Δ = −α_t g/(√v_t + ε)."""

    def init(theta0: np.ndarray) -> AccumulatorState:
        return AccumulatorState(np.zeros_like(theta0))

    def update(grad: np.ndarray, state: AccumulatorState, lr: float) -> tuple[np.ndarray, AccumulatorState]:
        v = state.v * beta + grad * grad * (1.0 - beta)
        return _ratio(grad, np.sqrt(v) + eps) * -lr, AccumulatorState(v)

    return Optimizer(init, update, conventions={"eps": "outside the square root", "bias correction": "none", "0/0": "0"})


def preconditioned(diagonal: np.ndarray) -> Optimizer:
    """GD with a fixed diagonal preconditioner: θ ← θ − α_t P ∇f(θ), P = diag(diagonal) ≻ 0.
    Its limit is θ0 + P^{1/2}(A P^{1/2})⁺(b − Aθ0) (docs/theory.md §2.2)."""
    if np.any(diagonal <= 0):
        raise ConfigError(f"The 'diagonal' parameter of optimizer 'preconditioned' must be positive "
                          f"(P ≻ 0). Got {diagonal.tolist()} instead.")

    column = diagonal[:, np.newaxis]

    def update(grad: np.ndarray, state: EmptyState, lr: float) -> tuple[np.ndarray, EmptyState]:
        return grad * column * -lr, state

    return Optimizer(_no_state, update, dimension=diagonal.shape[0])


UNIT = Real(0.0, 1.0, closed="left")
EPS = Real(0.0, closed="left")

OPTIMIZERS = {
    "sgd": Spec(sgd),
    "sign_sgd": Spec(sign_sgd),
    "epoch_rms_adam": Spec(epoch_rms_adam, {"eps": EPS, "epoch_gradients": Choice(("current", "previous"))}),
    "rescaled_sgd": Spec(rescaled_sgd),
    "steepest": Spec(steepest, {"norm": Choice(norms.NORMS), "p": Real(1.0), "squared": Boolean()}),
    "momentum": Spec(momentum, {"momentum": UNIT, "convention": Choice(tuple(MOMENTUM_CONVENTIONS))}),
    "nesterov": Spec(nesterov, {"momentum": UNIT}),
    "adam": Spec(adam, {"beta1": UNIT, "beta2": UNIT, "eps": EPS, "bias_correction": Boolean(),
                        "eps_placement": Choice(("outside", "inside"))}),
    "adagrad": Spec(adagrad, {"eps": EPS}),
    "rmsprop": Spec(rmsprop, {"beta": UNIT, "eps": EPS}),
    "preconditioned": Spec(preconditioned, {"diagonal": Vector()}),
}
