package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is everything one run measured; the table and the JSON file are
// two renderings of it.
type Report struct {
	Date           time.Time         `json:"date"`
	Machine        Machine           `json:"machine"`
	Settings       Settings          `json:"settings"`
	ElapsedSeconds float64           `json:"elapsedSeconds"`
	Throughput     *ThroughputResult `json:"throughput,omitempty"`
	Idle           *IdleResult       `json:"idle,omitempty"`
	Sweep          *SweepResult      `json:"sweep,omitempty"`
	Startup        *StartupResult    `json:"startup,omitempty"`
	Storm          *StormResult      `json:"storm,omitempty"`
	Patch          *PatchResult      `json:"patch,omitempty"`
	Errors         []WorkloadError   `json:"errors,omitempty"`
}

// Settings are the flags of the run.
type Settings struct {
	Workloads     []string `json:"workloads"`
	Duration      string   `json:"duration"`
	Rounds        int      `json:"rounds"`
	Clients       []int    `json:"clients"`
	Idle          []int    `json:"idle"`
	SweepStored   []int    `json:"sweepStored"`
	SweepExpired  int      `json:"sweepExpired"`
	StartupStored int      `json:"startupStored"`
	Storm         int      `json:"storm"`
	PatchItems    int      `json:"patchItems"`
	PatchCalls    int      `json:"patchCalls"`
	Dir           string   `json:"dir"`
	Keep          bool     `json:"keep"`
}

// WorkloadError is a workload that failed.
type WorkloadError struct {
	Workload string `json:"workload"`
	Error    string `json:"error"`
}

func newReport(cfg *config) *Report {
	r := &Report{Date: time.Now().UTC().Truncate(time.Second), Machine: describeMachine(), Settings: Settings{
		Duration: cfg.duration.String(), Rounds: cfg.rounds, Clients: cfg.clients, Idle: cfg.idle,
		SweepStored: cfg.sweepStored, SweepExpired: cfg.sweepExpired, StartupStored: cfg.startupStored, Storm: cfg.storm,
		PatchItems: cfg.patchItems, PatchCalls: cfg.patchCalls, Keep: cfg.keep,
	}}
	for _, w := range allWorkloads {
		if cfg.workloads[w] {
			r.Settings.Workloads = append(r.Settings.Workloads, w)
		}
	}
	return r
}

func writeJSON(path string, r *Report) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode the results: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write --json %s: %w", path, err)
	}
	return nil
}

func printReport(out io.Writer, r *Report) {
	printHeader(out, r)
	if r.Throughput != nil {
		printThroughput(out, r.Throughput)
	}
	if r.Idle != nil {
		printIdle(out, r.Idle)
	}
	if r.Sweep != nil {
		printSweep(out, r.Sweep)
	}
	if r.Startup != nil {
		printStartup(out, r.Startup)
	}
	if r.Storm != nil {
		printStorm(out, r.Storm)
	}
	if r.Patch != nil {
		printPatch(out, r.Patch)
	}
	for _, e := range r.Errors {
		fmt.Fprintf(out, "\nFAILED %s: %s\n", e.Workload, e.Error)
	}
}

func printHeader(out io.Writer, r *Report) {
	m := r.Machine
	fmt.Fprintf(out, "livebolt-bench  %s\n", r.Date.Format(time.RFC3339))
	fmt.Fprintf(out, "machine: %d cores", m.Cores)
	if m.CPUModel != "" {
		fmt.Fprintf(out, " (%s)", m.CPUModel)
	}
	fmt.Fprintf(out, ", %s memory, Linux %s\n", fmtBytes(float64(m.MemTotalBytes)), m.Kernel)
	fmt.Fprintf(out, "go: %s %s/%s, GOMAXPROCS %d\n", m.GoVersion, m.GOOS, m.GOARCH, m.GOMAXPROCS)
	fmt.Fprintf(out, "file limit: %d (hard %d)", m.FileLimit, m.FileLimitHard)
	if m.FileLimitError != "" {
		fmt.Fprintf(out, "; %s", m.FileLimitError)
	}
	kept := "removed at the end"
	if r.Settings.Keep {
		kept = "kept"
	}
	fmt.Fprintf(out, "\nrun: %s, workloads %s, databases in %s (%s)\n",
		(time.Duration(r.ElapsedSeconds * float64(time.Second))).Round(time.Second), strings.Join(r.Settings.Workloads, ","), r.Settings.Dir, kept)
}

func section(out io.Writer, title, detail string) *tabwriter.Writer {
	fmt.Fprintf(out, "\n%s  %s\n", title, detail)
	return tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
}

func printNotes(out io.Writer, notes []string) {
	for _, n := range notes {
		fmt.Fprintf(out, "  note: %s\n", n)
	}
}

func printThroughput(out io.Writer, t *ThroughputResult) {
	w := section(out, "THROUGHPUT", fmt.Sprintf("counter increments, one call in flight per client, each waiting for its reply; %s per target and client count in %d rounds alternating %s",
		time.Duration(t.SecondsPerTarget*float64(time.Second)), t.Rounds, strings.Join(t.Targets, ",")))
	fmt.Fprintln(w, "clients\ttarget\tcalls/s\tp50 ms\tp99 ms\tcalls\terrors\trequest B/call\treply B/call\t")
	for _, row := range t.Rows {
		for _, st := range row.Targets {
			fmt.Fprintf(w, "%d\t%s\t%.0f\t%s\t%s\t%d\t%d\t%.0f\t%.0f\t\n",
				row.Clients, st.Name, st.CallsPerSecond, fmtMs(st.P50Ms), fmtMs(st.P99Ms), st.Calls, st.Errors, st.RequestBytesPerCall, st.ReplyBytesPerCall)
		}
	}
	w.Flush()
	w = section(out, "  throughput ratios", "(calls/s of all rounds; min-max of the single rounds)")
	fmt.Fprintln(w, "clients\tdurable/in-memory\tdurable/echo\t")
	for _, row := range t.Rows {
		fmt.Fprintf(w, "%d\t%s\t%s\t\n", row.Clients, fmtRatio(row.DurableOverMemory), fmtRatio(row.DurableOverEcho))
	}
	w.Flush()
	w = section(out, "  durable commits", "(bbolt transactions, fsync included, during the durable rounds)")
	fmt.Fprintln(w, "clients	commits/s	calls/commit	ms/commit	committer busy	")
	for _, row := range t.Rows {
		if c := row.Commits; c != nil {
			fmt.Fprintf(w, "%d	%.0f	%.1f	%.3f	%.0f%%	\n", row.Clients, c.CommitsPerSec, c.WritesPerCommit, c.MeanCommitMs, 100*c.BusyShare)
		}
	}
	w.Flush()
	for _, row := range t.Rows {
		for _, st := range row.Targets {
			if st.FirstError != "" {
				fmt.Fprintf(out, "  first error, %d clients, %s: %s\n", row.Clients, st.Name, st.FirstError)
			}
		}
	}
	printNotes(out, append(t.Notes,
		"durable is bbolt with fsync on; in-memory is the same server on an in-memory storage.Store; echo returns each frame unchanged",
		"the echo clients send the same call frames; livebolt's reply B/call counts its state reply and the event after it",
		"clients and servers share this process and its cores"))
}

func printIdle(out io.Writer, r *IdleResult) {
	w := section(out, "IDLE", "server memory per connected client with one mounted counter, after GC")
	fmt.Fprintln(w, "clients\tconnected\theap/client\tRSS/client\tstacks/client\tconnect s\theap before\theap connected\theap after leaving\tinstances left\t")
	for _, row := range r.Rows {
		fmt.Fprintf(w, "%d\t%d\t%s\t%s\t%s\t%.1f\t%s\t%s\t%s\t%d\t\n",
			row.Clients, row.Connected, fmtBytes(row.HeapPerClient), fmtBytes(row.RSSPerClient), fmtBytes(row.StackPerClient),
			row.ConnectSeconds, fmtBytes(float64(row.Before.HeapInuse)), fmtBytes(float64(row.During.HeapInuse)),
			fmtBytes(float64(row.AfterDisconnect.HeapInuse)), row.InstancesLeft)
	}
	w.Flush()
	for _, row := range r.Rows {
		if row.ChildFailedCount > 0 {
			fmt.Fprintf(out, "  %d of %d clients failed to connect; first: %s\n", row.ChildFailedCount, row.Clients, row.ChildFirstError)
		}
	}
	printNotes(out, r.Notes)
}

func printSweep(out io.Writer, r *SweepResult) {
	w := section(out, "SWEEP", fmt.Sprintf("age sweep of %d expired sessions among the stored ones, %d rounds alternating between the sizes", r.Expired, r.Rounds))
	fmt.Fprintln(w, "stored\tfill s\tfile\tsweep ms (median)\teach round ms\tratio to first size\t")
	for _, row := range r.Rows {
		rounds := make([]string, len(row.SweepMs))
		for i, v := range row.SweepMs {
			rounds[i] = fmt.Sprintf("%.1f", v)
		}
		fmt.Fprintf(w, "%d\t%s\t%s\t%.1f\t%s\t%s\t\n", row.Stored, fmtFill(row.Fill), fmtBytes(float64(row.FileBytes)),
			row.MedianMs, strings.Join(rounds, " "), fmtRatio(row.RatioToFirst))
	}
	w.Flush()
	printNotes(out, r.Notes)
}

func printStartup(out io.Writer, r *StartupResult) {
	w := section(out, "STARTUP", fmt.Sprintf("app.New then Close, %d rounds alternating between the database of %d stored sessions and an empty one", len(r.OpenMs), r.Stored))
	fmt.Fprintln(w, "database\topen ms (median)\teach round ms\t")
	fmt.Fprintf(w, "%d stored\t%.1f\t%s\t\n", r.Stored, r.OpenMedianMs, joinFloats(r.OpenMs))
	fmt.Fprintf(w, "empty\t%.1f\t%s\t\n", r.EmptyMedianMs, joinFloats(r.EmptyOpenMs))
	fmt.Fprintf(w, "ratio\t%s\t\t\n", fmtRatio(r.OverEmpty))
	w.Flush()
	w = section(out, "  memory around app.New", fmt.Sprintf("(the open of the server the storm uses, %.1f ms; %d instances in memory after it)", r.ServedOpenMs, r.InstancesAfter))
	fmt.Fprintln(w, "\tbefore\tafter\tgrowth\t")
	fmt.Fprintf(w, "heap in use\t%s\t%s\t%s\t\n", fmtBytes(float64(r.BeforeOpen.HeapInuse)), fmtBytes(float64(r.AfterOpen.HeapInuse)), fmtBytes(float64(r.HeapGrowth)))
	fmt.Fprintf(w, "RSS\t%s\t%s\t%s\t\n", fmtBytes(float64(r.BeforeOpen.RSS)), fmtBytes(float64(r.AfterOpen.RSS)), fmtBytes(float64(r.RSSGrowth)))
	w.Flush()
	fmt.Fprintf(out, "  fill %s s; storm sessions mounted in %.1f s\n", fmtFill(r.Fill), r.SetupSeconds)
	printNotes(out, r.Notes)
}

func printStorm(out io.Writer, r *StormResult) {
	w := section(out, "STORM", fmt.Sprintf("%d clients dial, hello with their token and hydrate their counter at once after the restart (at most %d hydrations from the store at once)", r.Clients, r.MaxHydrations))
	fmt.Fprintln(w, "clients\thydrated\tfailed\tall state s\tp50 ms\tp99 ms\theap in use after, clients included\tinstances after\t")
	fmt.Fprintf(w, "%d\t%d\t%d\t%.2f\t%s\t%s\t%s\t%d\t\n", r.Clients, r.Hydrated, r.Failed, r.AllStateSeconds, fmtMs(r.P50Ms), fmtMs(r.P99Ms),
		fmtBytes(float64(r.AfterStorm.HeapInuse)), r.InstancesAfter)
	w.Flush()
	for reason, n := range r.Failures {
		fmt.Fprintf(out, "  failed: %d x %s\n", n, reason)
	}
	if r.FirstFailure != "" {
		fmt.Fprintf(out, "  first failure: %s\n", r.FirstFailure)
	}
	printNotes(out, []string{
		"times are from the moment all clients start dialing; \"all state s\" is when the last successful client had its state",
		"the clients stay connected until all are done; the heap after the storm counts their connections too, since they run in this process",
	})
}

func fmtRatio(r *Ratio) string {
	if r == nil {
		return "n/a"
	}
	if r.Rounds < 2 {
		return fmt.Sprintf("%#.3g", r.Value)
	}
	return fmt.Sprintf("%#.3g (%#.3g-%#.3g)", r.Value, r.Min, r.Max)
}

// fmtMs prints milliseconds with about three significant digits.
func fmtMs(v float64) string {
	switch {
	case v < 0.1:
		return fmt.Sprintf("%.3f", v)
	case v < 10:
		return fmt.Sprintf("%.2f", v)
	case v < 100:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.0f", v)
	}
}

func fmtBytes(b float64) string {
	abs := math.Abs(b)
	switch {
	case abs >= 1<<30:
		return fmt.Sprintf("%.1f GiB", b/(1<<30))
	case abs >= 1<<20:
		return fmt.Sprintf("%.1f MiB", b/(1<<20))
	case abs >= 1<<10:
		return fmt.Sprintf("%.1f KiB", b/(1<<10))
	default:
		return fmt.Sprintf("%.0f B", b)
	}
}

func joinFloats(xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprintf("%.1f", x)
	}
	return strings.Join(parts, " ")
}

// fmtFill prints a fill time, marking a copy of an earlier workload's fill.
func fmtFill(f FillInfo) string {
	if f.Copied {
		return fmt.Sprintf("%.1f (copied)", f.Seconds)
	}
	return fmt.Sprintf("%.1f", f.Seconds)
}

func printPatch(out io.Writer, r *PatchResult) {
	w := section(out, "PATCH", fmt.Sprintf("bytes the server sends per change of a todo list of %d items, full states against patches", r.Items))
	fmt.Fprintln(w, "operation\tcalls\tfull B/call\tpatch B/call\tpatch/full\tfull p50 ms\tpatch p50 ms\t")
	for _, row := range r.Rows {
		fmt.Fprintf(w, "%s\t%d\t%.0f\t%.0f\t%.4f\t%s\t%s\t\n", row.Operation, row.Calls, row.FullBytes, row.PatchBytes, row.Ratio, fmtMs(row.FullP50Ms), fmtMs(row.PatchP50Ms))
	}
	_ = w.Flush()
	printNotes(out, r.Notes)
}
