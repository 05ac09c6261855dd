"""Text-encoder settings (EmbedConfig) that cannot work are one clear error before any model is loaded
(issue 16, case 6; the limits that need the model are in test_encode.py)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from semrec.cli import app
from semrec.data.build import build_dataset
from semrec.data.sources import load_source
from semrec.errors import SemrecError
from semrec.text.encode import TextEncoder, check_device
from tests.support import lcrec

runner = CliRunner()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"batch_size": 0}, "batch_size must be a positive integer, got 0"),
    ({"batch_size": -1}, "batch_size must be a positive integer, got -1"),
    ({"batch_size": True}, "batch_size must be a positive integer, got True"),
    ({"max_seq_length": 0}, "max_seq_length must be a positive integer (or unset for the model's default), got 0"),
    ({"max_seq_length": -3}, "max_seq_length must be a positive integer (or unset for the model's default), got -3"),
    ({"model": ""}, "model must be a sentence-transformers model name or a local folder, got ''"),
    ({"device": "gpu"}, "device 'gpu' is not a torch device (e.g. cpu, cuda, cuda:1, mps)"),
])
def test_bad_settings_raise_at_construction(kwargs, message):
    with pytest.raises(SemrecError) as info:
        TextEncoder(**kwargs)
    assert str(info.value) == message


def test_cuda_device_without_a_gpu():
    import torch

    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        assert check_device("cuda") == "cuda"
        with pytest.raises(SemrecError, match=rf"this machine has {n} CUDA GPU\(s\)"):
            check_device(f"cuda:{n}")
        return
    with pytest.raises(SemrecError) as info:
        check_device("cuda:0")
    assert str(info.value) == ("device 'cuda:0': torch sees no CUDA GPU on this machine; use cpu (or leave the "
                               "device unset: cuda when available, else cpu)")
    assert check_device("cpu") == "cpu" and check_device(None) is None


@pytest.mark.parametrize(("setting", "message"), [
    ("batch_size=0", "batch_size must be a positive integer, got 0"),
    ("batch_size=-1", "batch_size must be a positive integer, got -1"),  # used to write uninitialised vectors
    ("max_seq_length=0", "max_seq_length must be a positive integer (or unset for the model's default), got 0"),
    ("device=gpu", "device 'gpu' is not a torch device (e.g. cpu, cuda, cuda:1, mps)"),
])
def test_embed_command_refuses_bad_settings(tmp_path, setting, message):
    build_dataset(load_source(lcrec(tmp_path / "src"))).save(tmp_path / "ds")
    result = runner.invoke(app, ["embed", str(tmp_path / "ds"), "--set", setting])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert [line for line in result.output.splitlines() if line.strip()] == [f"error: {message}"]
    assert not (tmp_path / "ds" / "embeddings").exists()


@pytest.mark.parametrize("model", ["nosuch-org/no-such-model", "no/such/folder"])
def test_embed_command_unknown_model(tmp_path, model):
    """An unknown model name or path is one line (offline: the Hub is never reached), not a Hugging Face traceback."""
    build_dataset(load_source(lcrec(tmp_path / "src"))).save(tmp_path / "ds")
    result = runner.invoke(app, ["embed", str(tmp_path / "ds"), "--model", model])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot load text encoder '{model}' ("), lines
    assert lines[0].endswith("); give a local path or a model available offline")
