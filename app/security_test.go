package app

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

// base64URLAlphabet is the alphabet of ids, tokens and fingerprints
// (unpadded base64url).
const base64URLAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

// attackerMessagesPerConn keeps each attacker connection well below the
// engine's per-connection message burst (live.DefaultMessageBurst, 200), so
// the hydration checks reject each attempt, not the rate_limited check.
const attackerMessagesPerConn = 150

// next sends msg and returns the very next message, which must be the reply
// to it: any other message in between fails the test.
func (c *wsClient) next(msg map[string]any) map[string]any {
	c.t.Helper()
	ref := c.send(msg)
	m, err := c.read()
	if err != nil {
		c.t.Fatalf("waiting for the reply to ref %d (%v): %v", ref, msg["type"], err)
	}
	if r, ok := m["ref"].(float64); !ok || int(r) != ref {
		c.t.Fatalf("expected the reply to ref %d (%v), got %v", ref, msg["type"], m)
	}
	return m
}

// randomIDLike returns a string shaped like a server id: 16 random bytes,
// base64url-encoded to 22 characters.
func randomIDLike(rng *rand.Rand) string {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], rng.Uint64())
	binary.LittleEndian.PutUint64(b[8:], rng.Uint64())
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// randomString returns n characters drawn from alphabet.
func randomString(rng *rand.Rand, alphabet string, n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[rng.IntN(len(alphabet))]
	}
	return string(b)
}

// changeCharAt replaces the character at index i of s with a different
// base64url character.
func changeCharAt(rng *rand.Rand, s string, i int) string {
	others := strings.ReplaceAll(base64URLAlphabet, s[i:i+1], "")
	return s[:i] + others[rng.IntN(len(others)):][:1] + s[i+1:]
}

// signaturePart returns the part of a token after its '.', or "".
func signaturePart(token string) string {
	_, sig, _ := strings.Cut(token, ".")
	return sig
}

func waitInstances(t *testing.T, s *testServer, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for s.Engine().Stats().InstanceCount != want {
		if time.Now().After(deadline) {
			st := s.Engine().Stats()
			t.Fatalf("instances in memory = %d after 5 s, want %d (connections %d, per client %v)", st.InstanceCount, want, st.ConnectionCount, st.ComponentsPerClient)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// logRecord is one line of the captured slog text log, by field name.
type logRecord map[string]string

// parseLogLine splits one slog TextHandler line into its key=value fields,
// unquoting quoted values.
func parseLogLine(line string) logRecord {
	rec := logRecord{}
	for {
		line = strings.TrimLeft(line, " ")
		eq := strings.IndexByte(line, '=')
		if eq <= 0 {
			return rec
		}
		key := line[:eq]
		line = line[eq+1:]
		if !strings.HasPrefix(line, `"`) {
			end := strings.IndexByte(line, ' ')
			if end < 0 {
				end = len(line)
			}
			rec[key] = line[:end]
			line = line[end:]
			continue
		}
		end := closingQuote(line)
		if end < 0 {
			rec[key] = line
			return rec
		}
		value, err := strconv.Unquote(line[:end+1])
		if err != nil {
			value = line[:end+1]
		}
		rec[key] = value
		line = line[end+1:]
	}
}

// closingQuote returns the index of the quote that ends the Go-quoted string
// at the start of s, or -1.
func closingQuote(s string) int {
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '"':
			return i
		}
	}
	return -1
}

// logMark returns the current end of the captured log. slog writes each
// record with one Write, so the mark is always at a line boundary.
func (s *testServer) logMark() int { return len(s.logs.String()) }

// recordsSince parses the log lines written after mark.
func (s *testServer) recordsSince(mark int) []logRecord {
	var recs []logRecord
	for _, line := range strings.Split(s.logs.String()[mark:], "\n") {
		if line != "" {
			recs = append(recs, parseLogLine(line))
		}
	}
	return recs
}

// rejectedCounts returns hydration.rejected of GET /api/memory/stats.
func rejectedCounts(t *testing.T, s *testServer) map[string]int {
	t.Helper()
	status, st := s.get(t, "/api/memory/stats")
	if status != http.StatusOK {
		t.Fatalf("stats: status %d", status)
	}
	hydration, ok := st["hydration"].(map[string]any)
	if !ok {
		t.Fatalf("stats have no hydration object: %v", st)
	}
	counts := map[string]int{}
	rejected, _ := hydration["rejected"].(map[string]any)
	for reason, n := range rejected {
		counts[reason] = int(n.(float64))
	}
	return counts
}

// victimComponent is a component mounted by the victim, with the last state
// the server acknowledged.
type victimComponent struct {
	id, fingerprint string
	state           map[string]any
	version         float64
}

// hydrateAttempt is one hydrate message sent by the attacker.
type hydrateAttempt struct {
	kind            string // what is being tried, for failure messages
	id, fingerprint string
	malformed       bool // id or fingerprint missing, so bad_args is expected
}

// attackTally collects the replies to hydrate attempts.
type attackTally struct {
	attempts int
	states   []string // attempts that got a state message
	badCodes []string // attempts that got a reply other than the expected codes
}

func (a *attackTally) hydrate(c *wsClient, at hydrateAttempt) {
	c.t.Helper()
	m := c.next(map[string]any{"type": "hydrate", "id": at.id, "fingerprint": at.fingerprint})
	a.attempts++
	if m["type"] == "state" {
		a.states = append(a.states, fmt.Sprintf("%s (id %q): %v", at.kind, at.id, m))
		return
	}
	code, _ := m["code"].(string)
	ok := m["type"] == "error" && (code == "forbidden" || code == "not_found" || code == "fingerprint_mismatch")
	if at.malformed {
		ok = m["type"] == "error" && code == "bad_args"
	}
	if !ok {
		a.badCodes = append(a.badCodes, fmt.Sprintf("%s (id %q): %v", at.kind, at.id, m))
	}
}

// firstFew returns at most n entries of list, one per line.
func firstFew(list []string, n int) string {
	return strings.Join(list[:min(n, len(list))], "\n")
}

// tokenVariant is a token that is not the one the server issued.
type tokenVariant struct {
	kind, token string
}

// tamperedTokens returns n distinct tokens derived from the victim's: its
// client id with another client's signature, one character changed,
// truncated, or with characters added.
func tamperedTokens(rng *rand.Rand, victimToken, attackerToken string, n int) []tokenVariant {
	victimID, victimSig, _ := strings.Cut(victimToken, ".")
	attackerID, attackerSig, _ := strings.Cut(attackerToken, ".")
	dot := len(victimID)
	last := len(victimToken) - 1
	// The last character of a 32-byte signature carries 4 data bits and 2
	// unused ones: flipping the unused bits gives a spelling that lenient
	// decoders map to the same bytes.
	lastValue := strings.IndexByte(base64URLAlphabet, victimToken[last])

	variants := []tokenVariant{
		{"victim id with the attacker's signature", victimID + "." + attackerSig},
		{"attacker id with the victim's signature", attackerID + "." + victimSig},
		{"unused bit 0 of the last character flipped", victimToken[:last] + base64URLAlphabet[lastValue^1:][:1]},
		{"unused bit 1 of the last character flipped", victimToken[:last] + base64URLAlphabet[lastValue^2:][:1]},
		{"unused bits of the last character flipped", victimToken[:last] + base64URLAlphabet[lastValue^3:][:1]},
		{"dot replaced", victimToken[:dot] + "A" + victimToken[dot+1:]},
		{"dot replaced with underscore", victimToken[:dot] + "_" + victimToken[dot+1:]},
		{"signature removed", victimID},
		{"signature empty", victimID + "."},
		{"client id empty", "." + victimSig},
		{"only the signature", victimSig},
		{"last character cut", victimToken[:last]},
		{"two characters cut", victimToken[:last-1]},
		{"ten characters cut", victimToken[:last-9]},
		{"half the token", victimToken[:len(victimToken)/2]},
		{"one character", victimToken[:1]},
		{"first character cut", victimToken[1:]},
		{"character appended", victimToken + "A"},
		{"padding appended", victimToken + "="},
		{"two padding characters appended", victimToken + "=="},
		{"dot appended", victimToken + "."},
		{"third part appended", victimToken + ".AAAA"},
		{"space prepended", " " + victimToken},
		{"space appended", victimToken + " "},
		{"newline appended", victimToken + "\n"},
		{"newline inside the signature", victimToken[:dot+10] + "\n" + victimToken[dot+10:]},
		{"character prepended", "A" + victimToken},
		{"token doubled", victimToken + victimToken},
		{"NUL appended", victimToken + "\x00"},
		{"upper-cased", strings.ToUpper(victimToken)},
		{"standard base64 alphabet", strings.NewReplacer("-", "+", "_", "/").Replace(victimToken)},
	}

	seen := map[string]bool{victimToken: true, attackerToken: true, "": true}
	out := make([]tokenVariant, 0, n)
	for _, v := range variants {
		if !seen[v.token] && len(out) < n {
			seen[v.token] = true
			out = append(out, v)
		}
	}
	// Fill up with single changed characters at random positions.
	for i := 0; len(out) < n && i < 100*n; i++ {
		pos := rng.IntN(len(victimToken))
		if pos == dot {
			continue
		}
		tok := changeCharAt(rng, victimToken, pos)
		if !seen[tok] {
			seen[tok] = true
			out = append(out, tokenVariant{fmt.Sprintf("character %d changed", pos), tok})
		}
	}
	return out
}

func TestHydrateAttacksAllFail(t *testing.T) {
	start := time.Now()
	seed := uint64(time.Now().UnixNano())
	t.Logf("random seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	s := startServer(t, Options{})

	// The victim mounts three counters and changes each.
	victim := s.dial(t, nil)
	victimWelcome := victim.do(map[string]any{"type": "hello"})
	victimID, _ := victimWelcome["clientId"].(string)
	victimToken, _ := victimWelcome["token"].(string)
	var comps []victimComponent
	for _, m := range []struct {
		key              string
		initial, changes int
	}{{"main", 5, 3}, {"side", 0, 7}, {"", 100, 1}} {
		msg := map[string]any{"type": "mount", "component": "counter", "props": map[string]any{"initial": m.initial}}
		if m.key != "" {
			msg["key"] = m.key
		}
		r := victim.do(msg)
		if r["type"] != "state" {
			t.Fatalf("victim mount: %v", r)
		}
		comp := victimComponent{id: r["id"].(string), fingerprint: r["fingerprint"].(string)}
		for i := 0; i < m.changes; i++ {
			r = victim.do(map[string]any{"type": "call", "id": comp.id, "action": "increment", "args": []any{}})
			if r["type"] != "state" {
				t.Fatalf("victim increment: %v", r)
			}
		}
		comp.state = r["state"].(map[string]any)
		comp.version = r["version"].(float64)
		comps = append(comps, comp)
	}

	attacker := s.dial(t, nil)
	attackerWelcome := attacker.next(map[string]any{"type": "hello"})
	attackerToken, _ := attackerWelcome["token"].(string)
	own := attacker.next(map[string]any{"type": "mount", "component": "counter", "key": "main"})
	ownID, _ := own["id"].(string)

	// (a) guessed ids, and a few malformed requests.
	var attempts []hydrateAttempt
	const symbols = base64URLAlphabet + ".!#$%&'()*+,/:;<=>?@[]^`{|}~ "
	for i := 0; i < 130; i++ {
		alphabet := base64URLAlphabet
		if i%4 == 0 {
			alphabet = symbols
		}
		c := comps[rng.IntN(len(comps))]
		attempts = append(attempts, hydrateAttempt{kind: "random id", id: randomString(rng, alphabet, 1+rng.IntN(64)), fingerprint: c.fingerprint})
	}
	for i := 0; i < 130; i++ {
		c := comps[i%len(comps)]
		guess := randomIDLike(rng)
		if prefix, _, ok := strings.Cut(c.id, "."); ok {
			guess = prefix + "." + guess
		}
		attempts = append(attempts, hydrateAttempt{kind: "victim's key prefix, random suffix", id: guess, fingerprint: c.fingerprint})
	}
	for i := 0; i < 130; i++ {
		c := comps[i%len(comps)]
		pos := rng.IntN(len(c.id))
		if c.id[pos] == '.' {
			pos = len(c.id) - 1
		}
		attempts = append(attempts, hydrateAttempt{kind: fmt.Sprintf("victim's id, character %d changed", pos), id: changeCharAt(rng, c.id, pos), fingerprint: c.fingerprint})
	}
	for i := 0; i < 5; i++ {
		c := comps[i%len(comps)]
		attempts = append(attempts,
			hydrateAttempt{kind: "no id", id: "", fingerprint: c.fingerprint, malformed: true},
			hydrateAttempt{kind: "no fingerprint", id: c.id, fingerprint: "", malformed: true})
	}
	// (b) the victim's ids and stolen fingerprints, from the attacker's own
	// client, and two stolen fingerprints against the attacker's own id
	// (fewer than the 3 failed attempts that lock a session).
	for i := 0; i < 298; i++ {
		idOwner, fingerprintOwner := comps[i%len(comps)], comps[(i/len(comps))%len(comps)]
		attempts = append(attempts, hydrateAttempt{kind: "victim's id with a stolen fingerprint", id: idOwner.id, fingerprint: fingerprintOwner.fingerprint})
	}
	for i := 0; i < 2; i++ {
		attempts = append(attempts, hydrateAttempt{kind: "attacker's own id with a stolen fingerprint", id: ownID, fingerprint: comps[i].fingerprint})
	}
	rng.Shuffle(len(attempts), func(i, j int) { attempts[i], attempts[j] = attempts[j], attempts[i] })

	// (c) tampered tokens: 100 hellos, each followed by a hydrate of every
	// victim component with its real fingerprint.
	tokens := tamperedTokens(rng, victimToken, attackerToken, 100)
	if len(tokens) != 100 {
		t.Fatalf("built %d tampered tokens, want 100", len(tokens))
	}
	if n := len(attempts) + len(tokens)*len(comps); n != 1000 {
		t.Fatalf("built %d attempts, want 1000", n)
	}

	var tally attackTally
	var resumedVictim, resumedAny, listedComponents []string
	runAttempts := func(list []hydrateAttempt) {
		for len(list) > 0 {
			c := s.dial(t, nil)
			if w := c.next(map[string]any{"type": "hello", "token": attackerToken}); w["resumed"] != true {
				t.Fatalf("attacker's own token not resumed: %v", w)
			}
			n := min(len(list), attackerMessagesPerConn)
			for _, at := range list[:n] {
				tally.hydrate(c, at)
			}
			list = list[n:]
			_ = c.ws.Close()
		}
	}
	runTokens := func(list []tokenVariant) {
		for _, tv := range list {
			c := s.dial(t, nil)
			w := c.next(map[string]any{"type": "hello", "token": tv.token})
			if w["clientId"] == victimID {
				resumedVictim = append(resumedVictim, fmt.Sprintf("%s: %q", tv.kind, tv.token))
			}
			if w["resumed"] != false {
				resumedAny = append(resumedAny, fmt.Sprintf("%s: %q", tv.kind, tv.token))
			}
			if refs, _ := w["components"].([]any); len(refs) != 0 {
				listedComponents = append(listedComponents, fmt.Sprintf("%s: %v", tv.kind, refs))
			}
			for _, comp := range comps {
				tally.hydrate(c, hydrateAttempt{kind: "after hello with " + tv.kind, id: comp.id, fingerprint: comp.fingerprint})
			}
			_ = c.ws.Close()
		}
	}

	// Half the attack runs while the victim's instances are in memory, half
	// after it disconnected, when they exist only in the store.
	half := len(attempts) / 2
	runAttempts(attempts[:half])
	runTokens(tokens[:len(tokens)/2])
	_ = victim.ws.Close()
	_ = attacker.ws.Close()
	waitInstances(t, s, 0)
	runAttempts(attempts[half:])
	runTokens(tokens[len(tokens)/2:])
	attackTime := time.Since(start)

	if tally.attempts != 1000 {
		t.Errorf("made %d hydrate attempts, want 1000", tally.attempts)
	}
	if len(tally.states) != 0 {
		t.Errorf("%d attempts got a state message, the first ones:\n%s", len(tally.states), firstFew(tally.states, 5))
	}
	if len(tally.badCodes) != 0 {
		t.Errorf("%d attempts got a reply other than forbidden, not_found or fingerprint_mismatch (bad_args if malformed), the first ones:\n%s", len(tally.badCodes), firstFew(tally.badCodes, 5))
	}
	if len(resumedVictim) != 0 {
		t.Errorf("%d tampered tokens were welcomed as the victim's client:\n%s", len(resumedVictim), firstFew(resumedVictim, 5))
	}
	if len(resumedAny) != 0 {
		t.Errorf("%d tampered tokens got resumed other than false:\n%s", len(resumedAny), firstFew(resumedAny, 5))
	}
	if len(listedComponents) != 0 {
		t.Errorf("%d tampered tokens were welcomed with stored components:\n%s", len(listedComponents), firstFew(listedComponents, 5))
	}

	// The attack raised no failed-attempt count of the victim's sessions.
	for _, comp := range comps {
		sess, err := s.Store().GetSession(comp.id)
		if err != nil {
			t.Errorf("victim session %s after the attack: %v", comp.id, err)
			continue
		}
		if sess.FailedAttempts != 0 {
			t.Errorf("victim session %s has %d failed attempts after the attack, want 0", comp.id, sess.FailedAttempts)
		}
	}

	// The victim still resumes and hydrates every component as it was.
	back := s.dial(t, nil)
	w := back.next(map[string]any{"type": "hello", "token": victimToken})
	if w["clientId"] != victimID {
		t.Errorf("victim's token welcomed as client %v, want %s", w["clientId"], victimID)
	}
	if w["resumed"] != true {
		t.Errorf("victim's token not resumed: %v", w)
	}
	listed := map[string]bool{}
	refs, _ := w["components"].([]any)
	for _, ref := range refs {
		if m, ok := ref.(map[string]any); ok {
			listed[fmt.Sprint(m["id"])] = true
		}
	}
	for _, comp := range comps {
		if !listed[comp.id] {
			t.Errorf("welcome does not list the victim's component %s: %v", comp.id, refs)
		}
		r := back.next(map[string]any{"type": "hydrate", "id": comp.id, "fingerprint": comp.fingerprint})
		if r["type"] != "state" {
			t.Errorf("victim's hydrate of %s after the attack: %v", comp.id, r)
			continue
		}
		if !reflect.DeepEqual(r["state"], comp.state) {
			t.Errorf("victim's %s hydrated with state %v, want %v", comp.id, r["state"], comp.state)
		}
		if r["version"] != comp.version {
			t.Errorf("victim's %s hydrated at version %v, want %v", comp.id, r["version"], comp.version)
		}
	}
	t.Logf("%d hydrate attempts (%d tampered tokens) in %s; whole test %s", tally.attempts, len(tokens), attackTime.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}

// rejectionCase is one rejected access and the log line it must produce.
type rejectionCase struct {
	name, reason string
	client       string // expected client field
	componentID  string // expected component_id field; "" skips the check
}

// checkRejection checks that one rejection since before and mark was
// counted under its reason and logged once at warn level.
func checkRejection(t *testing.T, s *testServer, before map[string]int, mark int, rc rejectionCase) {
	t.Helper()
	after := rejectedCounts(t, s)
	if d := after[rc.reason] - before[rc.reason]; d != 1 {
		t.Errorf("%s: stats hydration.rejected[%q] rose by %d, want 1 (before %v, after %v)", rc.name, rc.reason, d, before, after)
	}
	var lines []logRecord
	for _, rec := range s.recordsSince(mark) {
		if rec["level"] == "WARN" && rec["reason"] == rc.reason {
			lines = append(lines, rec)
		}
	}
	if len(lines) != 1 {
		t.Errorf("%s: %d WARN lines with reason=%s, want 1: %v", rc.name, len(lines), rc.reason, lines)
		return
	}
	line := lines[0]
	if line["msg"] != "session access rejected" {
		t.Errorf("%s: WARN line message %q, want \"session access rejected\"", rc.name, line["msg"])
	}
	if line["client"] != rc.client {
		t.Errorf("%s: WARN line client=%q, want %q", rc.name, line["client"], rc.client)
	}
	if rc.componentID != "" && line["component_id"] != rc.componentID {
		t.Errorf("%s: WARN line component_id=%q, want %q", rc.name, line["component_id"], rc.componentID)
	}
}

func TestRejectionsCountedAndLogged(t *testing.T) {
	s := startServer(t, Options{NoSync: true})
	victim := s.dial(t, nil)
	victimWelcome := victim.next(map[string]any{"type": "hello"})
	victimToken, _ := victimWelcome["token"].(string)
	vm := victim.next(map[string]any{"type": "mount", "component": "counter", "key": "main"})
	vid, _ := vm["id"].(string)
	vfp, _ := vm["fingerprint"].(string)

	// Every case uses a fresh client, so the per-client limit of log lines
	// cannot hide its line.
	newClient := func(t *testing.T) (*wsClient, string) {
		c := s.dial(t, nil)
		w := c.next(map[string]any{"type": "hello"})
		id, _ := w["clientId"].(string)
		return c, id
	}

	t.Run("forbidden", func(t *testing.T) {
		c, id := newClient(t)
		before, mark := rejectedCounts(t, s), s.logMark()
		if r := c.next(map[string]any{"type": "hydrate", "id": vid, "fingerprint": vfp}); r["code"] != "forbidden" {
			t.Fatalf("hydrate of another client's component: %v", r)
		}
		checkRejection(t, s, before, mark, rejectionCase{"hydrate of another client's component", "forbidden", id, vid})
	})

	t.Run("fingerprint_mismatch", func(t *testing.T) {
		c, id := newClient(t)
		m := c.next(map[string]any{"type": "mount", "component": "counter"})
		ownID, _ := m["id"].(string)
		before, mark := rejectedCounts(t, s), s.logMark()
		if r := c.next(map[string]any{"type": "hydrate", "id": ownID, "fingerprint": vfp}); r["code"] != "fingerprint_mismatch" {
			t.Fatalf("hydrate with a wrong fingerprint: %v", r)
		}
		checkRejection(t, s, before, mark, rejectionCase{"hydrate with a wrong fingerprint", "fingerprint_mismatch", id, ownID})
	})

	t.Run("not_found", func(t *testing.T) {
		c, id := newClient(t)
		guess := "main." + strings.Repeat("A", 22)
		before, mark := rejectedCounts(t, s), s.logMark()
		if r := c.next(map[string]any{"type": "hydrate", "id": guess, "fingerprint": vfp}); r["code"] != "not_found" {
			t.Fatalf("hydrate of a guessed id: %v", r)
		}
		checkRejection(t, s, before, mark, rejectionCase{"hydrate of a guessed id", "not_found", id, guess})
	})

	t.Run("invalid_token", func(t *testing.T) {
		c := s.dial(t, nil)
		tampered := changeCharAt(rand.New(rand.NewPCG(1, 2)), victimToken, len(victimToken)-5)
		before, mark := rejectedCounts(t, s), s.logMark()
		w := c.next(map[string]any{"type": "hello", "token": tampered})
		if w["resumed"] != false {
			t.Fatalf("hello with a tampered token: %v", w)
		}
		// A hello has no component id. The line names the new client id, so
		// an operator can tie it to that client's later rejections.
		newID, _ := w["clientId"].(string)
		checkRejection(t, s, before, mark, rejectionCase{name: "hello with a tampered token", reason: "invalid_token", client: newID})
	})

	t.Run("invalid_checksum", func(t *testing.T) {
		c := s.dial(t, nil)
		w := c.next(map[string]any{"type": "hello"})
		id, _ := w["clientId"].(string)
		token, _ := w["token"].(string)
		m := c.next(map[string]any{"type": "mount", "component": "counter"})
		xid, _ := m["id"].(string)
		xfp, _ := m["fingerprint"].(string)
		// Once only the victim's instance is left in memory, the disconnect
		// has written its last activity, which would overwrite a change made
		// before it.
		_ = c.ws.Close()
		waitInstances(t, s, 1)
		// Change the stored state behind the server's back, keeping its MAC.
		sess, err := s.Store().GetSession(xid)
		if err != nil {
			t.Fatal(err)
		}
		sess.State = json.RawMessage(`{"count":999,"step":1}`)
		if err := s.Store().UpdateSession(sess); err != nil {
			t.Fatal(err)
		}
		c2 := s.dial(t, nil)
		c2.next(map[string]any{"type": "hello", "token": token})
		before, mark := rejectedCounts(t, s), s.logMark()
		if r := c2.next(map[string]any{"type": "hydrate", "id": xid, "fingerprint": xfp}); r["code"] != "invalid_checksum" {
			t.Fatalf("hydrate of a tampered snapshot: %v", r)
		}
		checkRejection(t, s, before, mark, rejectionCase{"hydrate of a tampered snapshot", "invalid_checksum", id, xid})
	})

	t.Run("forbidden unmount", func(t *testing.T) {
		c, id := newClient(t)
		before, mark := rejectedCounts(t, s), s.logMark()
		if r := c.next(map[string]any{"type": "unmount", "id": vid}); r["code"] != "forbidden" {
			t.Fatalf("unmount of another client's component: %v", r)
		}
		checkRejection(t, s, before, mark, rejectionCase{"unmount of another client's component", "forbidden", id, vid})
	})

	t.Run("call", func(t *testing.T) {
		c, id := newClient(t)
		before, mark := rejectedCounts(t, s), s.logMark()
		r := c.next(map[string]any{"type": "call", "id": vid, "action": "increment", "args": []any{}})
		code, _ := r["code"].(string)
		if r["type"] != "error" || code == "" {
			t.Fatalf("call of another client's component: %v", r)
		}
		checkRejection(t, s, before, mark, rejectionCase{"call of another client's component", code, id, vid})
	})

	t.Run("rate limit", func(t *testing.T) {
		c := s.dial(t, nil)
		w := c.next(map[string]any{"type": "hello"})
		id, _ := w["clientId"].(string)
		token, _ := w["token"].(string)
		before, mark := rejectedCounts(t, s), s.logMark()
		// 200 rejections from one client over two connections, so neither
		// reaches the per-connection message burst.
		for conn := 0; conn < 2; conn++ {
			if conn > 0 {
				c = s.dial(t, nil)
				if w := c.next(map[string]any{"type": "hello", "token": token}); w["clientId"] != id {
					t.Fatalf("attacker's second connection: %v", w)
				}
			}
			for i := 0; i < 50; i++ {
				if r := c.next(map[string]any{"type": "hydrate", "id": vid, "fingerprint": vfp}); r["code"] != "forbidden" {
					t.Fatalf("forbidden rejection %d: %v", i, r)
				}
				guess := fmt.Sprintf("main.guess%d-%d", conn, i)
				if r := c.next(map[string]any{"type": "hydrate", "id": guess, "fingerprint": vfp}); r["code"] != "not_found" {
					t.Fatalf("not_found rejection %d: %v", i, r)
				}
			}
			_ = c.ws.Close()
		}

		after := rejectedCounts(t, s)
		if d := after["forbidden"] - before["forbidden"]; d != 100 {
			t.Errorf("stats forbidden rose by %d over 100 forbidden rejections, want 100", d)
		}
		if d := after["not_found"] - before["not_found"]; d != 100 {
			t.Errorf("stats not_found rose by %d over 100 not_found rejections, want 100", d)
		}

		warns := 0
		for _, rec := range s.recordsSince(mark) {
			if rec["level"] == "WARN" {
				warns++
			}
		}
		if warns == 0 {
			t.Error("200 rejections from one client wrote no WARN line")
		}
		if warns > 20 {
			t.Errorf("200 rejections from one client wrote %d WARN lines, want at most 20 (rate-limited per client)", warns)
		}
		t.Logf("200 rejections from client %s: %d WARN lines", id, warns)
	})
}

func TestSecretsNeverLogged(t *testing.T) {
	secret := []byte("SECRET-livebolt-0123456789abcdef")
	if len(secret) != 32 {
		t.Fatalf("test secret is %d bytes, want 32", len(secret))
	}
	const adminToken = "ADMIN-TOKEN-livebolt-test-4f1c9e"
	s := startServer(t, Options{Secret: secret, AdminToken: adminToken})

	// issued collects every token and fingerprint the server sends.
	issued := map[string]string{} // value to its description
	var sentTokens []string       // tokens the clients made up
	note := func(m map[string]any) map[string]any {
		if tok, ok := m["token"].(string); ok && tok != "" {
			issued[tok] = "token"
			issued[signaturePart(tok)] = "token signature"
		}
		if fp, ok := m["fingerprint"].(string); ok && fp != "" {
			issued[fp] = "fingerprint"
		}
		refs, _ := m["components"].([]any)
		for _, ref := range refs {
			if r, ok := ref.(map[string]any); ok {
				if fp, ok := r["fingerprint"].(string); ok && fp != "" {
					issued[fp] = "fingerprint"
				}
			}
		}
		return m
	}
	do := func(c *wsClient, msg map[string]any) map[string]any {
		c.t.Helper()
		return note(c.do(msg))
	}
	call := func(c *wsClient, id, action string, args ...any) map[string]any {
		c.t.Helper()
		if args == nil {
			args = []any{}
		}
		return do(c, map[string]any{"type": "call", "id": id, "action": action, "args": args})
	}

	// A new client mounts, calls and makes failing calls.
	c1 := s.dial(t, nil)
	w1 := do(c1, map[string]any{"type": "hello"})
	token1, _ := w1["token"].(string)
	m := do(c1, map[string]any{"type": "mount", "component": "counter", "key": "main", "props": map[string]any{"initial": 1}})
	cid, _ := m["id"].(string)
	cfp, _ := m["fingerprint"].(string)
	m = do(c1, map[string]any{"type": "mount", "component": "todo"})
	tid, _ := m["id"].(string)
	tfp, _ := m["fingerprint"].(string)
	call(c1, cid, "increment")
	call(c1, cid, "setStep", 3)
	call(c1, cid, "setStep", "three")
	call(c1, cid, "jump")
	call(c1, tid, "add", "milk")
	call(c1, tid, "toggle", 9)
	_ = c1.ws.Close()
	waitInstances(t, s, 0)

	// The client resumes and hydrates with good and bad fingerprints, until
	// the todo session is locked.
	c2 := s.dial(t, nil)
	if w := do(c2, map[string]any{"type": "hello", "token": token1}); w["resumed"] != true {
		t.Fatalf("resume: %v", w)
	}
	if r := do(c2, map[string]any{"type": "hydrate", "id": cid, "fingerprint": cfp}); r["type"] != "state" {
		t.Fatalf("hydrate: %v", r)
	}
	for i := 0; i < 4; i++ {
		do(c2, map[string]any{"type": "hydrate", "id": tid, "fingerprint": cfp})
	}
	do(c2, map[string]any{"type": "hydrate", "id": tid, "fingerprint": tfp})
	m = do(c2, map[string]any{"type": "mount", "component": "counter", "key": "tamper"})
	xid, _ := m["id"].(string)
	xfp, _ := m["fingerprint"].(string)

	// Another client tries the first one's components.
	c3 := s.dial(t, nil)
	do(c3, map[string]any{"type": "hello"})
	do(c3, map[string]any{"type": "hydrate", "id": cid, "fingerprint": cfp})
	do(c3, map[string]any{"type": "unmount", "id": cid})
	call(c3, cid, "increment")
	do(c3, map[string]any{"type": "hydrate", "id": "main.AAAAAAAAAAAAAAAAAAAAAA", "fingerprint": cfp})
	do(c3, map[string]any{"type": "hydrate", "id": cid})

	// Hellos with tampered tokens, each followed by a hydrate.
	rng := rand.New(rand.NewPCG(3, 4))
	for _, tv := range tamperedTokens(rng, token1, token1, 12) {
		sentTokens = append(sentTokens, tv.token)
		c := s.dial(t, nil)
		do(c, map[string]any{"type": "hello", "token": tv.token})
		do(c, map[string]any{"type": "hydrate", "id": cid, "fingerprint": cfp})
		_ = c.ws.Close()
	}

	// A snapshot changed in the store is rejected and deleted.
	_ = c2.ws.Close()
	waitInstances(t, s, 0)
	sess, err := s.Store().GetSession(xid)
	if err != nil {
		t.Fatal(err)
	}
	sess.State = json.RawMessage(`{"count":999,"step":1}`)
	if err := s.Store().UpdateSession(sess); err != nil {
		t.Fatal(err)
	}
	c4 := s.dial(t, nil)
	do(c4, map[string]any{"type": "hello", "token": token1})
	if r := do(c4, map[string]any{"type": "hydrate", "id": xid, "fingerprint": xfp}); r["code"] != "invalid_checksum" {
		t.Errorf("hydrate of a tampered snapshot: %v", r)
	}
	do(c4, map[string]any{"type": "hydrate", "id": cid, "fingerprint": cfp})
	if r := do(c4, map[string]any{"type": "unmount", "id": cid}); r["type"] != "unmounted" {
		t.Errorf("unmount: %v", r)
	}

	// Cleanup with right and wrong credentials.
	for _, tc := range []struct {
		path, auth string
		status     int
	}{
		{"/api/memory/cleanup", "Bearer " + adminToken, http.StatusOK},
		{"/api/memory/cleanup", "Bearer wrong-admin-token", http.StatusUnauthorized},
		{"/api/memory/cleanup", "", http.StatusUnauthorized},
		{"/api/memory/cleanup", adminToken, http.StatusUnauthorized},
		{"/api/memory/cleanup", "Bearer " + token1, http.StatusUnauthorized},
		{"/api/memory/cleanup?all=true", "Bearer " + adminToken, http.StatusOK},
	} {
		if status, body := s.request(t, http.MethodPost, tc.path, tc.auth, nil); status != tc.status {
			t.Errorf("POST %s with a %d-character Authorization: status %d, want %d: %v", tc.path, len(tc.auth), status, tc.status, body)
		}
	}

	_ = c3.ws.Close()
	_ = c4.ws.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}

	forbidden := map[string]string{
		string(secret):                               "the secret",
		hex.EncodeToString(secret):                   "the secret in hex",
		base64.StdEncoding.EncodeToString(secret):    "the secret in base64",
		base64.RawURLEncoding.EncodeToString(secret): "the secret in base64url",
		adminToken: "the admin token",
	}
	for value, description := range issued {
		forbidden[value] = description
	}
	for _, tok := range sentTokens {
		// Only signature-length parts: a cut token may be no more than the
		// client id, which the log names on purpose.
		if sig := signaturePart(tok); len(sig) >= 20 {
			forbidden[sig] = "signature part of a tampered token"
		}
	}
	logText := s.logs.String()
	lines := strings.Split(strings.TrimRight(logText, "\n"), "\n")
	levels := map[string]int{}
	for _, line := range lines {
		levels[parseLogLine(line)["level"]]++
	}
	for value, description := range forbidden {
		if strings.Contains(logText, value) {
			t.Errorf("the log contains %s (%q)", description, value)
		}
	}
	if !strings.Contains(logText, "session access rejected") {
		t.Error("the log has no rejected access, so the checked log misses the attack paths")
	}
	t.Logf("checked %d log lines (%d bytes, by level %v) for %d secret values: %d tokens and signatures, fingerprints and tampered-token signatures, the secret in 4 encodings and the admin token",
		len(lines), len(logText), levels, len(forbidden), len(issued))
}
