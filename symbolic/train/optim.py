"""The optimizers (SGD with momentum, Adam), the learning-rate schedules and the
gradient's global norm.

An optimizer updates the flat parameter dict in place; its state is a dict of arrays per
slot (``velocity``; ``m`` and ``v``), which the checkpoint saves as it is. The same update
rules run on NumPy arrays and on torch tensors (the torch engine's parameters, updated
under ``torch.no_grad``), with the same operations in the same order, so a torch run
follows a NumPy run to rounding; nothing here imports torch.
"""

from __future__ import annotations

import math

import numpy as np

from symbolic.train.config import Config


class Optimizer:
    """Updates parameters in place from their gradients; its state is a dict of arrays.

    Args:
        lr: Learning rate.
    """

    name = ""
    slots: tuple[str, ...] = ()

    def __init__(self, lr: float) -> None:
        self.lr = lr
        self.t = 0
        self.state: dict[str, dict[str, np.ndarray]] = {slot: {} for slot in self.slots}

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        """Apply one update."""
        raise NotImplementedError

    def _slot(self, slot: str, key: str, like: np.ndarray) -> np.ndarray:
        store = self.state[slot]
        if key not in store:
            store[key] = (
                np.zeros_like(like) if isinstance(like, np.ndarray) else like.new_zeros(like.shape)
            )
        return store[key]


class SGD(Optimizer):
    """SGD with (heavy-ball) momentum: v = mu v + g; p -= lr v.

    Args:
        lr: Learning rate.
        momentum: mu; 0 is plain SGD.
    """

    name = "sgd"
    slots = ("velocity",)

    def __init__(self, lr: float, momentum: float = 0.9) -> None:
        super().__init__(lr)
        self.momentum = momentum

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        self.t += 1
        for key, grad in grads.items():
            velocity = self._slot("velocity", key, grad)
            velocity *= self.momentum
            velocity += grad
            params[key] -= self.lr * velocity


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015) with bias correction.

    Args:
        lr: Learning rate.
        betas: Decay rates of the first and second moment estimates.
        eps: Added to the denominator.
    """

    name = "adam"
    slots = ("m", "v")

    def __init__(
        self, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
    ) -> None:
        super().__init__(lr)
        self.betas = betas
        self.eps = eps

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        self.t += 1
        beta1, beta2 = self.betas
        # Bias corrections folded into the step size, as in the paper's Algorithm 1.
        step_size = self.lr * math.sqrt(1 - beta2**self.t) / (1 - beta1**self.t)
        for key, grad in grads.items():
            m = self._slot("m", key, grad)
            v = self._slot("v", key, grad)
            m *= beta1
            m += (1 - beta1) * grad
            v *= beta2
            v += (1 - beta2) * grad * grad
            root = np.sqrt(v) if isinstance(v, np.ndarray) else v.sqrt()
            params[key] -= step_size * m / (root + self.eps)


def make_optimizer(config: Config) -> Optimizer:
    """The optimizer ``config`` names, with a fresh state."""
    if config.optimizer == "sgd":
        return SGD(config.lr, config.momentum)
    return Adam(config.lr)


def learning_rate(config: Config, step: int, total: int) -> float:
    """The learning rate of step ``step`` (0-based) of ``total``."""
    if config.schedule == "cosine":
        return config.lr * 0.5 * (1.0 + math.cos(math.pi * step / total))
    return config.lr


def global_norm(grads: dict[str, np.ndarray]) -> float:
    """The L2 norm of all gradients together (in float64: float32 squares overflow), of
    NumPy arrays or of torch tensors."""
    total = 0.0
    for grad in grads.values():
        if isinstance(grad, np.ndarray):
            flat = grad.ravel().astype(np.float64, copy=False)
            total += float(np.dot(flat, flat))
        else:
            flat = grad.reshape(-1).double()
            total += float(flat @ flat)
    return math.sqrt(total)
