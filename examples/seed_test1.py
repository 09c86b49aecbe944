"""Seed write-up, test 1: one convolution straight into a softmax classifier.

    python examples/seed_test1.py --epochs 2 [--save model.npz] [--plots out/]

Conv2D 8@3x3 relu (80 params) -> Flatten (26*26*8 = 5408) -> Dense 10 softmax (54,090 params).
"""
from cnnext import Sequential
from cnnext.layers import Conv2D, Dense, Flatten
from cnnext.optimizers import Adam

from _common import parse_args, train


def build_model() -> Sequential:
    model = Sequential([
        Conv2D(8, (3, 3), activation="relu", input_shape=(28, 28, 1)),
        Flatten(),
        Dense(10, activation="softmax"),
    ], seed=0)
    model.compile(optimizer=Adam(learning_rate=0.001), loss="categorical_crossentropy",
                  metrics=["accuracy"])
    return model


if __name__ == "__main__":
    train(build_model(), parse_args(__doc__.splitlines()[0]))
