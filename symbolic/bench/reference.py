"""Hand-written NumPy models: the benchmark's "careful NumPy" competitor and a test oracle.

Nothing here comes from the generator: these are the sigmoid MLP and the gated recurrent
neuron of "Neural Networks Derivatives" (W. Moraes, 2020) written out by hand, the way a
careful engineer would write them in plain NumPy, with their backward passes derived on
paper. Two uses:

- ``derivgen bench`` times them as the hand-written NumPy competitor;
- the tests compare the generated modules against them (a second implementation: a
  gradient test whose oracle came from the same derivation would prove nothing).

Parameter names and shapes are those of the generated modules (``W``, ``B`` per dense
layer; ``WXu``, ``WXc``, ``WTu``, ``WTc``, ``Bu``, ``Bc`` for the GRN), batches are rows
(``x`` is (B, n_in), or (T, B, n_in) for the GRN), and the dtype follows the inputs.

What makes them "careful" rather than a transcription of the paper:

- every matrix product is one BLAS call over the whole batch (and, for the GRN, over
  every time step at once: the input projections are hoisted out of the time loop and
  the weight gradients are summed after it);
- the GRN stacks its two input matrices, so the projections are one GEMM, not two;
- forward values are cached and reused by the backward pass (sigmoid' = G(1 - G),
  tanh' = 1 - ac^2), and the time loops write into preallocated buffers with ``out=``;
- the GRN's backward recurrence is linear in the adjoint: dC/dh_{t-1} = J_t * dC/da_t with
  J_t a function of forward values only. The coefficients are computed vectorised over
  blocks of time steps that fit in cache, and the sequential part is two ufunc calls a
  step.
"""

from __future__ import annotations

import numpy as np

MLP_PARAMS = ("W", "B")
GRN_PARAMS = ("WXu", "WXc", "WTu", "WTc", "Bu", "Bc")

# Bytes of one (time block, batch, units) buffer in the GRN backward: small enough that a
# block's coefficient arrays stay in the L2 cache while the scan reads them.
_BLOCK_BYTES = 1 << 17


def _sigmoid_inplace(z: np.ndarray) -> np.ndarray:
    """sigma(z) = 1 / (1 + e^{-z}) (paper section 1), computed in place as
    (1 + tanh(z/2)) / 2, which cannot overflow for large |z|."""
    z *= 0.5
    np.tanh(z, out=z)
    z *= 0.5
    z += 0.5
    return z


def sigmoid(z: np.ndarray) -> np.ndarray:
    """The logistic function, elementwise, in the dtype of ``z``."""
    return _sigmoid_inplace(np.array(z, copy=True))


# --- cost -------------------------------------------------------------------------------


def squared_error(a: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """C = sum_i (a_i - y_i)^2 (paper section 1), summed over units and time steps and
    averaged over the batch (axis -2).

    Args:
        a: The prediction, (..., B, n).
        y: The target, the same shape.

    Returns:
        ``(C, dC/da)``; the gradient has the shape and dtype of ``a``.
    """
    batch = a.shape[-2]
    diff = a - y
    flat = diff.reshape(-1)
    cost = float(np.dot(flat, flat)) / batch
    diff *= 2.0 / batch
    return cost, diff


# --- sigmoid MLP ------------------------------------------------------------------------


def mlp_forward(
    layers: list[dict[str, np.ndarray]], x: np.ndarray
) -> tuple[np.ndarray, list[np.ndarray]]:
    """a^l = sigmoid(W^l a^{l-1} + B^l) for every layer (paper section 1).

    Args:
        layers: One ``{"W": (n_out, n_in), "B": (n_out,)}`` per layer, input first.
        x: (B, n_in) input batch.

    Returns:
        ``(a, activations)``: the last layer's output and every layer's output, the input
        first, which ``mlp_backward`` reads.
    """
    activations = [x]
    a = x
    for layer in layers:
        z = a @ layer["W"].T
        z += layer["B"]
        a = _sigmoid_inplace(z)
        activations.append(a)
    return a, activations


def mlp_backward(
    layers: list[dict[str, np.ndarray]],
    activations: list[np.ndarray],
    da: np.ndarray,
    *,
    input_grad: bool = False,
) -> tuple[list[dict[str, np.ndarray]], np.ndarray | None]:
    """Backpropagation through the MLP (paper section 1):
    dC/dz^l = sigma'(z^l) dC/da^l = a^l (1 - a^l) dC/da^l,
    dC/dW^l = dC/dz^l (a^{l-1})^T, dC/dB^l = dC/dz^l, dC/da^{l-1} = (W^l)^T dC/dz^l.

    Args:
        layers: The parameters given to ``mlp_forward``.
        activations: What ``mlp_forward`` returned with the output.
        da: (B, n_out) gradient of the cost by the output.
        input_grad: Whether to compute dC/dx too (training does not need it, so a careful
            implementation skips that matrix product).

    Returns:
        ``(grads, dx)``: one ``{"W", "B"}`` dict per layer; dx is None unless asked for.
    """
    grads: list[dict[str, np.ndarray]] = [{} for _ in layers]
    delta = da
    for index in range(len(layers) - 1, -1, -1):
        a = activations[index + 1]
        dz = 1.0 - a
        dz *= a
        dz *= delta
        grads[index] = {"W": dz.T @ activations[index], "B": dz.sum(axis=0)}
        if index > 0 or input_grad:
            delta = dz @ layers[index]["W"]
    return grads, (delta if input_grad else None)


def mlp_step(
    layers: list[dict[str, np.ndarray]], x: np.ndarray, y: np.ndarray
) -> tuple[float, list[dict[str, np.ndarray]]]:
    """One training step's work: the cost and the gradient of every parameter."""
    a, activations = mlp_forward(layers, x)
    cost, da = squared_error(a, y)
    grads, _ = mlp_backward(layers, activations, da)
    return cost, grads


# --- gated recurrent neuron -------------------------------------------------------------


def grn_forward(
    params: dict[str, np.ndarray], x: np.ndarray, h0: np.ndarray | None = None
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The gated recurrent neuron over a sequence (paper section 2):

        Zu = WTu*h + WXu@x + Bu,  Zc = WTc*h + WXc@x + Bc,
        G = sigmoid(Zu),  ac = tanh(Zc),  a = G*ac + (1 - G)*h,

    with h the previous step's a (h0 at the first step).

    Args:
        params: ``WXu``, ``WXc`` (H, D); ``WTu``, ``WTc``, ``Bu``, ``Bc`` (H,).
        x: (T, B, D) inputs.
        h0: (B, H) state before the first step, or None for zeros.

    Returns:
        ``(a, cache)``: a is (T, B, H); cache holds G, ac and the states h (T + 1 of
        them, h0 first) for ``grn_backward``.
    """
    steps, batch, n_in = x.shape
    n_out = params["WTu"].shape[0]
    dtype = x.dtype
    # One GEMM for both gates and every step; the bias rides along. The update gate's
    # half is pre-scaled by 1/2 (exact in floating point) for sigmoid(z) = (1+tanh(z/2))/2.
    w_stacked = np.concatenate((params["WXu"], params["WXc"]))
    proj = (x.reshape(steps * batch, n_in) @ w_stacked.T).reshape(steps, batch, 2 * n_out)
    proj += np.concatenate((params["Bu"], params["Bc"]))
    proj_u = proj[:, :, :n_out]
    proj_u *= 0.5
    proj_c = proj[:, :, n_out:]
    half_wtu = 0.5 * params["WTu"]
    wtc = params["WTc"]

    states = np.empty((steps + 1, batch, n_out), dtype)
    states[0] = 0.0 if h0 is None else h0
    gate = np.empty((steps, batch, n_out), dtype)
    cand = np.empty((steps, batch, n_out), dtype)
    tmp = np.empty((batch, n_out), dtype)
    for t in range(steps):
        h = states[t]
        g = gate[t]
        c = cand[t]
        # G = sigmoid(Zu) = (1 + tanh(Zu/2)) / 2
        np.multiply(half_wtu, h, out=g)
        g += proj_u[t]
        np.tanh(g, out=g)
        g *= 0.5
        g += 0.5
        # ac = tanh(Zc)
        np.multiply(wtc, h, out=c)
        c += proj_c[t]
        np.tanh(c, out=c)
        # a = G*ac + (1 - G)*h = h + G*(ac - h)
        np.subtract(c, h, out=tmp)
        tmp *= g
        np.add(h, tmp, out=states[t + 1])
    cache = {"x": x, "G": gate, "ac": cand, "h": states}
    return states[1:], cache


def grn_backward(
    params: dict[str, np.ndarray],
    cache: dict[str, np.ndarray],
    da: np.ndarray,
    dh: np.ndarray | None = None,
    *,
    input_grad: bool = False,
) -> tuple[dict[str, np.ndarray], np.ndarray | None, np.ndarray]:
    """Full backpropagation through time for ``grn_forward`` (paper section 2).

    With D_t = dC/da_t (the cost's own gradient plus what flows back from step t+1):

        dZc_t = D_t * G_t * (1 - ac_t^2)                    (tanh' = 1 - ac^2)
        dZu_t = D_t * (ac_t - h_t) * G_t * (1 - G_t)        (sigmoid' = G(1 - G))
        dC/dh_t = D_t * J_t,  J_t = (1 - G_t) + WTu*cu_t + WTc*cc_t

    where cu_t, cc_t are dZu_t / D_t and dZc_t / D_t. J_t needs no adjoint, so it is
    computed vectorised over blocks of steps; the scan D_{t-1} = da_{t-1} + J_t*D_t is
    the only sequential part. Weight gradients are sums over steps and lanes, taken
    after the loop as one GEMM.

    Args:
        params: The parameters given to ``grn_forward``.
        cache: What ``grn_forward`` returned with the output.
        da: (T, B, H) gradient of the cost by the output at every step.
        dh: (B, H) gradient by the state after the last step, or None.
        input_grad: Whether to compute dC/dx (a single GRN layer does not need it).

    Returns:
        ``(grads, dx, dh0)``: grads has the keys and shapes of params; dx is (T, B, D) or
        None unless asked for; dh0 is dC/dh0, (B, H).
    """
    x = cache["x"]
    gate, cand, states = cache["G"], cache["ac"], cache["h"]
    steps, batch, n_in = x.shape
    n_out = params["WTu"].shape[0]
    dtype = x.dtype
    wtu, wtc = params["WTu"], params["WTc"]

    dz = np.empty((steps, batch, 2 * n_out), dtype)  # [dZu | dZc] for every step
    dwtu = np.zeros(n_out, dtype)
    dwtc = np.zeros(n_out, dtype)
    carry = np.zeros((batch, n_out), dtype) if dh is None else dh.copy()  # J_{t+1}*D_{t+1}

    block = max(1, min(steps, _BLOCK_BYTES // (batch * n_out * dtype.itemsize)))
    adj = np.empty((block, batch, n_out), dtype)
    for stop in range(steps, 0, -block):
        start = max(0, stop - block)
        g, c, h = gate[start:stop], cand[start:stop], states[start:stop]
        d = adj[: stop - start]
        cu, cc, jac = _adjoint_coefficients(g, c, h, wtu, wtc)
        # The scan: D_t = da_t + J_{t+1} D_{t+1}.
        for k in range(stop - start - 1, -1, -1):
            np.add(da[start + k], carry, out=d[k])
            np.multiply(jac[k], d[k], out=carry)
        np.multiply(d, cu, out=dz[start:stop, :, :n_out])
        np.multiply(d, cc, out=dz[start:stop, :, n_out:])
        dwtu += np.einsum("tbj,tbj->j", dz[start:stop, :, :n_out], h)
        dwtc += np.einsum("tbj,tbj->j", dz[start:stop, :, n_out:], h)

    dz2 = dz.reshape(steps * batch, 2 * n_out)
    dw = dz2.T @ x.reshape(steps * batch, n_in)
    db = dz2.sum(axis=0)
    grads = {
        "WXu": dw[:n_out],
        "WXc": dw[n_out:],
        "WTu": dwtu,
        "WTc": dwtc,
        "Bu": db[:n_out],
        "Bc": db[n_out:],
    }
    dx = None
    if input_grad:
        w_stacked = np.concatenate((params["WXu"], params["WXc"]))
        dx = (dz2 @ w_stacked).reshape(steps, batch, n_in)
    return grads, dx, carry


def _adjoint_coefficients(
    g: np.ndarray, c: np.ndarray, h: np.ndarray, wtu: np.ndarray, wtc: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The coefficients of the GRN's adjoint over a block of steps, from forward values
    only (see ``grn_backward``): cu = dZu/D = (ac - h) G (1 - G), cc = dZc/D = G (1 - ac^2)
    and J = dC/dh / D = (1 - G) + WTu*cu + WTc*cc."""
    cc = c * c
    np.subtract(1.0, cc, out=cc)
    cc *= g  # dZc / D
    one_minus_g = 1.0 - g
    cu = c - h
    cu *= g
    cu *= one_minus_g  # dZu / D
    jac = wtu * cu
    jac += one_minus_g
    jac += wtc * cc  # J = dC/dh / D
    return cu, cc, jac


def grn_step(
    params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray
) -> tuple[float, dict[str, np.ndarray]]:
    """One training step's work for one GRN layer with its cost on every step's output
    and h0 = 0: the cost and the gradient of every parameter."""
    a, cache = grn_forward(params, x)
    cost, da = squared_error(a, y)
    grads, _, _ = grn_backward(params, cache, da)
    return cost, grads
