"""The digits demo's claims, on fewer seeds and epochs than the demo runs (seconds)."""

import numpy as np
import torch

import digits_bn as demo


def test_batch_norm_reaches_the_target_in_fewer_epochs():
    data = demo.load_data()
    epochs, seeds = 20, [0, 1, 2]
    needed = {norm: [demo.train(demo.make_model(norm, seed), data, seed, epochs, stop_at_target=True)
                     .epochs_to_target or epochs + 1 for seed in seeds]
              for norm in (None, "normkit")}
    assert max(needed["normkit"]) <= epochs, needed
    assert np.mean(needed["normkit"]) < np.mean(needed[None]), needed


def test_normkit_run_tracks_torch_batch_norm_step_for_step():
    """Three epochs (66 steps) of one seed with normkit.torch.BatchNorm1d, with
    torch.nn.BatchNorm1d in float32, and with torch.nn.BatchNorm1d in float64 (the
    judge), from the same initial weights and batches: every step's loss and the final
    weights and running statistics stay within 1e-5 of the judge (relative; both float32
    runs are seen within 1.6e-6)."""
    data, seed, epochs = demo.load_data(), 3, 3
    losses, states = {}, {}
    for name in ("normkit", "torch", "float64"):
        model = demo.make_model("torch" if name == "float64" else name, seed)
        if name == "float64":
            model = model.double()
        losses[name] = []
        demo.train(model, data, seed, epochs, step_losses=losses[name])
        states[name] = model.state_dict()
    judge = np.array(losses["float64"])
    assert len(judge) == epochs * (len(data[0]) // demo.BATCH_SIZE)
    for name in ("normkit", "torch"):
        worst = np.max(np.abs(np.array(losses[name]) - judge) / judge)
        assert worst <= 1e-5, f"{name}: a step's loss is {worst:.3g} from float64's"
        for key, expected in states["float64"].items():
            actual = states[name][key]
            if expected.dtype == torch.int64:
                assert torch.equal(actual, expected), key
            else:
                error = float((actual.double() - expected).abs().max() / expected.abs().max())
                assert error <= 1e-5, f"{name}: {key} is {error:.3g} from float64's"
