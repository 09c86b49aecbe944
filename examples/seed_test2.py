"""Seed write-up, test 2: two stacked convolutions, then a softmax classifier.

    python examples/seed_test2.py --epochs 2 [--save model.npz] [--plots out/]

Conv2D 8@3x3 relu (80) -> Conv2D 16@3x3 relu (1,168) -> Flatten (24*24*16 = 9216)
-> Dense 10 softmax (92,170).
"""
from cnnext import Sequential
from cnnext.layers import Conv2D, Dense, Flatten
from cnnext.optimizers import Adam

from _common import parse_args, train


def build_model() -> Sequential:
    model = Sequential([
        Conv2D(8, (3, 3), activation="relu", input_shape=(28, 28, 1)),
        Conv2D(16, (3, 3), activation="relu"),
        Flatten(),
        Dense(10, activation="softmax"),
    ], seed=0)
    model.compile(optimizer=Adam(learning_rate=0.001), loss="categorical_crossentropy",
                  metrics=["accuracy"])
    return model


if __name__ == "__main__":
    train(build_model(), parse_args(__doc__.splitlines()[0]))
