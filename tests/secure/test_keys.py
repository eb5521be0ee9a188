"""Key sets: parameters, key files, and loaders that refuse the wrong kind of file."""

import json
import re
import stat
from datetime import datetime

import pytest
import tenseal as ts

from meshfl.config.errors import ConfigError
from meshfl.secure.keys import (
    CKKSParams,
    KeyFileError,
    generate_keys,
    key_id_of,
    load_coordinator_context,
    load_msp_context,
    new_context,
    public_context,
)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return generate_keys(tmp_path_factory.mktemp("keys"))


def test_generate_keys_writes_the_three_files(keys):
    directory = keys.secret.parent
    assert sorted(p.name for p in directory.iterdir()) == [
        "coordinator.public.ckks",
        "keyset.json",
        "msp.secret.ckks",
    ]
    assert stat.S_IMODE(keys.secret.stat().st_mode) == 0o600
    manifest = json.loads(keys.keyset.read_text())
    assert manifest["key_id"] == keys.key_id
    assert manifest["params"] == CKKSParams().model_dump(mode="json")
    assert set(manifest["files"]) == {"msp.secret.ckks", "coordinator.public.ckks"}
    assert "never for the coordinator" in manifest["files"]["msp.secret.ckks"]
    assert datetime.fromisoformat(manifest["created"]).tzinfo is not None


def test_public_file_holds_no_secret_galois_or_relin_keys(keys):
    raw = ts.context_from(keys.public.read_bytes())
    assert not raw.has_secret_key() and not raw.is_private() and raw.is_public()
    assert not raw.has_galois_keys() and not raw.has_relin_keys()
    assert raw.has_public_key()


def test_key_id_is_the_same_from_both_files_and_differs_across_key_sets(keys, tmp_path):
    msp, coordinator = load_msp_context(keys.secret), load_coordinator_context(keys.public)
    assert key_id_of(msp) == key_id_of(coordinator) == keys.key_id
    assert key_id_of(load_msp_context(keys.secret)) == keys.key_id  # stable across loads
    assert re.fullmatch(r"[0-9a-f]{16}", keys.key_id), keys.key_id  # 16 lowercase hex digits
    assert generate_keys(tmp_path).key_id != keys.key_id


def test_generate_keys_refuses_to_overwrite(tmp_path):
    first = generate_keys(tmp_path)
    before = first.secret.read_bytes()
    with pytest.raises(KeyFileError, match=r"already holds a key set.*overwrite=True"):
        generate_keys(tmp_path)
    assert first.secret.read_bytes() == before
    second = generate_keys(tmp_path, overwrite=True)
    assert second.key_id != first.key_id
    assert stat.S_IMODE(second.secret.stat().st_mode) == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_msp_loader_refuses_the_public_file(keys):
    with pytest.raises(KeyFileError, match="no secret key") as err:
        load_msp_context(keys.public)
    assert str(keys.public) in str(err.value) and "msp.secret.ckks" in str(err.value)


def test_coordinator_loader_refuses_the_secret_file(keys):
    with pytest.raises(KeyFileError, match="must never hold it") as err:
        load_coordinator_context(keys.secret)
    assert str(keys.secret) in str(err.value) and "coordinator.public.ckks" in str(err.value)


@pytest.mark.parametrize("loader", [load_msp_context, load_coordinator_context])
@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"\x00garbage" * 50, "not a TenSEAL context"),
        (b"", "not a TenSEAL context"),
        (None, "does not exist"),
        ("truncated", "not a TenSEAL context"),
        ("keyset", "not a TenSEAL context"),
    ],
)
def test_loaders_refuse_files_that_are_no_key(keys, tmp_path, loader, content, match):
    path = tmp_path / "some.file"
    if content == "truncated":
        data = keys.public.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif content == "keyset":
        path = keys.keyset
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(KeyFileError, match=match) as err:
        loader(path)
    assert str(path) in str(err.value)


def test_loaders_refuse_a_bfv_context(tmp_path):
    path = tmp_path / "bfv.ctx"
    path.write_bytes(ts.context(ts.SCHEME_TYPE.BFV, 4096, plain_modulus=1032193).serialize())
    with pytest.raises(KeyFileError, match="not for CKKS"):
        load_coordinator_context(path)


def test_loaders_refuse_a_context_without_public_key(tmp_path):
    context = ts.context(
        ts.SCHEME_TYPE.CKKS,
        4096,
        coeff_mod_bit_sizes=[60, 49],
        encryption_type=ts.ENCRYPTION_TYPE.SYMMETRIC,
    )
    context.global_scale = 2.0**31
    path = tmp_path / "symmetric.ctx"
    path.write_bytes(context.serialize(save_secret_key=True))
    with pytest.raises(KeyFileError, match=r"no public key.*no id"):
        load_msp_context(path)


def test_coordinator_loader_drops_galois_and_relin_keys(tmp_path):
    context = new_context()
    context.generate_galois_keys()
    path = tmp_path / "heavy.public.ckks"
    path.write_bytes(context.serialize(save_secret_key=False))
    raw = ts.context_from(path.read_bytes())
    assert raw.has_galois_keys() and raw.has_relin_keys()
    loaded = load_coordinator_context(path)
    assert not loaded.has_galois_keys() and not loaded.has_relin_keys()
    assert key_id_of(loaded) == key_id_of(context)


def test_public_context_drops_every_key_but_the_public_one():
    context = new_context()
    public = public_context(context)
    assert context.has_secret_key() and context.has_relin_keys()
    assert not public.has_secret_key() and not public.has_relin_keys()
    assert not public.has_galois_keys() and public.has_public_key()


def test_custom_params_reach_the_files(tmp_path):
    params = CKKSParams(poly_modulus_degree=8192, coeff_mod_bit_sizes=(60, 60), scale_bits=40)
    keys = generate_keys(tmp_path, params=params)
    context = load_coordinator_context(keys.public)
    assert context.global_scale == 2.0**40
    data = context.seal_context().data.first_context_data()
    assert data.parms().poly_modulus_degree() == 8192
    assert json.loads(keys.keyset.read_text())["params"]["scale_bits"] == 40


def test_default_params_and_their_bounds():
    params = CKKSParams()
    assert (params.poly_modulus_degree, params.coeff_mod_bit_sizes) == (4096, (60, 49))
    assert params.data_bits == 60
    assert params.bytes_per_value == 30.0  # 4 coefficients of 60 bits per value: 7.5x float32
    assert params.max_seal_abs == 2.0 ** (60 - 2 - params.scale_bits)
    assert params.max_seal_abs * 1.9 < params.max_abs < params.max_seal_abs * 2


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(poly_modulus_degree=3000), "'poly_modulus_degree' .* power of two"),
        (dict(poly_modulus_degree=65536), "'poly_modulus_degree' .* power of two"),
        (dict(coeff_mod_bit_sizes=(60,)), "'coeff_mod_bit_sizes' .* at least two"),
        (dict(coeff_mod_bit_sizes=(61, 40)), "'coeff_mod_bit_sizes' .* at most 60"),
        (dict(coeff_mod_bit_sizes=(60, 50)), "at most 109 bits for poly_modulus_degree 4096"),
        (
            dict(poly_modulus_degree=8192, coeff_mod_bit_sizes=(60, 60, 60, 40)),
            "at most 218 bits",
        ),
        (dict(scale_bits=59), "'scale_bits' .* \\[10, 58\\]"),
        (dict(scale_bits=5), "'scale_bits'"),
        (dict(seed=3), "'seed' is not a parameter of CKKSParams"),
    ],
)
def test_params_name_the_wrong_parameter(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        CKKSParams(**kwargs)


def test_loading_a_secret_file_others_can_read_warns(tmp_path):
    keys = generate_keys(tmp_path)
    keys.secret.chmod(0o644)
    with pytest.warns(UserWarning, match="readable by other users.*chmod 600"):
        load_msp_context(keys.secret)
