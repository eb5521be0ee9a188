"""What an MSP may say when it fails: a code and a fixed sentence, never the exception's text.

An exception's text can carry what the MSP computed from what it decrypted: the magnitude
of a value it could not seal, a weight, a row count, a file path. Whatever a ClientApp
raises travels back to the coordinator (Flower's ``run_clientapp`` returns ``str(ex)``, and
so did the in-process engine), so a coordinator that crafts what it sends could read the
MSP's secrets out of its errors: a decryption oracle. Here every failure leaves the MSP as
one of a few codes (:class:`ReplyError`) with a sentence fixed in this module; the details
stay in the MSP's own log (logger ``meshfl.msp``).

* MSP side: :func:`guard` wraps a ClientApp handler; :func:`safe_reply_error` is the
  mapping it uses (``exception -> (code, reason)``).
* Coordinator side: :func:`describe_reply_error` turns whatever error reply arrives into one
  of the fixed sentences (an unknown code is named by its number only), so nothing an MSP
  wrote in free text is stored or logged by the coordinator.
* Host side: a process that runs MSPs itself (``meshfl.simulate``: the user owns every
  MSP) reads what they raised, in full, inside :func:`local_msp_failures`. The text stays in
  that process, as the MSP's own log does; nothing more leaves any MSP.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass

from flwr.app import Context, Error, Message

from meshfl.config.errors import DataSchemaError, InvalidUpdateError, MeshflError
from meshfl.federation.sealed_model import MissingHistoryError
from meshfl.privacy.ledger import LedgerCorruptError
from meshfl.secure.backend import ValueRangeError

__all__ = [
    "E_CONFIG",
    "E_DATA",
    "E_DECRYPT",
    "E_HISTORY",
    "E_INTERNAL",
    "E_LEDGER",
    "E_RANGE",
    "LocalFailure",
    "REPLY_ERRORS",
    "ReplyError",
    "classify",
    "describe_reply_error",
    "guard",
    "local_msp_failures",
    "reply_error_kind",
    "safe_reply_error",
]

log = logging.getLogger("meshfl.msp")

Handler = Callable[[Message, Context], Message]


@dataclass(frozen=True)
class ReplyError:
    """One code an MSP may answer with: its number (Flower's ``Error.code``), name, sentence."""

    code: int
    name: str
    sentence: str

    @property
    def reason(self) -> str:
        """What travels as Flower's ``Error.reason``: ``"<name>: <sentence>"``, fixed text."""
        return f"{self.name}: {self.sentence}"


E_RANGE = ReplyError(
    1201,
    "E_RANGE",
    "the MSP's update does not fit the key set's per-payload range; details are in the "
    "MSP's own log",
)
E_DECRYPT = ReplyError(
    1202,
    "E_DECRYPT",
    "the MSP refused what it was sent (a sealed model it could not open or verify, or "
    "malformed instructions); details are in the MSP's own log",
)
E_DATA = ReplyError(
    1203,
    "E_DATA",
    "the MSP's data does not fit this agent; details are in the MSP's own log",
)
E_CONFIG = ReplyError(
    1204,
    "E_CONFIG",
    "the MSP cannot run this round as configured (agent, keys or privacy settings); "
    "details are in the MSP's own log",
)
E_LEDGER = ReplyError(
    1205,
    "E_LEDGER",
    "the MSP's privacy ledger cannot be trusted (damaged, or behind the coordinator's "
    "mirror); the MSP's operator must restore it before it trains again; details are in "
    "the MSP's own log",
)
E_HISTORY = ReplyError(
    1206,
    "E_HISTORY",
    "the MSP lacks sums of the global model that the message left out (it restarted or "
    "lost its state); send it the whole history",
)
E_INTERNAL = ReplyError(
    1299,
    "E_INTERNAL",
    "the MSP failed while handling the message; details are in the MSP's own log",
)

REPLY_ERRORS: dict[int, ReplyError] = {
    e.code: e for e in (E_RANGE, E_DECRYPT, E_DATA, E_CONFIG, E_LEDGER, E_HISTORY, E_INTERNAL)
}
"""Every code an MSP answers with, by number."""

_FLOWER_CODES = {
    0: "UNKNOWN",
    1: "LOAD_CLIENT_APP_EXCEPTION",
    2: "CLIENT_APP_RAISED_EXCEPTION",
    3: "MESSAGE_UNAVAILABLE",
    4: "REPLY_MESSAGE_UNAVAILABLE",
    5: "NODE_UNAVAILABLE",
    6: "MOD_FAILED_PRECONDITION",
    7: "INVALID_FAB",
    8: "CLIENT_APP_CRASHED",
}


def classify(exc: BaseException) -> ReplyError:
    """The code for an exception (by type only: its text is never read)."""
    if isinstance(exc, ValueRangeError):
        return E_RANGE
    if isinstance(exc, InvalidUpdateError):
        return E_DECRYPT
    if isinstance(exc, DataSchemaError):
        return E_DATA
    if isinstance(exc, LedgerCorruptError):
        return E_LEDGER
    if isinstance(exc, MissingHistoryError):
        return E_HISTORY
    if isinstance(exc, MeshflError):  # config, keys, agent names, privacy setup
        return E_CONFIG
    return E_INTERNAL


def safe_reply_error(exc: BaseException) -> tuple[int, str]:
    """``(code, reason)`` for Flower's ``Error``: a code and its fixed sentence.

    Nothing of ``str(exc)`` is in it, so nothing the MSP computed (from what it decrypted
    or from its data) leaves with it.

    Examples
    --------
    >>> from meshfl.secure.backend import ValueRangeError
    >>> safe_reply_error(ValueRangeError("cannot seal a value of magnitude 249.97"))[1][:7]
    'E_RANGE'
    >>> "249" in safe_reply_error(ValueRangeError("magnitude 249.97"))[1]
    False
    """
    error = classify(exc)
    return error.code, error.reason


@dataclass(frozen=True)
class LocalFailure:
    """What a guarded handler of an MSP hosted in this process raised (see
    :func:`local_msp_failures`)."""

    msp: int
    """The MSP's partition id (simulations), else its node id."""
    phase: str
    """The message type it failed on: ``train.<agent>``, ``evaluate.<agent>``, ..."""
    error: str
    """``"<exception type>: <its text>"``: the sentence that says what to fix."""


_LOCAL_FAILURES: ContextVar[list[LocalFailure] | None] = ContextVar(
    "meshfl_local_msp_failures", default=None
)


@contextlib.contextmanager
def local_msp_failures() -> Iterator[list[LocalFailure]]:
    """Collect what the MSPs this process hosts raise, while the block runs.

    A simulation runs every MSP in the caller's own process (the in-process engine runs
    them on the caller's thread), so their own log is the caller's: the list this yields
    receives a :class:`LocalFailure` for each exception a :func:`guard`-ed handler turns
    into an error reply. What travels to the coordinator is unchanged (a code and a fixed
    sentence). MSPs in other processes (Ray workers, deployed nodes) add nothing.
    """
    failures: list[LocalFailure] = []
    token = _LOCAL_FAILURES.set(failures)
    try:
        yield failures
    finally:
        _LOCAL_FAILURES.reset(token)


def _report_locally(message: Message, context: Context, exc: BaseException) -> None:
    failures = _LOCAL_FAILURES.get()
    if failures is None:
        return
    try:
        msp = int(context.node_config.get("partition-id", context.node_id))
    except (TypeError, ValueError):
        msp = int(context.node_id)
    phase = str(message.metadata.message_type)
    failures.append(LocalFailure(msp, phase, f"{type(exc).__name__}: {exc}"))


def guard(handler: Handler) -> Handler:
    """Wrap a ClientApp handler so that whatever it raises leaves as a code, never as text.

    The wrapped handler logs the exception (type, text, traceback) to the MSP's own log
    (logger ``meshfl.msp``), hands it to :func:`local_msp_failures` when this process
    collects them, and replies with ``Error(code, fixed sentence)``
    (:func:`safe_reply_error`). What the handler returns is passed on unchanged.
    """

    @functools.wraps(handler)
    def guarded(message: Message, context: Context) -> Message:
        try:
            return handler(message, context)
        except Exception as exc:
            code, reason = safe_reply_error(exc)
            _report_locally(message, context, exc)
            log.error(
                "%s failed (replied %s): %s: %s",
                message.metadata.message_type,
                reason.split(":", 1)[0],
                type(exc).__name__,
                exc,
                exc_info=True,
            )
            return Message(Error(code=code, reason=reason), reply_to=message)

    return guarded


def reply_error_kind(error: Error) -> str:
    """A short label of an error reply for counting: a meshfl code's name (``E_DATA``...),
    else ``flower_error`` (a ClientApp that could not run, an unknown code)."""
    try:
        known = REPLY_ERRORS.get(int(error.code))
    except (TypeError, ValueError, OverflowError):
        known = None
    return known.name if known is not None else "flower_error"


def describe_reply_error(error: Error) -> str:
    """The coordinator's account of an error reply: a fixed sentence, never the MSP's text.

    A meshfl code gives its own sentence (whatever reason came with it); any other code is
    named by number (and Flower's name for it), its free-text reason dropped.
    """
    try:
        code = int(error.code)
    except (TypeError, ValueError, OverflowError):
        return "the MSP replied with an error of no valid code"
    known = REPLY_ERRORS.get(code)
    if known is not None:
        return f"the MSP replied with an error: {known.reason}"
    name = _FLOWER_CODES.get(code)
    named = f" ({name})" if name else ""
    return f"the MSP replied with error code {code}{named}; its text is not forwarded"
