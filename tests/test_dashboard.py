"""optuna-dashboard sees what we record: objective names and infeasible candidates."""

from __future__ import annotations

import json
import threading
import urllib.request
from wsgiref.simple_server import WSGIRequestHandler, make_server

import optuna_dashboard
import pytest

from runners.local import LocalRunner
from searchkd.config import build_config
from searchkd.search import Search
from searchkd.study import make_storage
from tests.conftest import tiny_settings

pytestmark = pytest.mark.slow  # whole searches, CLI processes or a Ray cluster


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args) -> None:
        pass


def test_dashboard_api_shows_names_and_infeasible_trials(shared_run_dir):
    config = build_config(
        overrides=tiny_settings(
            shared_run_dir, study="dash", budget={"max_macs": "4M"}, controller="random"
        )
    )
    search = Search(config, log=lambda m: None)
    LocalRunner(progress=False).run(search, 2)
    rejected = {t.number for t in search.study.trials if t.user_attrs.get("trained") is False}
    assert rejected, "the tight budget should have rejected at least one candidate"

    app = optuna_dashboard.wsgi(make_storage(config.storage_url))
    server = make_server("127.0.0.1", 0, app, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        studies = json.load(urllib.request.urlopen(f"{base}/api/studies", timeout=30))
        study_id = next(
            s["study_id"] for s in studies["study_summaries"] if s["study_name"] == "dash"
        )
        detail = json.load(urllib.request.urlopen(f"{base}/api/studies/{study_id}", timeout=30))
    finally:
        server.shutdown()
    assert detail["objective_names"] == ["accuracy", "macs", "latency_ms"]
    by_number = {t["number"]: t for t in detail["trials"]}
    for number, trial in by_number.items():
        constraints = trial["constraints"]
        assert len(constraints) == 3
        if number in rejected:
            assert max(constraints) > 0
        elif trial["state"] == "Complete":
            assert max(constraints) <= 0
    attrs = {a["key"] for a in by_number[max(by_number)]["user_attrs"]}
    assert {"arch", "macs", "params", "latency_ms"} <= attrs
