"""``ensure_recurring_run`` against the real ``kfp.Client`` API surface.

The injected client keeps recurring runs in memory; every call is bound against the
signature of the same-named :class:`kfp.Client` method first (so a renamed or missing
parameter fails here), and it returns the real ``kfp_server_api`` model types.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import kfp
import pytest
from kfp_server_api.models import V2beta1Experiment, V2beta1ListRecurringRunsResponse, V2beta1RecurringRun

from tandem.errors import InvalidInput
from tandem_pipelines.schedule import COMPILED_DIR, SCHEDULES, ensure_recurring_run

PAGE = 2  # small pages, so the lookup has to follow next_page_token
PARAMS = {"snapshot_uri": "s3://b/catalog.jsonl", "train_queries_uri": "s3://b/q.tsv",
          "train_qrels_uri": "s3://b/qrels", "dev_queries_uri": "s3://b/dev.tsv", "dev_qrels_uri": "s3://b/dev.qrels"}


class SignatureCheckedClient:
    """Answers the :class:`kfp.Client` methods the scheduler uses, after binding each call to the real signature."""

    def __init__(self) -> None:
        self.runs: list[V2beta1RecurringRun] = []
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._next = 0

    def _bind(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        bound = inspect.signature(getattr(kfp.Client, name)).bind(self, *args, **kwargs)
        self.calls.append((name, dict(bound.arguments)))
        return bound.arguments

    def create_experiment(self, *args: Any, **kwargs: Any) -> V2beta1Experiment:
        a = self._bind("create_experiment", args, kwargs)
        return V2beta1Experiment(experiment_id=f"exp-{a['name']}", display_name=a["name"])

    def list_recurring_runs(self, *args: Any, **kwargs: Any) -> V2beta1ListRecurringRunsResponse:
        a = self._bind("list_recurring_runs", args, kwargs)
        mine = [r for r in self.runs if r.experiment_id == a.get("experiment_id")]
        start = int(a.get("page_token") or 0)
        size = min(a.get("page_size", 10), PAGE)
        page = mine[start : start + size]
        token = str(start + size) if start + size < len(mine) else ""
        return V2beta1ListRecurringRunsResponse(recurring_runs=page, next_page_token=token, total_size=len(mine))

    def create_recurring_run(self, *args: Any, **kwargs: Any) -> V2beta1RecurringRun:
        a = self._bind("create_recurring_run", args, kwargs)
        assert Path(a["pipeline_package_path"]).is_file()
        self._next += 1
        run = V2beta1RecurringRun(recurring_run_id=f"rr-{self._next}", display_name=a["job_name"],
                                  description=a.get("description"), experiment_id=a["experiment_id"])
        run.cron = a["cron_expression"]  # kept for the assertions; the server stores it in `trigger`
        run.params = a.get("params")
        self.runs.append(run)
        return run

    def delete_recurring_run(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        a = self._bind("delete_recurring_run", args, kwargs)
        self.runs = [r for r in self.runs if r.recurring_run_id != a["recurring_run_id"]]
        return {}


def test_methods_used_exist_on_kfp_client() -> None:
    for name in ("create_experiment", "list_recurring_runs", "create_recurring_run", "delete_recurring_run"):
        assert callable(getattr(kfp.Client, name))


def _named(client: SignatureCheckedClient, name: str) -> list[V2beta1RecurringRun]:
    return [r for r in client.runs if r.display_name == name]


def test_create_then_unchanged_then_replaced() -> None:
    client, sched = SignatureCheckedClient(), SCHEDULES["base"]
    package = COMPILED_DIR / "base.yaml"
    assert sched.cron == "0 0 1 * *"
    # Other recurring runs (filling more than a page) must be left alone.
    for i in range(3):
        client.create_recurring_run(experiment_id="exp-tandem", job_name=f"other-{i}", cron_expression="0 * * * *",
                                    pipeline_package_path=str(package))
    action, rid = ensure_recurring_run(client, sched, package, PARAMS)
    assert action == "created"
    [run] = _named(client, sched.name)
    assert run.recurring_run_id == rid and run.cron == "0 0 1 * *"
    assert run.params == PARAMS

    again = ensure_recurring_run(client, sched, package, dict(PARAMS))
    assert again == ("unchanged", rid)
    assert len(_named(client, sched.name)) == 1

    action, new_id = ensure_recurring_run(client, sched, package, {**PARAMS, "snapshot_uri": "s3://b/other.jsonl"})
    assert action == "replaced" and new_id != rid
    [run] = _named(client, sched.name)
    assert run.recurring_run_id == new_id and run.params["snapshot_uri"] == "s3://b/other.jsonl"
    assert len(client.runs) == 4  # the three others survived
    names = [n for n, _ in client.calls]
    assert names.index("delete_recurring_run") > len(names) - 3  # created first, then the old one deleted


def test_duplicates_are_collapsed_to_one() -> None:
    client, sched = SignatureCheckedClient(), SCHEDULES["base"]
    package = COMPILED_DIR / "base.yaml"
    ensure_recurring_run(client, sched, package, PARAMS)
    # Someone added a second one by hand with the same name.
    client.create_recurring_run(experiment_id="exp-tandem", job_name=sched.name, cron_expression="0 0 1 * *",
                                pipeline_package_path=str(package))
    action, rid = ensure_recurring_run(client, sched, package, PARAMS)
    assert action == "replaced"
    assert [r.recurring_run_id for r in _named(client, sched.name)] == [rid]


def test_missing_package_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="`package`"):
        ensure_recurring_run(SignatureCheckedClient(), SCHEDULES["base"], tmp_path / "base.yaml")


def test_bad_params_are_refused_before_any_call() -> None:
    client, package = SignatureCheckedClient(), COMPILED_DIR / "base.yaml"
    with pytest.raises(InvalidInput, match="lacks required .*snapshot_uri"):
        without = {k: v for k, v in PARAMS.items() if k != "snapshot_uri"}
        ensure_recurring_run(client, SCHEDULES["base"], package, without)
    with pytest.raises(InvalidInput, match="`params` snapshot:"):
        ensure_recurring_run(client, SCHEDULES["base"], package, {**PARAMS, "snapshot": "x"})
    assert client.calls == []


def test_a_wrong_call_would_be_caught() -> None:
    with pytest.raises(TypeError):
        SignatureCheckedClient().create_recurring_run(experiment_id="e", name="x")


def test_adapter_schedule_is_hourly_beside_the_monthly_base() -> None:
    client = SignatureCheckedClient()
    base_action, base_id = ensure_recurring_run(client, SCHEDULES["base"], COMPILED_DIR / "base.yaml", PARAMS)
    params = {"catalog_uri": "s3://b/catalog.jsonl", "registry_uri": "s3://b/registry"}
    action, rid = ensure_recurring_run(client, SCHEDULES["adapter"], COMPILED_DIR / "adapter.yaml", params)
    assert (base_action, action) == ("created", "created") and rid != base_id
    [run] = _named(client, SCHEDULES["adapter"].name)
    assert run.cron == "0 * * * *" and run.params == params
    assert ensure_recurring_run(client, SCHEDULES["adapter"], COMPILED_DIR / "adapter.yaml", params) == ("unchanged",
                                                                                                       rid)
    with pytest.raises(InvalidInput, match="catalog_uri"):
        ensure_recurring_run(client, SCHEDULES["adapter"], COMPILED_DIR / "adapter.yaml", {})
