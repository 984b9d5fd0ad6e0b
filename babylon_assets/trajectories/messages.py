"""What the policy saw and said, as chat messages: the only text the policy is trained on.

Market outcomes never enter here; they are the judge's context alone.
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict

from babylon_assets.trajectories.models import Trajectory


class ChatMessage(BaseModel):
    model_config = ConfigDict(frozen=True)

    role: Literal["system", "user", "assistant"]
    content: str


def trajectory_messages(trajectory: Trajectory) -> list[ChatMessage]:
    """The agent's own system prompt, then each step's deciding prompt and response."""
    calls = [call for step in trajectory.steps if (call := step.deciding_call) is not None]
    messages = [ChatMessage(role="system", content=calls[0].system_prompt)]
    for call in calls:
        messages.append(ChatMessage(role="user", content=call.user_prompt))
        messages.append(ChatMessage(role="assistant", content=call.response))
    return messages
