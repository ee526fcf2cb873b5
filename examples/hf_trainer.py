"""Train a Hugging Face sequence classifier on a metric loss: ``Trainer(compute_loss_func=...)``.

The Trainer calls ``compute_loss_func(outputs, labels, num_items_in_batch=...)`` with the model's outputs
and the batch's labels; :func:`metricc.functional.metric_loss` is the loss of those logits, its compiled
module built on the first call and reused on every later one. Binary (one logit per sequence) and
multi-label (``problem_type="multi_label_classification"``, one logit per label) classification on a
tiny randomly initialised BERT built from a config in code (nothing is downloaded), in seconds on a CPU:

    python examples/hf_trainer.py --problem binary
    python examples/hf_trainer.py --problem multilabel --steps 60

``num_items_in_batch`` is the Trainer's count for losses that are sums over tokens; a metric of the batch's
confusion matrix is not such a sum, so it is ignored. With ``gradient_accumulation_steps > 1`` the Trainer
averages the metric of each micro-batch, which is not the metric of the accumulated batch: prefer larger
batches (or metricc's running estimator in a custom loop, docs/minibatch.md).
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

from metricc.functional import loss_module, metric_loss

VOCABULARY, LENGTH, LABELS = 40, 12, 3


class TokenDataset(torch.utils.data.Dataset):
    """Random token sequences; label j is 1 where token 5 + j occurs (in about 26 % of them: imbalanced)."""

    def __init__(self, problem: str, n: int = 256, seed: int = 0):
        g = torch.Generator().manual_seed(seed)  # each marker token occurs in about 1 of 4 sequences
        self.input_ids = torch.randint(VOCABULARY, (n, LENGTH), generator=g)
        present = torch.stack([(self.input_ids == 5 + j).any(1) for j in range(LABELS)], 1)
        self.labels = present[:, 0].float() if problem == "binary" else present.float()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.input_ids[i], "attention_mask": torch.ones(LENGTH, dtype=torch.long),
                "labels": self.labels[i]}


def tiny_bert(problem: str) -> BertForSequenceClassification:
    """A two-layer BERT with 32-dimensional states, randomly initialised (no download)."""
    config = BertConfig(vocab_size=VOCABULARY, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=LENGTH,
                        num_labels=1 if problem == "binary" else LABELS,
                        problem_type=None if problem == "binary" else "multi_label_classification")
    torch.manual_seed(0)
    return BertForSequenceClassification(config)


def metric_options(problem: str) -> dict:
    """metric_loss's options for the problem: one logit per sequence, or one per label, averaged micro."""
    return {} if problem == "binary" else {"task": "multilabel", "num_classes": LABELS, "average": "micro"}


def make_compute_loss(metric: str, problem: str):
    """The Trainer's compute_loss_func: ``metric``'s loss of the logits (N, 1) or (N, LABELS)."""
    options = metric_options(problem)

    def compute_loss(outputs, labels, num_items_in_batch=None):
        return metric_loss(metric, outputs.logits, labels, **options)

    return compute_loss


def train(problem: str = "binary", metric: str = "f1", steps: int = 30, batch_size: int = 32,
          output_dir: str | None = None) -> dict:
    """Fine-tune the tiny BERT for ``steps`` steps; returns the first and last training losses and the
    loss on the evaluation set (the Trainer calls compute_loss_func there too)."""
    model = tiny_bert(problem)
    with tempfile.TemporaryDirectory() as scratch:
        args = TrainingArguments(output_dir=output_dir or scratch, max_steps=steps, learning_rate=3e-3,
                                 per_device_train_batch_size=batch_size, per_device_eval_batch_size=128,
                                 logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True,
                                 seed=0, dataloader_num_workers=0)
        trainer = Trainer(model=model, args=args, train_dataset=TokenDataset(problem),
                          eval_dataset=TokenDataset(problem, n=128, seed=1),
                          compute_loss_func=make_compute_loss(metric, problem))
        trainer.train()
        evaluation = trainer.evaluate()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    per_class = loss_module(metric, **metric_options(problem)).per_class  # the last call's, the evaluation's
    return {"first": losses[0], "last": losses[-1], "eval_loss": evaluation["eval_loss"], "model": model,
            "per_class": per_class}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problem", choices=("binary", "multilabel"), default="binary")
    parser.add_argument("--metric", default="f1", help="a catalog name or an expression over TP FN FP TN")
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    result = train(args.problem, args.metric, args.steps)
    print(f"{args.problem} {args.metric}: training loss {result['first']:.4f} -> {result['last']:.4f}, "
          f"evaluation loss {result['eval_loss']:.4f}, per class {[round(v, 3) for v in result['per_class'].tolist()]}")


if __name__ == "__main__":
    main()
