package live

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/livebolt/livebolt/storage"
)

// MinSecretBytes is the shortest signing key the engine accepts.
const MinSecretBytes = 32

// signer derives one HMAC-SHA256 key per purpose from the server secret, so
// a token can never be replayed as a fingerprint or a snapshot MAC.
type signer struct {
	tokenKey       []byte
	fingerprintKey []byte
	snapshotKey    []byte
}

func newSigner(secret []byte) (*signer, error) {
	if len(secret) < MinSecretBytes {
		return nil, fmt.Errorf("signing secret is %d bytes, need at least %d", len(secret), MinSecretBytes)
	}
	derive := func(purpose string) []byte {
		m := hmac.New(sha256.New, secret)
		m.Write([]byte("livebolt/" + purpose))
		return m.Sum(nil)
	}
	return &signer{
		tokenKey:       derive("token"),
		fingerprintKey: derive("fingerprint"),
		snapshotKey:    derive("snapshot"),
	}, nil
}

var b64 = base64.RawURLEncoding

func mac(key []byte, parts ...[]byte) []byte {
	m := hmac.New(sha256.New, key)
	var n [binary.MaxVarintLen64]byte
	for _, p := range parts {
		// Length prefixes keep ("ab","c") and ("a","bc") apart.
		m.Write(n[:binary.PutUvarint(n[:], uint64(len(p)))])
		m.Write(p)
	}
	return m.Sum(nil)
}

// randomID returns n random bytes, base64url-encoded.
func randomID(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		// crypto/rand.Read does not fail on supported platforms since Go 1.24.
		panic(fmt.Sprintf("live: read random bytes: %v", err))
	}
	return b64.EncodeToString(b)
}

// sortableAlphabet holds the base64url characters in ASCII order, so text
// written with it sorts like the numbers it encodes.
const sortableAlphabet = "-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"

// NewID returns a new unguessable id for a session or client made at t: 8
// characters that sort like t to the millisecond, then 16 random bytes in
// base64url (22 characters). Ids made close in time are neighbours in the
// database's B-trees, so sessions created together, which often expire
// together, are deleted from shared pages instead of one page each.
func NewID(t time.Time) string {
	ms := uint64(t.UnixMilli()) & (1<<48 - 1)
	var prefix [8]byte
	for i := len(prefix) - 1; i >= 0; i-- {
		prefix[i] = sortableAlphabet[ms&63]
		ms >>= 6
	}
	return string(prefix[:]) + randomID(16)
}

// token returns the credential for clientID: the id and its MAC.
func (s *signer) token(clientID string) string {
	return clientID + "." + b64.EncodeToString(mac(s.tokenKey, []byte(clientID)))
}

// verifyToken returns the client id of a valid token.
func (s *signer) verifyToken(token string) (string, bool) {
	clientID, sig, ok := strings.Cut(token, ".")
	if !ok || clientID == "" {
		return "", false
	}
	want := mac(s.tokenKey, []byte(clientID))
	// Compare the encoded form, so that only the one canonical spelling of
	// a token is accepted (decoders skip newlines and ignore unused bits).
	return clientID, hmac.Equal([]byte(sig), []byte(b64.EncodeToString(want)))
}

// fingerprint binds a session id to its owner and creation time.
func (s *signer) fingerprint(id, owner string, createdNanos int64) string {
	var t [8]byte
	binary.BigEndian.PutUint64(t[:], uint64(createdNanos))
	return b64.EncodeToString(mac(s.fingerprintKey, []byte(id), []byte(owner), t[:]))
}

// sign sets sess.MAC over every other field, with Props and State as the
// bytes they are. The engine produces both with encoding/json, whose output
// is compact and escaped, so a store that re-encodes them as JSON gives the
// same bytes back.
func (s *signer) sign(sess *storage.Session) error {
	sess.MAC = s.snapshotMAC(sess, sess.Props, sess.State)
	return nil
}

// verify reports whether sess.MAC matches its fields, in constant time.
// Sessions signed before the MAC covered raw bytes were signed over
// canonical JSON, which is checked second.
func (s *signer) verify(sess *storage.Session) bool {
	if hmac.Equal(s.snapshotMAC(sess, sess.Props, sess.State), sess.MAC) {
		return true
	}
	props, err := canonicalJSON(sess.Props)
	if err != nil {
		return false
	}
	state, err := canonicalJSON(sess.State)
	if err != nil {
		return false
	}
	return hmac.Equal(s.snapshotMAC(sess, props, state), sess.MAC)
}

func (s *signer) snapshotMAC(sess *storage.Session, props, state []byte) []byte {
	var num [8]byte
	m := hmac.New(sha256.New, s.snapshotKey)
	var n [binary.MaxVarintLen64]byte
	write := func(p []byte) {
		m.Write(n[:binary.PutUvarint(n[:], uint64(len(p)))])
		m.Write(p)
	}
	writeNum := func(v int64) {
		binary.BigEndian.PutUint64(num[:], uint64(v))
		write(num[:])
	}
	write([]byte(sess.ID))
	write([]byte(sess.Component))
	write([]byte(sess.Owner))
	write(props)
	write(state)
	write([]byte(sess.Fingerprint))
	writeNum(int64(sess.Version))
	writeNum(sess.CreatedAt.UnixNano())
	writeNum(sess.LastActivity.UnixNano())
	writeNum(int64(sess.FailedAttempts))
	// StateVersion is left out at zero, so MACs stored before it existed
	// still verify. A StateVersion changed to or from zero is still
	// detected, because the input then gains or loses a field.
	if sess.StateVersion != 0 {
		writeNum(int64(sess.StateVersion))
	}
	return m.Sum(nil)
}

// canonicalJSON re-encodes a JSON value with sorted object keys and no
// insignificant space, keeping number literals as written. Snapshots signed
// by earlier versions were signed over this form.
func canonicalJSON(raw json.RawMessage) ([]byte, error) {
	if len(raw) == 0 {
		return nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	// encoding/json writes map keys sorted and json.Number verbatim.
	return json.Marshal(v)
}
