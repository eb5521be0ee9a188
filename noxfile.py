"""Developer sessions: ``nox -s tests lint typecheck benchmarks docs``.

The README's two commands (``./run demo``, ``./run test``) need nothing but Python; nox is
for contributors who want isolated, repeatable sessions.
"""

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
TORCH = "torch==2.13.0"  # a CPU build; keeps pip from pulling a CUDA build


def _install(session: nox.Session, extras: str = "test") -> None:
    session.install(TORCH)
    session.install("-e", f".[{extras}]")


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite (unit and integration)."""
    _install(session, "test,ray")
    session.run("pytest", *session.posargs)


@nox.session
def quick(session: nox.Session) -> None:
    """Unit tests only (skips tests marked integration)."""
    _install(session)
    session.run("pytest", "-m", "not integration", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff lint and format check."""
    session.install("ruff")
    session.run("ruff", "check", "src", "tests", "benchmarks", "examples")
    session.run("ruff", "format", "--check", "src", "tests", "benchmarks", "examples")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy over the package."""
    _install(session)
    session.install("mypy", "pandas-stubs")
    session.run("mypy")


@nox.session
def benchmarks(session: nox.Session) -> None:
    """Federated vs local-only vs centralized, per agent (writes benchmarks/results/)."""
    _install(session, "test,plot")
    session.run("python", "benchmarks/federation_quality.py", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """Run the doctests of the public façades and build the docs site strictly (site/)."""
    _install(session, "test,docs")
    session.run(
        "pytest", "--doctest-modules", "src/meshfl/__init__.py", "src/meshfl/agents/__init__.py",
        "src/meshfl/simulation.py", "src/meshfl/privacy/",
    )
    session.run("mkdocs", "build", "--strict")
