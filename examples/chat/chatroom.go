package main

import (
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/livebolt/livebolt/live"
)

// Limits of the chatroom component.
const (
	// MaxMessages is the number of messages a chatroom's state keeps. The
	// oldest are dropped first.
	MaxMessages = 50
	// MaxTextLength is the maximum length of a message, in characters.
	MaxTextLength = 500
	// MaxNickLength is the maximum length of a nickname, in characters.
	MaxNickLength = 24
	// DefaultNick is the nickname of a chatroom before its first nick call.
	DefaultNick = "guest"
)

var (
	roomName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)
	nickName = regexp.MustCompile(`^[\p{L}\p{N} _.-]+$`)
)

// Message is one chat message. It is the data of the "message" broadcast
// and an entry of ChatState.Messages.
type Message struct {
	Room string    `json:"room"`
	Nick string    `json:"nick"`
	Text string    `json:"text"`
	At   time.Time `json:"at"`
}

// ChatState is the state of one user's chatroom component: the room it
// joined, the user's nickname and the last MaxMessages messages sent with
// this component's say action.
//
// Messages from other users are not in it. They reach the page only as
// "message" broadcasts, because an action changes only the state of the
// component it is called on.
type ChatState struct {
	Room     string    `json:"room"`
	Nick     string    `json:"nick"`
	Messages []Message `json:"messages"`
}

// SayArgs is the argument of the say action: {"text": "..."}. Unknown
// fields are rejected with bad_args by live.Typed.
type SayArgs struct {
	Text string `json:"text"`
}

// Validate rejects a text that is empty, only white space, or longer than
// MaxTextLength characters. live.Typed calls it and sends its error as
// bad_args.
func (a SayArgs) Validate() error {
	if strings.TrimSpace(a.Text) == "" {
		return live.BadArgs("message text is empty")
	}
	if n := utf8.RuneCountInString(a.Text); n > MaxTextLength {
		return live.BadArgs("message text is %d characters, the maximum is %d", n, MaxTextLength)
	}
	return nil
}

// Chatroom defines the chatroom component. now returns the time stamped on
// each message, such as time.Now.
//
// Props: {"room": "name"}, 1 to 32 ASCII letters, digits, '-' or '_'.
// Actions:
//   - nick(name): sets the nickname (1 to MaxNickLength letters, digits,
//     spaces, '.', '-' or '_') and returns it.
//   - say({"text": "..."}): appends the message to the state, broadcasts it
//     as a "message" event with a Message as data, and returns the Message.
//
// A broadcast reaches every connection that has any chatroom mounted,
// whatever its room, because livebolt broadcasts by component type. A
// client must therefore drop "message" events whose room is not its own.
func Chatroom(now func() time.Time) *live.Component[ChatState] {
	return live.Define("chatroom", mountChatroom).
		Action("nick", live.Typed(func(ctx *live.Context, s *ChatState, nick string) (any, error) {
			nick, err := validateNick(nick)
			if err != nil {
				return nil, err
			}
			s.Nick = nick
			return nick, nil
		})).
		Action("say", live.Typed(func(ctx *live.Context, s *ChatState, args SayArgs) (any, error) {
			msg := Message{Room: s.Room, Nick: s.Nick, Text: strings.TrimSpace(args.Text), At: now().UTC()}
			s.Messages = appendMessage(s.Messages, msg)
			// Sent only after the new state is committed, to every
			// connection with a chatroom mounted, in any room.
			ctx.Broadcast("message", msg)
			return msg, nil
		}))
}

// mountChatroom builds the first state from the props {"room": "name"}.
func mountChatroom(props live.Props) (ChatState, error) {
	var p struct {
		Room string `json:"room"`
	}
	if err := props.Decode(&p); err != nil {
		return ChatState{}, err
	}
	if !roomName.MatchString(p.Room) {
		return ChatState{}, live.BadArgs("invalid room %q: use 1 to 32 letters, digits, '-' or '_'", p.Room)
	}
	return ChatState{Room: p.Room, Nick: DefaultNick, Messages: []Message{}}, nil
}

// validateNick returns nick without surrounding spaces, or a bad-args error
// that names the rule it breaks.
func validateNick(nick string) (string, error) {
	nick = strings.TrimSpace(nick)
	if n := utf8.RuneCountInString(nick); n == 0 || n > MaxNickLength {
		return "", live.BadArgs("nickname is %d characters, it must be 1 to %d", n, MaxNickLength)
	}
	if !nickName.MatchString(nick) {
		return "", live.BadArgs("invalid nickname %q: use letters, digits, spaces, '.', '-' or '_'", nick)
	}
	return nick, nil
}

// appendMessage appends msg and drops the oldest messages beyond
// MaxMessages. It copies into a new slice when it drops, so the backing
// array does not keep growing.
func appendMessage(msgs []Message, msg Message) []Message {
	msgs = append(msgs, msg)
	if len(msgs) <= MaxMessages {
		return msgs
	}
	kept := make([]Message, MaxMessages)
	copy(kept, msgs[len(msgs)-MaxMessages:])
	return kept
}

// registerChat adds the chatroom component to reg. It is the Register
// function of the example's app.Options, which names the failure.
func registerChat(reg *live.Registry) error {
	return reg.Register(Chatroom(time.Now))
}
