"""CKKS key sets: parameters, key files, and the loaders that refuse the wrong kind of file.

A key set is one CKKS secret key shared by all MSPs (as in NVIDIA FLARE; see
docs/threat-model.md for what that implies) and its public half. :func:`generate_keys`
writes

* ``msp.secret.ckks``: the TenSEAL context *with* the secret key (file mode 0600), for MSPs;
* ``coordinator.public.ckks``: the same context with the public key only: no secret key, no
  Galois keys, no relinearization keys. Adding ciphertexts needs none of them;
* ``keyset.json``: key id, parameters, creation time and which file is which.

The key id (:func:`key_id_of`) is a hash of the public context, so the MSP's secret file and
the coordinator's public file give the same id, and updates under another key set are
rejected by name. CKKS itself cannot tell which key a ciphertext was made with: the id
catches mistakes (a stale key file), not an adversary that lies about it.

TenSEAL is imported lazily: ``import meshfl.secure.keys`` and :class:`CKKSParams` stay cheap.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
import tempfile
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationInfo, field_validator

from meshfl.config.base import MeshflConfig
from meshfl.config.errors import MeshflError

if TYPE_CHECKING:
    import tenseal as ts

__all__ = [
    "COORDINATOR_FILE",
    "KEYSET_FILE",
    "MSP_FILE",
    "CKKSParams",
    "KeyFileError",
    "KeyFiles",
    "generate_keys",
    "key_id_of",
    "load_coordinator_context",
    "load_msp_context",
    "coordinator_context_from_bytes",
    "msp_context_from_bytes",
    "new_context",
    "public_context",
    "require_public_key",
    "require_scale",
    "secret_bytes",
]

MSP_FILE = "msp.secret.ckks"
COORDINATOR_FILE = "coordinator.public.ckks"
KEYSET_FILE = "keyset.json"

# SEAL's largest total coefficient modulus (bits) for 128-bit classical security, per
# polynomial modulus degree (HomomorphicEncryption.org security standard, SEAL's
# CoeffModulus::MaxBitCount).
MAX_MODULUS_BITS = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}
MAX_PRIME_BITS = 60  # SEAL's largest prime
# Headroom kept below the data modulus: CKKS decodes a coefficient correctly while it and
# its noise stay under q/2, and SEAL picks primes just below 2^bits, so 1% is generous.
_RANGE_MARGIN = 0.99


class KeyFileError(MeshflError, ValueError):
    """Key material of the wrong kind: missing, corrupt, or secret where public belongs."""


class CKKSParams(MeshflConfig):
    """CKKS parameters for add-only aggregation (no multiplicative depth).

    MSPs pre-weight their vectors before encrypting, so the coordinator only adds
    ciphertexts: no rescaling, no relinearization, no rotations. Everything a fresh
    ciphertext needs is one *data* prime that holds a value's range, its precision and the
    encryption noise; the last prime of ``coeff_mod_bit_sizes`` is SEAL's special
    (key-switching) prime, which TenSEAL insists on but which no ciphertext carries.

    Defaults, and why (measured on one core with TenSEAL 0.3.18; see
    ``benchmarks/secure_aggregation.py``):

    * ``coeff_mod_bit_sizes=(60, 49)``: one 60-bit data prime, SEAL's largest. A ciphertext
      holds 2 polynomials x N coefficients for N/2 values, i.e. 4 coefficients per value;
      meshfl packs each coefficient into 60 bits, so **30 bytes per value: 7.5x float32**
      (plus ~120 bytes per ciphertext). A second data prime would double that to 15x, so
      every bit of range and precision has to fit in these 60 bits:
      ``range bits + precision bits + noise bits <= 59``. 60 + 49 = 109 bits is SEAL's limit
      for 128-bit security at N = 4096.
    * ``poly_modulus_degree=4096``: the smallest degree whose security limit admits a 60-bit
      data prime plus a special prime (2048 allows 54 bits in all). Bytes per value do not
      depend on N; a larger N only adds noise (as sqrt(N)), key size and padding.
    * ``scale_bits=31``: values are encoded as round(v * 2^31). *Range*: a sum decrypts
      while its magnitude stays below :attr:`max_abs` = 0.99 * 2^(60 - 1 - 31) ~ 2.7e8; one
      payload may hold up to :attr:`max_seal_abs` = 2^27 ~ 1.3e8 (SEAL's encoder keeps a sign
      bit). *Precision*: the error of a sum of K payloads is Gaussian with standard
      deviation 148 * sqrt(K) / 2^31 ~ 6.9e-8 * sqrt(K) (measured; symmetric encryption has
      ~7x less noise than public-key encryption), so the worst of 10^6 values is ~3.4e-7
      for one MSP and ~3.4e-6 for 100. The 59 usable bits split into 28 of range above 1,
      and 31 below it, of which ~12 (K = 1) to ~15 (K = 100) are noise.
      Why 31 and not more: weights are example counts, so sums reach 10^7 to 10^8 (100
      MSPs x 10^5 examples x |v| ~ 10), and at 36 bits anything beyond 2^23 ~ 8.4e6 would
      wrap around silently. Why not fewer: every payload carries its weight, so a sum's
      largest magnitude is at least its summed weight, >= 1 with counts; the worst error,
      3.4e-7 * sqrt(K), then stays below 1e-6 of it for any number K of MSPs. Each scale bit
      fewer doubles the range and the error.

    Parameters
    ----------
    poly_modulus_degree : int
        N, a power of two in [1024, 32768]; a ciphertext holds N/2 values.
    coeff_mod_bit_sizes : tuple of int
        Bit sizes of the primes: data primes first, the special prime last. At least two
        primes, each at most 60 bits, adding up to at most SEAL's 128-bit-security limit.
    scale_bits : int
        log2 of the CKKS scale; less than the data bits minus one.
    """

    poly_modulus_degree: int = 4096
    coeff_mod_bit_sizes: tuple[int, ...] = (60, 49)
    scale_bits: int = 31

    @field_validator("poly_modulus_degree")
    @classmethod
    def _degree(cls, value: int) -> int:
        if value not in MAX_MODULUS_BITS:
            raise ValueError("Input should be a power of two in [1024, 32768]")
        return value

    @field_validator("coeff_mod_bit_sizes")
    @classmethod
    def _primes(cls, value: tuple[int, ...], info: ValidationInfo) -> tuple[int, ...]:
        degree = info.data.get("poly_modulus_degree")
        if len(value) < 2:
            raise ValueError(
                "Input should be at least two prime sizes: the data prime(s) and SEAL's "
                "special prime last (TenSEAL needs it to create a context)"
            )
        smallest = 1 + int(math.log2(2 * (degree or 1024)))  # primes are 1 mod 2N
        if any(not smallest < bits <= MAX_PRIME_BITS for bits in value):
            raise ValueError(
                f"Input should be prime sizes of at most {MAX_PRIME_BITS} bits each (SEAL's "
                f"largest primes) and more than {smallest} (primes must be 1 mod 2N)"
            )
        if degree is not None and sum(value) > MAX_MODULUS_BITS[degree]:
            raise ValueError(
                f"Input should be prime sizes adding up to at most {MAX_MODULUS_BITS[degree]} "
                f"bits for poly_modulus_degree {degree} (SEAL's limit for 128-bit security); "
                f"these add up to {sum(value)}"
            )
        return value

    @field_validator("scale_bits")
    @classmethod
    def _scale(cls, value: int, info: ValidationInfo) -> int:
        primes = info.data.get("coeff_mod_bit_sizes")
        if primes is None:
            return value
        data_bits = sum(primes[:-1])
        if not 10 <= value <= data_bits - 2:
            raise ValueError(
                f"Input should be an integer in [10, {data_bits - 2}]: a payload holds "
                f"magnitudes below 2^({data_bits} - 2 - scale_bits) under these {data_bits} "
                "data bits"
            )
        return value

    @property
    def data_bits(self) -> int:
        """Bits of the modulus fresh ciphertexts live under (all primes but the special one)."""
        return sum(self.coeff_mod_bit_sizes[:-1])

    @property
    def max_abs(self) -> float:
        """Largest magnitude a *sum* of payloads may reach and still decrypt correctly.

        ``0.99 * 2**(data_bits - 1 - scale_bits)``. Beyond it the sum wraps around modulo
        the data prime *silently*: the coordinator cannot see it, and the MSP decrypts
        garbage. Keep the sum of all MSPs' payloads below it (e.g. each payload below
        ``max_abs / n_msps``). A single payload must stay below :attr:`max_seal_abs`.
        """
        return max_abs(self.data_bits, self.scale_bits)

    @property
    def max_seal_abs(self) -> float:
        """Largest magnitude one payload may hold: ``2**(data_bits - 2 - scale_bits)``.

        SEAL's encoder keeps a sign bit of headroom, so it refuses values from half of
        :attr:`max_abs` on; :meth:`~meshfl.secure.ckks.CKKSSealer.seal` raises
        :class:`~meshfl.secure.backend.ValueRangeError` instead.
        """
        return max_seal_abs(self.data_bits, self.scale_bits)

    @property
    def bytes_per_value(self) -> float:
        """Bytes a full ciphertext costs per value on the wire (without its ~120-byte header)."""
        # 2 polynomials x N coefficients per N/2 values, each data prime's coefficient
        # packed to a whole number of nibbles.
        return 4 * sum(4 * math.ceil(bits / 4) for bits in self.coeff_mod_bit_sizes[:-1]) / 8


def max_abs(data_bits: int, scale_bits: float) -> float:
    """The largest magnitude that decrypts, for a data modulus of ``data_bits`` bits.

    CKKS encodes a vector z as a polynomial whose coefficients are at most
    ``2**scale_bits * max|z|``; decryption is exact while they (and the noise) stay below
    q/2, just under 2^(data_bits-1) (SEAL picks its primes just below powers of two).
    """
    return float(_RANGE_MARGIN * 2.0 ** (data_bits - 1 - scale_bits))


def max_seal_abs(data_bits: int, scale_bits: float) -> float:
    """The largest magnitude SEAL's encoder takes: coefficients below 2^(data_bits-2)."""
    return float(2.0 ** (data_bits - 2 - scale_bits))


@dataclass(frozen=True)
class KeyFiles:
    """The files of one key set, as written by :func:`generate_keys`."""

    secret: Path
    """``msp.secret.ckks``: secret context, for every MSP and no one else."""
    public: Path
    """``coordinator.public.ckks``: public context, for the coordinator."""
    key_id: str
    """The key set's id (:func:`key_id_of`)."""

    @property
    def keyset(self) -> Path:
        """``keyset.json``: key id, parameters, creation time, which file is which."""
        return self.secret.parent / KEYSET_FILE


def new_context(params: CKKSParams | None = None) -> ts.Context:
    """A fresh CKKS context with a new secret key (and its public key), in memory.

    The relinearization keys TenSEAL creates with every context are never written out or
    handed on (see :func:`public_context`); no Galois keys are made.
    """
    import tenseal as ts

    params = params or CKKSParams()
    context = ts.context(
        ts.SCHEME_TYPE.CKKS,
        params.poly_modulus_degree,
        coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes),
        encryption_type=ts.ENCRYPTION_TYPE.ASYMMETRIC,
        n_threads=1,
    )
    context.global_scale = 2.0**params.scale_bits
    return context


def _serialize(context: ts.Context, *, secret: bool) -> bytes:
    return bytes(
        context.serialize(
            save_public_key=True,
            save_secret_key=secret,
            save_galois_keys=False,
            save_relin_keys=False,
        )
    )


def secret_bytes(context: ts.Context) -> bytes:
    """The MSP's secret context as bytes: parameters, public key, secret key."""
    if not context.has_secret_key():
        raise KeyFileError("this context holds no secret key; there is nothing secret to save")
    return _serialize(context, secret=True)


def public_context(context: ts.Context) -> ts.Context:
    """A copy of ``context`` with the public key only: no secret, Galois or relin keys."""
    import tenseal as ts

    require_public_key(context, "the context")
    public = ts.context_from(_serialize(context, secret=False), n_threads=1)
    assert not public.has_secret_key() and not public.has_galois_keys()
    assert not public.has_relin_keys()
    return public


def _has_public_key(context: ts.Context) -> bool:
    try:
        return bool(context.has_public_key())
    except ValueError:  # TenSEAL raises for symmetric-only contexts
        return False


def require_public_key(context: ts.Context, what: str) -> None:
    if not _has_public_key(context):
        raise KeyFileError(
            f"{what} holds no public key, so its key set has no id: it was not written by "
            "meshfl (a TenSEAL context made with ENCRYPTION_TYPE.SYMMETRIC?). Write key "
            "sets with `meshfl keys init` (meshfl.secure.generate_keys)."
        )


def key_id_of(context: ts.Context) -> str:
    """The id of the key set ``context`` belongs to: 16 hex digits.

    The first 16 hex digits of the SHA-256 of the public context (encryption parameters,
    public key, scale; no secret, Galois or relin keys). The MSP's secret context and the
    coordinator's public one give the same id.
    """
    require_public_key(context, "the context")
    return hashlib.sha256(_serialize(context, secret=False)).hexdigest()[:16]


def generate_keys(
    out_dir: str | os.PathLike[str],
    *,
    params: CKKSParams | None = None,
    overwrite: bool = False,
) -> KeyFiles:
    """Write a new key set to ``out_dir``: the MSPs' secret context, the coordinator's public one.

    Parameters
    ----------
    out_dir : path
        Directory for ``msp.secret.ckks`` (mode 0600), ``coordinator.public.ckks`` and
        ``keyset.json``; created if missing.
    params : CKKSParams, optional
        CKKS parameters; the defaults suit add-only aggregation (see :class:`CKKSParams`).
    overwrite : bool
        Replace an existing key set. A new key set cannot decrypt anything sealed under
        the old one (stored global models included).

    Returns
    -------
    KeyFiles

    Examples
    --------
    >>> import tempfile
    >>> keys = generate_keys(tempfile.mkdtemp())
    >>> sorted(p.name for p in keys.secret.parent.iterdir())
    ['coordinator.public.ckks', 'keyset.json', 'msp.secret.ckks']
    >>> key_id_of(load_coordinator_context(keys.public)) == keys.key_id
    True
    """
    params = params or CKKSParams()
    directory = Path(out_dir)
    secret, public, keyset = (
        directory / MSP_FILE,
        directory / COORDINATOR_FILE,
        directory / KEYSET_FILE,
    )
    existing = [p.name for p in (secret, public, keyset) if p.exists()]
    if existing and not overwrite:
        raise KeyFileError(
            f"{directory} already holds a key set ({', '.join(existing)}). Refusing to "
            "overwrite it: whatever was sealed under it (stored global models too) could no "
            "longer be decrypted. Pass overwrite=True to replace it, or choose another "
            "directory."
        )
    directory.mkdir(parents=True, exist_ok=True)
    context = new_context(params)
    key_id = key_id_of(context)
    manifest: dict[str, Any] = {
        "format": "meshfl.keyset/1",
        "scheme": "CKKS",
        "key_id": key_id,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "params": params.model_dump(mode="json"),
        "max_abs": params.max_abs,
        "files": {
            MSP_FILE: "secret context (secret key, public key, parameters): for every MSP, "
            "never for the coordinator",
            COORDINATOR_FILE: "public context (public key and parameters; no secret, Galois "
            "or relinearization keys): for the coordinator",
        },
    }
    _write_atomic(secret, secret_bytes(context), mode=0o600)
    _write_atomic(public, _serialize(context, secret=False), mode=0o644)
    _write_atomic(keyset, (json.dumps(manifest, indent=2) + "\n").encode(), mode=0o644)
    return KeyFiles(secret=secret, public=public, key_id=key_id)


def _write_atomic(path: Path, data: bytes, *, mode: int) -> None:
    """Write through a temp file created with ``mode`` (never world-readable in between)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _parse_context(data: bytes, source: str, needs: str) -> ts.Context:
    import tenseal as ts

    try:
        context = ts.context_from(data, n_threads=1)
        is_ckks = context.seal_context().data.key_context_data().parms().scheme() == (
            ts.SCHEME_TYPE.CKKS.value
        )
    except Exception as err:
        raise KeyFileError(
            f"{source} is not a TenSEAL context (corrupt, truncated or another kind of file: "
            f"{type(err).__name__}: {err}). {needs}"
        ) from None
    if not is_ckks:
        raise KeyFileError(f"{source} is a TenSEAL context, but not for CKKS. {needs}")
    return context


def _read_file(path: str | os.PathLike[str], role: str, needs: str) -> bytes:
    file = Path(path)
    if not file.is_file():
        raise KeyFileError(f"{role} key file {file} does not exist (or is not a file). {needs}")
    return file.read_bytes()


_MSP_NEEDS = (
    f"An MSP needs the secret context {MSP_FILE} that `meshfl keys init` wrote next to "
    f"the coordinator's {COORDINATOR_FILE}."
)
_COORDINATOR_NEEDS = (
    f"The coordinator needs the public context {COORDINATOR_FILE} written by `meshfl keys init`."
)


def load_msp_context(path: str | os.PathLike[str]) -> ts.Context:
    """The MSP's secret context from ``msp.secret.ckks``; refuses anything else.

    Raises
    ------
    KeyFileError
        The file is missing, is not a CKKS context, or holds no secret key (the
        coordinator's public file, say); the message names the file and what is needed.
    """
    context = msp_context_from_bytes(_read_file(path, "The MSP's", _MSP_NEEDS), source=str(path))
    mode = stat.S_IMODE(Path(path).stat().st_mode)
    if mode & 0o077:
        warnings.warn(
            f"{path} holds the CKKS secret key but is readable by other users (mode "
            f"{mode:o}); restrict it with `chmod 600 {path}`",
            UserWarning,
            stacklevel=2,
        )
    return context


def msp_context_from_bytes(data: bytes, *, source: str = "the key bytes") -> ts.Context:
    """Like :func:`load_msp_context`, from the file's bytes; ``source`` names them in errors."""
    context = _parse_context(data, source, _MSP_NEEDS)
    if not context.has_secret_key():
        raise KeyFileError(
            f"{source} holds no secret key: it is a public context (the coordinator's "
            f"{COORDINATOR_FILE}?), with which an MSP could not open the global model. "
            f"{_MSP_NEEDS}"
        )
    require_public_key(context, source)
    require_scale(context, source)
    return context


def load_coordinator_context(path: str | os.PathLike[str]) -> ts.Context:
    """The coordinator's public context from ``coordinator.public.ckks``; refuses a secret one.

    A context holding a secret key is refused: the coordinator must never hold it. Galois
    and relinearization keys, if the file has any, are dropped on loading (they are public
    material, but adding ciphertexts needs neither, and they are large).

    Raises
    ------
    KeyFileError
        The file is missing, is not a CKKS context, or holds a secret key.
    """
    data = _read_file(path, "The coordinator's", _COORDINATOR_NEEDS)
    return coordinator_context_from_bytes(data, source=str(path))


def coordinator_context_from_bytes(data: bytes, *, source: str = "the key bytes") -> ts.Context:
    """Like :func:`load_coordinator_context`, from the file's bytes."""
    context = _parse_context(data, source, _COORDINATOR_NEEDS)
    if context.has_secret_key():
        raise KeyFileError(
            f"{source} holds the CKKS secret key, and the coordinator must never hold it: "
            "with it, the coordinator could decrypt every MSP's update. Start the "
            f"coordinator with the public context {COORDINATOR_FILE} of the same key set "
            f"(written next to {MSP_FILE} by `meshfl keys init`), and keep the secret "
            "context on the MSPs only."
        )
    require_public_key(context, source)
    require_scale(context, source)
    if context.has_galois_keys() or context.has_relin_keys():
        context = public_context(context)
    return context


def require_scale(context: ts.Context, path: str | os.PathLike[str]) -> None:
    try:
        scale = float(context.global_scale)
    except ValueError:
        scale = float("nan")
    if not (math.isfinite(scale) and scale >= 1):
        raise KeyFileError(
            f"{path} has no CKKS scale set; it was not written by meshfl. Write key sets "
            "with `meshfl keys init` (meshfl.secure.generate_keys)."
        )
