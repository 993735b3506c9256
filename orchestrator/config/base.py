"""What every config section shares: the error of a bad config, the section's model settings."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from search_space import InputError


class ConfigError(InputError):
    """Invalid study config."""


class Section(BaseModel):
    """A config section. Where a section configures a runtime object (`TrainSettings`, `HardwareTarget`,
    `Protocol`, `FinetuneSettings`), that class holds the defaults, the section refers to them, and its
    `to_...()` builds the object: each setting is defined once."""

    model_config = ConfigDict(extra="forbid", frozen=True)


SEED = Field(0, ge=0, le=2**32 - 1)  # what numpy, torch and scikit-learn all accept


