"""The operations probe: a message any service can send and every service records on receipt."""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field


class ProbeSent(BaseModel):
    """A probe put on the probes topic by one service (or an operator)."""

    model_config = ConfigDict(frozen=True)

    message_type: Literal["ProbeSent"] = "ProbeSent"
    probe_id: UUID
    sent_by: str = Field(min_length=1)
    sent_at: AwareDatetime
