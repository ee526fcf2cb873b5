"""Compile F1 into a loss and train a linear classifier on imbalanced data (9:1) with it.

Runs in a few seconds on a CPU; needs only torch and metricc. Compares against BCE
on the F1 of hard predictions (threshold 0.5) on held-out data.
"""

import torch

import metricc


def make_data(n: int, generator: torch.Generator):
    """Two overlapping Gaussian blobs, 10 % positives."""
    y = (torch.rand(n, generator=generator) < 0.1).double()
    x = torch.randn(n, 2, generator=generator, dtype=torch.float64) + y[:, None] * torch.tensor([1.5, 1.0],
                                                                                               dtype=torch.float64)
    return x, y


def f1_of_hard_predictions(logits: torch.Tensor, y: torch.Tensor) -> float:
    predicted = logits > 0
    tp = (predicted & (y == 1)).sum().item()
    fp = (predicted & (y == 0)).sum().item()
    fn = (~predicted & (y == 1)).sum().item()
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def train(loss_fn, x, y, epochs: int = 300) -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1).double()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(epochs):
        optimizer.zero_grad()
        loss = loss_fn(model(x).squeeze(1), y)
        loss.backward()
        optimizer.step()
    return model


def main() -> None:
    generator = torch.Generator().manual_seed(0)
    x_train, y_train = make_data(4000, generator)
    x_test, y_test = make_data(4000, generator)

    f1_loss = metricc.compile_metric("2*TP/(2*TP+FP+FN)", name="f1")
    print(f1_loss)
    print(f1_loss.derivation.text().split("\n\n")[2])  # the partial derivatives

    losses = {"bce": torch.nn.BCEWithLogitsLoss(), "f1 (metricc)": f1_loss}
    for name, loss_fn in losses.items():
        model = train(loss_fn, x_train, y_train)
        with torch.no_grad():
            score = f1_of_hard_predictions(model(x_test).squeeze(1), y_test)
        print(f"{name:14s} test F1 = {score:.3f}")


if __name__ == "__main__":
    main()
