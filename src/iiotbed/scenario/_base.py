"""The base of every scenario model, and the constrained types they share."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

Probability = Annotated[float, Field(ge=0, le=1)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)]


class Model(BaseModel):
    """Unknown keys are errors (a misspelt key must not pass silently); values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)
