"""A model's training spec, derived from its catalogue entry (:mod:`portrait.catalogue`) and its spec module.

The catalogue says what a model predicts (label kind and windows), its tiers and its headline metric; the
model's own module in ``training/`` (``training.<name>``) adds only what fitting needs, such as monotone
constraints (``MONOTONE``). :func:`spec_for` puts the two together, with per-run window overrides.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from portrait import catalogue
from portrait.catalogue import TierScheme
from training.labels import LabelSpec, Population

TierSpec = TierScheme  # the name fitting code has always used


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: Literal["classifier", "regressor"]
    label: LabelSpec
    primary_metric: str  # on the out-of-time test split
    tiers: TierScheme
    description: str
    # LightGBM monotone constraints (+1 increasing, -1 decreasing) for relationships the business takes
    # as given; checked by the behavioural tests.
    monotone: dict[str, int] = field(default_factory=dict)
    higher_is_better: bool = True

    def with_windows(
        self,
        horizon_days: int | None = None,
        lookback_days: int | None = None,
        population: Population | None = None,
    ) -> ModelSpec:
        """The same model over other windows."""
        label = replace(
            self.label,
            horizon_days=horizon_days if horizon_days is not None else self.label.horizon_days,
            lookback_days=lookback_days if lookback_days is not None else self.label.lookback_days,
            population=population if population is not None else self.label.population,
        )
        return replace(self, label=label, description=_describe(self.name, label))


def _describe(name: str, label: LabelSpec) -> str:
    entry = catalogue.get(name)
    windows = f"horizon {label.horizon_days} days"
    if label.target == "churn":
        windows += f", lookback {label.lookback_days} days"
    if label.population != "all":
        windows += f", population {label.population}"
    return f"{entry.description} ({windows})"


def spec_for(
    name: str,
    *,
    horizon_days: int | None = None,
    lookback_days: int | None = None,
    population: Population | None = None,
) -> ModelSpec:
    """The training spec of tag model ``name`` from the catalogue, with optional window overrides."""
    entry = catalogue.get(name)
    if not entry.is_tag_model or entry.label is None or entry.tiers is None:
        raise ValueError(f"{name!r} is not a tag model with a label and tiers in the catalogue")
    module = catalogue.spec_module(entry)
    windows = entry.label
    label = LabelSpec(windows.kind, windows.horizon_days, windows.lookback_days, windows.population)
    spec = ModelSpec(
        name=entry.name,
        kind=entry.kind,  # type: ignore[arg-type] - is_tag_model narrows it
        label=label,
        primary_metric=entry.headline_metric,
        tiers=entry.tiers,
        description="",
        monotone=dict(getattr(module, "MONOTONE", {})),
        higher_is_better=entry.higher_is_better,
    )
    return spec.with_windows(horizon_days, lookback_days, population)


def tag_specs() -> dict[str, ModelSpec]:
    """Every tag model's default spec, in catalogue order."""
    return {e.name: spec_for(e.name) for e in catalogue.tag_models()}
