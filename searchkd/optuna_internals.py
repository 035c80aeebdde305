"""Every use of Optuna's private API, in one place.

The search needs a few things Optuna's public API does not offer: a trial created with its
decisions and attributes in one storage write (so a killed process never leaves a trial it
cannot attribute), a fresh read of a trial from the storage rather than the ``Trial``'s own
cache, one write for a whole constraint vector, and journal records appended in batches
(one lock and fsync for a candidate's 43 decisions instead of 43). Each is a function here,
so an Optuna upgrade is checked in one module: ``tests/test_optuna_internals.py`` runs every
function against the installed Optuna and fails when the version is outside
:data:`SUPPORTED`, which must equal the requirement in ``pyproject.toml``.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.storages.journal import JournalStorage

# The journal's record kinds, private to Optuna; tests/test_study_storage.py checks that a
# batch written with them replays as Optuna's own writes do.
from optuna.storages.journal._storage import JournalOperation
from optuna.trial import FrozenTrial

SUPPORTED = ">=5.0,<6"  # the Optuna versions these internals were checked against

__all__ = [
    "SUPPORTED",
    "JournalOperation",
    "append_journal_records",
    "create_trial",
    "journal_worker",
    "keep_cached_user_attrs",
    "set_system_attr",
    "set_user_attr",
    "stored_trial",
]


def create_trial(study: optuna.Study, template: FrozenTrial) -> optuna.Trial:
    """A trial made from ``template`` (state RUNNING, with whatever decisions and attributes
    it holds) in one storage write; ``study.ask()`` would take one write per attribute."""
    trial_id = study._storage.create_new_trial(study._study_id, template)
    return optuna.Trial(study, trial_id)


def stored_trial(study: optuna.Study, trial: optuna.Trial | FrozenTrial) -> FrozenTrial:
    """The trial as the storage holds it now (another process may have ended it); a
    ``Trial`` object only knows what this process wrote through it."""
    return study._storage.get_trial(trial._trial_id)


def set_system_attr(
    study: optuna.Study, trial: optuna.Trial | FrozenTrial, key: str, value: Any
) -> None:
    """One system attribute of a trial in any state, in one write."""
    study._storage.set_trial_system_attr(trial._trial_id, key, value)


def set_user_attr(
    study: optuna.Study, trial: optuna.Trial | FrozenTrial, key: str, value: Any
) -> None:
    """One user attribute of a trial given as a ``FrozenTrial`` or a ``Trial``."""
    study._storage.set_trial_user_attr(trial._trial_id, key, value)


def keep_cached_user_attrs(trial: optuna.Trial, attrs: dict[str, Any]) -> None:
    """After writing user attributes past the ``Trial`` object, update its cache as
    ``Trial.set_user_attr`` does, so ``trial.user_attrs`` reads them back."""
    trial._cached_frozen_trial.user_attrs.update(attrs)


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """The storage's id of a trial (not its number within the study)."""
    return trial._trial_id


def journal_worker(storage: JournalStorage) -> str:
    """The worker id a journal storage writes into its records."""
    return storage._replay_result.worker_id


def append_journal_records(storage: JournalStorage, records: list[dict[str, Any]]) -> None:
    """Append ``records`` to the journal under the storage's lock, as one write, and bring
    the storage's in-memory view up to date with them."""
    with storage._thread_lock:
        storage._backend.append_logs(records)
        storage._sync_with_backend()
