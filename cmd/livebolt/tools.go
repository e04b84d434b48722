package main

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/livebolt/livebolt/app"
	"github.com/livebolt/livebolt/storage/boltdb"
)

// lockHint follows the error of a subcommand that found the file held.
const lockHint = "the livebolt server seems to be running on this file: stop it first, " +
	"or download a copy with GET /api/admin/backup and run this command with --file on the copy"

// toolFlags are the flags that inspect and compact share.
type toolFlags struct {
	fs   *flag.FlagSet
	data string
	file string
}

// newToolFlags builds the flag set of a subcommand. --data defaults to
// LIVEBOLT_DATA, as for the server.
func newToolFlags(name, usage string, getenv func(string) string, stderr io.Writer) *toolFlags {
	tf := &toolFlags{fs: flag.NewFlagSet("livebolt "+name, flag.ContinueOnError)}
	tf.fs.SetOutput(stderr)
	data := getenv("LIVEBOLT_DATA")
	if data == "" {
		data = "data"
	}
	tf.fs.StringVar(&tf.data, "data", data, "`folder` of the database file livebolt.db [LIVEBOLT_DATA]")
	tf.fs.StringVar(&tf.file, "file", "", "database `file` to read instead of the one in --data, such as a downloaded backup")
	tf.fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: livebolt %s\n\nFlags:\n", usage)
		tf.fs.PrintDefaults()
	}
	return tf
}

// parse reads args and returns the database path, or an error for an
// argument that is not a flag.
func (tf *toolFlags) parse(args []string) (string, error) {
	if err := tf.fs.Parse(args); err != nil {
		return "", err
	}
	if tf.fs.NArg() > 0 {
		return "", fmt.Errorf("unexpected argument %q (see %s --help)", tf.fs.Arg(0), tf.fs.Name())
	}
	if tf.file != "" {
		return tf.file, nil
	}
	return filepath.Join(tf.data, app.DatabaseFile), nil
}

// toolExit prints err for a subcommand and returns its exit code: 0 without
// an error, 2 for a usage error, 1 otherwise.
func toolExit(name string, err error, usage bool, stderr io.Writer) int {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return 0
	}
	fmt.Fprintf(stderr, "livebolt %s: %v\n", name, err)
	if usage {
		return 2
	}
	if errors.Is(err, boltdb.ErrLocked) {
		fmt.Fprintf(stderr, "livebolt %s: %s\n", name, lockHint)
	}
	return 1
}

// runInspect prints a report of a database file, or one session's record.
func runInspect(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	tf := newToolFlags("inspect", "inspect [--data DIR | --file FILE] [--session ID] [--json] [--limit N]", getenv, stderr)
	session := tf.fs.String("session", "", "print the record of the session with this `id` instead of the report")
	asJSON := tf.fs.Bool("json", false, "print JSON instead of text")
	limit := tf.fs.Int("limit", 5, "`sessions` to list as the oldest and as the newest")
	path, err := tf.parse(args)
	if err == nil && *limit < 0 {
		err = fmt.Errorf("invalid --limit %d: must be 0 or more", *limit)
	}
	if err != nil {
		return toolExit("inspect", err, true, stderr)
	}

	r, err := boltdb.OpenReader(path, 0)
	if err != nil {
		return toolExit("inspect", err, false, stderr)
	}
	defer r.Close()
	var out []byte
	if *session != "" {
		out, err = inspectSession(r, *session, *asJSON)
	} else {
		out, err = inspectFile(r, *limit, *asJSON)
	}
	if err != nil {
		return toolExit("inspect", err, false, stderr)
	}
	_, _ = stdout.Write(out)
	return 0
}

func inspectFile(r *boltdb.Reader, limit int, asJSON bool) ([]byte, error) {
	rep, err := r.Report(limit)
	if err != nil {
		return nil, err
	}
	if asJSON {
		return marshalLine(rep)
	}
	return formatReport(rep), nil
}

func inspectSession(r *boltdb.Reader, id string, asJSON bool) ([]byte, error) {
	info, err := r.Session(id)
	if err != nil {
		return nil, err
	}
	if asJSON {
		return marshalLine(info)
	}
	return formatSession(info), nil
}

func marshalLine(v any) ([]byte, error) {
	out, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode JSON: %w", err)
	}
	return append(out, '\n'), nil
}

// formatReport lays a report out as aligned text sections.
func formatReport(rep *boltdb.Report) []byte {
	var buf bytes.Buffer
	w := tabwriter.NewWriter(&buf, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "file\t%s\n", rep.Path)
	fmt.Fprintf(w, "size\t%s\n", formatBytes(rep.FileSizeBytes))
	fmt.Fprintf(w, "schema version\t%d\n", rep.SchemaVersion)
	fmt.Fprintf(w, "sessions\t%d (%d corrupt)\n", rep.Sessions, len(rep.CorruptSessions))

	fmt.Fprintf(w, "\nbucket key counts\n")
	for _, b := range rep.Buckets {
		fmt.Fprintf(w, "  %s\t%d\n", b.Name, b.Keys)
		if b.CountedKeys != nil && *b.CountedKeys != b.Keys {
			fmt.Fprintf(w, "  \t(the count kept in meta is %d, so the stats endpoint reports that)\n", *b.CountedKeys)
		}
	}

	writeSummaries(w, "oldest sessions, by last activity", rep.Oldest)
	writeSummaries(w, "newest sessions, by last activity", rep.Newest)

	fmt.Fprintf(w, "\nsessions by component\n")
	for _, name := range sortedKeys(rep.Components) {
		fmt.Fprintf(w, "  %s\t%d\n", name, rep.Components[name])
	}
	writeNone(w, len(rep.Components))

	fmt.Fprintf(w, "\nsessions by failed hydration attempts\n")
	if len(rep.FailedAttempts) > 0 {
		fmt.Fprintf(w, "  attempts\tsessions\n")
	}
	for _, n := range sortedKeys(rep.FailedAttempts) {
		fmt.Fprintf(w, "  %d\t%d\n", n, rep.FailedAttempts[n])
	}
	writeNone(w, len(rep.FailedAttempts))

	if len(rep.CorruptSessions) > 0 {
		fmt.Fprintf(w, "\ncorrupt sessions (a server deletes each when a client hydrates it or the age sweep reaches it)\n")
		for _, id := range rep.CorruptSessions {
			fmt.Fprintf(w, "  %s\n", id)
		}
	}
	_ = w.Flush()
	return buf.Bytes()
}

func writeSummaries(w io.Writer, title string, sessions []boltdb.SessionSummary) {
	fmt.Fprintf(w, "\n%s\n", title)
	if len(sessions) > 0 {
		fmt.Fprintf(w, "  id\tcomponent\tcreated\tlast activity\n")
	}
	for _, s := range sessions {
		fmt.Fprintf(w, "  %s\t%s\t%s\t%s\n", s.ID, s.Component, formatTime(s.CreatedAt), formatTime(s.LastActivity))
	}
	writeNone(w, len(sessions))
}

func writeNone(w io.Writer, n int) {
	if n == 0 {
		fmt.Fprintf(w, "  none\n")
	}
}

func sortedKeys[K cmp.Ordered, V any](m map[K]V) []K {
	keys := make([]K, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// formatSession lays one session out as text, with props and state as
// indented JSON.
func formatSession(info *boltdb.SessionInfo) []byte {
	var buf bytes.Buffer
	w := tabwriter.NewWriter(&buf, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "id\t%s\n", info.ID)
	fmt.Fprintf(w, "component\t%s\n", info.Component)
	fmt.Fprintf(w, "owner (client id)\t%s\n", info.Owner)
	fmt.Fprintf(w, "version\t%d\n", info.Version)
	fmt.Fprintf(w, "state version\t%d\n", info.StateVersion)
	fmt.Fprintf(w, "created\t%s\n", formatTime(info.CreatedAt))
	fmt.Fprintf(w, "last activity\t%s\n", formatTime(info.LastActivity))
	fmt.Fprintf(w, "failed attempts\t%d\n", info.FailedAttempts)
	fmt.Fprintf(w, "fingerprint\t%s (shortened)\n", info.Fingerprint)
	fmt.Fprintf(w, "mac\t%s (shortened)\n", info.MAC)
	_ = w.Flush()
	for _, part := range []struct {
		name string
		raw  json.RawMessage
	}{{"props", info.Props}, {"state", info.State}} {
		var indented bytes.Buffer
		if err := json.Indent(&indented, part.raw, "  ", "  "); err != nil {
			indented.Reset()
			indented.Write(part.raw) // shown as stored when it is not JSON
		}
		fmt.Fprintf(&buf, "%s\n  %s\n", part.name, indented.String())
	}
	return buf.Bytes()
}

func formatTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// formatBytes formats n in bytes, with MiB or KiB when it is that large.
func formatBytes(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB (%d bytes)", float64(n)/(1<<20), n)
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB (%d bytes)", float64(n)/(1<<10), n)
	}
	return fmt.Sprintf("%d bytes", n)
}

// runCompact writes a compacted copy of a database file.
func runCompact(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	tf := newToolFlags("compact", "compact [--data DIR | --file FILE] [--out FILE]", getenv, stderr)
	out := tf.fs.String("out", "", "`file` to write, which must not exist (default: the database path with .compact appended)")
	path, err := tf.parse(args)
	if err != nil {
		return toolExit("compact", err, true, stderr)
	}
	if *out == "" {
		*out = path + ".compact"
	}
	res, err := boltdb.Compact(path, *out, 0)
	if err != nil {
		return toolExit("compact", err, false, stderr)
	}
	saved := res.SourceBytes - res.CompactedBytes
	fmt.Fprintf(stdout, "compacted %s\n  before  %s\n  after   %s (%s)\n  wrote   %s\n",
		path, formatBytes(res.SourceBytes), formatBytes(res.CompactedBytes), savedText(saved), *out)
	if saved <= 0 {
		// bbolt preallocates, so a small or already dense file can grow.
		fmt.Fprintf(stdout, "the copy is not smaller; keep %s and delete %s\n", path, *out)
		return 0
	}
	fmt.Fprintf(stdout, "to use it, stop the server and replace %s with %s\n", path, *out)
	return 0
}

func savedText(saved int64) string {
	if saved < 0 {
		return formatBytes(-saved) + " larger"
	}
	return formatBytes(saved) + " smaller"
}
