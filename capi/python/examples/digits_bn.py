"""An MLP on scikit-learn's digits, with and without normkit batch normalization.

    PYTHONPATH=capi/python /usr/bin/python3 capi/python/examples/digits_bn.py

Trains the same MLP (64-128-128-10, ReLU; SGD with learning rate 0.02, momentum 0.9,
batches of 64) with normkit.torch.BatchNorm1d after each hidden layer and without it,
from several seeds; prints the epochs each run needs to reach the target validation
accuracy and writes a plot of training loss and validation accuracy (digits_bn.png next
to this file unless --png says otherwise).
The data set ships inside scikit-learn: nothing is downloaded.
"""

import argparse
import collections
import pathlib

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import normkit.torch

TARGET_ACCURACY = 0.95
BATCH_SIZE = 64
LEARNING_RATE = 0.02
HIDDEN = 128

History = collections.namedtuple("History", "loss accuracy epochs_to_target")


def load_data():
    """Train and validation splits, fixed across runs: pixels scaled to [0, 1], as
    they come (no standardization, which is the work batch norm takes over)."""
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    x_train, x_val, y_train, y_val = train_test_split(x, digits.target, test_size=0.2, random_state=0,
                                                      stratify=digits.target)
    return (torch.from_numpy(x_train), torch.from_numpy(y_train).long(),
            torch.from_numpy(x_val), torch.from_numpy(y_val).long())


def make_model(norm, seed):
    """norm: None, "normkit" or "torch" (torch.nn.BatchNorm1d, to compare against)."""
    batch_norm = {"normkit": normkit.torch.BatchNorm1d, "torch": torch.nn.BatchNorm1d}.get(norm)
    torch.manual_seed(seed)
    layers, width = [], 64
    for _ in range(2):
        layers.append(torch.nn.Linear(width, HIDDEN, bias=batch_norm is None))
        if batch_norm is not None:
            layers.append(batch_norm(HIDDEN))
        layers.append(torch.nn.ReLU())
        width = HIDDEN
    layers.append(torch.nn.Linear(width, 10))
    return torch.nn.Sequential(*layers)


def train(model, data, seed, epochs, step_losses=None, stop_at_target=False):
    """Trains model; returns its History. step_losses, if a list, receives every step's loss."""
    x_train, y_train, x_val, y_val = data
    dtype = next(model.parameters()).dtype
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=0.9)
    order = torch.Generator().manual_seed(seed)
    losses, accuracies, reached = [], [], None
    for epoch in range(1, epochs + 1):
        model.train()
        total, batches = 0.0, 0
        permutation = torch.randperm(len(x_train), generator=order)
        # The last partial batch is dropped: every step sees BATCH_SIZE samples.
        for start in range(0, len(x_train) - BATCH_SIZE + 1, BATCH_SIZE):
            index = permutation[start:start + BATCH_SIZE]
            loss = torch.nn.functional.cross_entropy(model(x_train[index].to(dtype)), y_train[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, batches = total + loss.item(), batches + 1
            if step_losses is not None:
                step_losses.append(loss.item())
        model.eval()
        with torch.no_grad():
            accuracy = (model(x_val.to(dtype)).argmax(dim=1) == y_val).double().mean().item()
        losses.append(total / batches)
        accuracies.append(accuracy)
        if reached is None and accuracy >= TARGET_ACCURACY:
            reached = epoch
            if stop_at_target:
                break
    return History(losses, accuracies, reached)


def run(seeds, epochs):
    """{(norm, seed): History} for norm None and "normkit"."""
    data = load_data()
    return {(norm, seed): train(make_model(norm, seed), data, seed, epochs)
            for norm in (None, "normkit") for seed in seeds}


def mean_epochs_to_target(histories, norm, epochs):
    """Mean over seeds; a run that never reaches the target counts as epochs + 1."""
    return float(np.mean([h.epochs_to_target or epochs + 1 for (n, _), h in histories.items() if n == norm]))


def plot(histories, epochs, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {None: ("tab:gray", "no batch norm"), "normkit": ("tab:blue", "normkit BatchNorm1d")}
    x = np.arange(1, epochs + 1)
    for (norm, seed), history in histories.items():
        color, label = styles[norm]
        first = seed == min(s for n, s in histories if n == norm)
        loss_axes.plot(x, history.loss, color=color, alpha=0.7, label=label if first else None)
        accuracy_axes.plot(x, history.accuracy, color=color, alpha=0.7, label=label if first else None)
    loss_axes.set(xlabel="epoch", ylabel="training loss (cross entropy)", yscale="log",
                  title="Training loss, one line per seed")
    accuracy_axes.axhline(TARGET_ACCURACY, color="black", linestyle=":", linewidth=1)
    accuracy_axes.set(xlabel="epoch", ylabel="validation accuracy", ylim=(0.5, 1.0),
                      title=f"Validation accuracy (target {TARGET_ACCURACY:.0%} dotted)")
    for axes in (loss_axes, accuracy_axes):
        axes.grid(alpha=0.3)
        axes.legend()
    figure.suptitle("MLP 64-128-128-10 on scikit-learn digits, SGD with momentum 0.9, batch 64: "
                    "with and without normkit batch norm")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="number of seeds (default 5)")
    parser.add_argument("--epochs", type=int, default=30, help="epochs per run (default 30)")
    parser.add_argument("--png", type=pathlib.Path, default=pathlib.Path(__file__).with_name("digits_bn.png"))
    args = parser.parse_args()
    seeds = list(range(args.seeds))
    histories = run(seeds, args.epochs)
    print(f"epochs to {TARGET_ACCURACY:.0%} validation accuracy ('-': not within {args.epochs}):")
    print("seed  no batch norm  normkit batch norm")
    for seed in seeds:
        cells = [histories[norm, seed].epochs_to_target or "-" for norm in (None, "normkit")]
        print(f"{seed:4}  {cells[0]!s:>13}  {cells[1]!s:>18}")
    means = [mean_epochs_to_target(histories, norm, args.epochs) for norm in (None, "normkit")]
    print(f"mean  {means[0]:13.1f}  {means[1]:18.1f}")
    finals = [np.mean([histories[norm, s].accuracy[-1] for s in seeds]) for norm in (None, "normkit")]
    print(f"final validation accuracy (mean): {finals[0]:.4f} without, {finals[1]:.4f} with batch norm")
    plot(histories, args.epochs, args.png)
    print(f"plot: {args.png}")


if __name__ == "__main__":
    main()
