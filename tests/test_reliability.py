"""Every failure mode the tap must survive (or report in one line), with nothing lost.

"Nothing lost" is always checked against the sandbox's ground truth, ids exactly:
resolved conversations up to the window end, their whole threads (messages and
notes), customers updated up to the window end, and every tag. A run that fails
must leave a STATE from which a second run completes the data.

Interruption by SIGTERM/SIGKILL is covered in tests/test_scenarios.py.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
import typing as t
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from tap_kustomer.errors import UnexpectedResponseError
from tap_kustomer.search import parse_timestamp
from tap_kustomer.tap import TapKustomer
from tests.sandbox import KeySpec, Sandbox, SandboxOptions
from tests.sandbox.clock import default_anchor
from tests.sandbox.reference import reference_of
from tests.tap_harness import REFERENCE_STREAMS, STREAMS, TapRun, closed_port, run_cli, run_tap
from tests.truth import API_KEY, bounded_config, thread_ids

SMALL_ORG: dict[str, t.Any] = {
    "seed": 17,
    "api_key": API_KEY,
    "customers": 20,
    "conversations": 60,
    "tags": 10,
}
# Search pages of 10, so conversations come in several pages (several STATEs).
PAGED = {"search_max_page_size": 10}


@contextlib.contextmanager
def sandbox(**options: t.Any) -> Iterator[Sandbox]:
    """A started sandbox of a small org (``options`` override the defaults)."""
    sb = Sandbox(SandboxOptions(**{**SMALL_ORG, **options}))
    sb.base_url = sb.start()  # type: ignore[attr-defined]
    try:
        yield sb
    finally:
        sb.stop()


def truth(sb: Sandbox, config: dict[str, t.Any]) -> dict[str, set[str]]:
    """Ids per stream a complete run of ``config`` must emit."""
    end = parse_timestamp(config["end_date"])
    assert end is not None
    until = end + timedelta(milliseconds=1)  # the tap's window end is inclusive
    conversations = set(sb.resolved_conversation_ids(until=until))
    reference = reference_of(sb).truth()
    messages, notes = thread_ids(sb, conversations)
    return {
        "conversations": conversations,
        "messages": messages,
        "notes": notes,
        "customers": set(sb.updated_ids("customers", until=until)),
        "tags": {tag["id"] for tag in sb.truth(["tags"])["tags"]},
        "companies": set(sb.updated_ids("companies", until=until)),
        "kobjects": set(sb.updated_ids("kobjects", until=until)),
        **{stream: {r["id"] for r in reference[k]} for stream, k in REFERENCE_STREAMS.items()},
    }


def union_ids(runs: t.Iterable[TapRun], stream: str) -> set[str]:
    ids: set[str] = set()
    for run in runs:
        ids |= run.ids(stream)
    return ids


def assert_complete(
    sb: Sandbox, config: dict[str, t.Any], *runs: TapRun, streams: t.Iterable[str] = STREAMS
) -> None:
    """The runs together emitted exactly the truth, stream by stream."""
    expected = truth(sb, config)
    for stream in ("conversations", "messages", "notes"):
        assert expected[stream], f"the org must have {stream}"
    for stream in streams:
        emitted = union_ids(runs, stream)
        missing, extra = expected[stream] - emitted, emitted - expected[stream]
        assert not missing, f"{stream}: {len(missing)} lost, e.g. {sorted(missing)[:3]}"
        assert not extra, f"{stream}: {len(extra)} unexpected, e.g. {sorted(extra)[:3]}"


def last_line(run: TapRun) -> str:
    lines = run.stderr.strip().splitlines()
    return lines[-1] if lines else ""


def assert_one_line_error(run: TapRun, *phrases: str, code: int = 1) -> str:
    """Exit ``code``, no traceback, and a last stderr line naming every phrase."""
    line = last_line(run)
    assert run.returncode == code, (run.returncode, run.stderr[-2000:])
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    assert line.startswith("tap-kustomer: error: "), run.stderr[-2000:]
    for phrase in phrases:
        assert phrase in line, (phrase, line)
    return line


def wrap_handler(sb: Sandbox, after: t.Callable[[str, str, int], None]) -> None:
    """Call ``after(method, path, n)`` after the sandbox handled its n-th /v1 request."""
    original = sb.api.handle
    counter = itertools.count(1)
    lock = threading.Lock()

    def handle(method: str, raw_path: str, headers: t.Any, body: bytes) -> t.Any:
        response = original(method, raw_path, headers, body)
        with lock:
            n = next(counter)
        after(method, raw_path, n)
        return response

    sb.api.handle = handle  # type: ignore[method-assign]


# 1-4. Transient faults: retried, nothing lost.

FAULTS = [
    ("fault_5xx_rate", 0.2, {"500", "503"}),
    ("fault_502_html_rate", 0.2, {"502_html"}),
    ("fault_reset_rate", 0.15, {"reset"}),
    ("fault_truncated_rate", 0.15, {"truncated"}),
]


@pytest.mark.parametrize(("option", "rate", "kinds"), FAULTS, ids=[f[0] for f in FAULTS])
def test_transient_faults_are_retried_and_nothing_is_lost(tmp_path, option, rate, kinds):
    with sandbox(**PAGED) as sb:
        config = bounded_config(sb)
        sb.set_option(option, rate)
        run = run_cli([], config=config, tmp_path=tmp_path)
        assert run.returncode == 0, run.stderr[-3000:]
        assert "Traceback" not in run.stderr
        injected = sb.stats()["faults"]
        assert sum(injected.get(kind, 0) for kind in kinds) >= 3, injected
        assert "Retrying a request" in run.stderr
        assert_complete(sb, config, run)


# 5. Timeouts: some responses come later than request_timeout.


def test_timed_out_requests_are_retried_and_nothing_is_lost(tmp_path):
    with sandbox(**PAGED) as sb:
        config = bounded_config(sb, request_timeout=1)
        slowed: list[int] = []

        def slow_some(method: str, path: str, n: int) -> None:
            # Every 15th response (after discovery and the key check) is 1.5 s late.
            if n > 5 and n % 15 == 0:
                slowed.append(n)
                time.sleep(1.5)

        wrap_handler(sb, slow_some)
        run = run_cli([], config=config, tmp_path=tmp_path)
        assert run.returncode == 0, run.stderr[-3000:]
        assert len(slowed) >= 2
        assert "Timeout" in run.stderr, "the slow responses must have timed out and been retried"
        assert_complete(sb, config, run)


def test_the_key_check_at_start_is_retried_like_any_request(tmp_path):
    """Three 5xx in a row on the first request must not end a run allowed 8 retries."""
    with sandbox() as sb:
        config = bounded_config(sb)
        checks = itertools.count(1)

        def heal_after_three(method: str, path: str, n: int) -> None:
            if "/auth/tokens/current" in path and next(checks) == 3:
                sb.set_option("fault_5xx_rate", 0.0)

        sb.set_option("fault_routes", ["/auth"])
        sb.set_option("fault_5xx_rate", 1.0)
        wrap_handler(sb, heal_after_three)
        run = run_cli([], config=config, tmp_path=tmp_path)
        assert run.returncode == 0, run.stderr[-1000:]
        assert_complete(sb, config, run)


def test_numeric_settings_can_come_from_the_environment(tmp_path):
    """``--config ENV`` must accept every setting, numbers included."""
    with sandbox() as sb:
        config = bounded_config(sb)
        env = {
            f"TAP_KUSTOMER_{k.upper()}": str(v)
            for k, v in config.items()
            if k != "backoff_base_seconds"
        }
        env["TAP_KUSTOMER_RATE_LIMIT_SHARE_PERCENT"] = "80"
        run = run_cli(["--config", "ENV"], env=env, tmp_path=tmp_path)
        assert run.returncode == 0, run.stderr[-1000:]
        assert_complete(sb, config, run)


# 6. Rate limits: learned from the headers, kept in steady state.

RATE_ORG = {"conversations": 40, "search_max_page_size": 4}


def _limits_for_one_and_a_half_windows(now: str) -> dict[str, int]:
    """Org and search limits at which a run of the rate-limit org needs ~1.5 windows.

    A twin of the org (same seed and clock) is read once without limits to count the
    requests a run makes; at its 80% share the tap may then send about 2/3 of them in
    the first window.
    """
    with sandbox(**RATE_ORG, now=now) as twin:
        run_tap(bounded_config(twin))
        routes = twin.stats()["by_route"]
    total = sum(sum(statuses.values()) for statuses in routes.values())
    searches = sum(routes.get("POST /v1/customers/search", {}).values())
    assert searches >= 12, routes
    assert total >= 30, routes
    return {
        "org_rpm": max(10, round(total / 1.5 / 0.8)),
        "search_rpm": max(10, round(searches / 1.5 / 0.8)),
    }


# 7. Giving up: one route keeps failing after part of the data was emitted.


def test_giving_up_prints_one_line_saves_state_and_the_next_run_completes(tmp_path):
    with sandbox(**PAGED) as sb:
        config = bounded_config(sb, max_retries=2)
        searches = itertools.count(1)

        def break_search(method: str, path: str, n: int) -> None:
            # Conversations and their threads are read by search: after some pages
            # were emitted, every search fails from now on.
            if "/search" in path and next(searches) == 20:
                sb.set_option("fault_routes", ["/search"])
                sb.set_option("fault_5xx_rate", 1.0)

        wrap_handler(sb, break_search)
        first = run_cli([], config=config, tmp_path=tmp_path)
        assert_one_line_error(first, "Kustomer kept failing after", code=first.returncode)
        assert first.returncode != 0
        assert first.ids("conversations"), "part of the data must have been emitted"
        assert first.final_state is not None, "a failed run must leave a STATE"
        assert first.bookmark("conversations"), "the STATE must keep the progress made"
        expected = truth(sb, config)
        assert first.ids("conversations") < expected["conversations"]

        sb.set_option("fault_5xx_rate", 0.0)
        sb.set_option("fault_routes", None)
        second = run_cli([], config=config, state=first.final_state, tmp_path=tmp_path)
        assert second.returncode == 0, second.stderr[-3000:]
        assert len(second.ids("conversations")) < len(expected["conversations"]), (
            "the second run must resume, not start over"
        )
        assert_complete(sb, config, first, second)
        # Every conversation emitted by either run came with its whole thread.
        for run in (first, second):
            messages, notes = thread_ids(sb, run.ids("conversations"))
            assert messages <= run.ids("messages")
            assert notes <= run.ids("notes")


# 8. Bad input: one line that names the problem, exit code 1, no traceback.

NO_TAG_403, NO_TAG_401 = "key-without-tag-403", "key-without-tag-401"
EXPIRED = "key-that-expired"


@pytest.fixture(scope="module")
def keyed_org() -> Iterator[Sandbox]:
    with sandbox(
        extra_keys={
            EXPIRED: KeySpec.expired_key(),
            NO_TAG_403: KeySpec.without("tag", denial_status=403),
            NO_TAG_401: KeySpec.without("tag", denial_status=401),
        }
    ) as sb:
        yield sb


def _without_url(config: dict[str, t.Any], **extra: t.Any) -> dict[str, t.Any]:
    return {**{k: v for k, v in config.items() if k != "api_url"}, **extra}


BAD_CONFIGS: list[tuple[str, t.Callable[[dict[str, t.Any]], dict[str, t.Any]], tuple[str, ...]]] = [
    ("invalid_key", lambda c: {**c, "api_key": "not-a-real-key"}, ("rejected the API key",)),
    ("expired_key", lambda c: {**c, "api_key": EXPIRED}, ("rejected the API key", "expired")),
    (
        "no_tag_role_403",
        lambda c: {**c, "api_key": NO_TAG_403},
        ("org.permission.tag.read", "skip_unauthorized_streams"),
    ),
    (
        "no_tag_role_401",
        lambda c: {**c, "api_key": NO_TAG_401},
        ("org.permission.tag.read", "skip_unauthorized_streams"),
    ),
    ("bad_org_name", lambda c: _without_url(c, org_name="my org!"), ("org_name",)),
    (
        "unreachable_host",
        lambda c: {**c, "api_url": f"http://127.0.0.1:{closed_port()}"},
        ("Cannot reach", "127.0.0.1"),
    ),
    ("start_date_not_a_date", lambda c: {**c, "start_date": "yesterday"}, ("start_date",)),
    (
        "end_date_before_start_date",
        lambda c: {**c, "start_date": "2024-05-01T00:00:00Z", "end_date": "2024-04-01T00:00:00Z"},
        ("end_date", "start_date"),
    ),
]


@pytest.fixture(scope="module")
def bad_runs(keyed_org, tmp_path_factory) -> Iterator[dict[str, Future[TapRun]]]:
    """Every bad-input run, started at once (three at a time) to save wall time."""
    config = bounded_config(keyed_org)
    with ThreadPoolExecutor(3) as pool:
        futures = {
            name: pool.submit(
                run_cli,
                [],
                config=make(config),
                tmp_path=tmp_path_factory.mktemp(name),
                timeout=120,
            )
            for name, make, _ in BAD_CONFIGS
        }
        yield futures


@pytest.mark.parametrize(
    ("name", "phrases"), [(c[0], c[2]) for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS]
)
def test_bad_input_fails_with_one_line(bad_runs, name, phrases):
    run = bad_runs[name].result()
    assert_one_line_error(run, *phrases)
    if not name.startswith("no_tag"):
        assert not run.records("conversations")


@pytest.mark.parametrize("key", [NO_TAG_403, NO_TAG_401])
def test_a_missing_role_skips_only_its_stream_when_allowed(tmp_path, keyed_org, key):
    config = bounded_config(keyed_org, api_key=key, skip_unauthorized_streams=True)
    run = run_cli([], config=config, tmp_path=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    warnings = [
        line
        for line in run.stderr.splitlines()
        if "Skipping stream 'tags'" in line and "org.permission.tag.read" in line
    ]
    assert warnings, run.stderr[-3000:]
    assert not run.records("tags")
    assert_complete(keyed_org, config, run, streams=[s for s in STREAMS if s != "tags"])


def test_unknown_region_is_rejected(tmp_path, keyed_org):
    config = _without_url(bounded_config(keyed_org), region="mars")
    run = run_cli([], config=config, tmp_path=tmp_path)
    assert run.returncode != 0
    assert "Traceback" not in run.stderr
    assert "'mars'" in run.stderr
    assert "region" in run.stderr
    assert last_line(run).startswith("tap-kustomer: error: ")
    assert not run.messages


def test_a_config_file_that_is_not_json_is_named(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"api_key": "k", "start_date": ')
    run = run_cli(["--config", str(path)], tmp_path=tmp_path)
    assert_one_line_error(run, "not valid JSON")


def test_persistent_html_answers_give_up_with_one_line(tmp_path):
    with sandbox(fault_502_html_rate=1.0) as sb:
        run = run_cli([], config=bounded_config(sb), tmp_path=tmp_path)
        assert_one_line_error(run, "Kustomer kept failing after")
        assert not run.records("conversations")


def test_debug_prints_the_traceback_and_still_the_one_line(tmp_path, keyed_org):
    config = {**bounded_config(keyed_org), "api_key": "not-a-real-key"}
    run = run_cli([], config=config, tmp_path=tmp_path, env={"TAP_KUSTOMER_DEBUG": "1"})
    assert run.returncode == 1
    assert "Traceback" in run.stderr
    assert "AuthenticationError" in run.stderr
    assert last_line(run).startswith("tap-kustomer: error: ")
    assert "rejected the API key" in last_line(run)


# Values of unexpected types.


def _a_conversation(sb: Sandbox) -> dict[str, t.Any]:
    resolved = set(sb.resolved_conversation_ids())
    return next(c for c in sb.truth(["conversations"])["conversations"] if c["id"] in resolved)


@pytest.mark.parametrize("fail", [False, True])
def test_values_of_the_wrong_type_are_converted_nulled_or_fail(keyed_org, caplog, fail):
    config = {**bounded_config(keyed_org), "fail_on_type_mismatch": fail}
    tap = TapKustomer(config=config, parse_env_config=False)
    stream = tap.streams["conversations"]
    record = _a_conversation(keyed_org)
    record["attributes"]["messageCount"] = "12"
    good = stream.post_process({**record, "attributes": dict(record["attributes"])})
    assert good is not None
    assert good["attributes"]["messageCount"] == 12
    record["attributes"]["priority"] = "high"
    if fail:
        with pytest.raises(UnexpectedResponseError, match=r"attributes\.priority"):
            stream.post_process(record)
        return
    with caplog.at_level("WARNING"):
        processed = stream.post_process(record)
    assert processed is not None
    assert processed["attributes"]["priority"] is None
    assert processed["attributes"]["messageCount"] == 12
    assert any("attributes.priority" in r.getMessage() for r in caplog.records)


def test_a_custom_attribute_of_the_wrong_type_end_to_end(tmp_path):
    with sandbox() as sb:
        config = bounded_config(sb)
        target = _a_conversation(sb)["id"]
        sb.set_custom(target, {"refundAmountNum": "a lot"})
        loose = run_cli([], config=config, tmp_path=tmp_path)
        assert loose.returncode == 0, loose.stderr[-3000:]
        record = next(r for r in loose.records("conversations") if r["id"] == target)
        assert record["attributes"]["custom"]["refundAmountNum"] is None
        assert "attributes.custom.refundAmountNum" in loose.stderr
        assert_complete(sb, config, loose)
        strict = run_cli([], config={**config, "fail_on_type_mismatch": True}, tmp_path=tmp_path)
        assert_one_line_error(strict, "attributes.custom.refundAmountNum", target)


# Soak: every fault at once, a tight-ish budget; same ids as a clean run.


def test_soak_under_combined_faults_emits_what_a_clean_run_emits(tmp_path: Path):
    """Two sandboxes of the same org (same seed and clock): one clean, one hostile."""
    # The limits leave the tap (at its 80% share) little more than a run needs.
    org = {
        "conversations": 160,
        "customers": 60,
        "search_max_page_size": 25,
        "org_rpm": 250,
        "search_rpm": 200,
        "now": default_anchor(),
    }
    with sandbox(**org) as clean_org:
        clean_config = bounded_config(clean_org)
        (tmp_path / "clean").mkdir()
        clean = run_cli([], config=clean_config, tmp_path=tmp_path / "clean")
        assert clean.returncode == 0, clean.stderr[-3000:]
        assert_complete(clean_org, clean_config, clean)
    # About 13% of requests fail one way or another.
    with sandbox(
        **org,
        fault_5xx_rate=0.04,
        fault_reset_rate=0.03,
        fault_truncated_rate=0.03,
        fault_502_html_rate=0.03,
    ) as hostile_org:
        config = {**bounded_config(hostile_org), "end_date": clean_config["end_date"]}
        soaked = run_cli([], config=config, tmp_path=tmp_path)
        assert soaked.returncode == 0, soaked.stderr[-3000:]
        stats = hostile_org.stats()
        assert sum(stats["faults"].values()) >= 8, stats["faults"]
        assert len(set(stats["faults"]) - {"500", "503"}) == 3, stats["faults"]
        for stream in STREAMS:
            assert soaked.ids(stream) == clean.ids(stream), stream
            assert len(soaked.records(stream)) == len(clean.records(stream)), stream
        assert_complete(hostile_org, config, soaked)


# 6 (continued). The rate-limit runs started with the module; checked last.

RATE_TEST = "test_tight_rate_limits_are_learned_and_kept_with_either_reset_format"
FORMATS = ("epoch", "delta")


@dataclass
class RateLimitedRuns:
    limits: dict[str, int]
    orgs: dict[str, Sandbox]
    configs: dict[str, dict[str, t.Any]]
    runs: dict[str, Future[TapRun]]


@pytest.fixture(scope="module", autouse=True)
def rate_limited_runs(request, tmp_path_factory) -> Iterator[RateLimitedRuns | None]:
    """The rate-limit runs, started with the module: they spend ~60 s waiting for a
    window to reset, during which the other tests of the module run."""
    if not any(item.name == RATE_TEST for item in request.session.items):
        yield None
        return
    now = default_anchor()
    limits = _limits_for_one_and_a_half_windows(now)
    with contextlib.ExitStack() as stack:
        orgs = {
            fmt: stack.enter_context(sandbox(**RATE_ORG, **limits, now=now, reset_format=fmt))
            for fmt in FORMATS
        }
        configs = {fmt: bounded_config(sb) for fmt, sb in orgs.items()}
        pool = stack.enter_context(ThreadPoolExecutor(len(FORMATS)))
        runs = {
            fmt: pool.submit(
                run_cli,
                [],
                config=configs[fmt],
                timeout=240,
                tmp_path=tmp_path_factory.mktemp(f"rate-{fmt}"),
            )
            for fmt in FORMATS
        }
        yield RateLimitedRuns(limits, orgs, configs, runs)
        for future in runs.values():
            future.exception()  # wait before the sandboxes stop


def test_tight_rate_limits_are_learned_and_kept_with_either_reset_format(rate_limited_runs):
    """Both reset formats, side by side: each run needs about 1.5 real 60 s windows."""
    assert rate_limited_runs is not None
    limits = rate_limited_runs.limits
    for fmt, sb in rate_limited_runs.orgs.items():
        result = rate_limited_runs.runs[fmt].result()
        assert result.returncode == 0, (fmt, result.stderr[-3000:])
        assert_complete(sb, rate_limited_runs.configs[fmt], result)
        stats, log = sb.stats(), sb.request_log()
        assert len(log) == stats["total_requests"] > 0
        start = log[0]["at"]
        assert log[-1]["at"] - start > 60, f"{fmt}: the run must span two windows"
        late_429 = [e for e in log if e["status"] == 429 and e["at"] > start + 60]
        assert not late_429, f"{fmt}: 429 after the first window: {late_429[:3]}"
        # The server never had to refuse more than the first window's excess, and
        # the tap never sent more in 60 s than the limits it learned allow.
        assert stats["max_accepted_in_60s"]["org"] <= limits["org_rpm"], (fmt, stats)
        assert stats["max_accepted_in_60s"]["search"] <= limits["search_rpm"], (fmt, stats)
