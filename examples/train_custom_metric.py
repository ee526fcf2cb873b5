"""Compile a metric of your own and train a small network on it in plain PyTorch.

The metric: an F-score that counts a missed positive three times as much as a
false alarm, 2·TP / (2·TP + FP + 3·FN) — written as text, no catalog entry needed.
The model: a two-layer MLP trained with minibatches from a DataLoader, in
float32, on imbalanced synthetic data (about 8 % positives). Needs only torch and
metricc; runs in a few seconds on a CPU.

In float32 the AnyLoss default (L = 73) rounds soft predictions to exactly 0 or 1
(metricc warns); ``metricc.valid_amplifier_range`` gives the valid L for a dtype.
"""

import torch
from torch.utils.data import DataLoader, TensorDataset

import metricc

METRIC = "2*TP/(2*TP + FP + 3*FN)"


def make_data(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Positives (8 %) are shifted along a curved direction: a linear model is not enough."""
    y = (torch.rand(n, generator=generator) < 0.08).float()
    x = torch.randn(n, 4, generator=generator)
    x[:, 0] += 1.6 * y
    x[:, 1] += y * (x[:, 2] ** 2 - 1.0)
    return x, y


def hard_counts(logits: torch.Tensor, y: torch.Tensor) -> tuple[int, int, int]:
    predicted = logits > 0
    positive = y == 1
    tp = int((predicted & positive).sum())
    return tp, int((predicted & ~positive).sum()), int((~predicted & positive).sum())


def custom_score(logits: torch.Tensor, y: torch.Tensor) -> float:
    """The metric on hard predictions (threshold 0.5), computed directly from counts."""
    tp, fp, fn = hard_counts(logits, y)
    return 2 * tp / (2 * tp + fp + 3 * fn) if tp else 0.0


def train(loss_fn, loader: DataLoader, epochs: int = 30) -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(epochs):
        for x, y in loader:
            optimizer.zero_grad()
            loss = loss_fn(model(x).squeeze(1), y)
            loss.backward()
            optimizer.step()
    return model


def main() -> None:
    low, high = metricc.valid_amplifier_range(1e-3, torch.float32)
    scale = round((low + high) / 2)
    print(f"float32: valid amplifier scales L in [{low:.1f}, {high:.1f}]; using L = {scale}")

    recall_heavy = metricc.compile_metric(METRIC, name="recall_heavy_f", relaxation=metricc.Sigmoid(L=scale))
    print(recall_heavy)
    print(recall_heavy.derivation.text().split("\n\n")[2], "\n")  # ∂metric/∂TP, ∂FN, ∂FP, ∂TN

    generator = torch.Generator().manual_seed(0)
    x_train, y_train = make_data(8000, generator)
    x_test, y_test = make_data(8000, generator)
    # Large batches: a confusion-matrix loss is a statistic of the batch (soft-set paper, §4.2).
    loader = DataLoader(TensorDataset(x_train, y_train), batch_size=1000, shuffle=True,
                        generator=torch.Generator().manual_seed(0))

    for name, loss_fn in {"bce": torch.nn.BCEWithLogitsLoss(), METRIC: recall_heavy}.items():
        model = train(loss_fn, loader)
        with torch.no_grad():
            logits = model(x_test).squeeze(1)
        tp, fp, fn = hard_counts(logits, y_test)
        print(f"{name:26s} test {METRIC} = {custom_score(logits, y_test):.3f}   (TP {tp}, FP {fp}, FN {fn})")


if __name__ == "__main__":
    main()
