"""Every exported JSON Schema, checked by standard validators in two languages on real data.

The schemas are what `runsteps schema` writes (contracts.schema). The data: every recorded
entry of tests/data (both dialects, as producers send them, and the object each Assistants
envelope carries) and what a real worker makes of them: every derived event, every dead
letter (the hostile entries of tests/hostile.py are replayed beside them, so there are
some) and the query API's answer for every run and step. On every instance, each schema's
verdict by Python's jsonschema (Draft202012Validator) and by ajv under Node.js
(tests/schema_js, strict mode) must be the verdict of the pydantic model the schema is
generated from: both accept what the model accepts and reject what it rejects. Nothing
here names a schema or an event type: a model or a derived event added later is checked
the same way.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from pydantic import TypeAdapter, ValidationError
from redis.asyncio import Redis

from contracts.responses_producer import ResponsesForwarder
from contracts.schema import EXPORTED, write_schemas
from service.settings import Settings
from service.storage.reads import MAX_PAGE
from service.worker.app import build_worker
from tests.helpers import entries, read_json, settle, xadd_raw
from tests.hostile import HOSTILE

TESTS = Path(__file__).resolve().parents[1]
DATA = TESTS / "data"
SCHEMA_JS = TESTS / "schema_js"


@dataclass
class Corpus:
    """JSON instances, each with where it came from and its direction ("in": what producers
    send, "out": what the worker publishes and answers)."""

    labels: list[str] = field(default_factory=list)
    values: list[Any] = field(default_factory=list)
    directions: list[str] = field(default_factory=list)

    def add(self, direction: str, label: str, value: Any) -> None:
        """One more instance."""
        self.directions.append(direction)
        self.labels.append(label)
        self.values.append(value)


def _lines(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _recorded(corpus: Corpus) -> list[bytes]:
    """Every recorded entry (and each Assistants envelope's object) into `corpus`; returns
    the entries' `data` as a producer XADDs them."""
    sent: list[bytes] = []
    for path in sorted((DATA / "assistants").glob("*.jsonl")):
        for n, line in enumerate(_lines(path), 1):
            value = json.loads(line)
            corpus.add("in", f"assistants/{path.name}:{n}", value)
            if isinstance(value.get("data"), dict):
                corpus.add("in", f"assistants/{path.name}:{n} data", value["data"])
            sent.append(line.encode())
    for path in sorted((DATA / "responses").glob("*.jsonl")):
        forwarder = ResponsesForwarder()
        for n, line in enumerate(_lines(path), 1):
            data = forwarder.entry_data(line)
            corpus.add("in", f"responses/{path.name}:{n}", json.loads(data))
            sent.append(data)
    return sent


def _text(raw: bytes) -> str:
    # A dead letter keeps the entry's bytes; a consumer reading it as JSON text sees this.
    return raw.decode("utf-8", "replace")


async def _worker_output(
    corpus: Corpus, redis: Redis, settings: Settings, sent: list[bytes]
) -> None:
    """Replay `sent` and the hostile entries through a real worker; add what it published
    and what the query API answers for every run and step to `corpus`."""
    worker = build_worker(settings)
    await worker.start()
    try:
        pipe = redis.pipeline(transaction=False)
        for data in sent:
            pipe.xadd(settings.source_stream, {"data": data})
        await pipe.execute()
        for case in HOSTILE:  # repeated field names included: XADD as given
            flat = [part for pair in case.fields for part in pair]
            await xadd_raw(redis, settings.source_stream, *flat)
        await settle(redis, settings)
        derived = await read_json(redis, settings.derived_stream)
        for n, event in enumerate(derived):
            corpus.add("out", f"derived[{n}] {event.get('type')}", event)
        for n, (_, fields) in enumerate(await entries(redis, settings.dlq_stream)):
            entry = {_text(k): _text(v) for k, v in fields.items()}
            corpus.add("out", f"dlq[{n}]", entry)
            corpus.add("out", f"dlq[{n}] error", json.loads(entry["error"]))
        for run_id in sorted({e["run_id"] for e in derived}):
            run = await worker.run(run_id, "0", MAX_PAGE)
            assert run is not None
            corpus.add("out", f"GET /runs/{run_id}", run.model_dump(mode="json"))
            for listed in run.steps:
                step = await worker.step(run_id, listed.step_id)
                assert step is not None
                answer = step.model_dump(mode="json")
                corpus.add("out", f"GET /runs/{run_id}/steps/{listed.step_id}", answer)
    finally:
        await worker.stop()


def _ajv(
    schema_dir: Path, values: list[Any], checks: dict[str, list[int]], tmp: Path
) -> dict[str, list[str | None]]:
    """ajv's verdicts (None: valid, else its first error) of each schema on the instances
    at its indices, in order."""
    node = shutil.which("node")
    assert node is not None, "node is missing: install Node.js 20 (make schema-js)"
    assert (SCHEMA_JS / "node_modules" / "ajv").is_dir(), "ajv is missing: run `make schema-js`"
    instances = tmp / "instances.json"
    instances.write_text(json.dumps({"instances": values, "checks": checks}), encoding="utf-8")
    done = subprocess.run(
        [node, str(SCHEMA_JS / "validate.mjs"), str(schema_dir), str(instances)],
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr.decode()
    verdicts: dict[str, list[str | None]] = json.loads(done.stdout)
    return verdicts


def _pydantic(adapter: TypeAdapter[Any], value: Any) -> str | None:
    try:
        adapter.validate_python(value)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        return f"{'.'.join(map(str, first['loc']))}: {first['msg']}"
    return None


def _why(validator: Draft202012Validator, value: Any) -> str:
    """What jsonschema says of `value` (asked only on a disagreement: it is slow)."""
    error = best_match(validator.iter_errors(value))
    return "valid" if error is None else f"{error.json_path}: {error.message[:200]}"


async def test_every_schema_agrees_with_its_model_on_all_real_data(
    redis: Redis, settings: Settings, tmp_path: Path
) -> None:
    """Every exported schema, under jsonschema and under ajv, accepts exactly those of the
    recorded inputs and the worker's outputs that its pydantic model accepts."""
    corpus = Corpus()
    sent = _recorded(corpus)
    await _worker_output(corpus, redis, settings, sent)
    assert any(label.startswith("dlq[") for label in corpus.labels)

    schema_dir = tmp_path / "schema"
    write_schemas(schema_dir)
    models: dict[str, list[str | None]] = {}
    checks: dict[str, list[int]] = {}
    for name, adapter in EXPORTED.items():
        models[name] = [_pydantic(adapter, value) for value in corpus.values]
        # Checked on every instance of the direction(s) (inputs, outputs) the model accepts
        # some of: an input schema on every input, an output schema on every output.
        domain = {d for d, m in zip(corpus.directions, models[name], strict=True) if m is None}
        assert domain, f"{name}: its model accepts no instance; nothing to check it on"
        checks[name] = [i for i, d in enumerate(corpus.directions) if d in domain]
    ajv = _ajv(schema_dir, corpus.values, checks, tmp_path)

    disagreements: list[str] = []
    for name, indices in checks.items():
        schema = json.loads((schema_dir / f"{name}.schema.json").read_text(encoding="utf-8"))
        Draft202012Validator.check_schema(schema)
        validator = Draft202012Validator(schema)
        for i, js in zip(indices, ajv[name], strict=True):
            value, model = corpus.values[i], models[name][i]
            valid = model is None
            if validator.is_valid(value) != valid or (js is None) != valid:
                disagreements.append(
                    f"{name} on {corpus.labels[i]}: pydantic {model or 'valid'}; "
                    f"jsonschema {_why(validator, value)}; ajv {js or 'valid'}"
                )
    by_schema = Counter(d.partition(" on ")[0] for d in disagreements)
    shown = "\n".join(disagreements[:40])
    assert not disagreements, f"{len(disagreements)} disagreements {dict(by_schema)}:\n{shown}"
