"""Seed write-up, test 3: convolution, pooling, convolution, dropout, softmax classifier.

    python examples/seed_test3.py --epochs 2 [--save model.npz] [--plots out/]

Conv2D 4@3x3 relu (40) -> MaxPool2D 2x2 -> Conv2D 8@3x3 relu (296) -> Dropout 0.2
-> Flatten (11*11*8 = 968) -> Dense 10 softmax (9,690); 10,026 parameters in all.
"""
from cnnext import Sequential
from cnnext.layers import Conv2D, Dense, Dropout, Flatten, MaxPool2D
from cnnext.optimizers import Adam

from _common import parse_args, train


def build_model() -> Sequential:
    model = Sequential([
        Conv2D(4, (3, 3), activation="relu", input_shape=(28, 28, 1)),
        MaxPool2D((2, 2)),
        Conv2D(8, (3, 3), activation="relu"),
        Dropout(0.2),
        Flatten(),
        Dense(10, activation="softmax"),
    ], seed=0)
    model.compile(optimizer=Adam(learning_rate=0.001), loss="categorical_crossentropy",
                  metrics=["accuracy"])
    return model


if __name__ == "__main__":
    train(build_model(), parse_args(__doc__.splitlines()[0]))
