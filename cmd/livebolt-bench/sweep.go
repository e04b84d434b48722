package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/livebolt/livebolt/storage/boltdb"
)

// SweepResult is workload 4: the age sweep with the same number of expired
// sessions among stores of different sizes.
type SweepResult struct {
	Expired int        `json:"expired"`
	Rounds  int        `json:"rounds"`
	Notes   []string   `json:"notes,omitempty"`
	Rows    []SweepRow `json:"rows"`
}

// SweepRow holds one store size. RatioToFirst compares its sweep time with
// the first size's, over the same rounds.
type SweepRow struct {
	Stored       int       `json:"stored"`
	Fill         FillInfo  `json:"fill"`
	FileBytes    int64     `json:"fileBytes"`
	SweepMs      []float64 `json:"sweepMs"`
	MedianMs     float64   `json:"medianMs"`
	RatioToFirst *Ratio    `json:"ratioToFirst,omitempty"`
}

// sweepFixture is one database file and its row.
type sweepFixture struct {
	path      string
	row       SweepRow
	durations []time.Duration
}

func runSweep(cfg *config, fc *fixtureCache, dir string) (*SweepResult, error) {
	res := &SweepResult{Expired: cfg.sweepExpired, Rounds: cfg.rounds, Notes: []string{
		"filled in random order through storage.Store.CreateSession from many goroutines, on bbolt opened with NoSync, then flushed; only the sweep is timed, on the file reopened with fsync on",
		"before each round the expired sessions (random ids, older than the cutoff) are stored again without fsync and flushed, so every round sweeps the same number among the same total",
		"called as store.SweepExpired(cutoff, keep nothing) on bbolt directly; the page cache is warm",
	}}
	cutoff := fc.from.Add(-time.Hour)
	var fixtures []*sweepFixture
	defer func() {
		for _, fx := range fixtures {
			if !cfg.keep {
				_ = os.Remove(fx.path)
			}
		}
	}()
	for _, stored := range cfg.sweepStored {
		if stored < cfg.sweepExpired {
			return res, fmt.Errorf("--sweep-stored %d is smaller than --sweep-expired %d", stored, cfg.sweepExpired)
		}
		fx := &sweepFixture{path: filepath.Join(dir, fmt.Sprintf("sweep-%d.db", stored)), row: SweepRow{Stored: stored}}
		var err error
		if fx.row.Fill, err = fc.make(fx.path, stored, stored-cfg.sweepExpired, fmt.Sprintf("sweep %d", stored)); err != nil {
			return res, err
		}
		fixtures = append(fixtures, fx)
	}
	for r := range cfg.rounds {
		for _, fx := range fixtures {
			if err := fx.round(cfg.sweepExpired, cutoff); err != nil {
				return res, err
			}
			progress("sweep: round %d/%d, %d stored: %.1f ms", r+1, cfg.rounds, fx.row.Stored, ms(fx.durations[r]))
		}
	}
	for _, fx := range fixtures {
		fx.row.MedianMs = ms(median(fx.durations))
		if st, err := os.Stat(fx.path); err == nil {
			fx.row.FileBytes = st.Size()
		}
		res.Rows = append(res.Rows, fx.row)
	}
	addSweepRatios(res.Rows)
	return res, nil
}

// round stores the expired sessions, flushes them, reopens the file with
// fsync on and times one age sweep.
func (fx *sweepFixture) round(expired int, cutoff time.Time) error {
	err := fillFile(fx.path, expired, randomSessions(cutoff.Add(-time.Hour), cutoff.Add(-time.Second)), "sweep expired")
	if err == nil {
		err = syncFile(fx.path)
	}
	if err != nil {
		return err
	}
	store, err := boltdb.Open(fx.path, nil)
	if err != nil {
		return fmt.Errorf("reopen %s with fsync: %w", fx.path, err)
	}
	began := time.Now()
	r, err := store.SweepExpired(cutoff, func(string) bool { return false })
	took := time.Since(began)
	if err := errors.Join(err, store.Close()); err != nil {
		return fmt.Errorf("sweep %s: %w", fx.path, err)
	}
	if r.Sessions != expired {
		return fmt.Errorf("sweep among %d stored removed %d sessions, expected %d", fx.row.Stored, r.Sessions, expired)
	}
	fx.durations = append(fx.durations, took)
	fx.row.SweepMs = append(fx.row.SweepMs, ms(took))
	return nil
}

// addSweepRatios compares each size with the first, round by round.
func addSweepRatios(rows []SweepRow) {
	if len(rows) < 2 {
		return
	}
	first := rows[0]
	for i := 1; i < len(rows); i++ {
		rows[i].RatioToFirst = newRatio(sum(rows[i].SweepMs), sum(first.SweepMs), rows[i].SweepMs, first.SweepMs)
	}
}

func sum(xs []float64) float64 {
	t := 0.0
	for _, x := range xs {
		t += x
	}
	return t
}
