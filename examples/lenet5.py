"""LeNet-5 (LeCun et al., 1998) on Fashion-MNIST, trained with SGD + momentum and an exponentially
decaying learning rate.

    python examples/lenet5.py --epochs 3 [--save lenet5.npz] [--plots out/]

Conv2D 6@5x5 same tanh (156) -> AvgPool2D 2x2 -> Conv2D 16@5x5 tanh (2,416) -> AvgPool2D 2x2
-> Flatten (5*5*16 = 400) -> Dense 120 tanh (48,120) -> Dense 84 tanh (10,164)
-> Dense 10 softmax (850); 61,706 parameters in all.
"""
from cnnext import Sequential
from cnnext.layers import AvgPool2D, Conv2D, Dense, Flatten
from cnnext.optimizers import SGD
from cnnext.schedules import ExponentialDecay

from _common import parse_args, train


def build_model(steps_per_epoch: int = 100) -> Sequential:
    """LeNet-5; the learning rate falls by 10% per epoch of ``steps_per_epoch`` updates."""
    model = Sequential([
        Conv2D(6, (5, 5), padding="same", activation="tanh", input_shape=(28, 28, 1)),
        AvgPool2D((2, 2)),
        Conv2D(16, (5, 5), activation="tanh"),
        AvgPool2D((2, 2)),
        Flatten(),
        Dense(120, activation="tanh"),
        Dense(84, activation="tanh"),
        Dense(10, activation="softmax"),
    ], seed=0)
    schedule = ExponentialDecay(0.05, decay_steps=steps_per_epoch, decay_rate=0.9)
    model.compile(optimizer=SGD(learning_rate=schedule, momentum=0.9),
                  loss="categorical_crossentropy", metrics=["accuracy"])
    return model


if __name__ == "__main__":
    args = parse_args(__doc__.splitlines()[0], epochs=3, train=3000, val=500)
    train(build_model(steps_per_epoch=-(-args.train // args.batch_size)), args)
