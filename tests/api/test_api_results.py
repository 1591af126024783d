"""The HTTP API answers the service's results: each response model's fields are fields of
one dataclass of treecast/service/results.py (or one the route adds itself), so a field
added to a result has one place to show up, and a model cannot drift from its result."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from pydantic import AliasChoices, BaseModel

from models.sync import SyncOutcome
from treecast.api import schemas
from treecast.api.app import create_app
from treecast.config import Settings
from treecast.service import results

# Response model -> the result it answers, and the fields its route adds (not the result's).
ANSWERS: dict[type[BaseModel], tuple[type[Any], set[str]]] = {
    schemas.AppOut: (results.App, set()),
    schemas.OnboardOut: (results.AppCreated, set()),
    schemas.AppDetailOut: (results.AppDetail, set()),
    schemas.AppWatchOut: (results.Watch, set()),
    schemas.SelfOut: (results.AppDetail, set()),
    schemas.RepositoryOut: (results.Watched, {"push_url", "sync_error"}),
    schemas.WatchOut: (results.Watch, set()),
    schemas.LiveOut: (results.LiveState, set()),
    schemas.CredentialsOut: (results.CredentialInfo, set()),
    schemas.CredentialsSetOut: (results.CredentialsSet, set()),
    schemas.DeliveryOut: (results.Delivery, set()),
    schemas.SyncAcceptedOut: (results.SyncAccepted, {"status_url"}),
    schemas.RedeliverOut: (results.Redelivered, set()),
    schemas.ReadyOut: (results.Readiness, {"status"}),
    schemas.PushOut: (results.PushResult, set()),
    schemas.SyncOut: (SyncOutcome, {"sync_id", "delivery"}),
    schemas.ReconcileOut: (results.Reconciled, {"status_url"}),
    schemas.SyncCompletedOut: (results.AppDetail, set()),
}
# Answers a route builds from a plain value (a token, a list of ids), not from a result.
PLAIN = {
    schemas.AppDeletedOut,
    schemas.ErrorOut,
    schemas.GitTokenOut,
    schemas.HealthOut,
    schemas.PushSecretOut,
    schemas.SecretRotateOut,
    schemas.TokenRotateOut,
    schemas.VersionOut,
}


def read_from(model: type[BaseModel]) -> dict[str, list[str]]:
    """Each field of a model and the attribute names it is read from."""
    names = {}
    for name, info in model.model_fields.items():
        alias = info.validation_alias
        choices = alias.choices if isinstance(alias, AliasChoices) else [alias or name]
        names[name] = [str(choice) for choice in choices]
    return names


@pytest.mark.parametrize("model", list(ANSWERS), ids=lambda m: m.__name__)
def test_each_field_of_an_answer_is_a_field_of_its_result(model: type[BaseModel]) -> None:
    result, added = ANSWERS[model]
    fields = {f.name for f in dataclasses.fields(result)}
    fields |= {name for name, value in vars(result).items() if isinstance(value, property)}
    missing = {
        name
        for name, sources in read_from(model).items()
        if name not in added and not fields & set(sources)
    }
    assert missing == set(), f"{model.__name__} answers fields {result.__name__} lacks"
    assert added.isdisjoint(fields), "a field the route adds shadows one of the result"


def _models(annotation: Any) -> set[type[BaseModel]]:
    """The response models in an annotation (inside `Data[...]`, `ListOut[...]`)."""
    found: set[type[BaseModel]] = set()
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        metadata = annotation.__pydantic_generic_metadata__
        if metadata["origin"] is not None:
            for argument in metadata["args"]:
                found |= _models(argument)
        else:
            found.add(annotation)
            for info in annotation.model_fields.values():
                found |= _models(info.annotation)
    for argument in getattr(annotation, "__args__", ()):
        found |= _models(argument)
    return found


def test_every_answer_of_every_route_is_checked(settings: Settings) -> None:
    app = create_app(settings)
    answered: set[type[BaseModel]] = set()
    for route in app.routes:
        model = getattr(route, "response_model", None)
        if model is not None:
            answered |= _models(model)
    unchecked = {m.__name__ for m in answered - set(ANSWERS) - PLAIN}
    assert unchecked == set(), "add each to ANSWERS (or PLAIN) above"
