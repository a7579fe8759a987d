"""The SAM template's alarms, runtime parameter and cross-account ExternalId."""

from __future__ import annotations

from typing import Any

from cfn_support import LAMBDA_TEMPLATE, load_cfn

from replicator.observe.emf import COUNT_METRICS, METRIC_NAMESPACE


def _alarms() -> dict[str, dict[str, Any]]:
    resources = load_cfn(LAMBDA_TEMPLATE)["Resources"]
    return {name: r["Properties"] for name, r in resources.items() if r["Type"] == "AWS::CloudWatch::Alarm"}


def test_the_alarms_the_readme_asks_for_exist() -> None:
    """IteratorAge, Errors, the on-failure queue's depth and dead letters each have an alarm on this function/queue."""
    by_metric = {(a["Namespace"], a["MetricName"]): a for a in _alarms().values()}
    assert set(by_metric) == {
        ("AWS/Lambda", "IteratorAge"),
        ("AWS/Lambda", "Errors"),
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible"),
        (METRIC_NAMESPACE, "dead_lettered"),
    }
    assert "dead_lettered" in COUNT_METRICS
    function = [{"Name": "FunctionName", "Value": {"Ref": "Function"}}]
    assert by_metric["AWS/Lambda", "IteratorAge"]["Dimensions"] == function
    assert by_metric["AWS/Lambda", "Errors"]["Dimensions"] == function
    # The EMF line's only dimension is FunctionName, so the alarm names exactly that one.
    assert by_metric[METRIC_NAMESPACE, "dead_lettered"]["Dimensions"] == function
    queue = by_metric["AWS/SQS", "ApproximateNumberOfMessagesVisible"]["Dimensions"]
    assert queue == [{"Name": "QueueName", "Value": {"Fn::GetAtt": "DeadLetterQueue.QueueName"}}]
    # IteratorAge is in milliseconds; the parameter in seconds.
    assert by_metric["AWS/Lambda", "IteratorAge"]["Threshold"] == {"Fn::Sub": "${IteratorAgeAlarmSeconds}000"}


def test_alarms_notify_the_topic_when_given_and_idle_is_not_an_alarm() -> None:
    """Every alarm notifies AlarmTopicArn (when set) and treats missing data (no invocations) as OK."""
    for name, alarm in _alarms().items():
        notify = {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}
        assert alarm["AlarmActions"] == notify, name
        assert alarm["TreatMissingData"] == "notBreaching", name


def test_runtime_is_a_parameter_the_zip_is_built_for() -> None:
    """The function's runtime is the Runtime parameter; each allowed value is a Python the build script targets."""
    import importlib.util  # noqa: PLC0415

    template = load_cfn(LAMBDA_TEMPLATE)
    assert template["Resources"]["Function"]["Properties"]["Runtime"] == {"Ref": "Runtime"}
    allowed = template["Parameters"]["Runtime"]["AllowedValues"]
    script = LAMBDA_TEMPLATE.parents[2] / "scripts" / "build_lambda_zip.py"
    spec = importlib.util.spec_from_file_location("build_lambda_zip", script)
    assert spec is not None
    assert spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    assert {f"python{v}" for v in build.PYTHON_VERSIONS} == set(allowed)


def test_external_id_reaches_the_config_only_with_a_role() -> None:
    """TargetExternalId becomes target.external_id, set only when TargetRoleArn is (the config requires both)."""
    template = load_cfn(LAMBDA_TEMPLATE)
    variables = template["Resources"]["Function"]["Properties"]["Environment"]["Variables"]
    assert variables["REPLICATOR_TARGET__EXTERNAL_ID"] == {
        "Fn::If": ["HasTargetExternalId", {"Ref": "TargetExternalId"}, {"Ref": "AWS::NoValue"}]
    }
    condition = template["Conditions"]["HasTargetExternalId"]["Fn::And"]
    assert {"Condition": "HasTargetRole"} in condition
