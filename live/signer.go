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

// sign sets sess.MAC over the canonical encoding of every other field.
func (s *signer) sign(sess *storage.Session) error {
	m, err := s.snapshotMAC(sess)
	if err != nil {
		return err
	}
	sess.MAC = m
	return nil
}

// verify reports whether sess.MAC matches its fields, in constant time.
func (s *signer) verify(sess *storage.Session) bool {
	m, err := s.snapshotMAC(sess)
	return err == nil && hmac.Equal(m, sess.MAC)
}

func (s *signer) snapshotMAC(sess *storage.Session) ([]byte, error) {
	props, err := canonicalJSON(sess.Props)
	if err != nil {
		return nil, fmt.Errorf("canonicalize props of session %s: %w", sess.ID, err)
	}
	state, err := canonicalJSON(sess.State)
	if err != nil {
		return nil, fmt.Errorf("canonicalize state of session %s: %w", sess.ID, err)
	}
	num := func(v int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(v)) }
	return mac(s.snapshotKey,
		[]byte(sess.ID), []byte(sess.Component), []byte(sess.Owner),
		props, state, []byte(sess.Fingerprint),
		num(int64(sess.Version)), num(sess.CreatedAt.UnixNano()),
		num(sess.LastActivity.UnixNano()), num(int64(sess.FailedAttempts)),
	), nil
}

// canonicalJSON re-encodes a JSON value with sorted object keys and no
// insignificant space, keeping number literals as written, so equal values
// always give equal bytes whatever the storage layer did to the layout.
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
