"""A first network: an MLP trained by fms_dl's autograd, its gradients checked against PyTorch's.

Run from the repository root: `uv run python packages/fms-dl/examples/first_network.py`
(scikit-learn, for the digits, and torch, for the comparison, are in the workspace).
"""

import numpy as np
import torch
from sklearn.datasets import load_digits

import fms_dl
from fms_dl import nn, optim
from fms_dl.data import DataLoader, TensorDataset
from fms_dl.nn import functional as F

x, y = load_digits(return_X_y=True)  # 1797 images of 8x8 pixels, 10 classes
x = (x / 16.0).astype(np.float32)
order = np.random.default_rng(0).permutation(len(y))  # a random 1400 / 397 split
x_train, y_train, x_test, y_test = (
    x[order[:1400]],
    y[order[:1400]],
    x[order[1400:]],
    y[order[1400:]],
)

fms_dl.manual_seed(0)
model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
opt = optim.Adam(model.parameters(), lr=1e-2)
loader = DataLoader(TensorDataset(x_train, y_train), batch_size=64, shuffle=True, seed=0)
for epoch in range(5):
    for xb, yb in loader:
        opt.zero_grad()
        loss = F.cross_entropy(model(xb), yb)  # the forward pass records the graph
        loss.backward()  # one reverse sweep fills .grad of every parameter
        opt.step()
    print(f"epoch {epoch + 1}: last batch loss {loss.item():.3f}")

with fms_dl.no_grad():
    accuracy = (model(fms_dl.Tensor(x_test)).argmax(-1).data == y_test).mean()
print(f"test accuracy {accuracy:.3f} on {len(y_test)} unseen digits")

# The same network in PyTorch, with our weights copied in: both gradients of one batch agree.
reference = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
reference.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in model.state_dict().items()})
opt.zero_grad()
F.cross_entropy(model(fms_dl.Tensor(x_test)), fms_dl.Tensor(y_test)).backward()
torch.nn.functional.cross_entropy(
    reference(torch.from_numpy(x_test)), torch.from_numpy(y_test)
).backward()
ours = dict(model.named_parameters())
gap = max(np.abs(ours[k].grad.data - p.grad.numpy()).max() for k, p in reference.named_parameters())
print(f"largest difference from PyTorch's gradients {gap:.0e}")
