"""Waiting for a partner's marker: the original's patience, without sleeping past its arrival."""

from __future__ import annotations

from prio_processor.storage import location, ops


def test_a_marker_that_appears_mid_sleep_is_taken_at_the_next_look(tmp_path):
    marker = tmp_path / "_SUCCESS"
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 3:
            marker.write_text("")

    reports: list[str] = []
    found = ops.wait_for(location(marker), 5, 30.0, 2.0, sleep=sleep, report=reports.append, poll=0.05)
    assert found
    assert slept == [0.05, 0.05, 0.05]  # three looks into the first 30 s sleep, not 30 s
    assert reports == [f"waiting 30s for {marker} (wait 1 of 6: the first, then up to 5 retries)"]


def test_without_poll_every_sleep_is_whole_and_patience_runs_out(tmp_path):
    slept: list[float] = []
    found = ops.wait_for(location(tmp_path / "_SUCCESS"), 2, 1.0, 2.0, sleep=slept.append)
    assert not found
    assert slept == [1.0, 2.0, 4.0]


def test_a_marker_of_other_inputs_is_not_taken_between_looks(tmp_path):
    marker = tmp_path / "_SUCCESS"
    marker.write_text("batch=3")
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 4:
            marker.write_text("batch=5")

    found = ops.wait_for(location(marker), 3, 0.2, 1.0, sleep=sleep, stamp="batch=5", poll=0.05)
    assert found and slept == [0.05] * 4


def test_retry_limit_words_count_the_waits():
    """RETRY_LIMIT=3 waits 4 times, as the original: the words say so (they said `attempt 1 of 4`)."""
    reports: list[str] = []
    marker = location("/nonexistent/_SUCCESS")
    found = ops.wait_for(marker, 3, 0.0, 2.0, sleep=lambda _: None, report=reports.append)
    assert not found
    assert [r.rsplit("(", 1)[1] for r in reports] == [
        f"wait {n} of 4: the first, then up to 3 retries)" for n in range(1, 5)
    ]


def test_data_prefixes_names_where_the_data_went_with_a_bounded_look(tmp_path):
    key = "AB" * 32
    for folder in (
        f"test-data/v1/{key}/app/2026-11-27/raw",
        f"data/v2/{key}/other-app/2026-11-27",
        f"a/b/c/d/e/{key}/app/2026-11-27",  # deeper than a prefix is looked for
        f"x/{key}/y/{key}/app",  # nothing is looked for below the key itself
    ):
        (tmp_path / folder).mkdir(parents=True)
    assert ops.data_prefixes(location(tmp_path), (key, "app")) == ["test-data/v1"]
    assert ops.data_prefixes(location(tmp_path), (key, "app"), max_listings=2) == []
    assert ops.bucket_problem(location(tmp_path)) is None
    assert ops.bucket_problem(location(tmp_path / "nope")) == f"{tmp_path / 'nope'} does not exist"
