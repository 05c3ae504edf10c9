"""The CLI's pieces that need no database: settings checks, the reconcile line, the exit rule."""

from __future__ import annotations

import pytest

from embedplat.cli.app import EXIT_USAGE, main
from embedplat.cli.sync import reconcile_line
from embedplat.config import Settings
from embedplat.errors import ConfigurationError
from embedplat.sync import ReconcileReport


@pytest.mark.parametrize("device", ["cpu", "cuda", "cuda:0", "cuda:12", "mps"])
def test_accepted_devices(device: str) -> None:
    assert Settings.from_env({"EMBEDPLAT_DEVICE": device}).device == device
    assert Settings.from_env({"EMBEDPLAT_DEVICE": ""}).device is None


@pytest.mark.parametrize(
    "device", ["tpu", "CUDA", "cuda:", "cuda:x", "cuda:-1", "cuda:\u0663", "gpu0"]
)
def test_refused_devices_name_the_variable(device: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Checked by the settings themselves, so the CLI, the workers and Platform.connect() all
    # refuse it before a model loads.
    with pytest.raises(ConfigurationError, match=f"EMBEDPLAT_DEVICE must be .*got {device!r}"):
        Settings.from_env({"EMBEDPLAT_DEVICE": device})
    monkeypatch.setenv("EMBEDPLAT_DEVICE", device)
    with pytest.raises(ConfigurationError, match="EMBEDPLAT_DEVICE must be"):
        Settings.from_env()


def test_reconcile_line_names_each_repair() -> None:
    assert reconcile_line(ReconcileReport()) == "reconcile: no drift found"
    report = ReconcileReport(records_rechunked=2, stale_vectors_removed=1, queue_hashes_fixed=3)
    assert reconcile_line(report) == (
        "reconcile: 2 records to re-chunk, 1 stale vector removed, 3 queue hashes fixed"
    )


def test_usage_error_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["status", "--zzz"])
    assert exit_info.value.code == EXIT_USAGE
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        "error: No such option: --zzz",
        "Try 'embedplat status --help' for help.",
    ]


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["sync", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--no-index  " in out and "<bool>" not in out


def test_sync_text_prints_notes_and_lease_holders(capsys: pytest.CaptureFixture[str]) -> None:
    from datetime import UTC, datetime

    from embedplat.cli.sync import _print_report
    from embedplat.sync import LeaseHolder, SyncReport

    until = datetime(2030, 1, 1, tzinfo=UTC)
    report = SyncReport(
        chunks_embedded=3,
        notes=["the ANN index of collection 'a' is missing\x1b[2J"],
        leased_elsewhere=[
            LeaseHolder("a", "h:1:ab", 4, until, True),
            LeaseHolder("b\u202e", "h:2:cd", 2, until, False),
        ],
    )
    _print_report(report, {}, None)
    captured = capsys.readouterr()
    assert captured.out.startswith("chunked 0 records, embedded 3 chunks, 0 failed (0 parked)")
    assert captured.err.splitlines() == [
        "note: 6 chunks are leased by other processes: h:1:ab (alive, 4 chunks of 'a'), h:2:cd "
        "(gone, 2 chunks of 'b\\u202e'); a live holder embeds its chunks, the next sync takes a "
        "gone holder's",
        "note: the ANN index of collection 'a' is missing\\x1b[2J",
    ]
