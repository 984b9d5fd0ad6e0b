"""`babylon train` on the project's instance, then the real webserver shows the chain and its materializations."""

import html
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from pydantic import JsonValue

from babylon_assets.tools.cli import main
from babylon_assets.tools.dev_server import mark_first_visit_seen
from tests.support.dagster_instance import (
    SHORT_EVALUATION,
    drop_dagster_database,
    drop_one_agent,
    simulate_windows,
)

pytestmark = pytest.mark.subprocess

ROOT = Path(__file__).resolve().parents[1]
CHAIN = ["raw_trajectories", "validated_windows", "scored_groups", "trained_checkpoint"]
STARTUP_SECONDS = 120
# Screenshots of the pages the browser test renders (git-ignored); BABYLON_TEST_ARTEFACTS overrides.
ARTEFACTS = Path(os.environ.get("BABYLON_TEST_ARTEFACTS", ROOT / "test-artefacts"))
# Chromium renders until the page has been idle this long in virtual time (the UI fetches over GraphQL).
RENDER_BUDGET_MS = 20000


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def graphql(port: int, query: str) -> dict[str, JsonValue]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        body = json.loads(response.read())
    assert isinstance(body, dict) and "errors" not in body, body
    data = body["data"]
    assert isinstance(data, dict)
    return data


@pytest.fixture
def webserver(instance_home: Path) -> Iterator[int]:
    """dagster-webserver on 127.0.0.1 against the test's instance, as `babylon dev` runs it."""
    mark_first_visit_seen(instance_home)
    port = free_port()
    process = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("dagster-webserver")),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-w",
            "workspace.yaml",
        ],
        cwd=ROOT,
        env=dict(os.environ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for_ui(port, process, "dagster-webserver")
        yield port
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


@pytest.fixture
def instance_home(instance: dg.DagsterInstance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The project layout under tmp_path: BABYLON_HOME/dagster_home with the project's dagster.yaml."""
    monkeypatch.setenv("BABYLON_HOME", str(tmp_path))
    return tmp_path / "dagster_home"


def asset_nodes(port: int) -> dict[str, list[str]]:
    """Asset -> its upstream assets, once the code location has loaded."""
    query = "{ assetNodes { assetKey { path } dependencyKeys { path } } }"
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        data = graphql(port, query)
        nodes = data["assetNodes"]
        assert isinstance(nodes, list)
        if nodes or time.monotonic() > deadline:
            break
        time.sleep(1)
    found: dict[str, list[str]] = {}
    for node in nodes:
        assert isinstance(node, dict)
        key, deps = node["assetKey"], node["dependencyKeys"]
        assert isinstance(key, dict) and isinstance(deps, list)
        found[key_path(key)] = sorted(key_path(dep) for dep in deps)
    return found


def key_path(asset_key: JsonValue) -> str:
    assert isinstance(asset_key, dict)
    path = asset_key["path"]
    assert isinstance(path, list)
    return "/".join(map(str, path))


def materialized_partitions(port: int, asset: str) -> list[str | None]:
    data = graphql(
        port,
        f'{{ assetOrError(assetKey: {{path: ["{asset}"]}}) {{ ... on Asset {{ assetMaterializations(limit: 10) '
        "{ partition runId } } } }",
    )
    asset_data = data["assetOrError"]
    assert isinstance(asset_data, dict)
    materializations = asset_data["assetMaterializations"]
    assert isinstance(materializations, list)
    return [
        str(item["partition"]) if isinstance(item, dict) and item["partition"] else None for item in materializations
    ]


def chromium(*arguments: str, profile: Path) -> subprocess.CompletedProcess[str]:
    """Debian's headless chromium with a fresh profile, no network beyond the page, nothing persistent."""
    executable = shutil.which("chromium")
    assert executable, "the browser test needs Debian's chromium: apt-get install -y chromium"
    return subprocess.run(
        [
            executable,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--window-size=1400,900",
            f"--virtual-time-budget={RENDER_BUDGET_MS}",
            *arguments,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )


def rendered_text(port: int, path: str, name: str, scratch: Path) -> str:
    """The visible text of the UI page at `path` once rendered; its screenshot goes to ARTEFACTS/<name>.png."""
    url = f"http://127.0.0.1:{port}{path}"
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    chromium(f"--screenshot={ARTEFACTS / f'{name}.png'}", url, profile=scratch / f"chromium-{name}-shot")
    dom = chromium("--dump-dom", url, profile=scratch / f"chromium-{name}-dom").stdout
    text = re.sub(r"<script.*?</script>|<style.*?</style>|<[^>]+>", " ", dom, flags=re.S)
    return " ".join(html.unescape(text).split())


def test_train_command_then_the_ui_shows_the_chain_and_its_runs(
    database_url: str,
    instance_home: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    request: pytest.FixtureRequest,
) -> None:
    short, first, second = simulate_windows(database_url, windows=3, agents=5)
    drop_one_agent(database_url, short)

    code = main(["train", "--iterations", "1", "--windows-per-iteration", "2", *SHORT_EVALUATION])

    output = capsys.readouterr().out
    assert code == 0, output
    assert "2 scored, 1 skipped of 3 eligible" in output
    assert f"skipped {short}: 4 valid agents < 5" in output
    assert "14 accepted, 1 rejected" in output

    port: int = request.getfixturevalue("webserver")
    assert asset_nodes(port) == {
        "raw_trajectories": [],
        "validated_windows": ["raw_trajectories"],
        "scored_groups": ["validated_windows"],
        "trained_checkpoint": ["scored_groups"],
        "policy_evaluation": ["trained_checkpoint"],
    }
    assert sorted(map(str, materialized_partitions(port, "raw_trajectories"))) == [short, first, second]
    assert sorted(map(str, materialized_partitions(port, "scored_groups"))) == [first, second]
    assert materialized_partitions(port, "trained_checkpoint") == [None]
    assert materialized_partitions(port, "policy_evaluation") == [None]

    # The overview timeline draws runs that have a start time and an origin in the workspace's code location.
    assert timeline_runs(port) == {("window_chain_job", "babylon"): 3, ("training_job", "babylon"): 1}

    # What a person sees: the lineage page, then scored_groups' page with its latest metadata.
    lineage = rendered_text(port, "/asset-groups", "lineage", tmp_path)
    assert "Global asset lineage" in lineage
    for group in ["trajectories", "judging", "training"]:
        assert group in lineage
    asset = rendered_text(port, "/assets/scored_groups", "scored_groups", tmp_path)
    assert "Each accepted trajectory of the window scored" in asset
    for key in ["score_mean", "calls_made", "top_agent", "score_distribution"]:
        assert key in asset
    # The kinds of the judge that ran (the outcome judge: no LLM), and no first-visit modal over the page.
    assert "Python" in asset and "OpenAI" not in asset
    assert "Join the Dagster community" not in lineage + asset
    # Floats are rounded: no 0.9246920000000001 in the metadata.
    assert not re.findall(r"\d\.\d{7,}", asset)


def timeline_runs(port: int) -> dict[tuple[str, str], int]:
    """(job, code location) -> finished runs with start and end times, as the overview timeline reads them."""
    query = """{ runsOrError { ... on Runs { results {
        pipelineName startTime endTime repositoryOrigin { repositoryLocationName repositoryName } } } } }"""
    runs = graphql(port, query)["runsOrError"]
    assert isinstance(runs, dict) and isinstance(runs["results"], list)
    found: dict[tuple[str, str], int] = {}
    for run in runs["results"]:
        assert isinstance(run, dict)
        origin = run["repositoryOrigin"]
        if origin is None or run["startTime"] is None or run["endTime"] is None:
            continue
        assert isinstance(origin, dict)
        key = (str(run["pipelineName"]), str(origin["repositoryLocationName"]))
        found[key] = found.get(key, 0) + 1
    return found


def wait_for_ui(port: int, process: subprocess.Popen[bytes] | subprocess.Popen[str], name: str) -> None:
    """Until the UI on `port` answers; fails when `process` exits first or the startup time runs out."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        assert process.poll() is None, f"{name} exited during startup"
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2).close()
            return
        except (urllib.error.URLError, ConnectionError):
            assert time.monotonic() < deadline, f"{name} did not answer within {STARTUP_SECONDS}s"
            time.sleep(0.5)


def test_babylon_dev_serves_the_ui_and_ctrl_c_stops_everything(database_url: str, tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("babylon")), "dev", "--port", str(port)],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": database_url, "BABYLON_HOME": str(tmp_path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    dagster_group: int | None = None
    try:
        wait_for_ui(port, process, "babylon dev")
        (dagster_dev,) = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
        dagster_group = os.getpgid(int(dagster_dev))
        assert dagster_group != os.getpgid(process.pid)  # its own group, stopped as one
        assert (tmp_path / "dagster_home" / "dagster.yaml").is_file()
        # The first-visit modal is marked seen, so a new user lands on the UI itself.
        assert graphql(port, "{ shouldShowNux }") == {"shouldShowNux": False}

        process.send_signal(signal.SIGINT)  # what Ctrl-C delivers to the foreground process
        assert process.wait(timeout=60) == 0
        assert process.stdout is not None
        assert f"Dagster UI at http://127.0.0.1:{port}" in process.stdout.read()
        deadline = time.monotonic() + 10
        while True:
            try:
                os.killpg(dagster_group, 0)
            except ProcessLookupError:
                break  # every webserver, daemon and code server process is gone
            assert time.monotonic() < deadline, "Dagster processes outlived babylon dev"
            time.sleep(0.2)
    finally:
        if process.poll() is None:
            # SIGINT, not SIGKILL: babylon dev then stops its Dagster process group, which a kill would orphan.
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        drop_dagster_database(database_url)
