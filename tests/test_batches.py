import numpy as np

from common.batches import BatchSampler


def _sampler(seed=0):
    data = np.arange(1000, dtype=np.int32) % 50
    return BatchSampler({"train": data, "val": data[:100]}, batch_size=4, block_size=8, seed=seed)


def test_shapes_dtype_and_shift():
    x, y = _sampler().get_batch("train")
    assert x.shape == y.shape == (4, 8) and x.dtype == y.dtype == np.int32
    assert np.array_equal(x[:, 1:], y[:, :-1])


def test_same_seed_same_batches_and_state_restores():
    a, b = _sampler(7), _sampler(7)
    for _ in range(5):
        assert all(np.array_equal(p, q) for p, q in zip(a.get_batch("train"), b.get_batch("train")))
    state = a.state()
    first = a.get_batch("val")
    a.set_state(state)
    assert np.array_equal(a.get_batch("val")[0], first[0])
    assert not np.array_equal(_sampler(8).get_batch("train")[0], _sampler(7).get_batch("train")[0])


def test_shortest_possible_split():
    data = np.arange(9, dtype=np.int32)  # block_size + 1 tokens: exactly one window
    x, y = BatchSampler({"train": data}, 2, 8, 0).get_batch("train")
    assert np.array_equal(x[0], data[:8]) and np.array_equal(y[0], data[1:])
