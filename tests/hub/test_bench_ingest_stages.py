"""bench/ingest.py places each stage of an event (bare client, hub received, hub written) in the same
half-second windows of publish time as the stored latency, so a slow window says where it went."""

from __future__ import annotations

from bench import ingest


def test_stage_timelines_put_each_event_in_its_publish_window() -> None:
    log = ingest.DeviceLog(device="dev-001", seqs=[1, 2, 3], published=[100.1, 100.2, 100.7])
    bare = ingest.BareResult(first_arrival={("dev-001", 1): 100.101, ("dev-001", 3): 100.75})
    rows = ingest.StoredRows(
        events=3,
        dead_letters=0,
        receive_lag=[],
        write_lag=[],
        by_event={("dev-001", 1): (0.003, 0.010), ("dev-001", 2): (0.004, 0.020), ("dev-001", 3): (0.2, 0.3)},
    )
    stages = ingest.stage_timelines([log], bare, rows, start=100.0)
    # window 0 s: seqs 1 and 2 (seq 2 never reached the bare client); window 0.5 s: seq 3
    assert [r[:2] for r in stages["bare"]] == [[0.0, 1], [0.5, 1]]
    assert stages["bare"][1][4] == 50.0
    assert [r[:2] for r in stages["hub_received"]] == [[0.0, 2], [0.5, 1]]
    assert stages["hub_written"][0][4] == 20.0
    assert stages["hub_written"][1][4] == 300.0


def test_the_worst_window_names_its_stages() -> None:
    figures = {
        "stored_latency_timeline": [[0.0, 10, 5.0, 9.0, 9.5], [0.5, 10, 20.0, 80.0, 90.0]],
        "stage_timelines": {
            "bare": [[0.0, 10, 0.3, 1.0, 1.0], [0.5, 10, 0.3, 2.0, 2.0]],
            "hub_received": [[0.0, 10, 3.0, 5.0, 5.0], [0.5, 10, 3.0, 12.0, 13.0]],
            "hub_written": [[0.0, 10, 8.0, 9.0, 9.0], [0.5, 10, 9.0, 40.0, 41.0]],
        },
    }
    said = ingest._worst(figures)
    assert said.startswith("p99 80 ms, max 90 ms among the 10 events published 0.5 s in")
    assert "(bare client p99 2, hub received p99 12, written p99 40 ms)" in said
