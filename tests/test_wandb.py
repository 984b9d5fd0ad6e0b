"""The W&B resource: offline runs hold the metrics and the checkpoint artifact, and no secret."""

import json
import struct
import time
from pathlib import Path

import dagster as dg
import pytest
from google.protobuf import json_format  # type: ignore[import-untyped]
from pydantic import BaseModel, JsonValue
from wandb.proto import wandb_internal_pb2

from babylon_assets.errors import ConfigurationError
from babylon_assets.training import metric_names
from resources.wandb import WandbResource, wandb_resource_for

SECRET = "sk-test-secret-value-0123456789"
BLOCK = 32 * 1024
FILE_HEADER = 7  # ":W&B", magic 0xBEE1, version 0
RECORD_HEADER = 7  # crc32, length (u16), type


class Item(BaseModel):
    key: str = ""
    nested_key: list[str] = []
    value_json: str

    @property
    def name(self) -> str:
        return self.key or ".".join(self.nested_key)

    @property
    def value(self) -> JsonValue:
        parsed: JsonValue = json.loads(self.value_json)
        return parsed


class Updates(BaseModel):
    update: list[Item] = []


class History(BaseModel):
    item: list[Item] = []


class RunRecord(BaseModel):
    config: Updates = Updates()


class ManifestEntry(BaseModel):
    path: str


class Manifest(BaseModel):
    contents: list[ManifestEntry] = []


class ArtifactRecord(BaseModel):
    name: str
    type: str
    metadata: str
    aliases: list[str] = []
    manifest: Manifest


class Record(BaseModel):
    """The parts of wandb's protobuf Record these tests read."""

    run: RunRecord | None = None
    history: History | None = None
    artifact: ArtifactRecord | None = None
    exit: dict[str, JsonValue] | None = None


def decode(data: bytes) -> Record:
    # wandb ships its generated protobuf modules without type stubs.
    message = wandb_internal_pb2.Record()  # type: ignore[attr-defined]
    message.ParseFromString(data)
    return Record.model_validate(json_format.MessageToDict(message, preserving_proto_field_name=True))


def read_records(path: Path) -> list[Record]:
    """Decode a run's .wandb file: LevelDB log blocks of protobuf Records (wandb 0.31 ships no reader)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records: list[Record] = []
    position, pending = FILE_HEADER, b""
    while position + RECORD_HEADER <= len(data):
        left_in_block = BLOCK - position % BLOCK
        if left_in_block < RECORD_HEADER:
            position += left_in_block
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + RECORD_HEADER])
        if length == 0 and kind == 0:
            position += left_in_block
            continue
        pending += data[position + RECORD_HEADER : position + RECORD_HEADER + length]
        position += RECORD_HEADER + length
        if kind in (1, 4):  # FULL or LAST
            records.append(decode(pending))
            pending = b""
    return records


def finished_run_records(directory: Path) -> list[Record]:
    """The records of the one offline run under `directory`, once wandb-core has written its exit record
    (run.finish() can return while the writer process is still flushing)."""
    [found] = directory.glob("wandb/offline-run-*/run-*.wandb")
    deadline = time.monotonic() + 30
    while True:
        records = read_records(found)
        if any(record.exit is not None for record in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.1)


def test_offline_run_holds_metrics_config_and_checkpoint_artifact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The key is configured (and in the environment, where wandb itself looks) but an offline run needs none.
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    checkpoint = tmp_path / "checkpoints" / "policy" / "step-3"
    checkpoint.mkdir(parents=True)
    (checkpoint / "weights.bin").write_bytes(b"\x00" * 64)
    resource = WandbResource(directory=str(tmp_path / "runs"), project="babylon-test", api_key=SECRET)
    metrics = {metric_names.LOSS: 0.25, metric_names.REWARD: 0.5, metric_names.EVAL_MARGIN: 0.125}

    run = resource.start_run(name="policy-from-step-2", group="policy", config={"training": {"iterations": 1}})
    run.log(metrics, step=3)
    run.log_checkpoint(
        name="policy",
        step=3,
        location=str(checkpoint),
        metadata={"windows": ["2026-11-24T13:00", "2026-11-24T14:00"]},
    )
    run.finish(failed=False)

    assert run.url is None and run.path.endswith(run.run_id)
    records = finished_run_records(tmp_path / "runs")
    [row] = [{item.name: item.value for item in r.history.item} for r in records if r.history is not None]
    assert {**metrics, "_step": 3}.items() <= row.items()

    [run_record] = [r.run for r in records if r.run is not None]
    config = {item.name: item.value for item in run_record.config.update}
    assert config["training"] == {"iterations": 1}

    [logged] = [r.artifact for r in records if r.artifact is not None]
    assert logged.name == "policy" and logged.type == "model"
    described = json.loads(logged.metadata)
    assert described["windows"] == ["2026-11-24T13:00", "2026-11-24T14:00"] and described["step"] == 3
    assert {"step-3", "latest"} <= set(logged.aliases)
    paths = {entry.path for entry in logged.manifest.contents}
    assert "checkpoint.json" in paths and any(path.startswith("checkpoint") and "weights" in path for path in paths)

    # Nothing the run wrote contains the API key.
    for file in (tmp_path / "runs").rglob("*"):
        if file.is_file():
            assert SECRET.encode() not in file.read_bytes(), file


def test_online_mode_without_key_fails_with_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The key is the resource's, never read from the environment behind its back.
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    for key in (None, "  "):
        with pytest.raises(ConfigurationError, match="WANDB_API_KEY"):
            WandbResource(mode="online", directory=str(tmp_path), api_key=key).start_run(name="n", group="g", config={})
    assert not (tmp_path / "wandb").exists()


def test_profiles_pick_offline_locally_and_online_in_production(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BABYLON_WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    local = wandb_resource_for("local")
    assert (local.mode, local.api_key) == ("offline", None)
    with pytest.raises(ConfigurationError, match="needs an API key: set WANDB_API_KEY"):
        wandb_resource_for("production")
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    production = wandb_resource_for("production")
    # Dagster resolves the key when a run starts; the resource holds only the variable's name.
    assert production.mode == "online" and isinstance(production.api_key, dg.EnvVar)
    assert SECRET not in repr(production)
    monkeypatch.setenv("BABYLON_WANDB_MODE", "offline")
    assert wandb_resource_for("production").mode == "offline"
    monkeypatch.setenv("BABYLON_WANDB_MODE", "disabled")
    with pytest.raises(ConfigurationError, match="BABYLON_WANDB_MODE"):
        wandb_resource_for("local")
