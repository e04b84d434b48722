//go:build unix

// Crash-safety tests of the livebolt binary: SIGKILL and SIGTERM while many
// clients call actions, a damaged session record, and a database written by
// a newer build. They use the harness of e2e_test.go. The last two edit the
// database file directly with bbolt while no server has it open.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/livebolt/livebolt/storage/boltdb"
	bolt "go.etcd.io/bbolt"
)

const (
	// crashMinDelay and crashMaxDelay bound the random time the load runs
	// before the server is killed or stopped.
	crashMinDelay = 300 * time.Millisecond
	crashMaxDelay = 1500 * time.Millisecond

	// loadTimeBound and loadMaxCalls bound each client's loop in one round,
	// in case the server keeps replying and never stops.
	loadTimeBound = crashMaxDelay + 10*time.Second
	loadMaxCalls  = 1_000_000

	// sigtermShutdownTimeout is the --shutdown-timeout of TestSIGTERMUnderLoad.
	sigtermShutdownTimeout = 5 * time.Second
)

// errConnectionEnded is returned by tryRequest when the connection ended
// before the reply arrived. wsClient.readErr then contains the reason.
var errConnectionEnded = errors.New("connection ended before the reply")

// tryRequest sends m with a fresh ref and returns the frame echoing that ref.
// Unlike request it never calls t.Fatal, so goroutines other than the test's
// can use it. It returns an error when the connection ends first (wrapping
// errConnectionEnded), when another frame arrives instead, or when no reply
// comes within timeout.

// loadFlags lift the per-connection message limit (100 a second by
// default), because these clients call as fast as the server replies.
var loadFlags = []string{"--max-messages-per-second", "1000000", "--message-burst", "1000000"}

func (c *wsClient) tryRequest(m obj, timeout time.Duration) (obj, error) {
	c.ref++
	ref := c.ref
	m["ref"] = ref
	data, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()

	_ = c.conn.SetWriteDeadline(time.Now().Add(timeout))
	if werr := c.conn.WriteMessage(websocket.TextMessage, data); werr != nil {
		// The server may have closed the connection first, and then readErr
		// contains its close frame.
		select {
		case <-c.done:
			return nil, fmt.Errorf("write %s: %v: %w", data, werr, errConnectionEnded)
		case <-timer.C:
			return nil, fmt.Errorf("write %s: %w", data, werr)
		}
	}

	match := func(f obj) (obj, error) {
		if r, ok := f["ref"].(float64); ok && r == float64(ref) {
			return f, nil
		}
		return nil, fmt.Errorf("frame %s while waiting for the reply to %s", dump(f), data)
	}
	select {
	case f := <-c.frames:
		return match(f)
	case <-c.done:
		// The reply may have been queued just before the connection ended.
		select {
		case f := <-c.frames:
			return match(f)
		default:
		}
		return nil, fmt.Errorf("%s: %w", data, errConnectionEnded)
	case <-timer.C:
		return nil, fmt.Errorf("no reply within %v to %s", timeout, data)
	}
}

// closedWith reports whether the connection ended with a close frame
// carrying code. Call it only after c.done is closed.
func (c *wsClient) closedWith(code int) bool {
	var ce *websocket.CloseError
	return errors.As(c.readErr, &ce) && ce.Code == code
}

// discard closes a connection whose server is gone or is going away.
func (c *wsClient) discard() {
	c.stop()
	_ = c.conn.Close()
}

// loadClient is one client of the load, with its own token and one counter
// mounted with initial 0 and step 1, so count == version-1 in every state.
type loadClient struct {
	name     string
	token    string
	clientID string
	counter  *comp // version and state are the last acknowledged ones
	ws       *wsClient

	// startLoad resets the fields below, the load goroutine writes them and
	// counter, and the test reads them only after done is closed.
	done        chan struct{}
	acks        int            // calls acknowledged in the current round
	outstanding bool           // the last call was sent and got no reply
	errorCodes  map[string]int // error replies to calls, by code
	end         error          // why the round's loop ended
	problem     string         // first reply that broke the protocol, or ""
}

// mountLoad connects n new clients to srv and mounts one counter for each.
func mountLoad(t *testing.T, srv *e2eServer, n int) []*loadClient {
	t.Helper()
	clients := make([]*loadClient, 0, n)
	for i := range n {
		name := fmt.Sprintf("load-%02d", i)
		ws := srv.dial(t, name)
		w := ws.hello(t, "")
		counter := ws.mount(t, "counter", nil, fmt.Sprintf("load%02d", i))
		if count, step := jnum(t, counter.state, "count"), jnum(t, counter.state, "step"); count != 0 || step != 1 {
			t.Fatalf("%s: counter mounted without props has count %v and step %v, want 0 and 1", name, count, step)
		}
		clients = append(clients, &loadClient{
			name:     name,
			token:    w["token"].(string),
			clientID: w["clientId"].(string),
			counter:  counter,
			ws:       ws,
		})
	}
	return clients
}

// startLoad starts one goroutine per client that calls increment, one call
// at a time, until its connection ends.
func startLoad(clients []*loadClient) {
	deadline := time.Now().Add(loadTimeBound)
	for _, lc := range clients {
		lc.done = make(chan struct{})
		lc.acks = 0
		lc.outstanding = false
		lc.errorCodes = map[string]int{}
		lc.end = nil
		lc.problem = ""
		go lc.run(deadline)
	}
}

func (lc *loadClient) run(deadline time.Time) {
	defer close(lc.done)
	for range loadMaxCalls {
		if time.Now().After(deadline) {
			lc.end = fmt.Errorf("load stopped at its time bound of %v", loadTimeBound)
			return
		}
		// A call counts as outstanding from before its write: a failed
		// write may still have delivered the frame.
		lc.outstanding = true
		reply, err := lc.ws.tryRequest(obj{"type": "call", "id": lc.counter.id, "action": "increment", "args": []any{}}, e2eReplyTimeout)
		if err != nil {
			lc.end = err
			return
		}
		lc.outstanding = false
		switch reply["type"] {
		case "state":
			lc.acknowledge(reply)
		case "error":
			code, _ := reply["code"].(string)
			lc.errorCodes[code]++
		default:
			lc.problem = fmt.Sprintf("reply to increment is neither state nor error: %s", dump(reply))
		}
		if lc.problem != "" {
			lc.end = errors.New("load stopped at a protocol violation")
			return
		}
	}
	lc.end = fmt.Errorf("load stopped after %d calls", loadMaxCalls)
}

// acknowledge checks a state reply to increment and records it.
func (lc *loadClient) acknowledge(reply obj) {
	version, _ := reply["version"].(float64)
	state, _ := reply["state"].(obj)
	count, _ := state["count"].(float64)
	want := lc.counter.version + 1
	if reply["id"] != lc.counter.id || version != want || count != want-1 {
		lc.problem = fmt.Sprintf("reply to increment after version %v: %s, want id %q, version %v and count %v",
			lc.counter.version, dump(reply), lc.counter.id, want, want-1)
		return
	}
	lc.counter.version = version
	lc.counter.state = state
	lc.acks++
}

// waitLoad waits until every load goroutine has ended.
func waitLoad(t *testing.T, clients []*loadClient, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for _, lc := range clients {
		select {
		case <-lc.done:
		case <-deadline:
			t.Fatalf("%s: load goroutine still running %v after the server was stopped", lc.name, timeout)
		}
	}
}

// checkLoadProblems reports protocol violations seen by the load goroutines.
// With errorsAllowed false, an error reply to a call is one too.
func checkLoadProblems(t *testing.T, clients []*loadClient, errorsAllowed bool) {
	t.Helper()
	for _, lc := range clients {
		if lc.problem != "" {
			t.Errorf("%s: %s", lc.name, lc.problem)
		}
		if !errorsAllowed && len(lc.errorCodes) > 0 {
			t.Errorf("%s: error replies to increment under load, by code: %v", lc.name, lc.errorCodes)
		}
		if !errors.Is(lc.end, errConnectionEnded) {
			t.Errorf("%s: load ended with %v, want the connection to end when the server stops", lc.name, lc.end)
		}
	}
}

// sumAcks returns the calls acknowledged in the round over all clients.
func sumAcks(clients []*loadClient) int {
	n := 0
	for _, lc := range clients {
		n += lc.acks
	}
	return n
}

// resumeLoad reconnects every client to srv with its token and hydrates its
// counter. It checks that the restored version is the last acknowledged one,
// or one more when a call was outstanding, and that count == version-1.
// It returns the acknowledged updates that were lost and how many
// outstanding calls had committed.
func resumeLoad(t *testing.T, srv *e2eServer, clients []*loadClient, round int) (lost, committed int) {
	t.Helper()
	for _, lc := range clients {
		acked := lc.counter.version
		ws := srv.dial(t, fmt.Sprintf("%s-round-%d", lc.name, round))
		w := ws.hello(t, lc.token)
		if w["resumed"] != true || w["clientId"] != lc.clientID {
			t.Errorf("%s: hello with its token after restart: want resumed client %q, got %s", lc.name, lc.clientID, dump(w))
			lost += int(acked)
			continue
		}
		r, sent := ws.hydrateRaw(t, lc.counter.id, lc.counter.fp)
		if r["type"] != "state" {
			t.Errorf("%s: hydrate after restart: want its state with version >= %v in reply to %s, got %s", lc.name, acked, sent, dump(r))
			lost += int(acked)
			continue
		}
		version := jnum(t, r, "version")
		count := jnum(t, r, "state.count")
		if step := jnum(t, r, "state.step"); step != 1 {
			t.Errorf("%s: restored step %v, want 1", lc.name, step)
		}
		switch {
		case version < acked:
			t.Errorf("%s: restored version %v is below the last acknowledged version %v", lc.name, version, acked)
			lost += int(acked - version)
		case version > acked+1:
			t.Errorf("%s: restored version %v, but the last acknowledged version is %v and at most one call was outstanding", lc.name, version, acked)
		case version == acked+1 && !lc.outstanding:
			t.Errorf("%s: restored version %v is one above the last acknowledged %v, yet no call was outstanding", lc.name, version, acked)
		case version == acked+1:
			committed++
		}
		if count != version-1 {
			t.Errorf("%s: restored count %v at version %v, want %v (count == version-1)", lc.name, count, version, version-1)
		}
		lc.counter.version = version
		lc.counter.state = jobj(t, r, "state")
		if fp, ok := r["fingerprint"].(string); ok && fp != "" {
			lc.counter.fp = fp
		}
		lc.outstanding = false
		lc.ws = ws
	}
	return lost, committed
}

func randomCrashDelay() time.Duration {
	return crashMinDelay + rand.N(crashMaxDelay-crashMinDelay)
}

// TestCrashKeepsAcknowledgedState kills the server with SIGKILL while every
// client calls increment as fast as it can, restarts it on the same data
// folder and checks that no acknowledged update was lost, in several rounds.
func TestCrashKeepsAcknowledgedState(t *testing.T) {
	nClients, rounds := 50, 5
	if testing.Short() {
		nClients, rounds = 10, 2
	}
	e := buildBinary(t)
	data := t.TempDir()
	srv := e.startData(t, "crash-round-1", data, nil, loadFlags...)
	clients := mountLoad(t, srv, nClients)

	acknowledged, lost := 0, 0
	for round := 1; round <= rounds; round++ {
		delay := randomCrashDelay()
		startLoad(clients)
		time.Sleep(delay)
		srv.kill(t)
		waitLoad(t, clients, 2*e2eReplyTimeout)
		for _, lc := range clients {
			lc.ws.discard()
		}
		checkLoadProblems(t, clients, false)
		acks := sumAcks(clients)
		outstanding := 0
		for _, lc := range clients {
			if lc.outstanding {
				outstanding++
			}
		}
		if acks == 0 {
			t.Errorf("round %d: no call acknowledged in the %v before SIGKILL", round, delay)
		}
		acknowledged += acks

		srv = e.startData(t, fmt.Sprintf("crash-round-%d", round+1), data, nil, loadFlags...)
		roundLost, committed := resumeLoad(t, srv, clients, round)
		lost += roundLost
		t.Logf("round %d: SIGKILL after %v: %d calls acknowledged, %d outstanding, %d of those committed, %d acknowledged updates lost",
			round, delay.Round(time.Millisecond), acks, outstanding, committed, roundLost)
		if t.Failed() {
			break
		}
	}
	t.Logf("%d acknowledged updates, %d lost", acknowledged, lost)
	if lost > 0 {
		t.Errorf("%d of %d acknowledged updates were lost after SIGKILL", lost, acknowledged)
	}
}

// TestSIGTERMUnderLoad stops the server with SIGTERM while every client
// calls increment as fast as it can. Every call must get its reply or be cut
// by the close with 1012, the process must exit 0 within the shutdown
// timeout, and after a restart no acknowledged update may be missing.
func TestSIGTERMUnderLoad(t *testing.T) {
	nClients := 50
	if testing.Short() {
		nClients = 10
	}
	e := buildBinary(t)
	data := t.TempDir()
	srv := e.startData(t, "sigterm-load", data, nil, append([]string{"--shutdown-timeout", sigtermShutdownTimeout.String()}, loadFlags...)...)
	clients := mountLoad(t, srv, nClients)

	delay := randomCrashDelay()
	startLoad(clients)
	time.Sleep(delay)
	signalled := time.Now()
	if err := srv.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	waitLoad(t, clients, sigtermShutdownTimeout+e2eReplyTimeout)
	if !srv.waitExit(sigtermShutdownTimeout + 5*time.Second) {
		t.Fatalf("process still running %v after SIGTERM (--shutdown-timeout %v)", time.Since(signalled).Round(time.Millisecond), sigtermShutdownTimeout)
	}
	// An upper bound: the process may have exited before the clients
	// finished reading.
	exitedAfter := time.Since(signalled)
	if srv.waitErr != nil {
		t.Errorf("after SIGTERM under load: process exit: %v, want status 0", srv.waitErr)
	}
	if exitedAfter > sigtermShutdownTimeout {
		t.Errorf("after SIGTERM under load: process exited after %v, want within --shutdown-timeout %v", exitedAfter.Round(time.Millisecond), sigtermShutdownTimeout)
	}

	checkLoadProblems(t, clients, true)
	acks := sumAcks(clients)
	answeredWithError, cut := 0, 0
	errorCodes := map[string]int{}
	for _, lc := range clients {
		for code, n := range lc.errorCodes {
			answeredWithError += n
			errorCodes[code] += n
		}
		if !lc.ws.closedWith(websocket.CloseServiceRestart) {
			t.Errorf("%s: connection ended with %v, want a close frame with code 1012", lc.name, lc.ws.readErr)
			continue
		}
		if lc.outstanding {
			cut++
		}
		lc.ws.discard()
	}
	if acks == 0 {
		t.Errorf("no call acknowledged in the %v before SIGTERM", delay)
	}
	t.Logf("SIGTERM after %v: %d calls acknowledged, %d answered with an error %v, %d cut by close 1012 before the reply; process exited within %v",
		delay.Round(time.Millisecond), acks, answeredWithError, errorCodes, cut, exitedAfter.Round(time.Millisecond))

	srv2 := e.startData(t, "sigterm-load-restarted", data, nil)
	lost, committed := resumeLoad(t, srv2, clients, 1)
	t.Logf("after restart: %d of the %d calls cut by the close had committed, %d acknowledged updates lost", committed, cut, lost)
	if lost > 0 {
		t.Errorf("%d of %d acknowledged updates were lost after SIGTERM", lost, acks)
	}
}

// terminate stops srv with SIGTERM and checks that it exits with status 0.
func terminate(t *testing.T, srv *e2eServer) {
	t.Helper()
	if err := srv.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM %s: %v", srv.name, err)
	}
	if !srv.waitExit(15 * time.Second) {
		t.Fatalf("server %s still running 15s after SIGTERM", srv.name)
	}
	if srv.waitErr != nil {
		t.Fatalf("server %s after SIGTERM: process exit: %v, want status 0", srv.name, srv.waitErr)
	}
}

// updateDatabase opens the database file of a stopped server with bbolt
// and runs fn in one write transaction.
func updateDatabase(t *testing.T, path string, fn func(tx *bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		t.Fatalf("open %s with bbolt: %v", path, err)
	}
	if err := db.Update(fn); err != nil {
		_ = db.Close()
		t.Fatalf("update %s with bbolt: %v", path, err)
	}
	if err := db.Close(); err != nil {
		t.Fatalf("close %s: %v", path, err)
	}
}

// flipSessionByte inverts the lowest bit of the middle byte of session id's
// value in the sessions bucket. The value is a CRC-32C followed by the JSON
// record, so the middle byte is inside the record.
func flipSessionByte(t *testing.T, path, id string) {
	t.Helper()
	updateDatabase(t, path, func(tx *bolt.Tx) error {
		sessions := tx.Bucket([]byte("sessions"))
		if sessions == nil {
			return errors.New("bucket sessions not found")
		}
		value := sessions.Get([]byte(id))
		if value == nil {
			return fmt.Errorf("session %q not found in bucket sessions", id)
		}
		// bbolt's value is valid only inside the transaction and must not
		// be modified, so change a copy.
		damaged := bytes.Clone(value)
		i := len(damaged) / 2
		damaged[i] ^= 0x01
		t.Logf("session %s: byte %d of %d changed from %q to %q", id, i, len(damaged), value[i], damaged[i])
		return sessions.Put([]byte(id), damaged)
	})
}

// TestCorruptSessionRejected damages one stored session record and checks
// that its owner's hydrate gets invalid_checksum, the session is deleted and
// counted, and every other session hydrates unchanged.
func TestCorruptSessionRejected(t *testing.T) {
	e := buildBinary(t)
	data := t.TempDir()
	srv := e.startData(t, "corrupt-first", data, nil)

	owner := srv.dial(t, "owner")
	ownerToken := owner.hello(t, "")["token"].(string)
	intact := owner.mount(t, "counter", obj{"initial": 5}, "intact")
	owner.increment(t, intact)
	owner.increment(t, intact)
	damaged := owner.mount(t, "counter", obj{"initial": 100, "step": 7}, "damaged")
	for range 3 {
		owner.increment(t, damaged)
	}
	todo := owner.mount(t, "todo", nil, "")
	owner.call(t, todo, "add", "a")
	owner.call(t, todo, "add", "b")
	owner.call(t, todo, "toggle", 0)

	otherClient := srv.dial(t, "other")
	otherToken := otherClient.hello(t, "")["token"].(string)
	otherCounter := otherClient.mount(t, "counter", obj{"initial": 1}, "other")
	otherClient.increment(t, otherCounter)
	toggle := otherClient.mount(t, "toggle", nil, "")
	otherClient.call(t, toggle, "toggle")
	ownerComps := []*comp{intact, todo}
	otherComps := []*comp{otherCounter, toggle}
	total := float64(len(ownerComps) + len(otherComps) + 1)

	terminate(t, srv)
	flipSessionByte(t, filepath.Join(data, "livebolt.db"), damaged.id)

	srv2 := e.startData(t, "corrupt-restarted", data, nil)
	st := srv2.stats(t)
	if n := sessions(st); n != total {
		t.Fatalf("after restart: totalSessions %v, want %v", n, total)
	}
	if n := numOr(st, "hydration.rejected.invalid_checksum", 0); n != 0 {
		t.Errorf("after restart: hydration.rejected.invalid_checksum %v before any hydrate, want 0", n)
	}

	ownerAgain := srv2.dial(t, "owner-again")
	ownerAgain.hello(t, ownerToken)
	r, sent := ownerAgain.hydrateRaw(t, damaged.id, damaged.fp)
	expectError(t, r, "invalid_checksum", sent)
	if r["requiresRefresh"] != true {
		t.Errorf("invalid_checksum reply to %s: requiresRefresh %s, want true", sent, dump(r["requiresRefresh"]))
	}
	st = srv2.stats(t)
	if n := sessions(st); n != total-1 {
		t.Errorf("after the invalid_checksum: totalSessions %v, want %v (the damaged session deleted)", n, total-1)
	}
	if n := numOr(st, "hydration.rejected.invalid_checksum", -1); n != 1 {
		t.Errorf("after the invalid_checksum: hydration.rejected.invalid_checksum %v, want 1; rejected: %s", n, dump(jobj(t, st, "hydration")["rejected"]))
	}
	r, sent = ownerAgain.hydrateRaw(t, damaged.id, damaged.fp)
	expectError(t, r, "not_found", sent)

	for _, cp := range ownerComps {
		ownerAgain.hydrate(t, cp)
	}
	otherAgain := srv2.dial(t, "other-again")
	otherAgain.hello(t, otherToken)
	for _, cp := range otherComps {
		otherAgain.hydrate(t, cp)
	}
	if n := sessions(srv2.stats(t)); n != total-1 {
		t.Errorf("after hydrating the other sessions: totalSessions %v, want %v", n, total-1)
	}
}

// TestFutureSchemaRefused raises the stored schema version above the
// binary's and checks that the start fails within a few seconds, names both
// versions and the file, and leaves the file unchanged.
func TestFutureSchemaRefused(t *testing.T) {
	e := buildBinary(t)
	data := t.TempDir()
	path := filepath.Join(data, "livebolt.db")
	srv := e.startData(t, "schema-first", data, nil)
	c := srv.dial(t, "client")
	c.hello(t, "")
	c.mount(t, "counter", nil, "")
	terminate(t, srv)

	// A version far above the binary's is easy to find in the message.
	future := boltdb.SchemaVersion + 100
	updateDatabase(t, path, func(tx *bolt.Tx) error {
		meta := tx.Bucket([]byte("meta"))
		if meta == nil {
			return errors.New("bucket meta not found")
		}
		if got := string(meta.Get([]byte("schema_version"))); got != strconv.Itoa(boltdb.SchemaVersion) {
			return fmt.Errorf("meta.schema_version is %q, want the binary's %d", got, boltdb.SchemaVersion)
		}
		return meta.Put([]byte("schema_version"), []byte(strconv.Itoa(future)))
	})
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}

	out, code, elapsed, timedOut := e.runToExit(t, 10*time.Second, nil, "--addr", "127.0.0.1:0", "--data", data)
	if timedOut {
		t.Fatalf("server on a database with schema version %d did not exit within 10s:\n%s", future, out)
	}
	if code == 0 {
		t.Errorf("server on a database with schema version %d exited with status 0:\n%s", future, out)
	}
	if elapsed > 5*time.Second {
		t.Errorf("server on a database with schema version %d took %v to exit, want at most 5s", future, elapsed.Round(time.Millisecond))
	}
	var message string
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, path) {
			message = line
			break
		}
	}
	if message == "" {
		t.Errorf("no line of the output names the file %s:\n%s", path, out)
	}
	// Drop the timestamp and the path, whose digits could match a version.
	rest := regexp.MustCompile(`\btime=\S+`).ReplaceAllString(strings.ReplaceAll(message, path, ""), "")
	for _, version := range []int{future, boltdb.SchemaVersion} {
		if !regexp.MustCompile(`(^|\D)` + strconv.Itoa(version) + `(\D|$)`).MatchString(rest) {
			t.Errorf("message naming the file does not name version %d (file %d, binary %d): %s", version, future, boltdb.SchemaVersion, message)
		}
	}
	after, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Errorf("database file changed by the failed start: %d bytes before, %d after", len(before), len(after))
	}
	t.Logf("schema version %d: exit %d after %v: %s", future, code, elapsed.Round(time.Millisecond), strings.TrimSpace(out))
}
