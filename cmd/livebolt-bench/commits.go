package main

import (
	"fmt"
	"time"
)

// commitSample is the running total of a bbolt server's commits, read from
// its Prometheus registry.
type commitSample struct {
	commits uint64
	writes  float64
	seconds float64
}

// sampleCommits reads the commit histograms of srv.
func sampleCommits(srv *liveServer) (commitSample, error) {
	families, err := srv.MetricsRegistry().Gather()
	if err != nil {
		return commitSample{}, fmt.Errorf("read the commit metrics: %w", err)
	}
	var s commitSample
	for _, f := range families {
		if len(f.GetMetric()) == 0 || f.GetMetric()[0].GetHistogram() == nil {
			continue
		}
		h := f.GetMetric()[0].GetHistogram()
		switch f.GetName() {
		case "livebolt_store_commit_duration_seconds":
			s.commits, s.seconds = h.GetSampleCount(), h.GetSampleSum()
		case "livebolt_store_commit_writes":
			s.writes = h.GetSampleSum()
		}
	}
	return s, nil
}

// CommitStats describes the bbolt commits behind the durable calls of one
// client count: how many calls shared a commit and how long one took.
type CommitStats struct {
	Commits         uint64  `json:"commits"`
	CommitsPerSec   float64 `json:"commitsPerSecond"`
	WritesPerCommit float64 `json:"writesPerCommit"`
	MeanCommitMs    float64 `json:"meanCommitMs"`
	// BusyShare is the share of the measured time the committer spent in
	// commits; near 1 means commits ran back to back.
	BusyShare float64 `json:"busyShare"`
}

// commitAccumulator adds up the commits of the measured rounds.
type commitAccumulator struct {
	total   commitSample
	elapsed time.Duration
}

func (a *commitAccumulator) add(before, after commitSample, elapsed time.Duration) {
	a.total.commits += after.commits - before.commits
	a.total.writes += after.writes - before.writes
	a.total.seconds += after.seconds - before.seconds
	a.elapsed += elapsed
}

func (a *commitAccumulator) stats() *CommitStats {
	if a.total.commits == 0 || a.elapsed <= 0 {
		return nil
	}
	n := float64(a.total.commits)
	return &CommitStats{
		Commits:         a.total.commits,
		CommitsPerSec:   n / a.elapsed.Seconds(),
		WritesPerCommit: a.total.writes / n,
		MeanCommitMs:    a.total.seconds / n * 1000,
		BusyShare:       a.total.seconds / a.elapsed.Seconds(),
	}
}
