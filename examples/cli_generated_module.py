"""Write a loss module with the command line, then import it like any Python file.

    metricc compile gmean -o gmean_loss.py

writes a standalone module that imports only torch: it can be vendored into a
project that does not install metricc (or sympy). This script runs that command
into a temporary folder, imports the file, checks it against the in-memory loss
from ``metricc.compile_metric`` and trains a logistic model with it.
"""

import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

import metricc


def write_module(folder: Path) -> Path:
    path = folder / "gmean_loss.py"
    subprocess.run([sys.executable, "-m", "metricc", "compile", "gmean", "-o", str(path)], check=True)
    return path


def import_file(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = write_module(Path(folder))
        source = path.read_text()
        print(f"wrote {path.name}: {len(source.splitlines())} lines; imports:",
              sorted({line.split()[1] for line in source.splitlines() if line.startswith(("import ", "from "))}))
        gmean_loss = import_file(path)
    loss_fn = gmean_loss.GmeanLoss()
    print(loss_fn)

    # The file holds the same code compile_metric runs in memory: same value, same gradient.
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(64, generator=generator, dtype=torch.float64) * 0.05
    target = (torch.rand(64, generator=generator) < 0.2).long()
    a = logits.clone().requires_grad_()
    b = logits.clone().requires_grad_()
    loss_fn(a, target).backward()
    metricc.compile_metric("gmean")(b, target).backward()
    assert torch.equal(a.grad, b.grad)
    print("file module and compile_metric agree: loss and gradient identical")

    # Train a logistic model on 9:1 data with the imported loss.
    y = (torch.rand(4000, generator=generator) < 0.1).double()
    x = torch.randn(4000, 3, generator=generator, dtype=torch.float64) + y[:, None] * 1.2
    model = torch.nn.Linear(3, 1).double()
    torch.nn.init.zeros_(model.weight)
    torch.nn.init.zeros_(model.bias)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    for epoch in range(300):
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        if epoch % 100 == 0 or epoch == 299:
            print(f"epoch {epoch:3d}  loss {loss.item():.4f}")
    with torch.no_grad():
        predicted = model(x).squeeze(1) > 0
    recall = (predicted & (y == 1)).sum() / (y == 1).sum()
    specificity = (~predicted & (y == 0)).sum() / (y == 0).sum()
    print(f"training G-mean of hard predictions: {(recall * specificity).sqrt().item():.3f}")


if __name__ == "__main__":
    main()
