"""Draw the computational graph of one neuron's squared error, with the values of the forward
pass and the gradients of the backward pass, both read from fms_dl's recorded graph.

    python packages/fms-dl/experiments/backprop_graph.py   # writes docs/figures/fms-dl/backprop_graph.png
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from _common import FIGURES

import fms_dl


def main() -> None:
    x = fms_dl.Tensor(np.array(1.5))
    y = fms_dl.Tensor(np.array(0.5))
    w = fms_dl.Tensor(np.array(-0.8), requires_grad=True)
    b = fms_dl.Tensor(np.array(0.3), requires_grad=True)
    a = w * x
    z = a + b
    h = z.tanh()
    d = h - y
    loss = d * d
    names = {id(x): "x", id(y): "y", id(w): "w", id(b): "b", id(a): "a = w·x", id(z): "z = a + b",
             id(h): "h = tanh z", id(d): "d = h − y", id(loss): "L = d²"}  # fmt: skip
    for t in (a, z, h, d, loss):
        t.retain_grad()
    loss.backward()

    pos = {id(x): (0, 2), id(w): (0, 1), id(b): (1, 0), id(y): (3, 0),
           id(a): (1, 1.5), id(z): (2, 1), id(h): (3, 1.5), id(d): (4, 1), id(loss): (5, 1)}  # fmt: skip
    fig, ax = plt.subplots(figsize=(10, 3.6), dpi=100)
    nodes = [x, y, w, b, a, z, h, d, loss]
    for t in nodes:
        for p in t._parents:  # the graph fms_dl recorded in the forward pass
            (x0, y0), (x1, y1) = pos[id(p)], pos[id(t)]
            ax.annotate("", xy=(x1 - 0.28, y1), xytext=(x0 + 0.28, y0),
                        arrowprops={"arrowstyle": "->", "color": "0.4"})  # fmt: skip
    for t in nodes:
        cx, cy = pos[id(t)]
        grad = "" if t.grad is None else f"\n∂L/∂· = {t.grad.item():+.3f}"
        leaf = t.is_leaf
        ax.text(cx, cy, f"{names[id(t)]}\n= {t.item():+.3f}{grad}", ha="center", va="center", fontsize=8.5,
                bbox={"boxstyle": "round", "fc": "#e8eefc" if not leaf else ("#fde9d9" if t.requires_grad else "#eeeeee"),
                      "ec": "0.5"})  # fmt: skip
    ax.set_xlim(-0.5, 5.5)
    ax.set_ylim(-0.6, 2.6)
    ax.axis("off")
    ax.set_title("Forward values (top line) flow left to right; gradients ∂L/∂· flow back right to left",
                 fontsize=10)  # fmt: skip
    fig.tight_layout()
    FIGURES.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURES / "backprop_graph.png")
    print(f"dL/dw = {w.grad.item():+.6f}, dL/db = {b.grad.item():+.6f}")
    zz = -0.8 * 1.5 + 0.3
    hand = 2 * (np.tanh(zz) - 0.5) * (1 - np.tanh(zz) ** 2)
    print(f"by hand: dL/db = 2(h - y)(1 - h^2) = {hand:+.6f}, dL/dw = that * x = {hand * 1.5:+.6f}")


if __name__ == "__main__":
    main()
