package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromium is where Debian's chromium package installs the browser.
const chromium = "/usr/bin/chromium"

// chatTab is one page of the chat in headless Chromium, in a browser
// context of its own, so each tab has its own localStorage and is a client
// of its own.
type chatTab struct {
	t   *testing.T
	ctx context.Context
}

// openChatTabs starts Chromium and opens n tabs on the chat page of s.
func openChatTabs(t *testing.T, s *chatServer, n int) []*chatTab {
	t.Helper()
	if testing.Short() {
		t.Skip("browser test skipped in -short mode")
	}
	if _, err := os.Stat(chromium); err != nil {
		t.Skipf("browser test skipped: %s not found; install it with: apt-get install -y chromium", chromium)
	}
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromium), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.NoFirstRun, chromedp.UserDataDir(t.TempDir()))
	browser, cancelBrowser := chromedp.NewContext(alloc)
	t.Cleanup(func() {
		cancelBrowser()
		cancelAlloc()
	})
	if err := chromedp.Do(browser); err != nil {
		t.Fatalf("start %s: %v", chromium, err)
	}
	tabs := make([]*chatTab, n)
	for i := range tabs {
		ctx, cancel := chromedp.NewContext(browser, chromedp.WithNewBrowserContext())
		t.Cleanup(cancel)
		// The first action creates the tab and binds it to the context it
		// runs on, so it runs on ctx itself and not on one with a deadline.
		if err := chromedp.Do(ctx); err != nil {
			t.Fatalf("open tab %d: %v", i, err)
		}
		tabs[i] = &chatTab{t: t, ctx: ctx}
		tabs[i].do(chromedp.Navigate("http://" + s.addr + pathPage))
	}
	return tabs
}

// do runs actions in the tab with a deadline.
func (tab *chatTab) do(actions ...chromedp.Action[chromedp.Void]) {
	tab.t.Helper()
	ctx, cancel := context.WithTimeout(tab.ctx, 10*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		tab.t.Fatalf("browser: %v", err)
	}
}

// waitFor polls until the JavaScript expression is true.
func (tab *chatTab) waitFor(what, expr string) {
	tab.t.Helper()
	ctx, cancel := context.WithTimeout(tab.ctx, 10*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingInterval(25*time.Millisecond))); err != nil {
		page, _ := chromedp.Run(tab.ctx, chromedp.Evaluate[string](`document.body.innerText`))
		tab.t.Fatalf("waiting for %s: %v; the page shows:\n%s", what, err, page)
	}
}

func (tab *chatTab) join(room, nick string) {
	tab.t.Helper()
	tab.do(
		chromedp.SetValue(chromedp.CSS(`#join [name=room]`), room),
		chromedp.SetValue(chromedp.CSS(`#join [name=nick]`), nick),
		chromedp.Click(chromedp.CSS(`#join button`)),
	)
	tab.waitFor("room "+room+" to open", `!document.getElementById('room').hidden`)
}

func (tab *chatTab) say(text string) {
	tab.t.Helper()
	tab.do(
		chromedp.SetValue(chromedp.CSS(`#say [name=text]`), text),
		chromedp.Click(chromedp.CSS(`#say button`)),
	)
}

// waitForMessage waits until the message list shows text.
func (tab *chatTab) waitForMessage(text string) {
	tab.t.Helper()
	tab.waitFor(fmt.Sprintf("message %q", text),
		fmt.Sprintf(`document.getElementById('messages').innerText.includes(%s)`, strconv.Quote(text)))
}

// shows reports whether the message list shows text now.
func (tab *chatTab) shows(text string) bool {
	tab.t.Helper()
	ctx, cancel := context.WithTimeout(tab.ctx, 10*time.Second)
	defer cancel()
	found, err := chromedp.Run(ctx, chromedp.Evaluate[bool](
		fmt.Sprintf(`document.getElementById('messages').innerText.includes(%s)`, strconv.Quote(text))))
	if err != nil {
		tab.t.Fatalf("browser: %v", err)
	}
	return found
}

func TestChatPageFiltersByRoom(t *testing.T) {
	s := startChat(t, t.TempDir())
	tabs := openChatTabs(t, s, 3)
	alice, bob, carol := tabs[0], tabs[1], tabs[2]
	alice.join("lobby", "alice")
	bob.join("lobby", "bob")
	carol.join("other", "carol")

	alice.say("<b>hello</b> lobby")
	bob.waitForMessage("alice<b>hello</b> lobby") // as text, not markup
	alice.waitForMessage("alice<b>hello</b> lobby")
	// The lobby broadcast was queued on carol's connection in the same loop
	// that reached bob, so it arrives before the reply to her own say. Once
	// her message shows, the lobby one would show too unless the page
	// dropped it.
	carol.say("only here")
	carol.waitForMessage("carolonly here")
	if carol.shows("hello") {
		t.Error("the page in room other shows a message of room lobby")
	}
	if bob.shows("only here") {
		t.Error("the page in room lobby shows a message of room other")
	}

	// A reload rejoins the room from the address and hydrates the same
	// chatroom, which keeps alice's own message.
	alice.do(chromedp.Reload())
	alice.waitForMessage("alice<b>hello</b> lobby")
}
