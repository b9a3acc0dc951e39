from __future__ import annotations

import pytest

from fakes.sample_infra import SAMPLE
from ferry.infra.model import Infra


@pytest.fixture
def infra() -> Infra:
    return Infra.model_validate(SAMPLE)
