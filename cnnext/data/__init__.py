"""Data files shipped with cnnext: a Fashion-MNIST sample (see LICENSE-fashion-mnist.txt)."""
