"""The sealing interface and its plaintext twin."""

import ast
import functools
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import meshfl.secure
from meshfl.config.errors import InvalidUpdateError
from meshfl.secure import Aggregator, Sealed, Sealer, plaintext_backend, seal_payload
from meshfl.secure.aggregate import PAYLOAD_EXTRA
from meshfl.secure.backend import PLAINTEXT_WARNING, PlaintextAggregator, PlaintextSealer


@pytest.fixture(scope="module")
def plain():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return plaintext_backend()


def test_plaintext_backend_warns_that_protection_is_off():
    with pytest.warns(UserWarning, match="Secure aggregation is OFF") as record:
        plaintext_backend()
    message = str(record[0].message)
    assert "coordinator can read every MSP's update" in message
    assert "meshfl keys init" in message and "ckks" in message.lower()


def test_importing_the_secure_layer_does_not_load_tenseal():
    code = "import sys, meshfl.secure as s; s.plaintext_backend; print('tenseal' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_secure_layer_imports_nothing_above_it():
    forbidden = ("meshfl.agents", "meshfl.federation", "meshfl.privacy", "flwr")
    for module in Path(meshfl.secure.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            bad = [n for n in names if n.startswith(forbidden)]
            assert not bad, f"{module.name} imports {bad}"


def test_plaintext_twins_satisfy_the_protocols(plain):
    sealer, aggregator = plain
    assert isinstance(sealer, Sealer) and isinstance(aggregator, Aggregator)
    assert sealer.backend == aggregator.backend == "plaintext"
    assert sealer.key_id == aggregator.key_id == ""


def test_sealed_nbytes_counts_every_chunk():
    assert Sealed("ckks", "k", 3, (b"ab", b"cde", b"")).nbytes == 5


@settings(max_examples=60, deadline=None)
@given(
    length=st.integers(1, 3000),
    weights=st.lists(st.floats(1e-3, 1e4), min_size=1, max_size=20),
    seed=st.integers(0, 2**32 - 1),
)
def test_plaintext_sum_is_exactly_the_sum_of_payloads(plain, length, weights, seed):
    sealer, aggregator = plain
    rng = np.random.default_rng(seed)
    payloads = [seal_payload(rng.standard_normal(length) * 1e3, w) for w in weights]
    sealed = [sealer.seal(p) for p in payloads]
    for s in sealed:
        aggregator.check(s, expected_length=length + PAYLOAD_EXTRA)
    total = sealer.open(aggregator.add(sealed))
    np.testing.assert_array_equal(total, functools.reduce(np.add, payloads))


def _with(sealed, **changes):
    fields = {f: getattr(sealed, f) for f in ("backend", "key_id", "length", "chunks")}
    return Sealed(**{**fields, **changes})


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (dict(backend="ckks"), "sealed with the 'ckks' backend, but this side uses 'plaintext'"),
        (dict(key_id="0123456789abcdef"), "key set '0123456789abcdef'.*key set ''"),
        (dict(length=4), "holds 4 values; this round expects 5"),
        (dict(chunks=()), "0 chunk"),
        (dict(chunks=(b"\x00" * 40, b"")), "2 chunk"),
        (dict(chunks=(b"\x00" * 39,)), "truncated or corrupt.*39 bytes"),
        (dict(chunks=(np.full(5, np.nan).tobytes(),)), "NaN or inf"),
        (dict(chunks=("text",)), "must be bytes"),
    ],
)
def test_check_rejects_bad_envelopes_by_name(plain, change, match):
    sealer, aggregator = plain
    good = sealer.seal(np.arange(5.0))
    with pytest.raises(InvalidUpdateError, match=match):
        aggregator.check(_with(good, **change), expected_length=5)


def test_open_and_add_validate_too(plain):
    sealer, aggregator = plain
    good = sealer.seal(np.arange(5.0))
    with pytest.raises(InvalidUpdateError, match="truncated"):
        sealer.open(_with(good, chunks=(good.chunks[0][:-8],)))
    with pytest.raises(InvalidUpdateError, match="holds 3 values; this round expects 5"):
        aggregator.add([good, sealer.seal(np.ones(3))])
    with pytest.raises(InvalidUpdateError, match="at least one"):
        aggregator.add([])


@pytest.mark.parametrize(
    ("values", "match"),
    [
        (np.ones((2, 2)), "flat vector"),
        (np.array([]), "empty"),
        (np.array([1.0, np.inf]), "NaN or inf"),
        (np.array(["a"]), "real numbers"),
    ],
)
def test_seal_rejects_what_is_not_a_finite_flat_vector(values, match):
    with pytest.raises(InvalidUpdateError, match=match):
        PlaintextSealer().seal(values)


def test_plaintext_round_trip_is_float64_and_exact():
    values = np.array([1e-300, -3.5, 2.0**60], dtype=np.float64)
    out = PlaintextSealer().open(PlaintextSealer().seal(values))
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, values)
    assert PlaintextAggregator().add([PlaintextSealer().seal(values)]).length == 3


def test_warning_text_says_how_to_turn_protection_on():
    assert "coordinator.public.ckks" in PLAINTEXT_WARNING
