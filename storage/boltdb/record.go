package boltdb

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"
)

// Tags of a session record in the binary encoding below. Records of schema
// version 1 are JSON objects, which start with '{' instead.
const (
	// recordBinary is a record without a StateVersion, which reads as zero.
	recordBinary byte = 0x01
	// recordBinaryStateVersion is a record that ends with a StateVersion. A
	// tag of its own, instead of an optional last field, keeps a record cut
	// after FailedAttempts from decoding as a valid one.
	recordBinaryStateVersion byte = 0x02
)

// encodeRecord writes a session in the binary encoding: the tag, then
// ID, Component, Owner, Fingerprint, Props, State and MAC, each as a
// uvarint length and its bytes, then Version, CreatedAt and LastActivity
// (Unix nanoseconds, varint), FailedAttempts and, under the
// recordBinaryStateVersion tag only, StateVersion. Every call writes one, so
// it avoids the reflection and escaping of JSON. A session of StateVersion
// zero gets the same bytes as before StateVersion existed.
//
// NOTE: a build from before StateVersion existed reads a record of another
// StateVersion as corrupt, and deletes it when a client hydrates it.
func encodeRecord(dst []byte, s *Session) []byte {
	tag := recordBinary
	if s.StateVersion != 0 {
		tag = recordBinaryStateVersion
	}
	dst = append(dst, tag)
	for _, field := range [][]byte{[]byte(s.ID), []byte(s.Component), []byte(s.Owner), []byte(s.Fingerprint), s.Props, s.State, s.MAC} {
		dst = binary.AppendUvarint(dst, uint64(len(field)))
		dst = append(dst, field...)
	}
	dst = binary.AppendUvarint(dst, s.Version)
	dst = binary.AppendVarint(dst, s.CreatedAt.UnixNano())
	dst = binary.AppendVarint(dst, s.LastActivity.UnixNano())
	dst = binary.AppendUvarint(dst, uint64(s.FailedAttempts))
	if tag == recordBinaryStateVersion {
		dst = binary.AppendUvarint(dst, uint64(s.StateVersion))
	}
	return dst
}

var errTruncated = errors.New("record is truncated")

// decodeRecord reads a record of either encoding. The result shares no
// memory with body, which bbolt owns only until the transaction ends.
func decodeRecord(body []byte) (*Session, error) {
	if len(body) > 0 && body[0] == '{' {
		var s Session
		if err := json.Unmarshal(body, &s); err != nil {
			return nil, err
		}
		return &s, nil
	}
	if !isBinaryRecord(body) {
		return nil, errors.New("unknown record encoding")
	}
	r := reader{buf: body[1:]}
	var s Session
	s.ID = string(r.bytes())
	s.Component = string(r.bytes())
	s.Owner = string(r.bytes())
	s.Fingerprint = string(r.bytes())
	s.Props = r.copy()
	s.State = r.copy()
	s.MAC = r.copy()
	s.Version = r.uvarint()
	s.CreatedAt = time.Unix(0, r.varint()).UTC()
	s.LastActivity = time.Unix(0, r.varint()).UTC()
	attempts := r.uvarint()
	if attempts > math.MaxInt32 {
		// No server counts that far: max attempts stops the count long
		// before. Decoded into an int it would turn negative.
		return nil, fmt.Errorf("failed attempts %d is above the int32 range", attempts)
	}
	s.FailedAttempts = int(attempts)
	if body[0] == recordBinaryStateVersion {
		v := r.uvarint()
		if v > math.MaxUint32 {
			return nil, fmt.Errorf("state version %d is above the uint32 range", v)
		}
		s.StateVersion = uint32(v)
	}
	if r.err != nil {
		return nil, r.err
	}
	if len(r.buf) != 0 {
		return nil, fmt.Errorf("%d bytes after the record", len(r.buf))
	}
	return &s, nil
}

// isBinaryRecord reports whether body starts with a binary record tag.
func isBinaryRecord(body []byte) bool {
	return len(body) > 0 && (body[0] == recordBinary || body[0] == recordBinaryStateVersion)
}

// reader decodes fields from a byte slice and remembers the first error.
type reader struct {
	buf []byte
	err error
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.buf)
	if n <= 0 {
		r.err = errTruncated
		return 0
	}
	r.buf = r.buf[n:]
	return v
}

func (r *reader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.buf)
	if n <= 0 {
		r.err = errTruncated
		return 0
	}
	r.buf = r.buf[n:]
	return v
}

// bytes returns the next length-prefixed field, still in the buffer.
func (r *reader) bytes() []byte {
	n := r.uvarint()
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.buf)) {
		r.err = errTruncated
		return nil
	}
	field := r.buf[:n]
	r.buf = r.buf[n:]
	return field
}

// copy returns the next length-prefixed field as a new slice, nil when empty.
func (r *reader) copy() []byte {
	field := r.bytes()
	if len(field) == 0 {
		return nil
	}
	return append([]byte(nil), field...)
}

// recordActivity reads only the LastActivity of a record, in Unix
// nanoseconds, without copying any field.
func recordActivity(body []byte) (int64, error) {
	if len(body) > 0 && body[0] == '{' {
		s, err := decodeRecord(body)
		if err != nil {
			return 0, err
		}
		return s.LastActivity.UnixNano(), nil
	}
	if !isBinaryRecord(body) {
		return 0, errors.New("unknown record encoding")
	}
	r := reader{buf: body[1:]}
	for range 7 { // ID, Component, Owner, Fingerprint, Props, State, MAC
		r.bytes()
	}
	r.uvarint() // Version
	r.varint()  // CreatedAt
	activity := r.varint()
	return activity, r.err
}
