"""Architecture presets used by ``cnnext train``: shapes, parameter counts, training defaults."""
import numpy as np
import pytest

from cnnext import optimizers, presets
from cnnext.schedules import CosineDecay

# Parameter counts: LeNet-5 as in PyTorch's nn equivalent; seed-test3/4 as printed in the seed
# write-up's summaries (10,026 and 74,778); the others counted by hand.
PARAMS = {"lenet5": 61706, "seed-test1": 54170, "seed-test2": 93418, "seed-test3": 10026,
          "seed-test4": 74778, "vgg-small": 467818}


@pytest.mark.parametrize("name", list(presets.PRESETS))
def test_every_preset_builds_a_10_way_classifier(name):
    model = presets.build_model(name, seed=0, total_steps=10)
    assert model.input_shape == (28, 28, 1) and model.output_shape == (10,)
    assert model.count_params() == (PARAMS[name], 0)
    out = model.predict(presets.prepare_images(np.zeros((3, 28, 28, 1), np.uint8)))
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)


def test_lenet5_defaults_sgd_momentum_cosine():
    preset = presets.get_preset("lenet5")
    assert (preset.optimizer, preset.batch_size, preset.schedule) == ("sgd", 128, "cosine")
    model = presets.build_model("lenet5", total_steps=100)
    assert isinstance(model.optimizer, optimizers.SGD) and model.optimizer.momentum == 0.9
    schedule = model.optimizer.learning_rate
    assert isinstance(schedule, CosineDecay)
    assert schedule(0) == pytest.approx(0.05) and schedule(100) == pytest.approx(0.0)


def test_seed_test4_trains_with_adam_and_overrides_apply():
    model = presets.build_model("seed-test4")
    assert isinstance(model.optimizer, optimizers.Adam) and model.optimizer.learning_rate == 0.001
    model = presets.build_model("seed-test4", optimizer="sgd", learning_rate=0.2)
    assert isinstance(model.optimizer, optimizers.SGD) and model.optimizer.learning_rate == 0.2
    model = presets.build_model("lenet5", schedule="constant", learning_rate=0.01)
    assert model.optimizer.learning_rate == 0.01


def test_same_seed_same_weights():
    a, b = presets.build_model("lenet5", seed=4, total_steps=1), presets.build_model("lenet5", seed=4, total_steps=1)
    c = presets.build_model("lenet5", seed=5, total_steps=1)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    assert not np.array_equal(a.get_weights()[0], c.get_weights()[0])


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "alexnet"}, "unknown preset 'alexnet'"),
    ({"name": "lenet5"}, "cosine schedule needs total_steps"),
    ({"name": "lenet5", "schedule": "step", "total_steps": 5}, "unknown schedule 'step'"),
    ({"name": "lenet5", "optimizer": "lbfgs", "total_steps": 5}, "unknown optimizer 'lbfgs'"),
])
def test_build_model_rejects_bad_choices(kwargs, message):
    with pytest.raises(ValueError, match=message):
        presets.build_model(**kwargs)


def test_prepare_images_standardises_uint8_and_unit_floats_alike():
    pixels = np.array([0, 73, 255], np.uint8).reshape(1, 1, 3, 1)
    expected = (pixels / 255.0 - presets.PIXEL_MEAN) / presets.PIXEL_STD
    np.testing.assert_allclose(presets.prepare_images(pixels), expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(presets.prepare_images(pixels / 255.0), expected, rtol=1e-6, atol=1e-6)
    assert presets.prepare_images(pixels).dtype == np.float32
