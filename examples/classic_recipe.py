"""The classic from-scratch MNIST net next to its softmax cross-entropy twin.

The classic recipe of the from-scratch texts: 784-16-16-16-10, ReLU hidden
layers, a **sigmoid output trained with MSE** on one-hot targets, He-normal
weights, plain SGD (no momentum) at lr 0.1 with inverse-time decay 0.001 per
update (``lr_t = 0.1 / (1 + 0.001 t)``, ``t`` = updates done), batches of 64.
The twin is the same net, initialisation, optimizer and seed with the output
left as logits and the fused softmax cross-entropy loss. Both see the same
pixels scaled to [0, 1] and print their test accuracy after every epoch.

Run it on the bundled sample (5,000 training images, the official 10,000 test
images) and on full MNIST when its files are already in the cache (this
script never downloads; ``xpnet train --dataset mnist`` does)::

    python examples/classic_recipe.py                  # 10 epochs
    python examples/classic_recipe.py --epochs 3 --data-dir ~/.cache/xpnet

The classic net on the command line (same numbers, seed for seed)::

    xpnet train --hidden 16,16,16 --output-activation sigmoid --loss mse \\
        --init he-normal --optimizer sgd --momentum 0 --lr 0.1 --lr-decay 0.001 \\
        --batch-size 64
"""

from __future__ import annotations

import argparse
import sys
import time

import xpnet
from xpnet.datasets import load_dataset
from xpnet.errors import DatasetError
from xpnet.preprocessing import preprocess

SIZES = (784, 16, 16, 16, 10)
LR, DECAY, BATCH = 0.1, 0.001, 64

#: the equivalent ``xpnet train`` options of the classic net
CLASSIC_CLI = (
    "--hidden", "16,16,16", "--output-activation", "sigmoid", "--loss", "mse",
    "--init", "he-normal", "--optimizer", "sgd", "--momentum", "0",
    "--lr", str(LR), "--lr-decay", str(DECAY), "--batch-size", str(BATCH),
)  # fmt: skip


def make_model(kind: str, seed: int = 0, device: str = "cpu") -> xpnet.Sequential:
    """``kind="classic"``: sigmoid outputs, MSE; ``"softmax"``: logits with the
    fused softmax cross-entropy. Everything else is shared."""
    classic = kind == "classic"
    return xpnet.mlp(
        SIZES,
        "relu",
        output_activation="sigmoid" if classic else None,
        init="he_normal",
        loss="mse" if classic else "cross-entropy",
        optimizer=xpnet.SGD(lr=xpnet.InverseTimeDecay(LR, DECAY), momentum=0.0),
        device=device,
        seed=seed,
    )


def test_accuracies(data, kind: str, epochs: int, seed: int) -> list[float]:
    """Test accuracy (0-1) after each of ``epochs`` epochs of ``kind``'s net."""
    model = make_model(kind, seed)
    history = model.fit(
        data.x_train,
        data.y_train,
        epochs=epochs,
        batch_size=BATCH,
        validation_data=(data.x_test, data.y_test),
    )
    return [record["val_accuracy"] for record in history.records]


def compare(name: str, data_dir: str | None, epochs: int, seed: int) -> bool:
    """Print one table for dataset ``name``; False when it is not available."""
    try:
        raw = load_dataset(name, data_dir, download=False)
    except DatasetError as exc:
        print(f"\n{name}: not available here, skipped ({exc})")
        return False
    data = preprocess(raw, scale=True)
    start = time.perf_counter()
    classic = test_accuracies(data, "classic", epochs, seed)
    softmax = test_accuracies(data, "softmax", epochs, seed)
    seconds = time.perf_counter() - start
    print(
        f"\n{name}: {len(data.x_train):,} train / {len(data.x_test):,} test images, "
        f"seed {seed}, {seconds:.1f} s"
    )
    print("epoch   sigmoid + MSE   softmax + cross-entropy   (test accuracy)")
    for epoch, (a, b) in enumerate(zip(classic, softmax, strict=True), start=1):
        print(f"{epoch:>5}   {100 * a:12.2f}%   {100 * b:22.2f}%")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--epochs", type=int, default=10, help="epochs per net (default: 10)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="weights and shuffling (default: 0)"
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        metavar="DIR",
        help="where full MNIST's IDX files are cached, in DIR/mnist/ (default: "
        "xpnet's cache, $XPNET_DATA or ~/.cache/xpnet)",
    )
    parser.add_argument(
        "--sample-only", action="store_true", help="skip full MNIST even if cached"
    )
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error(f"--epochs must be at least 1, got {args.epochs}")
    print(
        f"{'-'.join(map(str, SIZES))}, ReLU, He-normal init, SGD lr {LR:g} (no "
        f"momentum) with decay {DECAY:g} per update, batch {BATCH}"
    )
    compare("mnist-sample", None, args.epochs, args.seed)
    if not args.sample_only:
        compare("mnist", args.data_dir, args.epochs, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
