"""Audiences: select customers by tags and features, understand them, hold out a control, measure lift.

Core logic only (imports nothing above the core): the filter language (:mod:`.filters`), the population table
(:mod:`.population`), stored audiences and their audit trail (:mod:`.store`), insight (:mod:`.insight`) and its
HTML report (:mod:`.report`), holdouts and lift (:mod:`.holdout`), and the operations over all of them
(:mod:`.manager`). The service (``serving/audiences.py``) and the CLI (``portrait/cli_audience.py``) build the
population and call :class:`AudienceBook`.
"""

from __future__ import annotations

from portrait.audience.filters import Filter, FilterError, compile_filter
from portrait.audience.holdout import LiftReport, assign, lift
from portrait.audience.insight import Insight, insight
from portrait.audience.manager import AudienceBook, AudienceError
from portrait.audience.population import Population, population_key
from portrait.audience.store import AudienceNotFound, AudienceRecord, AudienceStore

__all__ = [
    "AudienceBook",
    "AudienceError",
    "AudienceNotFound",
    "AudienceRecord",
    "AudienceStore",
    "Filter",
    "FilterError",
    "Insight",
    "LiftReport",
    "Population",
    "assign",
    "compile_filter",
    "insight",
    "lift",
    "population_key",
]
