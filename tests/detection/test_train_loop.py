"""KDTrainLoop (NaN stop, random states in checkpoints) and kd_det.safe_load, in process."""
import os
import pickle
from collections import OrderedDict

import numpy as np
import pytest
import torch
from detectron2.utils.events import EventStorage
from torch import nn

from kd_det.detection.engine.train_loop import KDTrainLoop
from kd_det.errors import NonFiniteLossError, UserError
from kd_det.losses import KDLoss
from kd_det.safe_load import UnsafeFileError, load_pickle, load_torch, read_detectron2_weights


class TwoTerms(nn.Module):
    """A model whose second loss term is NaN from ``bad_from`` calls on; the first is a real KD loss."""

    def __init__(self, bad_from=1):
        super().__init__()
        self.fc, self.kd, self.calls, self.bad_from = nn.Linear(4, 3), KDLoss(temperature=2.0), 0, bad_from

    def forward(self, x):
        self.calls += 1
        logits = self.fc(x)
        nan = torch.tensor(float("nan")) if self.calls > self.bad_from else torch.tensor(0.0)
        return {"loss_kd": self.kd(logits_s=logits, logits_t=logits.detach() * 2), "loss_other": logits.sum() * 0 + nan}


def loop(model, save_dir=""):
    from kd_det.detection.engine.checkpoint import KDCheckpointer

    data = iter(lambda: torch.randn(8, 4), None)
    last = KDCheckpointer(model, save_dir=save_dir).get_checkpoint_file if save_dir else (lambda: "")
    return KDTrainLoop(model, data, torch.optim.SGD(model.parameters(), lr=0.1), last_checkpoint=last)


def test_nonfinite_term_stops_before_the_update(tmp_path):
    model = TwoTerms(bad_from=1)
    trainer = loop(model, str(tmp_path))
    (tmp_path / "last_checkpoint").write_text("model_0000000.pth")
    with EventStorage(0) as storage:
        trainer.iter = storage.iter = 0
        trainer.run_step()  # fine
        before = [p.detach().clone() for p in model.parameters()]
        trainer.iter = storage.iter = 1
        with pytest.raises(NonFiniteLossError) as e:
            trainer.run_step()
    assert str(e.value).startswith("Loss term loss_other is nan at iteration 1: training stopped before the "
                                   f"optimizer step; the last checkpoint {tmp_path / 'model_0000000.pth'} predates it")
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # no update with NaN gradients


def test_nonfinite_distillation_input_names_the_loss():
    model = TwoTerms(bad_from=10**9)
    model.fc.weight.data.fill_(float("inf"))
    trainer = loop(model)
    with EventStorage(0), pytest.raises(NonFiniteLossError,
                                        match=r"^Loss term loss_kd got non-finite input 'logits_s' at iteration 0: "
                                              r".*no checkpoint had been written yet"):
        trainer.run_step()


def test_random_states_round_trip():
    trainer = loop(TwoTerms(bad_from=10**9))
    torch.manual_seed(3), np.random.seed(3)
    state = trainer.state_dict()
    expected = (torch.rand(3), np.random.rand(3))
    torch.save(state, "/dev/null")  # tensors, lists and numbers only
    trainer.load_state_dict(state)
    trainer.start()  # the iterator is created, then the saved states are restored
    got = (torch.rand(3), np.random.rand(3))
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1])


# ------------------------------------------------------------------ safe loading
def test_model_zoo_pickle_with_numpy_loads(tmp_path):
    path = tmp_path / "zoo.pkl"
    weights = OrderedDict([("conv.weight", np.arange(6, dtype=np.float32).reshape(2, 3)), ("step", np.int64(3))])
    with open(path, "wb") as f:
        pickle.dump({"model": weights, "__author__": "zoo", "matching_heuristics": True}, f, protocol=2)
    data = read_detectron2_weights(str(path))
    assert data["__author__"] == "zoo" and np.array_equal(data["model"]["conv.weight"], weights["conv.weight"])


def test_caffe2_blobs_pickle_is_wrapped(tmp_path):
    path = tmp_path / "c2.pkl"
    with open(path, "wb") as f:
        pickle.dump({"blobs": {"res2_0_branch1_w": np.zeros(2), "res2_0_branch1_w_momentum": np.zeros(2)}}, f)
    data = read_detectron2_weights(str(path))
    assert data == {"model": {"res2_0_branch1_w": data["model"]["res2_0_branch1_w"]}, "__author__": "Caffe2",
                    "matching_heuristics": True}


class Evil:
    def __reduce__(self):
        return (os.system, ("echo should-not-run",))


@pytest.mark.parametrize("payload", [Evil(), {"model": [Evil()]}, {"model": {"w": np.zeros(2)}, "x": nn.Linear(1, 1)}])
def test_pickles_naming_other_globals_are_refused(tmp_path, payload):
    path = tmp_path / "bad.pkl"
    with open(path, "wb") as f:
        pickle.dump(payload, f)
    with pytest.raises(UnsafeFileError, match=rf"^Weights file {path} asks to build \S+, which is not a dict"):
        load_pickle(str(path))


def test_truncated_files(tmp_path):
    pkl, pth = tmp_path / "a.pkl", tmp_path / "b.pth"
    pkl.write_bytes(pickle.dumps({"model": {"w": np.zeros(3)}})[:20])
    torch.save({"model": {"w": torch.zeros(3)}}, pth)
    pth.write_bytes(pth.read_bytes()[:100])
    with pytest.raises(UserError, match=r"a\.pkl is not a readable pickle"):
        load_pickle(str(pkl))
    with pytest.raises(UserError, match=r"b\.pth is truncated or not a torch checkpoint"):
        load_torch(str(pth))
    (tmp_path / "text.pth").write_text("half")  # torch.load raises a bare KeyError on this one
    with pytest.raises(UserError, match=r"text\.pth is truncated or not a torch checkpoint"):
        load_torch(str(tmp_path / "text.pth"))
    with pytest.raises(UserError, match=r"nope\.pth does not exist"):
        load_torch(str(tmp_path / "nope.pth"))
