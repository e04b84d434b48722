package live

import (
	"errors"
	"fmt"
)

// Error codes sent to clients in error messages. Clients switch on these; the
// set only grows.
const (
	CodeBadJSON             = "bad_json"
	CodeUnknownType         = "unknown_type"
	CodeHelloRequired       = "hello_required"
	CodeUnknownComponent    = "unknown_component"
	CodeUnknownAction       = "unknown_action"
	CodeBadArgs             = "bad_args"
	CodeNotFound            = "not_found"
	CodeForbidden           = "forbidden"
	CodeFingerprintMismatch = "fingerprint_mismatch"
	CodeMaxAttemptsExceeded = "max_attempts_exceeded"
	CodeExpired             = "expired"
	CodeInvalidChecksum     = "invalid_checksum"
	CodeActionFailed        = "action_failed"
	CodeTooLarge            = "too_large"
	CodeInternal            = "internal"
	CodeRateLimited         = "rate_limited"
	CodeLimitExceeded       = "limit_exceeded"
	CodeOutdated            = "outdated"
)

// Error is a protocol error: a code from the list above, a message for
// people, and whether the client must drop its stored entry and mount again.
type Error struct {
	Code            string
	Message         string
	RequiresRefresh bool
}

// Error returns the code and the message, as "code: message".
func (e *Error) Error() string { return e.Code + ": " + e.Message }

func newError(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

func refreshError(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...), RequiresRefresh: true}
}

// ErrBadArgs marks an error caused by invalid action arguments or props. An
// action error wrapping it is sent to the client as bad_args, and any other
// action error as action_failed.
var ErrBadArgs = errors.New("bad arguments")

// BadArgs returns an error wrapping ErrBadArgs with a formatted message.
func BadArgs(format string, args ...any) error {
	return &badArgsError{msg: fmt.Sprintf(format, args...)}
}

type badArgsError struct{ msg string }

func (e *badArgsError) Error() string { return e.msg }
func (e *badArgsError) Unwrap() error { return ErrBadArgs }
