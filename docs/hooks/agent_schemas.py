"""mkdocs hook: the page of agent schemas, generated from the registered agents at build time.

Each built agent (``meshfl.agents.registry``) gives its summary, metric, update size, data
schema (``Agent.schema``) and config fields (``Agent.config_class``), so the page cannot
drift from the code. It is the same information ``meshfl agents show NAME`` prints.
"""

from __future__ import annotations

import os
from typing import Any

from mkdocs.structure.files import File, Files

PAGE = "reference/agent-schemas.md"


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _default(field: Any) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    text = repr(value)
    return f"`{_cell(text)}`" if len(text) <= 40 else f"`{_cell(text[:37])}...`"


def _type(annotation: Any) -> str:
    if isinstance(annotation, type):
        return _cell(annotation.__name__)
    return _cell(str(annotation).replace("typing.", "").replace("NoneType", "None"))


def agent_section(name: str) -> str:
    from meshfl.agents import registry

    cls = registry.get(name)
    agent = cls({})
    better = "higher" if agent.higher_is_better else "lower"
    size = agent.update_size(agent.init_vector(seed=0))
    lines = [
        f"## `{name}`",
        "",
        f"{getattr(cls, 'summary', '') or registry.KNOWN_AGENTS.get(name, '')}",
        "",
        f"- **Class**: `{cls.__module__}.{cls.__qualname__}`",
        f"- **Metric**: `{agent.metric}` ({better} is better)",
        f"- **Sends**: {size:,} numbers per round, sealed (CKKS) with its weight and tag",
        f"- **Suggested rounds**: {agent.suggested_rounds()}",
        "",
        f"### Data: {agent.schema.name}, one row per record",
        "",
        "| column | kind | required | description |",
        "| --- | --- | --- | --- |",
    ]
    for col in agent.schema.columns:
        need = "yes" if col.required else "no"
        lines.append(f"| `{col.name}` | {col.kind} | {need} | {_cell(col.description)} |")
    lines += [
        "",
        f"### Config: `{cls.config_class.__name__}`",
        "",
        "| field | type | default | description |",
        "| --- | --- | --- | --- |",
    ]
    for field_name, field in cls.config_class.model_fields.items():
        lines.append(
            f"| `{field_name}` | {_type(field.annotation)} | {_default(field)} | "
            f"{_cell(field.description or '')} |"
        )
    return "\n".join(lines) + "\n"


def page() -> str:
    from meshfl.agents import built

    head = (
        "# Agent schemas\n\n"
        "Generated from the code when this site was built (`docs/hooks/agent_schemas.py` "
        "reads every registered agent through `meshfl.agents.registry`). "
        "`meshfl agents show NAME` prints the same on the command line, and "
        "`meshfl agents sample NAME --out x.csv` writes a valid sample CSV.\n\n"
    )
    return head + "\n".join(agent_section(name) for name in built())


def on_files(files: Files, config: Any) -> Files:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    files.append(File.generated(config, PAGE, content=page()))
    return files
