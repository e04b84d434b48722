package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	fastws "github.com/fasthttp/websocket"
)

// startChat runs the example in-process on a free loopback port with its
// database in dir, and stops it when the test ends unless the test stopped
// it first with stopChat.
func startChat(t *testing.T, dir string) *chatServer {
	t.Helper()
	log := slog.New(slog.NewTextHandler(t.Output(), nil))
	s, err := start(config{addr: "127.0.0.1:0", dataDir: dir}, log)
	if err != nil {
		t.Fatalf("start the example: %v", err)
	}
	t.Cleanup(func() {
		select {
		case <-s.done:
		default:
			stopChat(t, s)
		}
	})
	return s
}

func stopChat(t *testing.T, s *chatServer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.stop(ctx); err != nil {
		t.Fatalf("stop the example: %v", err)
	}
}

// chatClient is one WebSocket connection to the example's live endpoint.
// Messages without the awaited ref (broadcasts, events) are kept in pushed.
type chatClient struct {
	t      *testing.T
	ws     *fastws.Conn
	ref    int
	pushed []map[string]any
}

func dialChat(t *testing.T, s *chatServer) *chatClient {
	t.Helper()
	url := "ws://" + s.addr + pathLive
	ws, resp, err := fastws.DefaultDialer.Dial(url, nil)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s: %v (HTTP status %d)", url, err, status)
	}
	t.Cleanup(func() { _ = ws.Close() })
	return &chatClient{t: t, ws: ws}
}

// request sends msg with the next ref and returns the server's reply to it.
func (c *chatClient) request(msg map[string]any) map[string]any {
	c.t.Helper()
	c.ref++
	msg["ref"] = c.ref
	if err := c.ws.WriteJSON(msg); err != nil {
		c.t.Fatalf("send %v: %v", msg["type"], err)
	}
	for {
		got := c.read()
		if ref, ok := got["ref"].(float64); ok && int(ref) == c.ref {
			return got
		}
		c.pushed = append(c.pushed, got)
	}
}

func (c *chatClient) read() map[string]any {
	c.t.Helper()
	_ = c.ws.SetReadDeadline(time.Now().Add(3 * time.Second))
	var got map[string]any
	if err := c.ws.ReadJSON(&got); err != nil {
		c.t.Fatalf("read from the live endpoint: %v (pushed so far: %v)", err, c.pushed)
	}
	return got
}

// broadcast returns the next broadcast this connection received, reading
// until one arrives.
func (c *chatClient) broadcast() map[string]any {
	c.t.Helper()
	for {
		if i := slices.IndexFunc(c.pushed, func(m map[string]any) bool { return m["type"] == "broadcast" }); i >= 0 {
			msg := c.pushed[i]
			c.pushed = slices.Delete(c.pushed, i, i+1)
			return msg
		}
		c.pushed = append(c.pushed, c.read())
	}
}

// hello sends hello with token (none when empty) and returns the welcome.
func (c *chatClient) hello(token string) map[string]any {
	c.t.Helper()
	msg := map[string]any{"type": "hello"}
	if token != "" {
		msg["token"] = token
	}
	welcome := c.request(msg)
	if welcome["type"] != "welcome" {
		c.t.Fatalf("hello: got %v, want a welcome", welcome)
	}
	return welcome
}

// join sends hello and mounts a chatroom in room, and returns its state
// message.
func (c *chatClient) join(room string) map[string]any {
	c.t.Helper()
	c.hello("")
	state := c.request(map[string]any{"type": "mount", "component": "chatroom", "props": map[string]any{"room": room}, "key": room})
	if state["type"] != "state" {
		c.t.Fatalf("mount chatroom in %q: got %v, want a state", room, state)
	}
	return state
}

// call runs action on component id with args and returns the reply.
func (c *chatClient) call(id any, action string, args ...any) map[string]any {
	c.t.Helper()
	return c.request(map[string]any{"type": "call", "id": id, "action": action, "args": args})
}

// mustCall is call that fails the test unless the reply is a state.
func (c *chatClient) mustCall(id any, action string, args ...any) map[string]any {
	c.t.Helper()
	reply := c.call(id, action, args...)
	if reply["type"] != "state" {
		c.t.Fatalf("call %s%v: got %v, want a state", action, args, reply)
	}
	return reply
}

// chatState decodes the state of a state message.
func chatState(t *testing.T, msg map[string]any) ChatState {
	t.Helper()
	raw, err := json.Marshal(msg["state"])
	if err != nil {
		t.Fatal(err)
	}
	var s ChatState
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatalf("decode chatroom state %s: %v", raw, err)
	}
	return s
}

func texts(msgs []Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = m.Nick + ": " + m.Text
	}
	return out
}

func TestChatBroadcastReachesRoomAndOthers(t *testing.T) {
	s := startChat(t, t.TempDir())
	alice, bob, carol := dialChat(t, s), dialChat(t, s), dialChat(t, s)
	aliceRoom := alice.join("lobby")
	bob.join("lobby")
	carol.join("other-room")

	alice.mustCall(aliceRoom["id"], "nick", "alice")
	before := time.Now().Add(-time.Second)
	reply := alice.mustCall(aliceRoom["id"], "say", map[string]any{"text": "  hello, lobby  "})
	if got := texts(chatState(t, reply).Messages); !slices.Equal(got, []string{"alice: hello, lobby"}) {
		t.Errorf("alice's state after say: messages %q, want the trimmed message", got)
	}

	for _, c := range []struct {
		name   string
		client *chatClient
	}{{"bob, same room", bob}, {"alice, the sender", alice}, {"carol, another room", carol}} {
		msg := c.client.broadcast()
		if msg["component"] != "chatroom" || msg["event"] != "message" {
			t.Errorf("%s: broadcast %v, want event message of chatroom", c.name, msg)
			continue
		}
		data, _ := msg["data"].(map[string]any)
		// Broadcasts go to every connection with a chatroom mounted, in any
		// room: carol gets lobby's message too, with room "lobby", and her
		// page is expected to drop it.
		if data["room"] != "lobby" || data["nick"] != "alice" || data["text"] != "hello, lobby" {
			t.Errorf("%s: broadcast data %v, want room lobby, nick alice, text \"hello, lobby\"", c.name, data)
		}
		at, err := time.Parse(time.RFC3339Nano, data["at"].(string))
		if err != nil || at.Before(before) || at.After(time.Now().Add(time.Second)) {
			t.Errorf("%s: broadcast at %v (%v), want the time of the say", c.name, data["at"], err)
		}
	}
}

func TestChatRejectsBadArgs(t *testing.T) {
	s := startChat(t, t.TempDir())
	c := dialChat(t, s)
	room := c.join("lobby")
	id := room["id"]

	t.Run("mount", func(t *testing.T) {
		for name, props := range map[string]map[string]any{
			"no room":       {},
			"empty room":    {"room": ""},
			"space in room": {"room": "my room"},
			"slash in room": {"room": "a/b"},
			"33 characters": {"room": strings.Repeat("r", 33)},
			"room a number": {"room": 7},
			"unknown prop":  {"room": "lobby", "topic": "x"},
		} {
			reply := c.request(map[string]any{"type": "mount", "component": "chatroom", "props": props})
			if reply["type"] != "error" || reply["code"] != "bad_args" {
				t.Errorf("mount with %s %v: got %v, want bad_args", name, props, reply)
			}
		}
	})
	t.Run("say", func(t *testing.T) {
		for name, args := range map[string][]any{
			"empty text":     {map[string]any{"text": ""}},
			"blank text":     {map[string]any{"text": " \n\t"}},
			"501 characters": {map[string]any{"text": strings.Repeat("é", MaxTextLength+1)}},
			"unknown field":  {map[string]any{"text": "hi", "to": "bob"}},
			"plain string":   {"hi"},
			"null":           {nil},
			"no argument":    {},
			"two arguments":  {map[string]any{"text": "a"}, map[string]any{"text": "b"}},
		} {
			if reply := c.call(id, "say", args...); reply["type"] != "error" || reply["code"] != "bad_args" {
				t.Errorf("say with %s: got %.300v, want bad_args", name, reply)
			}
		}
	})
	t.Run("nick", func(t *testing.T) {
		for name, args := range map[string][]any{
			"empty":         {""},
			"blank":         {"   "},
			"25 characters": {strings.Repeat("n", MaxNickLength+1)},
			"markup":        {"<b>bob</b>"},
			"a number":      {42},
		} {
			if reply := c.call(id, "nick", args...); reply["type"] != "error" || reply["code"] != "bad_args" {
				t.Errorf("nick with %s: got %.300v, want bad_args", name, reply)
			}
		}
	})

	// None of the rejected calls changed the state or its version.
	reply := c.mustCall(id, "say", map[string]any{"text": strings.Repeat("é", MaxTextLength)})
	if v := reply["version"]; v != float64(2) {
		t.Errorf("version after the rejected calls and one say: %v, want 2", v)
	}
	if got := chatState(t, reply); got.Nick != DefaultNick || len(got.Messages) != 1 {
		t.Errorf("state after the rejected calls and one say of %d characters: nick %q, %d messages; want %q and 1",
			MaxTextLength, got.Nick, len(got.Messages), DefaultNick)
	}
}

func TestChatRoutes(t *testing.T) {
	s := startChat(t, t.TempDir())
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, tc := range []struct {
		path, wantType, wantBody string
		wantStatus               int
	}{
		{pathPage, "text/html", `from '/chat/live.js'`, 200},
		{pathPage, "text/html", `createClient('/chat/live')`, 200},
		{pathClient, "text/javascript", "export function connect", 200},
		{pathMemory + "/stats", "application/json", `"live"`, 200},
		{pathMemory + "/health", "application/json", `"status"`, 200},
		{pathLive, "", "", http.StatusUpgradeRequired},
		{"/", "", "", http.StatusFound},
		{"/live", "application/json", `"status":404`, 404},
		{"/live.js", "application/json", `"status":404`, 404},
		{"/api/memory/stats", "application/json", `"status":404`, 404},
		{"/metrics", "application/json", `"status":404`, 404},
	} {
		resp, err := noRedirect.Get("http://" + s.addr + tc.path)
		if err != nil {
			t.Fatalf("GET %s: %v", tc.path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != tc.wantStatus {
			t.Errorf("GET %s: status %d, want %d", tc.path, resp.StatusCode, tc.wantStatus)
		}
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, tc.wantType) {
			t.Errorf("GET %s: Content-Type %q, want %s", tc.path, ct, tc.wantType)
		}
		if !strings.Contains(string(body), tc.wantBody) {
			t.Errorf("GET %s: body %.200q does not contain %q", tc.path, body, tc.wantBody)
		}
		if tc.path == "/" && resp.Header.Get("Location") != pathPage {
			t.Errorf("GET /: Location %q, want %s", resp.Header.Get("Location"), pathPage)
		}
	}
}

func TestChatStateSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	first := startChat(t, dir)
	alice := dialChat(t, first)
	welcome := alice.hello("")
	mounted := alice.request(map[string]any{"type": "mount", "component": "chatroom", "props": map[string]any{"room": "lobby"}, "key": "lobby"})
	id, fingerprint := mounted["id"], mounted["fingerprint"]
	alice.mustCall(id, "nick", "alice")
	alice.mustCall(id, "say", map[string]any{"text": "first"})
	alice.mustCall(id, "say", map[string]any{"text": "second"})
	stopChat(t, first)
	// stop shuts livebolt down before the fiber app, so the open WebSocket
	// is closed with 1012 (service restart) and not just dropped.
	// The broadcasts of alice's own say calls are queued before the close.
	_ = alice.ws.SetReadDeadline(time.Now().Add(3 * time.Second))
	for {
		if _, _, err := alice.ws.ReadMessage(); err != nil {
			if !fastws.IsCloseError(err, fastws.CloseServiceRestart) {
				t.Errorf("open WebSocket at stop ended with %v, want close 1012", err)
			}
			break
		}
	}

	second := startChat(t, dir)
	again := dialChat(t, second)
	resumed := again.hello(welcome["token"].(string))
	if resumed["resumed"] != true || resumed["clientId"] != welcome["clientId"] {
		t.Fatalf("hello with the saved token after a restart: resumed %v, clientId %v; want true and %v",
			resumed["resumed"], resumed["clientId"], welcome["clientId"])
	}
	listed, _ := resumed["components"].([]any)
	if len(listed) != 1 || listed[0].(map[string]any)["id"] != id {
		t.Errorf("welcome after a restart lists %v, want the one chatroom %v", listed, id)
	}

	hydrated := again.request(map[string]any{"type": "hydrate", "id": id, "fingerprint": fingerprint})
	if hydrated["type"] != "state" {
		t.Fatalf("hydrate after a restart: got %v, want a state", hydrated)
	}
	got := chatState(t, hydrated)
	if got.Room != "lobby" || got.Nick != "alice" {
		t.Errorf("hydrated state: room %q, nick %q; want lobby and alice", got.Room, got.Nick)
	}
	if msgs := texts(got.Messages); !slices.Equal(msgs, []string{"alice: first", "alice: second"}) {
		t.Errorf("hydrated messages %q, want both messages said before the restart", msgs)
	}
	if v := hydrated["version"]; v != float64(4) {
		t.Errorf("hydrated version %v, want 4 (mount, nick and two say calls)", v)
	}
	if reply := again.mustCall(id, "say", map[string]any{"text": "third"}); len(chatState(t, reply).Messages) != 3 {
		t.Errorf("say after hydration: %v, want 3 messages", reply["state"])
	}
}

func TestAppendMessageKeepsLatest(t *testing.T) {
	var msgs []Message
	for i := range MaxMessages + 7 {
		msgs = appendMessage(msgs, Message{Text: string(rune('A' + i%26)), Nick: "n"})
		if want := min(i+1, MaxMessages); len(msgs) != want {
			t.Fatalf("after %d messages: kept %d, want %d", i+1, len(msgs), want)
		}
	}
	// Message 7 (index 7, "H") is the oldest of the last MaxMessages.
	if msgs[0].Text != "H" || msgs[len(msgs)-1].Text != string(rune('A'+(MaxMessages+6)%26)) {
		t.Errorf("kept messages from %q to %q, want the latest %d", msgs[0].Text, msgs[len(msgs)-1].Text, MaxMessages)
	}
}

func TestRunRejectsInvalidInput(t *testing.T) {
	for name, tc := range map[string]struct {
		args []string
		env  map[string]string
	}{
		"unknown flag":     {args: []string{"-port", "1"}},
		"short secret":     {env: map[string]string{"LIVEBOLT_SECRET": "too-short"}},
		"flag with no arg": {args: []string{"-addr"}},
	} {
		var out strings.Builder
		code := run(tc.args, func(k string) string { return tc.env[k] }, &out)
		if code != 2 {
			t.Errorf("run with %s: exit code %d, want 2; output %q", name, code, out.String())
		}
		if strings.Contains(out.String(), "too-short") {
			t.Errorf("run with %s: output %q contains the secret", name, out.String())
		}
	}
}
