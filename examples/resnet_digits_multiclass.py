"""Train a small ResNet on all ten 8×8 digit classes with a compiled macro-F1 loss and with cross-entropy.

The multi-class counterpart of ``resnet_digits.py``: scikit-learn's digits (1,797 images, ten classes),
the experiments' three-block ResNet with a ten-way head, Adam, 15 epochs, batches of 64, a held-out
quarter of the images. Compares cross-entropy with metricc's macro-F1 loss under the two multi-class
relaxations, the identity ŷ = softmax(z) and the softmax amplifier ŷ = softmax(L/2·softmax(z))
(docs/multiclass.md measures both). Needs the experiments extra (pip install -e ".[experiments]");
about a minute of CPU.

    python examples/resnet_digits_multiclass.py
    metricc experiment --task multiclass --datasets digits --model resnet --losses ce,macro-f1@identity
"""

import warnings

import torch
from sklearn.metrics import f1_score
from sklearn.model_selection import train_test_split

import metricc
from metricc.experiments.multiclass_data import digits_dataset
from metricc.experiments.multiclass_protocol import build_task_model

EPOCHS = 15
BATCH_SIZE = 64


def train(loss_fn, x: torch.Tensor, y: torch.Tensor, image_shape) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_task_model("resnet", x.shape[1], 10, image_shape).double()
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
    digits = digits_dataset()
    print(digits.summary())
    x_train, x_test, y_train, y_test = train_test_split(digits.X, digits.y, test_size=0.25, stratify=digits.y,
                                                        random_state=0)
    mean, scale = x_train.mean(), x_train.std()  # fitted on the training images only
    x_train, x_test = (torch.tensor((a - mean) / scale) for a in (x_train, x_test))
    y_train_t = torch.tensor(y_train)  # class indices

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", metricc.MetricWarning)
        losses = {
            "cross-entropy": torch.nn.CrossEntropyLoss(),
            "macro F1, identity": metricc.compile_metric("f1", task="multiclass", num_classes=10, average="macro"),
            "macro F1, amplifier": metricc.compile_metric("f1", task="multiclass", num_classes=10, average="macro",
                                                          relaxation="anyloss"),
        }
    for name, loss_fn in losses.items():
        print(f"training with {name}")
        model = train(loss_fn, x_train, y_train_t, digits.image_shape)
        model.eval()
        with torch.no_grad():
            predicted = model(x_test).argmax(1).numpy()
        print(f"{name:20s} test macro-F1 = {f1_score(y_test, predicted, average='macro'):.3f}  "
              f"accuracy = {(predicted == y_test).mean():.3f}")
        if hasattr(loss_fn, "per_class"):
            print("  last batch's F1 per class:", " ".join(f"{v:.2f}" for v in loss_fn.per_class.tolist()))


if __name__ == "__main__":
    main()
