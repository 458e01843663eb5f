"""Any PyTorch nn.Module trains federated through the adapter (state dict in, state
dict out): a small CNN over scikit-learn's 8x8 digits across 5 simulated hospitals."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flowfed.fl import Update, fedavg
from flowfed.tools import Context
from tests.federated.conftest import errors, run_json

torch = pytest.importorskip("torch")
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "digits_cnn"


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("digits")
    subprocess.run([sys.executable, str(EXAMPLE / "make_data.py"), "--out", str(out)], check=True)
    for name in ("flow.yaml", "digits_cnn.py"):
        shutil.copy(EXAMPLE / name, out / name)
    flow = out / "flow.yaml"
    flow.write_text(flow.read_text().replace("nodes: data/nodes.yaml", "nodes: nodes.yaml"))
    return out


def test_state_dict_in_state_dict_out(digits: Path) -> None:
    sys.path.insert(0, str(digits))
    try:
        import digits_cnn

        from flowfed.tools.library.torch_adapter import TorchModel, train_module

        table = pd.read_csv(digits / "hospital-1" / "digits.csv")
        train = table[table["split"] == "train"].drop(columns="split")
        feats = [f"p{i}" for i in range(64)]
        a = train_module("digits_cnn:SmallCNN", train, Context(), input_shape=[1, 8, 8],
                         features=feats, epochs=1)  # fmt: skip
        b = train_module("digits_cnn:SmallCNN", train, Context(), a, epochs=1, seed=1)
        # get_weights follows the module's own state_dict order and shapes
        net = digits_cnn.SmallCNN()
        assert [tuple(w.shape) for w in a.get_weights()] == [
            tuple(v.shape) for v in net.state_dict().values()
        ]
        # FedAvg of two state dicts, by hand in torch, equals flowfed's on the adapter
        avg = a.with_weights(
            fedavg([Update("a", a.get_weights(), 1), Update("b", b.get_weights(), 3)])
        )
        for key, value in avg.build().state_dict().items():
            want = (torch.from_numpy(a.state[key]) + 3 * torch.from_numpy(b.state[key])) / 4
            assert torch.allclose(value, want, atol=1e-6), key
        back = TorchModel.from_bytes(avg.to_bytes())
        assert list(back.state) == list(avg.state)
        for key in avg.state:
            np.testing.assert_array_equal(back.state[key], avg.state[key])
        np.testing.assert_array_equal(back.predict(train), avg.predict(train))
    finally:
        sys.path.remove(str(digits))


def test_small_cnn_over_five_simulated_hospitals(digits: Path) -> None:
    result = run_json(["run", str(digits / "flow.yaml"), "--simulate"], digits / "home")
    assert result["status"] == "success", errors(result)
    assert result["summary"]["rounds"] == 10
    summary = result["summary"]["metrics"]
    assert summary["sites"] == 5 and summary["rows"] > 300
    assert summary["accuracy"] > 0.8, summary
