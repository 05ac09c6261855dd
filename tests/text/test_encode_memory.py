"""Embedding without whole-catalogue copies (issue 20): TextEncoder puts each distinct text's vector straight into
its rows, and the view files are written header, padding row, then blocks (byte-identical to np.save of the stacked
matrix)."""

from __future__ import annotations

import numpy as np
import pytest

from semrec.errors import SemrecError
from semrec.io import write_padded_npy
from semrec.text.encode import TextEncoder


class _StubModel:
    """Stands in for a SentenceTransformer: a vector from each text's characters; records the batches."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def get_sentence_embedding_dimension(self) -> int:
        return 3

    def encode(self, texts, **_kwargs):
        self.calls.append(list(texts))
        return np.array([[len(t), sum(map(ord, t)) % 97, t.count("a")] for t in texts], dtype=np.float64)


def test_each_distinct_text_is_encoded_once_and_lands_in_all_its_rows():
    rng = np.random.default_rng(0)
    vocabulary = [f"text {i} " + "a" * (i % 7) for i in range(300)]
    texts = [vocabulary[i] for i in rng.integers(0, 300, size=2000)] + ["", ""]
    encoder = TextEncoder(batch_size=4)  # chunks of 64 distinct texts: many chunks
    stub = encoder._model = _StubModel()
    out = encoder.encode(texts, progress=False)
    expected = np.array([[len(t), sum(map(ord, t)) % 97, t.count("a")] for t in texts], dtype=np.float32)
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == np.float32 and out.shape == (2002, 3)
    encoded = [t for call in stub.calls for t in call]
    assert sorted(encoded) == sorted(set(texts))  # each distinct text once
    assert len(stub.calls) > 1
    assert encoder.encode([], progress=False).shape == (0, 3)


@pytest.mark.parametrize("rows, dim, pad, block", [(0, 4, 1, 3), (1, 4, 1, 3), (10, 5, 1, 3), (10, 5, 2, 64)])
def test_write_padded_npy_equals_np_save_of_the_stacked_matrix(tmp_path, rows, dim, pad, block):
    matrix = np.random.default_rng(rows).standard_normal((rows, dim)).astype(np.float32)
    write_padded_npy(tmp_path / "streamed.npy", matrix, pad_rows=pad, block=block)
    np.save(tmp_path / "stacked.npy", np.vstack([np.zeros((pad, dim), np.float32), matrix]))
    assert (tmp_path / "streamed.npy").read_bytes() == (tmp_path / "stacked.npy").read_bytes()
    with pytest.raises(SemrecError, match="a 2-d matrix"):
        write_padded_npy(tmp_path / "bad.npy", np.zeros(3))
    assert not (tmp_path / "bad.npy").exists()
    codes = np.arange(6, dtype=np.int64).reshape(3, 2)
    write_padded_npy(tmp_path / "codes.npy", codes, pad_value=-1)
    np.testing.assert_array_equal(np.load(tmp_path / "codes.npy"), np.vstack([[-1, -1], codes]))
