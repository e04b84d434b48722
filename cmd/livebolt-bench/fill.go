package main

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/livebolt/livebolt/live"
	"github.com/livebolt/livebolt/storage"
	"github.com/livebolt/livebolt/storage/boltdb"
)

// fillWorkers is how many goroutines call CreateSession at once while a
// store is filled. bbolt's group commit writes up to 512 waiting sessions
// in one transaction, and twice that keeps the next group queued while one
// commits. On a 2-core VM this filled 300,000 sessions in 16 s against 25 s
// with 32 workers. At a million both took about 110 s, because there every
// session dirties its own leaf pages in five buckets.
const fillWorkers = 1024

// openForFilling opens a bbolt file without fsync, which only the fill
// uses: the timed steps reopen it with fsync on.
func openForFilling(path string) (*boltdb.Store, error) {
	s, err := boltdb.Open(path, &boltdb.Options{NoSync: true})
	if err != nil {
		return nil, fmt.Errorf("open %s for filling: %w", path, err)
	}
	return s, nil
}

// sessionMaker makes session i of n.
type sessionMaker func(rng *rand.Rand, i, n int) *storage.Session

// fillSessions stores n sessions from next, each with its own owner. The
// sessions carry a random MAC, so they are never hydrated; they are there
// to be counted, skipped and swept.
func fillSessions(store storage.Store, n int, next sessionMaker, label string) error {
	var done atomic.Int64
	step := max(n/10, 1)
	seed := rand.Uint64()
	return parallel(n, fillWorkers, func(i int) error {
		rng := rand.New(rand.NewPCG(seed, uint64(i)))
		if err := store.CreateSession(next(rng, i, n)); err != nil {
			return fmt.Errorf("%s: create session %d of %d: %w", label, i+1, n, err)
		}
		if d := done.Add(1); d%int64(step) == 0 && n >= 100_000 {
			progress("%s: %d of %d sessions stored", label, d, n)
		}
		return nil
	})
}

// randomSessions makes sessions last active at random times in [from, to),
// with ids and owners made by live.NewID at that time, as the server makes
// them at mount and hello.
func randomSessions(from, to time.Time) sessionMaker {
	span := int64(to.Sub(from))
	return func(rng *rand.Rand, _, _ int) *storage.Session {
		activity := from.Add(time.Duration(rng.Int64N(span)))
		return fakeSession(rng, "f."+live.NewID(activity), live.NewID(activity), activity)
	}
}

// idAlphabet holds the characters of base64url, the encoding of
// livebolt's ids.
const idAlphabet = "-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"

// randomText returns n random base64url characters, like the 16 random
// bytes of livebolt's ids when n is 22.
func randomText(rng *rand.Rand, n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = idAlphabet[rng.IntN(64)]
	}
	return string(b)
}

// fakeSession is a counter session shaped like the ones livebolt stores,
// with a 32-byte fingerprint and MAC.
func fakeSession(rng *rand.Rand, id, owner string, activity time.Time) *storage.Session {
	mac := make([]byte, 32)
	for i := 0; i < len(mac); i += 8 {
		binary.LittleEndian.PutUint64(mac[i:], rng.Uint64())
	}
	return &storage.Session{
		ID:           id,
		Component:    "counter",
		Owner:        owner,
		Props:        json.RawMessage(`{}`),
		State:        json.RawMessage(`{"count":0,"step":1}`),
		Fingerprint:  randomText(rng, 43),
		Version:      1,
		CreatedAt:    activity,
		LastActivity: activity,
		MAC:          mac,
	}
}

// fixtureCache makes bbolt files of made-up sessions in random order, as a
// live server would have written them. Filling a million that way takes
// a minute, so each size is filled once into a base file and later users
// get a copy.
type fixtureCache struct {
	dir string
	// reserve is how many of the stored sessions every user adds itself
	// (expired or storm sessions); a base file holds the rest.
	reserve  int
	from, to time.Time // last activity of the base sessions
	bases    map[int]*baseFixture
}

type baseFixture struct {
	path     string
	sessions int
	seconds  float64
}

// FillInfo describes how a fixture file was made.
type FillInfo struct {
	Seconds float64 `json:"seconds"` // filling its made-up sessions, including any earlier fill it was copied from
	Copied  bool    `json:"copied"`  // it is a copy of a fill an earlier workload made
}

func newFixtureCache(dir string, reserve int, now time.Time) *fixtureCache {
	return &fixtureCache{dir: dir, reserve: reserve, from: now.Add(-10 * time.Minute), to: now, bases: map[int]*baseFixture{}}
}

// make writes at dst a file of fillers sessions, last active within the
// ten minutes before the cache was made, for a workload that will bring
// the total to stored. The file is flushed to disk before make returns,
// so a later fsync does not pay for the fill.
func (fc *fixtureCache) make(dst string, stored, fillers int, label string) (FillInfo, error) {
	base, copied, err := fc.base(stored, label)
	if err != nil {
		return FillInfo{}, err
	}
	if fillers < base.sessions {
		return FillInfo{}, fmt.Errorf("%s: needs %d made-up sessions, but the base file for %d stored already has %d", label, fillers, stored, base.sessions)
	}
	if err := copyFile(base.path, dst); err != nil {
		return FillInfo{}, err
	}
	info := FillInfo{Seconds: base.seconds, Copied: copied}
	if extra := fillers - base.sessions; extra > 0 {
		began := time.Now()
		if err := fillFile(dst, extra, randomSessions(fc.from, fc.to), label); err != nil {
			return info, err
		}
		info.Seconds += time.Since(began).Seconds()
	}
	return info, syncFile(dst)
}

// base returns the base file for stored, filling it on first use.
func (fc *fixtureCache) base(stored int, label string) (*baseFixture, bool, error) {
	if b, ok := fc.bases[stored]; ok {
		return b, true, nil
	}
	b := &baseFixture{path: filepath.Join(fc.dir, fmt.Sprintf("base-%d.db", stored)), sessions: max(stored-fc.reserve, 0)}
	progress("%s: filling %d sessions in random order", label, b.sessions)
	began := time.Now()
	if err := fillFile(b.path, b.sessions, randomSessions(fc.from, fc.to), label); err != nil {
		return nil, false, err
	}
	b.seconds = time.Since(began).Seconds()
	fc.bases[stored] = b
	return b, false, nil
}

// remove deletes the base files.
func (fc *fixtureCache) remove() {
	for _, b := range fc.bases {
		_ = os.Remove(b.path)
	}
}

// fillFile adds n sessions from next to the bbolt file at path, opened
// without fsync.
func fillFile(path string, n int, next sessionMaker, label string) error {
	store, err := openForFilling(path)
	if err != nil {
		return err
	}
	err = fillSessions(store, n, next, label)
	return errors.Join(err, store.Close())
}

// copyFile copies a closed database file.
func copyFile(src, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("copy fixture: %w", err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("copy fixture: %w", err)
	}
	if _, err := io.Copy(out, in); err != nil {
		_ = out.Close()
		return fmt.Errorf("copy fixture %s to %s: %w", src, dst, err)
	}
	return out.Close()
}

// syncFile flushes a file written without fsync to disk.
func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("flush %s: %w", path, err)
	}
	err = f.Sync()
	return errors.Join(err, f.Close())
}
