"""Reading CloudFormation/SAM templates in tests: short-form tags as maps, a role's policy statements."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
ECS_TEMPLATE = ROOT / "deploy" / "ecs" / "template.yaml"
LAMBDA_TEMPLATE = ROOT / "deploy" / "lambda" / "template.yaml"


class _CfnLoader(yaml.SafeLoader):
    """A YAML loader that reads CloudFormation short-form tags (!Ref, !Sub ...) as {"Ref": ...} maps."""


def _cfn_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    key = suffix if suffix in {"Ref", "Condition"} else f"Fn::{suffix}"
    return {key: value}


_CfnLoader.add_multi_constructor("!", _cfn_tag)


def load_cfn(path: Path) -> dict[str, Any]:
    """The template as plain data."""
    return yaml.load(path.read_text(encoding="utf-8"), Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass


def role_statements(template: Path, role: str) -> list[dict[str, Any]]:
    """Every statement of ``role``'s inline policies; a conditional one as the statement it adds."""
    resource = load_cfn(template)["Resources"][role]
    statements: list[dict[str, Any]] = []
    for policy in resource["Properties"]["Policies"]:
        for stmt in policy["PolicyDocument"]["Statement"]:
            if "Fn::If" in stmt:
                statements.extend(s for s in stmt["Fn::If"][1:] if isinstance(s, dict) and "Effect" in s)
            else:
                statements.append(stmt)
    return statements


def actions_of(statement: dict[str, Any]) -> list[str]:
    """A statement's actions as a list."""
    action = statement["Action"]
    return list(action) if isinstance(action, list) else [action]
