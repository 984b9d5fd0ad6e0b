import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import TypeAdapter, ValidationError

from babylon_assets.trajectories.models import Step, parse_window_key, window_key
from tests.support.trajectory_rows import FIXTURES, fixture_steps

STEPS = TypeAdapter(list[Step])


def test_window_key_round_trips_and_refuses_off_hour_ids() -> None:
    window = datetime(2026, 11, 24, 13, tzinfo=UTC)
    assert window_key(window) == "2026-11-24T13:00"
    assert parse_window_key("2026-11-24T13:00") == window
    # The same instant in another offset is the same window.
    assert window_key(window.astimezone(timezone(timedelta(hours=-5)))) == "2026-11-24T13:00"
    with pytest.raises(ValueError, match="not on the hour"):
        window_key(window + timedelta(minutes=30))
    with pytest.raises(ValueError, match="timezone-aware"):
        window_key(datetime(2026, 11, 24, 13))
    with pytest.raises(ValueError, match="YYYY-MM-DDTHH:00"):
        parse_window_key("2026-11-24 13:30")


def test_recorder_step_parses_to_snake_case() -> None:
    (step,) = STEPS.validate_json(b"[" + (FIXTURES / "recorder_step.json").read_bytes() + b"]")
    assert step.environment_state.agent_pnl == 120.5
    assert step.environment_state.active_markets == 17
    assert step.provider_accesses[0].provider_name == "MARKET_DATA"
    assert step.action.action_type == "BUY_SHARES"
    assert step.action.parameters["marketId"] == "pm-1"
    assert step.reward == 1.25
    call = step.deciding_call
    assert call is not None and call.system_prompt == "You are a balanced Babylon trader."
    assert call.model_version == "2026-10"
    assert call.max_tokens == 512


def test_plugin_logger_step_parses_attempt_and_extras() -> None:
    (step,) = STEPS.validate_json(b"[" + (FIXTURES / "plugin_step.json").read_bytes() + b"]")
    # The attempt's actionName and immediateReward stand in for actionType and the step reward.
    assert step.action.action_type == "OPEN_PERP"
    assert step.reward == -0.5
    assert step.action.attempt_id == "attempt-3"
    assert step.action.llm_call_id == "call-91"
    assert step.step_id == "step-7f3a"
    assert step.done is False
    assert step.environment_state.portfolio_value == 1010.4
    assert step.environment_state.custom == {"mood": "confident"}
    call = step.deciding_call
    assert call is not None
    assert call.call_id == "call-91" and call.prompt_tokens == 42 and call.top_p == 0.95
    assert call.messages is not None and call.messages[0]["role"] == "system"


def test_steps_serialize_back_to_the_recorder_keys() -> None:
    steps = STEPS.validate_python(fixture_steps("recorder", 2))
    dumped = json.loads(STEPS.dump_json(steps, by_alias=True, exclude_none=True))
    assert dumped[0]["environmentState"]["agentPnL"] == 120.5
    assert dumped[0]["action"]["actionType"] == "BUY_SHARES"
    assert STEPS.validate_python(dumped) == steps


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_refused(literal: str) -> None:
    text = json.dumps(fixture_steps("recorder", 1)).replace('"reward": 1.25', f'"reward": {literal}')
    assert literal in text
    with pytest.raises(ValidationError, match="finite number"):
        STEPS.validate_json(text)
