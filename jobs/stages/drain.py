"""Stage `drain_events`, first of every refresh: the events the API accepted, up to the run's interval
end, moved from the Redis stream into the lake exactly once (`jobs.ingest.drain`)."""

from __future__ import annotations

from jobs.ingest.drain import drain_events
from jobs.stages.run import StageResult, StageRun


def run(job: StageRun) -> StageResult:
    drained = drain_events(job.settings, interval_end=job.interval_end, progress=job.say)
    return StageResult(
        f"{drained.written:,} events into the lake, through stream id {drained.drained_through or '-'}; "
        f"{drained.backlog.length:,} left in the stream, {drained.rejected} rejected, {drained.deleted} deleted, "
        f"{drained.links:,} sign-ins linked"
        + (" (the stream's length cap dropped undrained events)" if drained.backlog.lost else ""),
        drained,
    )
