"""Seed write-up, test 4: two convolutions, pooling, a hidden dense layer with dropout.

    python examples/seed_test4.py --epochs 2 [--save model.npz] [--plots out/]

Conv2D 4@3x3 relu (40) -> Conv2D 8@3x3 relu (296) -> MaxPool2D 2x2 -> Flatten (12*12*8 = 1152)
-> Dense 64 relu (73,792) -> Dropout 0.1 -> Dense 10 softmax (650); 74,778 parameters in all.
"""
from cnnext import Sequential
from cnnext.layers import Conv2D, Dense, Dropout, Flatten, MaxPool2D
from cnnext.optimizers import Adam

from _common import parse_args, train


def build_model() -> Sequential:
    model = Sequential([
        Conv2D(4, (3, 3), activation="relu", input_shape=(28, 28, 1)),
        Conv2D(8, (3, 3), activation="relu"),
        MaxPool2D((2, 2)),
        Flatten(),
        Dense(64, activation="relu"),
        Dropout(0.1),
        Dense(10, activation="softmax"),
    ], seed=0)
    model.compile(optimizer=Adam(learning_rate=0.001), loss="categorical_crossentropy",
                  metrics=["accuracy"])
    return model


if __name__ == "__main__":
    train(build_model(), parse_args(__doc__.splitlines()[0]))
