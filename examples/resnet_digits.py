"""Train a small ResNet on 8×8 digit images, one digit against the rest, with a compiled F1 loss.

The AnyLoss paper's ResNet50/MNIST experiment in miniature: scikit-learn's
digits (1,797 images, digit 8 positive, about 1:9), a three-block ResNet with
batch normalization, Adam, 15 epochs. Compares BCE and the compiled F1 loss on
the F1 of hard predictions of a held-out quarter of the images. Needs the
experiments extra (pip install -e ".[experiments]"); well under a minute on a CPU
(on this split BCE scores the higher F1: see docs/reproduction.md).

    python examples/resnet_digits.py
    metricc experiment --datasets digits --model resnet --losses bce,f1 --folds 10   # the cross-validated version
"""

import torch
from sklearn.metrics import f1_score
from sklearn.model_selection import train_test_split

import metricc
from metricc.experiments.datasets import load_dataset
from metricc.experiments.models import ResNet

EPOCHS = 15
BATCH_SIZE = 64


def train(loss_fn, x: torch.Tensor, y: torch.Tensor, image_shape) -> ResNet:
    torch.manual_seed(0)
    model = ResNet(image_shape).double()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    order = torch.Generator().manual_seed(0)
    for epoch in range(EPOCHS):
        model.train()
        total = 0.0
        for batch in torch.randperm(len(y), generator=order).split(BATCH_SIZE):
            optimizer.zero_grad()
            loss = loss_fn(model(x[batch]), y[batch])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        if epoch % 5 == 4:
            print(f"  epoch {epoch + 1:2d}  mean loss {total / len(y):.4f}")
    return model


def main() -> None:
    digits = load_dataset("digits")
    print(digits.summary())
    x_train, x_test, y_train, y_test = train_test_split(digits.X, digits.y, test_size=0.25, stratify=digits.y,
                                                        random_state=0)
    mean, scale = x_train.mean(), x_train.std()  # fitted on the training images only
    x_train, x_test = (torch.tensor((a - mean) / scale) for a in (x_train, x_test))
    y_train_t = torch.tensor(y_train, dtype=torch.float64)

    # float64: AnyLoss's L = 73 is a valid amplifier there (in float32 it saturates, see metricc.Sigmoid).
    losses = {"bce": torch.nn.BCEWithLogitsLoss(), "f1 (metricc)": metricc.compile_metric("f1")}
    for name, loss_fn in losses.items():
        print(f"training with {name}")
        model = train(loss_fn, x_train, y_train_t, digits.image_shape)
        model.eval()
        with torch.no_grad():
            predicted = (model(x_test) > 0).long().numpy()
        print(f"{name:14s} test F1 = {f1_score(y_test, predicted):.3f}  "
              f"accuracy = {(predicted == y_test).mean():.3f}")


if __name__ == "__main__":
    main()
