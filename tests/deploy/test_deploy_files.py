"""deploy/ stays in step with the code: the metrics its alerts and dashboard query are the ones
the workers export, and every KAPPA_* variable it sets is a setting (a typo would be ignored
with only a warning)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import REGISTRY

import app.metrics  # noqa: F401 - registers the worker's metrics
from app.settings import unknown_variables
from replay import progress, sink_metrics  # noqa: F401 - register the replay's and sink's

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
QUERYING = [DEPLOY / "prometheus" / "rules.yml", DEPLOY / "grafana" / "dashboard-kappa.json"]
CONFIGURING = [
    DEPLOY / "k8s" / "configmap.yaml",
    DEPLOY / "k8s" / "statefulset.yaml",
    DEPLOY / "k8s" / "replay-job.yaml",
    DEPLOY / "k8s" / "sink.yaml",
    DEPLOY / "compose.yaml",
    DEPLOY / "Dockerfile",
]


SUFFIXES = {"counter": ["_total"], "histogram": ["", "_bucket", "_sum", "_count"], "gauge": [""]}


def _exported_series() -> set[str]:
    """Every series name the code exports, labelled ones included before their first sample
    (counters as _total, histograms with their _bucket, _sum and _count)."""
    return {
        family.name + suffix
        for family in REGISTRY.collect()
        for suffix in SUFFIXES.get(family.type, [""])
    }


def test_every_kappa_series_the_alerts_and_dashboard_query_is_exported() -> None:
    exported = _exported_series()
    for path in QUERYING:
        queried = set(re.findall(r"\bkappa_[a-z_]+", path.read_text()))
        assert queried, path
        assert queried <= exported, (path.name, sorted(queried - exported))


# Exported series the dashboard leaves out, and why; every other one has a panel (an operator
# looking at a restore, a held source or a worker not ready found nothing there).
NOT_ON_THE_DASHBOARD = {
    "kappa_sink_files_total": "its panel shows the results in those files; KappaSinkStalled's",
    "kappa_replay_events_per_second": "the replay panel shows the share done",
    "kappa_replay_eta_seconds": "named in the replay panel's description",
}


def test_the_dashboard_shows_every_series_the_code_exports() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboard-kappa.json").read_text())
    queries = " ".join(t["expr"] for panel in dashboard["panels"] for t in panel["targets"])
    shown = set(re.findall(r"\bkappa_[a-z_]+", queries))
    main = {  # the series a panel would query: a histogram's _bucket
        family.name + {"counter": "_total", "histogram": "_bucket"}.get(family.type, "")
        for family in REGISTRY.collect()
        if family.name.startswith("kappa_")
    }
    assert NOT_ON_THE_DASHBOARD.keys() <= main
    assert sorted(main - shown - NOT_ON_THE_DASHBOARD.keys()) == []


def test_every_kappa_variable_deploy_sets_is_a_setting() -> None:
    for path in CONFIGURING:
        names = set(re.findall(r"\bKAPPA_[A-Z_]+\b", path.read_text()))
        assert not unknown_variables(dict.fromkeys(names, "")), path.name


def test_the_files_the_configmap_names_are_on_volumes_the_pods_mount() -> None:
    configmap = (DEPLOY / "k8s" / "configmap.yaml").read_text()
    (cafile,) = re.findall(r'^\s*KAPPA_SSL_CAFILE:\s*"([^"]+)"', configmap, re.MULTILINE)
    (state,) = re.findall(r'^\s*KAPPA_STATE_DIR:\s*"([^"]+)"', configmap, re.MULTILINE)
    for pod in ("statefulset.yaml", "replay-job.yaml"):
        mounts = re.findall(r"mountPath:\s*(\S+)", (DEPLOY / "k8s" / pod).read_text())
        assert str(Path(cafile).parent) in mounts and state in mounts, pod
    sink = (DEPLOY / "k8s" / "sink.yaml").read_text()  # it keeps no state: its files
    mounts = re.findall(r"mountPath:\s*(\S+)", sink)
    assert str(Path(cafile).parent) in mounts, "sink.yaml"


def test_each_worker_pod_is_a_static_member_named_after_its_pod() -> None:
    """Restarted, a pod rejoins its group as the same member (KIP-345) and keeps its partitions:
    its id is its pod name, unique and stable in a StatefulSet. An id in the ConfigMap every pod
    reads would make all pods one member, fencing each other."""
    workers = (DEPLOY / "k8s" / "statefulset.yaml").read_text()
    assert re.search(
        r"- name: POD_NAME\n\s+valueFrom:\n\s+fieldRef:\n\s+fieldPath: metadata.name\n", workers
    )
    assert re.search(r'- name: KAPPA_GROUP_INSTANCE_ID\n\s+value: "\$\(POD_NAME\)"\n', workers)
    # $(VAR) expands only variables defined before it
    assert workers.index("name: POD_NAME") < workers.index("name: KAPPA_GROUP_INSTANCE_ID")
    for shared in ("configmap.yaml", "replay-job.yaml", "sink.yaml"):  # no group, or all pods
        assert "KAPPA_GROUP_INSTANCE_ID" not in (DEPLOY / "k8s" / shared).read_text(), shared


def test_each_compose_worker_is_a_static_member_named_after_its_service() -> None:
    compose = (DEPLOY / "compose.yaml").read_text()
    shared = compose[compose.index("x-kappa-worker:") : compose.index("\nservices:")]
    assert "KAPPA_GROUP_INSTANCE_ID" not in shared  # the generator and sink use it too
    workers = re.findall(r"\n  (kappa-worker-\d+):\n((?:    .*\n)+)", compose)
    assert len(workers) == 2
    for name, body in workers:
        assert re.search(rf"\n      <<: \*kappa-env\n      KAPPA_GROUP_INSTANCE_ID: {name}\b", body)


def test_a_deployed_sink_writes_its_files_on_the_volume_it_mounts() -> None:
    """Its directory must be on the volume (files on an emptyDir or the image are lost with
    the pod, and the next one starts again from offset zero), and name the version it sinks."""
    sink = (DEPLOY / "k8s" / "sink.yaml").read_text()
    (args,) = re.findall(r'args: \["sink", "([^"]+)", "--version", "(\d+)"', sink)
    (landing,) = re.findall(r"- name: landing\n\s+mountPath:\s*(\S+)", sink)
    assert args[0].startswith(landing + "/") and args[0].endswith(f"/v{args[1]}")
    compose = (DEPLOY / "compose.yaml").read_text()
    (command,) = re.findall(r'command: \["sink", "([^"]+)", "--version", "(\d+)"', compose)
    assert re.search(rf"- kappa-landing:{command[0].rsplit('/', 1)[0]}\n", compose)
    assert command[0].endswith(f"/v{command[1]}")
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert command[0].rsplit("/", 1)[0] in dockerfile  # made in the image: the user owns it
    # Prometheus scrapes it where it serves (the KappaSinkStalled alert).
    assert '"--metrics-port", "6066"]' in sink and 'prometheus.io/port: "6066"' in sink
    assert '"--metrics-port", "6066"]' in compose
    scraping = (DEPLOY / "prometheus" / "prometheus.yml").read_text()
    assert re.search(r'names: \["kappa-sink"\]\n\s+type: A\n\s+port: 6066\n', scraping)


def test_the_replay_job_runs_one_process_of_the_split_per_pod_each_serving_its_progress() -> None:
    """`--processes 2` in one pod served no metrics (refused with --metrics-port): a backfill
    in Kubernetes had no progress panel and no KappaReplayStalled."""
    job = (DEPLOY / "k8s" / "replay-job.yaml").read_text()
    (completions,) = re.findall(r"\n  completions: (\d+)\n", job)
    (parallelism,) = re.findall(r"\n  parallelism: (\d+)\n", job)
    assert "\n  completionMode: Indexed\n" in job
    (split, port) = re.findall(
        r'"--process", "\$\(JOB_COMPLETION_INDEX\)/(\d+)",\s+"--metrics-port", "(\d+)"', job
    )[0]
    assert (
        completions == parallelism == split
    )  # every index, all at once (they wait for each other)
    assert "--processes" not in job[job.index("args:") :]
    assert f'prometheus.io/port: "{port}"' in job and 'prometheus.io/scrape: "true"' in job
    assert re.search(  # $(VAR) in args expands only a variable the container defines
        r"- name: JOB_COMPLETION_INDEX\b.*\n\s+valueFrom:\n\s+fieldRef:\n\s+fieldPath: "
        r"metadata.annotations\['batch.kubernetes.io/job-completion-index'\]\n",
        job,
    )


def test_voluntary_disruptions_take_one_worker_pod_at_a_time() -> None:
    """A drain of a node holding both workers took the whole group down at once."""
    pdb = (DEPLOY / "k8s" / "pdb.yaml").read_text()
    workers = (DEPLOY / "k8s" / "statefulset.yaml").read_text()
    (selector,) = re.findall(r"\n  selector:\n    matchLabels:\n((?:      .*\n)+)", workers)
    assert "\n  maxUnavailable: 1\n" in pdb and selector in pdb
    assert "  - pdb.yaml\n" in (DEPLOY / "k8s" / "kustomization.yaml").read_text()
