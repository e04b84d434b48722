package live

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/livebolt/livebolt/storage"
)

// Defaults for the Options and Limits fields left zero.
const (
	DefaultMaxAge        = 30 * time.Minute
	DefaultMaxAttempts   = 3
	DefaultMaxKeyLength  = 64
	DefaultMaxPropsBytes = 16 << 10
	DefaultMaxStateBytes = 256 << 10
	DefaultMaxArgs       = 16

	DefaultMessagesPerSecond     = 100
	DefaultMessageBurst          = 200
	DefaultMaxInstancesPerClient = 50
	DefaultMaxSessionsPerClient  = 200
	DefaultMaxHydrations         = 16
	DefaultMigrationTimeout      = 5 * time.Second
)

// Options configures an Engine. Store, Registry and Secret are required.
type Options struct {
	Store    storage.Store
	Registry *Registry
	// Secret signs tokens, fingerprints and snapshots; at least
	// MinSecretBytes long.
	Secret []byte
	// MaxAge is how long a session may go unused before it expires.
	// Zero means DefaultMaxAge.
	MaxAge time.Duration
	// MaxAttempts is the number of failed hydrations after which a session is
	// rejected and swept. Zero means DefaultMaxAttempts.
	MaxAttempts int
	Limits      Limits
	// Logger receives warnings and errors. Nil discards them.
	Logger *slog.Logger
	// Now returns the current time. Nil means time.Now.
	Now func() time.Time
	// Observer receives the result of every call and hydration, for
	// metrics. Nil reports nothing and costs one comparison per call or
	// hydration.
	Observer Observer
}

// Limits bound what one client may send and hold. Zero fields take the
// Default constants of the same name, such as DefaultMaxStateBytes.
type Limits struct {
	MaxKeyLength  int // characters of a mount key
	MaxPropsBytes int // encoded size of mount props
	MaxStateBytes int // encoded size of a component's state
	MaxArgs       int // arguments of one call

	// MessagesPerSecond and MessageBurst form a token bucket per connection.
	// A frame beyond it gets a rate_limited error and is not handled. The
	// connection's next read then waits one token's time
	// (1/MessagesPerSecond, at most 1 s), so a flood slows to the limit.
	MessagesPerSecond float64
	MessageBurst      int

	// MaxInstancesPerClient bounds the in-memory instances of one client
	// over all its connections; MaxSessionsPerClient bounds its stored
	// sessions. Mounts and hydrations past them get limit_exceeded.
	MaxInstancesPerClient int
	MaxSessionsPerClient  int

	// MaxHydrations bounds the hydrations from the store that run at once.
	// The others wait their turn, so a reconnect storm after a restart
	// queues instead of competing with live calls for the database.
	MaxHydrations int

	// MigrationTimeout bounds one StateVersion migration. A migration that
	// takes longer is abandoned: the hydration gets outdated and frees its
	// place at once, and the migration's result, when it comes, is
	// dropped. Go cannot stop the migration's goroutine, so it runs on
	// until the migration returns.
	MigrationTimeout time.Duration
}

func (l *Limits) fill() {
	if l.MaxKeyLength == 0 {
		l.MaxKeyLength = DefaultMaxKeyLength
	}
	if l.MaxPropsBytes == 0 {
		l.MaxPropsBytes = DefaultMaxPropsBytes
	}
	if l.MaxStateBytes == 0 {
		l.MaxStateBytes = DefaultMaxStateBytes
	}
	if l.MaxArgs == 0 {
		l.MaxArgs = DefaultMaxArgs
	}
	if l.MessagesPerSecond == 0 {
		l.MessagesPerSecond = DefaultMessagesPerSecond
	}
	if l.MessageBurst == 0 {
		l.MessageBurst = DefaultMessageBurst
	}
	if l.MaxInstancesPerClient == 0 {
		l.MaxInstancesPerClient = DefaultMaxInstancesPerClient
	}
	if l.MaxSessionsPerClient == 0 {
		l.MaxSessionsPerClient = DefaultMaxSessionsPerClient
	}
	if l.MaxHydrations == 0 {
		l.MaxHydrations = DefaultMaxHydrations
	}
	if l.MigrationTimeout == 0 {
		l.MigrationTimeout = DefaultMigrationTimeout
	}
}

func (l *Limits) validate() error {
	for name, v := range map[string]float64{
		"MaxKeyLength": float64(l.MaxKeyLength), "MaxPropsBytes": float64(l.MaxPropsBytes),
		"MaxStateBytes": float64(l.MaxStateBytes), "MaxArgs": float64(l.MaxArgs),
		"MessagesPerSecond": l.MessagesPerSecond, "MessageBurst": float64(l.MessageBurst),
		"MaxInstancesPerClient": float64(l.MaxInstancesPerClient), "MaxSessionsPerClient": float64(l.MaxSessionsPerClient),
		"MaxHydrations": float64(l.MaxHydrations), "MigrationTimeout": float64(l.MigrationTimeout),
	} {
		if v < 0 {
			return fmt.Errorf("live: Limits.%s is %v, must not be negative", name, v)
		}
	}
	return nil
}

// Outbox delivers server messages to one connection. Send must not block: an
// implementation with a full queue drops the connection instead.
type Outbox interface {
	Send(msg []byte)
}

// Engine owns the in-memory instances of all connections and the rules for
// creating, changing, restoring and deleting their sessions.
type Engine struct {
	store    storage.Store
	registry *Registry
	signer   *signer
	maxAge   time.Duration
	attempts int
	limits   Limits
	log      *slog.Logger
	debug    bool // log is enabled for debug: Handle logs every frame
	now      func() time.Time
	observer Observer

	mu        sync.Mutex
	instances map[string]*instance // attached instances by session id
	conns     map[*Conn]struct{}
	perClient map[string]int           // attached instances by client id
	hydrating map[string]chan struct{} // closed when the hydration of an id from the store ends
	migrating map[string]bool          // ids whose StateVersion migration is running
	admission chan struct{}            // one slot per hydration from the store in progress

	rejectMu  sync.Mutex
	rejected  map[string]uint64     // rejected hydrations and calls by error code
	rejectLog map[string]*logWindow // warn lines logged per client in the current window
}

// instance is a component held in memory for one connection. The fields
// below mu are guarded by it; conn is guarded by Engine.mu.
type instance struct {
	def  Definition
	conn *Conn

	mu    sync.Mutex
	sess  *storage.Session // last committed snapshot
	state any              // decoded state, equal to sess.State between calls

	// sentTo and sentVersion name the connection that was last sent this
	// instance's state and the version it was sent, so a change can go to
	// it as a patch against that version.
	sentTo      *Conn
	sentVersion uint64
}

// New validates opts and returns an engine.
func New(opts Options) (*Engine, error) {
	if opts.Store == nil {
		return nil, errors.New("live: Options.Store is required")
	}
	if opts.Registry == nil {
		return nil, errors.New("live: Options.Registry is required")
	}
	sg, err := newSigner(opts.Secret)
	if err != nil {
		return nil, fmt.Errorf("live: %w", err)
	}
	if opts.MaxAge < 0 {
		return nil, fmt.Errorf("live: MaxAge is %s, must not be negative", opts.MaxAge)
	}
	if opts.MaxAge == 0 {
		opts.MaxAge = DefaultMaxAge
	}
	if opts.MaxAttempts < 0 {
		return nil, fmt.Errorf("live: MaxAttempts is %d, must not be negative", opts.MaxAttempts)
	}
	if opts.MaxAttempts == 0 {
		opts.MaxAttempts = DefaultMaxAttempts
	}
	if err := opts.Limits.validate(); err != nil {
		return nil, err
	}
	opts.Limits.fill()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Engine{
		store:     opts.Store,
		registry:  opts.Registry,
		signer:    sg,
		maxAge:    opts.MaxAge,
		attempts:  opts.MaxAttempts,
		limits:    opts.Limits,
		log:       opts.Logger,
		debug:     opts.Logger.Enabled(context.Background(), slog.LevelDebug),
		now:       opts.Now,
		observer:  opts.Observer,
		instances: map[string]*instance{},
		conns:     map[*Conn]struct{}{},
		perClient: map[string]int{},
		rejectLog: map[string]*logWindow{},
		hydrating: map[string]chan struct{}{},
		migrating: map[string]bool{},
		admission: make(chan struct{}, opts.Limits.MaxHydrations),
		rejected:  map[string]uint64{},
	}, nil
}

// Connect registers a new connection whose messages go to out.
func (e *Engine) Connect(out Outbox) *Conn {
	c := &Conn{engine: e, out: out, instances: map[string]*instance{}, types: map[string]int{}}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	e.mu.Lock()
	e.conns[c] = struct{}{}
	e.mu.Unlock()
	return c
}

// MaxAttempts returns the configured failed-attempt limit.
func (e *Engine) MaxAttempts() int { return e.attempts }

// MaxAge returns the configured session lifetime without activity.
func (e *Engine) MaxAge() time.Duration { return e.maxAge }

// attached reports whether a session has an instance in memory.
func (e *Engine) attached(id string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	_, ok := e.instances[id]
	return ok
}

// SweepExpired deletes sessions unused for longer than MaxAge. Sessions with
// an instance in memory are in use and kept.
func (e *Engine) SweepExpired() (storage.SweepResult, error) {
	return e.store.SweepExpired(e.now().Add(-e.maxAge), e.attached)
}

// TouchAttached stores the current time as the last activity of every
// instance in memory whose stored activity is older than a quarter of
// MaxAge. Run it periodically: after a crash, which records no disconnect,
// a session that was open but idle then still has a recent activity and
// survives the restart. It returns the number of sessions written.
func (e *Engine) TouchAttached() (int, error) {
	e.mu.Lock()
	attached := make([]*instance, 0, len(e.instances))
	for _, inst := range e.instances {
		attached = append(attached, inst)
	}
	e.mu.Unlock()

	threshold := e.maxAge / 4
	written := 0
	var errs []error
	for _, inst := range attached {
		ok, err := e.touchIfStale(inst, threshold)
		if err != nil {
			errs = append(errs, err)
		}
		if ok {
			written++
		}
	}
	return written, errors.Join(errs...)
}

func (e *Engine) touchIfStale(inst *instance, threshold time.Duration) (bool, error) {
	inst.mu.Lock()
	defer inst.mu.Unlock()
	now := e.now().UTC().Round(0)
	if e.instanceByID(inst.sess.ID) != inst || now.Sub(inst.sess.LastActivity) < threshold {
		return false, nil
	}
	next := *inst.sess
	next.LastActivity = now
	if err := e.signer.sign(&next); err != nil {
		return false, err
	}
	if err := e.store.UpdateSession(&next); err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return false, nil // deleted meanwhile; the next call reports it
		}
		return false, fmt.Errorf("record activity of session %s: %w", next.ID, err)
	}
	inst.sess = &next
	return true, nil
}

// SweepFailed deletes sessions that reached MaxAttempts failed hydrations.
// None of them is in memory: the hydration that exhausts the attempts
// releases the instance.
func (e *Engine) SweepFailed() (storage.SweepResult, error) {
	return e.store.SweepFailed(e.attempts)
}

// ReleaseOrphans drops instances whose connection has closed and returns how
// many it dropped. Conn.Close already releases them, so a non-zero result
// points to a connection that ended without Close.
func (e *Engine) ReleaseOrphans() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for id, inst := range e.instances {
		if inst.conn == nil || inst.conn.closed {
			delete(e.instances, id)
			n++
		}
	}
	return n
}

// DeleteAllSessions releases every instance and deletes every stored
// session. Connected clients get not_found on their next call.
func (e *Engine) DeleteAllSessions() (released int, r storage.SweepResult, err error) {
	e.mu.Lock()
	for id, inst := range e.instances {
		if inst.conn != nil {
			inst.conn.detach(id, inst)
		}
		delete(e.instances, id)
		released++
	}
	e.mu.Unlock()
	r, err = e.store.DeleteAllSessions()
	return released, r, err
}

// reject counts a rejected hydration or call by code.
func (e *Engine) reject(code string) {
	e.rejectMu.Lock()
	e.rejected[code]++
	e.rejectMu.Unlock()
}

// Rejection log limits: at most rejectLogBurst warn lines per client per
// rejectLogWindow, so an attack is visible without flooding the log.
const (
	rejectLogBurst   = 5
	rejectLogWindow  = time.Minute
	rejectLogClients = 10000 // windows kept before the map is reset
)

type logWindow struct {
	start      time.Time
	logged     int
	suppressed int
}

// logRejection writes one warn line for a rejected access, unless the client
// already had rejectLogBurst lines in the current window. The first line of
// a new window reports how many were suppressed in the previous one.
func (e *Engine) logRejection(clientID, componentID, reason string) {
	e.logRejectionIn(clientID, clientID, componentID, reason)
}

// logRejectionIn is logRejection with the rate-limit window keyed by window
// instead of the client id, and attrs added to the log line.
func (e *Engine) logRejectionIn(window, clientID, componentID, reason string, attrs ...any) {
	now := e.now()
	e.rejectMu.Lock()
	w := e.rejectLog[window]
	if w == nil {
		if len(e.rejectLog) >= rejectLogClients {
			e.rejectLog = map[string]*logWindow{}
		}
		w = &logWindow{start: now}
		e.rejectLog[window] = w
	}
	suppressedBefore := 0
	if now.Sub(w.start) >= rejectLogWindow {
		suppressedBefore = w.suppressed
		*w = logWindow{start: now}
	}
	if w.logged >= rejectLogBurst {
		w.suppressed++
		e.rejectMu.Unlock()
		return
	}
	w.logged++
	e.rejectMu.Unlock()
	args := append([]any{"client", clientID, "component_id", componentID, "reason", reason}, attrs...)
	if suppressedBefore > 0 {
		args = append(args, "suppressed_before", suppressedBefore)
	}
	e.log.Warn("session access rejected", args...)
}

// Stats is a snapshot of the engine's in-memory state.
type Stats struct {
	RegistrySize        int               `json:"registrySize"`
	InstanceCount       int               `json:"instanceCount"`
	ConnectionCount     int               `json:"connectionCount"`
	ClientCount         int               `json:"clientCount"`
	ComponentsPerClient []ClientInstances `json:"componentsPerClient"`
	Rejected            map[string]uint64 `json:"rejected"`
}

// ClientInstances is the number of in-memory instances of one client.
type ClientInstances struct {
	ClientID  string `json:"clientId"`
	Instances int    `json:"instances"`
}

// topClients is how many clients Stats lists in ComponentsPerClient.
const topClients = 20

// Stats returns counts of instances, connections and clients, and the
// clients with the most instances.
func (e *Engine) Stats() Stats {
	e.mu.Lock()
	perClient := map[string]int{}
	for c := range e.conns {
		if c.clientID != "" {
			perClient[c.clientID] += len(c.instances)
		}
	}
	st := Stats{
		RegistrySize:    e.registry.Len(),
		InstanceCount:   len(e.instances),
		ConnectionCount: len(e.conns),
		ClientCount:     len(perClient),
	}
	e.mu.Unlock()

	st.ComponentsPerClient = make([]ClientInstances, 0, len(perClient))
	for id, n := range perClient {
		st.ComponentsPerClient = append(st.ComponentsPerClient, ClientInstances{ClientID: id, Instances: n})
	}
	sort.Slice(st.ComponentsPerClient, func(i, j int) bool {
		a, b := st.ComponentsPerClient[i], st.ComponentsPerClient[j]
		if a.Instances != b.Instances {
			return a.Instances > b.Instances
		}
		return a.ClientID < b.ClientID
	})
	if len(st.ComponentsPerClient) > topClients {
		st.ComponentsPerClient = st.ComponentsPerClient[:topClients]
	}

	e.rejectMu.Lock()
	st.Rejected = make(map[string]uint64, len(e.rejected))
	for code, n := range e.rejected {
		st.Rejected[code] = n
	}
	e.rejectMu.Unlock()
	return st
}

// Registry returns the engine's component registry.
func (e *Engine) Registry() *Registry { return e.registry }
