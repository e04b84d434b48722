package live

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"log/slog"
	"path/filepath"
	"reflect"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/livebolt/livebolt/storage/boltdb"
)

// FuzzHandle feeds arbitrary frames to Conn.Handle and checks what must hold
// for any input.
//
// An input is split on '\n' into at most fuzzMaxLines lines. Each line is a
// frame for connection 1, or for connection 2 when it starts with "2>". In a
// frame, $TOKEN, $ID and $FP are replaced by the last token, component id and
// fingerprint the server sent, so that one input can mount a component and
// then call, hydrate or unmount it. Two lines are commands rather than
// frames: "!" closes the connection and opens a new one in its place, and
// "~" moves the clock 45 s forward (sessions expire after 60 s unused).
//
// After each frame the test checks that:
//   - Handle did not panic, and its own recover did not fire either.
//   - Every message sent is valid UTF-8 JSON, an object whose "type" is a
//     server message type.
//   - The sending connection got exactly one reply (welcome, state,
//     unmounted or error), with the frame's "ref" whenever that reads as an
//     integer, plus only events that follow a state reply.
//   - The other connection got only broadcasts, and errors without ref that
//     name a component the frame took from it.
//   - Every error has a code from errors.go other than internal (the store
//     is healthy and testRegistry's components encode their state), a
//     message and requiresRefresh.
//   - Every instance in memory belongs to exactly one open connection.
//
// Once both connections are closed, no instance may be left in memory.
func FuzzHandle(f *testing.F) {
	for _, seed := range []string{
		// A whole session on one connection.
		`{"type":"hello","ref":1}
{"type":"mount","ref":2,"component":"counter","props":{"initial":5},"key":"main"}
{"type":"call","ref":3,"id":"$ID","action":"inc","args":[]}
{"type":"call","ref":4,"id":"$ID","action":"add","args":[10]}
{"type":"unmount","ref":5,"id":"$ID"}`,
		// A second tab resumes the client, takes the component over and
		// broadcasts. The first tab then no longer has it.
		`{"type":"hello","ref":1}
{"type":"mount","ref":2,"component":"counter","key":"tab"}
2>{"type":"hello","ref":1,"token":"$TOKEN"}
2>{"type":"hydrate","ref":2,"id":"$ID","fingerprint":"$FP"}
{"type":"call","ref":3,"id":"$ID","action":"inc"}
2>{"type":"call","ref":3,"id":"$ID","action":"shout"}`,
		// Hydration from the store after a reconnect.
		`{"type":"hello"}
{"type":"mount","component":"counter","props":{"initial":2}}
!
{"type":"hello","token":"$TOKEN"}
{"type":"hydrate","ref":9,"id":"$ID","fingerprint":"$FP"}
{"type":"call","ref":10,"id":"$ID","action":"inc"}`,
		// Actions that fail, panic and outgrow the state limit roll back.
		`{"type":"hello"}
{"type":"mount","component":"counter"}
{"type":"call","ref":1,"id":"$ID","action":"fail"}
{"type":"call","ref":2,"id":"$ID","action":"boom"}
{"type":"call","ref":3,"id":"$ID","action":"grow"}
{"type":"call","ref":4,"id":"$ID","action":"inc"}`,
		// Wrong fingerprints until the attempts run out.
		`{"type":"hello"}
{"type":"mount","component":"counter"}
2>{"type":"hello","token":"$TOKEN"}
2>{"type":"hydrate","ref":1,"id":"$ID","fingerprint":"wrong"}
2>{"type":"hydrate","ref":2,"id":"$ID","fingerprint":"wrong"}
2>{"type":"hydrate","ref":3,"id":"$ID","fingerprint":"wrong"}
2>{"type":"hydrate","ref":4,"id":"$ID","fingerprint":"$FP"}
{"type":"call","ref":5,"id":"$ID","action":"inc"}`,
		// Patches on a connection that asked for them, including a
		// reversal that sends the full state and a move to a connection
		// that did not ask.
		`{"type":"hello","features":["patch"]}
{"type":"mount","component":"counter"}
{"type":"call","ref":1,"id":"$ID","action":"push"}
{"type":"call","ref":2,"id":"$ID","action":"push"}
{"type":"call","ref":3,"id":"$ID","action":"inc"}
{"type":"call","ref":4,"id":"$ID","action":"reverse"}
{"type":"call","ref":5,"id":"$ID","action":"fail"}
{"type":"call","ref":6,"id":"$ID","action":"push"}
2>{"type":"hello","token":"$TOKEN"}
2>{"type":"hydrate","ref":1,"id":"$ID","fingerprint":"$FP"}
2>{"type":"call","ref":2,"id":"$ID","action":"push"}
{"type":"hydrate","ref":7,"id":"$ID","fingerprint":"$FP"}
{"type":"call","ref":8,"id":"$ID","action":"push"}`,
		`not json`,
		`{"type":"call","ref":7,"args":"notalist"}`,
		`{"type":"launch","ref":1}`,
		`{"type":"mount","ref":1,"component":"counter"}`,
	} {
		f.Add([]byte(seed))
	}

	// Creating a bbolt file takes about 1 ms, several times a whole input,
	// while emptying one takes about 10 us. So each fuzz process opens one
	// store and every input starts by emptying it.
	store, err := boltdb.Open(filepath.Join(f.TempDir(), "fuzz.db"), &boltdb.Options{NoSync: true})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = store.Close() })
	codes, err := documentedErrorCodes("errors.go")
	if err != nil {
		f.Fatal(err)
	}

	f.Fuzz(func(t *testing.T, input []byte) {
		if _, err := store.DeleteAllSessions(); err != nil {
			t.Fatalf("emptying the store failed: %v", err)
		}
		clk := &clock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
		logs := &panicLog{}
		e, err := New(Options{
			Store: store, Registry: testRegistry(t), Secret: []byte(strings.Repeat("k", 32)),
			MaxAge: time.Minute, MaxAttempts: 3, Now: clk.Now,
			Limits: Limits{MaxStateBytes: 1024}, Logger: slog.New(logs),
		})
		if err != nil {
			t.Fatal(err)
		}
		s := &fuzzSession{engine: e, clock: clk, logs: logs, codes: codes}

		// Handle runs in another goroutine so that a frame that blocks
		// fails the input instead of stalling the fuzzer.
		// NOTE: frames are handled one at a time, so this test finds no
		// races. TestHydrateRaceKeepsOneInstance covers concurrent frames.
		done := make(chan error, 1)
		go func() { done <- s.run(input) }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("%v\nconversation:\n%s", err, s.conversation())
			}
			if testing.Verbose() {
				t.Logf("conversation:\n%s", s.conversation())
			}
		case <-time.After(fuzzInputTimeout):
			t.Fatalf("input timed out after %s at line %d\nconversation:\n%s", fuzzInputTimeout, s.line.Load()+1, s.conversation())
		}
	})
}

const (
	fuzzMaxLines     = 64
	fuzzInputTimeout = 10 * time.Second
)

// fuzzReplyTypes are the message types sent in reply to a client frame.
// Events and broadcasts are pushed, not sent in reply.
var fuzzReplyTypes = map[string]bool{TypeWelcome: true, TypeState: true, TypePatch: true, TypeUnmounted: true, TypeError: true}

// rawOutbox keeps a copy of every message sent to it, unparsed, so that the
// checks see exactly the bytes the server produced.
type rawOutbox struct {
	mu   sync.Mutex
	msgs [][]byte
}

func (o *rawOutbox) Send(msg []byte) {
	o.mu.Lock()
	o.msgs = append(o.msgs, bytes.Clone(msg))
	o.mu.Unlock()
}

func (o *rawOutbox) take() [][]byte {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := o.msgs
	o.msgs = nil
	return out
}

// panicLog is a slog.Handler that keeps the records of Handle's own recover.
// A panic inside a component action is recovered earlier and logged as
// "component panicked", which is expected.
type panicLog struct {
	mu      sync.Mutex
	records []string
}

func (l *panicLog) Enabled(context.Context, slog.Level) bool { return true }

func (l *panicLog) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "message handler panicked" {
		return nil
	}
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, "\n%s: %v", a.Key, a.Value)
		return true
	})
	l.mu.Lock()
	l.records = append(l.records, b.String())
	l.mu.Unlock()
	return nil
}

func (l *panicLog) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *panicLog) WithGroup(string) slog.Handler      { return l }

func (l *panicLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.records
	l.records = nil
	return out
}

// fuzzSession is the state of one fuzz input: two connection slots and the
// values that replace the placeholders.
type fuzzSession struct {
	engine *Engine
	clock  *clock
	logs   *panicLog
	conns  [2]*Conn
	outs   [2]*rawOutbox
	codes  map[string]bool
	line   atomic.Int32

	mu         sync.Mutex // guards transcript, which the test goroutine reads after a timeout
	transcript []string

	token, id, fp string

	// seen is what each connection was last sent of each component, the
	// copy a client following the protocol keeps.
	seen [2]map[string]seenState
}

// seenState is a client's copy of one component's state.
type seenState struct {
	version uint64
	state   json.RawMessage
}

// serverMessage contains the fields of every server message that the checks read.
type serverMessage struct {
	Type            string          `json:"type"`
	Ref             *int64          `json:"ref"`
	ID              string          `json:"id"`
	Code            *string         `json:"code"`
	Message         *string         `json:"message"`
	RequiresRefresh *bool           `json:"requiresRefresh"`
	ClientID        string          `json:"clientId"`
	Token           string          `json:"token"`
	Component       string          `json:"component"`
	Fingerprint     string          `json:"fingerprint"`
	State           json.RawMessage `json:"state"`
	Version         uint64          `json:"version"`
	Base            *uint64         `json:"base"`
	Patch           json.RawMessage `json:"patch"`
	Event           string          `json:"event"`
}

func (s *fuzzSession) run(input []byte) error {
	for i := range s.conns {
		s.connect(i)
	}
	lines := bytes.Split(input, []byte("\n"))
	if len(lines) > fuzzMaxLines {
		lines = lines[:fuzzMaxLines]
	}
	for i, line := range lines {
		s.line.Store(int32(i))
		if err := s.step(line); err != nil {
			return fmt.Errorf("line %d %q: %w", i+1, line, err)
		}
	}
	for i := range s.conns {
		s.conns[i].Close()
	}
	st := s.engine.Stats()
	if st.InstanceCount != 0 || st.ConnectionCount != 0 {
		return fmt.Errorf("after closing every connection: %d instances and %d connections left in memory, want 0 and 0", st.InstanceCount, st.ConnectionCount)
	}
	return s.checkInstances()
}

func (s *fuzzSession) connect(slot int) {
	s.seen[slot] = map[string]seenState{}
	s.outs[slot] = &rawOutbox{}
	s.conns[slot] = s.engine.Connect(s.outs[slot])
}

func (s *fuzzSession) step(line []byte) error {
	slot := 0
	if rest, ok := bytes.CutPrefix(line, []byte("2>")); ok {
		slot, line = 1, rest
	}
	switch string(line) {
	case "!":
		s.record(fmt.Sprintf("%d: close and reconnect", slot+1))
		s.conns[slot].Close()
		if err := s.checkInstances(); err != nil {
			return fmt.Errorf("after closing connection %d: %w", slot+1, err)
		}
		if got := s.outs[slot].take(); len(got) != 0 {
			return fmt.Errorf("closing connection %d sent %q", slot+1, got)
		}
		s.connect(slot)
		return nil
	case "~":
		s.record("clock +45s")
		s.clock.Advance(45 * time.Second)
		return nil
	}
	frame := bytes.ReplaceAll(line, []byte("$TOKEN"), []byte(s.token))
	frame = bytes.ReplaceAll(frame, []byte("$ID"), []byte(s.id))
	frame = bytes.ReplaceAll(frame, []byte("$FP"), []byte(s.fp))

	s.record(fmt.Sprintf("%d> %.300q", slot+1, frame))
	heldBefore := s.heldIDs()
	if err := handleNoPanic(s.conns[slot], frame); err != nil {
		return err
	}
	if recs := s.logs.take(); len(recs) != 0 {
		return fmt.Errorf("frame %q: the handler panicked and recovered:\n%s", frame, strings.Join(recs, "\n---\n"))
	}
	if err := s.checkMessages(slot, frame, heldBefore); err != nil {
		return fmt.Errorf("frame %q: %w", frame, err)
	}
	if err := s.checkInstances(); err != nil {
		return fmt.Errorf("frame %q: %w", frame, err)
	}
	return nil
}

func (s *fuzzSession) record(line string) {
	s.mu.Lock()
	s.transcript = append(s.transcript, line)
	s.mu.Unlock()
}

// conversation returns the frames and messages so far, one a line, for
// failure reports.
func (s *fuzzSession) conversation() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.transcript, "\n")
}

// handleNoPanic calls Handle and turns a panic that escapes it into an error.
func handleNoPanic(c *Conn, frame []byte) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("Handle(%q) panicked: %v\n%s", frame, r, debug.Stack())
		}
	}()
	c.Handle(frame)
	return nil
}

// wantRef returns the ref that a reply to frame must echo: the frame's "ref"
// when it reads as an integer, and nil otherwise.
func wantRef(frame []byte) *int64 {
	var probe struct {
		Ref *int64 `json:"ref"`
	}
	if json.Unmarshal(frame, &probe) != nil {
		return nil
	}
	return probe.Ref
}

func refString(ref *int64) string {
	if ref == nil {
		return "none"
	}
	return fmt.Sprint(*ref)
}

// heldIDs returns the ids of the instances that each connection has.
func (s *fuzzSession) heldIDs() [2]map[string]bool {
	var held [2]map[string]bool
	s.engine.mu.Lock()
	defer s.engine.mu.Unlock()
	for i, c := range s.conns {
		held[i] = make(map[string]bool, len(c.instances))
		for id := range c.instances {
			held[i][id] = true
		}
	}
	return held
}

// checkMessages checks the messages sent while one frame from connection
// slot was handled. heldBefore contains the ids each connection had before.
func (s *fuzzSession) checkMessages(slot int, frame []byte, heldBefore [2]map[string]bool) error {
	var reply *serverMessage
	now := s.heldIDs()
	for i, out := range s.outs {
		for _, raw := range out.take() {
			s.record(fmt.Sprintf("%d< %.300q", i+1, raw))
			m, err := parseServerMessage(raw, s.codes)
			if err != nil {
				return fmt.Errorf("connection %d got %q: %w", i+1, raw, err)
			}
			if i != slot {
				// The other connection may get broadcasts, and an error
				// without ref for a component that the frame took away
				// from it.
				lost := heldBefore[i][m.ID] && !now[i][m.ID]
				if m.Type != TypeBroadcast && (m.Type != TypeError || m.Ref != nil || !lost) {
					return fmt.Errorf("connection %d, which sent nothing, got %s", i+1, raw)
				}
				continue
			}
			switch {
			case fuzzReplyTypes[m.Type]:
				if reply != nil {
					return fmt.Errorf("second reply %s", raw)
				}
				reply = m
				if got, want := refString(m.Ref), refString(wantRef(frame)); got != want {
					return fmt.Errorf("reply %s has ref %s, want %s", raw, got, want)
				}
			case m.Type == TypeEvent:
				if reply == nil || (reply.Type != TypeState && reply.Type != TypePatch) || reply.ID != m.ID {
					return fmt.Errorf("event %s does not follow a state or patch reply of component %q", raw, m.ID)
				}
			}
			switch m.Type {
			case TypeWelcome:
				s.token = m.Token
			case TypeState:
				s.id, s.fp = m.ID, m.Fingerprint
				s.seen[i][m.ID] = seenState{m.Version, m.State}
			case TypePatch:
				if err := s.followPatch(i, m); err != nil {
					return fmt.Errorf("connection %d got %s: %w", i+1, raw, err)
				}
			}
		}
	}
	if reply == nil {
		return errors.New("no reply to the frame")
	}
	return nil
}

// followPatch applies a patch to connection slot's copy of the component
// and checks the result against the committed state.
func (s *fuzzSession) followPatch(slot int, m *serverMessage) error {
	have, ok := s.seen[slot][m.ID]
	if !ok || have.version != *m.Base {
		return fmt.Errorf("patch from version %d, but this connection was last sent version %d", *m.Base, have.version)
	}
	next, err := applyPatch(have.state, m.Patch)
	if err != nil {
		return fmt.Errorf("patch does not apply to %s: %w", have.state, err)
	}
	inst := s.engine.instanceByID(m.ID)
	if inst == nil {
		return errors.New("patch for a component that is not in memory")
	}
	inst.mu.Lock()
	committed, version := inst.sess.State, inst.sess.Version
	inst.mu.Unlock()
	want, err := decodeValue(committed)
	if err != nil {
		return err
	}
	if version != m.Version || !reflect.DeepEqual(next, want) {
		return fmt.Errorf("patched state %v (version %d) differs from the committed %s (version %d)", next, m.Version, committed, version)
	}
	b, _ := json.Marshal(next)
	s.seen[slot][m.ID] = seenState{m.Version, b}
	return nil
}

// parseServerMessage checks one message against the protocol.
func parseServerMessage(raw []byte, codes map[string]bool) (*serverMessage, error) {
	if !utf8.Valid(raw) {
		return nil, errors.New("not valid UTF-8")
	}
	if !json.Valid(raw) {
		return nil, errors.New("not valid JSON")
	}
	if t := bytes.TrimSpace(raw); len(t) == 0 || t[0] != '{' {
		return nil, errors.New("not a JSON object")
	}
	var m serverMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("fields of the wrong type: %v", err)
	}
	switch m.Type {
	case "":
		return nil, errors.New(`no "type"`)
	case TypeError:
		switch {
		case m.Code == nil:
			return nil, errors.New("error without a code")
		case !codes[*m.Code]:
			return nil, fmt.Errorf("error code %q is not one of the codes in errors.go", *m.Code)
		case *m.Code == CodeInternal:
			return nil, errors.New("internal error with a healthy store and well-behaved components")
		case m.Message == nil || *m.Message == "":
			return nil, errors.New("error without a message")
		case m.RequiresRefresh == nil:
			return nil, errors.New("error without requiresRefresh")
		}
	case TypeWelcome:
		if m.ClientID == "" || m.Token == "" {
			return nil, errors.New("welcome without clientId or token")
		}
	case TypeState:
		if m.ID == "" || m.Component == "" || m.Fingerprint == "" || m.Version < 1 {
			return nil, errors.New("state without id, component, fingerprint or version")
		}
		if t := bytes.TrimSpace(m.State); len(t) == 0 || t[0] != '{' {
			return nil, errors.New("state is not a JSON object")
		}
	case TypePatch:
		if m.ID == "" || m.Component == "" || m.Base == nil || m.Version <= *m.Base {
			return nil, errors.New("patch without id, component, or a version after its base")
		}
		if t := bytes.TrimSpace(m.Patch); len(t) == 0 || t[0] != '[' {
			return nil, errors.New("patch is not a JSON array")
		}
	case TypeUnmounted:
		if m.ID == "" {
			return nil, errors.New("unmounted without id")
		}
	case TypeEvent:
		if m.ID == "" || m.Event == "" {
			return nil, errors.New("event without id or event name")
		}
	case TypeBroadcast:
		if m.Component == "" || m.Event == "" {
			return nil, errors.New("broadcast without component or event name")
		}
	default:
		return nil, fmt.Errorf("unknown message type %q", m.Type)
	}
	return &m, nil
}

// checkInstances checks that the engine's instances are exactly those of
// its open connections, each attached to one of them.
func (s *fuzzSession) checkInstances() error {
	e := s.engine
	count := e.Stats().InstanceCount
	e.mu.Lock()
	defer e.mu.Unlock()
	sum := 0
	for c := range e.conns {
		if c.closed {
			return errors.New("a closed connection is still registered")
		}
		sum += len(c.instances)
		types := map[string]int{}
		for id, inst := range c.instances {
			if e.instances[id] != inst || inst.conn != c {
				return fmt.Errorf("connection holds instance %q that the engine does not list as its own", id)
			}
			types[inst.def.Name()]++
		}
		if len(types) != len(c.types) {
			return fmt.Errorf("connection counts component types %v, its instances have %v", c.types, types)
		}
		for name, n := range types {
			if c.types[name] != n {
				return fmt.Errorf("connection counts component types %v, its instances have %v", c.types, types)
			}
		}
	}
	if count != sum || len(e.instances) != sum {
		return fmt.Errorf("engine has %d instances (Stats reports %d), open connections hold %d", len(e.instances), count, sum)
	}
	for id, inst := range e.instances {
		if inst.conn == nil || inst.conn.instances[id] != inst {
			return fmt.Errorf("instance %q is in memory without a connection", id)
		}
	}
	return nil
}

// documentedErrorCodes reads the values of the Code constants from the Go
// file that documents them, so that the check follows the list as it grows.
func documentedErrorCodes(path string) (map[string]bool, error) {
	file, err := parser.ParseFile(token.NewFileSet(), path, nil, 0)
	if err != nil {
		return nil, err
	}
	codes := map[string]bool{}
	for _, decl := range file.Decls {
		gen, ok := decl.(*ast.GenDecl)
		if !ok || gen.Tok != token.CONST {
			continue
		}
		for _, spec := range gen.Specs {
			vs := spec.(*ast.ValueSpec)
			for i, name := range vs.Names {
				if !strings.HasPrefix(name.Name, "Code") || i >= len(vs.Values) {
					continue
				}
				lit, ok := vs.Values[i].(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					return nil, fmt.Errorf("%s: constant %s is not a string literal", path, name.Name)
				}
				code, err := strconv.Unquote(lit.Value)
				if err != nil {
					return nil, err
				}
				codes[code] = true
			}
		}
	}
	if !codes[CodeBadJSON] || !codes[CodeInternal] {
		return nil, fmt.Errorf("%s: found only the error codes %v", path, codes)
	}
	return codes, nil
}
