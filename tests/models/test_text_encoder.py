import numpy as np
import pytest

from meshfl.config.errors import MeshflError
from meshfl.models.text_encoder import load_text_encoder


def test_minilm_is_pretrained_and_offline():
    encoder = load_text_encoder("minilm")
    assert encoder.dim == 384
    a, b, c = encoder.encode(
        [
            "Failed password for root from 10.0.0.1 port 22 ssh2",
            "Failed password for admin from 10.0.0.9 port 22 ssh2",
            "Quarterly revenue grew in the EMEA region",
        ]
    )
    np.testing.assert_allclose(np.linalg.norm(a), 1.0, rtol=1e-5)
    # a pretrained encoder puts the two failed logins closer than the revenue sentence
    assert a @ b > a @ c + 0.2


def test_embeddings_are_cached_per_text():
    encoder = load_text_encoder("tiny")
    texts = [f"unique line {i} for the cache test" for i in range(10)]
    before = encoder.encoded_texts
    first = encoder.encode(texts + texts[:3])
    assert encoder.encoded_texts - before == 10
    second = encoder.encode(texts)
    assert encoder.encoded_texts - before == 10
    np.testing.assert_array_equal(first[:10], second)


def test_tiny_encoder_is_deterministic():
    load_text_encoder.cache_clear()
    a = load_text_encoder("tiny").encode(["same text"])
    load_text_encoder.cache_clear()
    b = load_text_encoder("tiny").encode(["same text"])
    np.testing.assert_array_equal(a, b)


def test_missing_named_model_explains_offline_options():
    with pytest.raises(MeshflError, match=r"minilm.*local path"):
        load_text_encoder("no-such-org/no-such-model-xyz")


def test_a_local_model_directory_loads_through_transformers(tmp_path):
    tiny = load_text_encoder("tiny")
    tiny.model.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    local = load_text_encoder(str(tmp_path))
    assert local.name == str(tmp_path) and local.dim == tiny.dim
    text = ["a log line loaded from a local model directory"]
    np.testing.assert_allclose(local.encode(text), tiny.encode(text), atol=1e-6)


def test_embeddings_persist_across_processes(tmp_path):
    from meshfl.models.text_encoder import TextEncoder

    shared = load_text_encoder("tiny")  # not mutated: other tests use it
    first = TextEncoder(shared.model, shared.tokenizer, name="tiny")
    texts = [f"persisted line {i}" for i in range(7)]
    first.persist_to(tmp_path)
    expected = first.encode(texts)
    # a fresh encoder object stands for the next process of the same MSP
    fresh = TextEncoder(shared.model, shared.tokenizer, name="tiny")
    fresh.persist_to(tmp_path)
    np.testing.assert_array_equal(fresh.encode(texts), expected)
    assert fresh.encoded_texts == 0
    assert list((tmp_path).rglob("shard-*.npz"))


def test_texts_encoded_before_the_cache_had_a_folder_are_kept_too(tmp_path):
    from meshfl.models.text_encoder import TextEncoder

    shared = load_text_encoder("tiny")
    first = TextEncoder(shared.model, shared.tokenizer, name="tiny")
    texts = [f"encoded early {i}" for i in range(5)]
    expected = first.encode(texts)  # in memory only
    first.persist_to(tmp_path)
    first.encode(texts)  # all cached: nothing is encoded, but now they reach the disk
    fresh = TextEncoder(shared.model, shared.tokenizer, name="tiny")
    fresh.persist_to(tmp_path)
    np.testing.assert_array_equal(fresh.encode(texts), expected)
    assert fresh.encoded_texts == 0
