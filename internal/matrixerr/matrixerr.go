// Package matrixerr is the client-visible Matrix error: a code, an HTTP status and a
// message, made only by the constructors below so that codes and statuses stay in one
// place (the spec's "Standard error response").
package matrixerr

import (
	"net/http"
	"time"
)

// Error is {"errcode": Code, "error": Message} with optional extra fields.
type Error struct {
	Code         string `json:"errcode"`
	Message      string `json:"error"`
	Status       int    `json:"-"`
	RetryAfterMS int64  `json:"retry_after_ms,omitempty"`
	RoomVersion  string `json:"room_version,omitempty"`
	// RoomID names the room a createRoom made although some of its invites failed: the
	// error is the first failed invite's, and the room exists.
	RoomID string `json:"room_id,omitempty"`
	// CurrentVersion is the current key backup version of M_WRONG_ROOM_KEYS_VERSION.
	CurrentVersion string `json:"current_version,omitempty"`
}

// Error implements error.
func (e *Error) Error() string {
	return e.Code + ": " + e.Message
}

func mk(code string, status int) func(string) *Error {
	return func(msg string) *Error { return &Error{Code: code, Message: msg, Status: status} }
}

// The constructors, one per error code the server sends.
var (
	Forbidden              = mk("M_FORBIDDEN", http.StatusForbidden)
	NotFound               = mk("M_NOT_FOUND", http.StatusNotFound)
	Unrecognized           = mk("M_UNRECOGNIZED", http.StatusNotFound)
	BadJSON                = mk("M_BAD_JSON", http.StatusBadRequest)
	NotJSON                = mk("M_NOT_JSON", http.StatusBadRequest)
	MissingToken           = mk("M_MISSING_TOKEN", http.StatusUnauthorized)
	UnknownToken           = mk("M_UNKNOWN_TOKEN", http.StatusUnauthorized)
	MissingParam           = mk("M_MISSING_PARAM", http.StatusBadRequest)
	InvalidParam           = mk("M_INVALID_PARAM", http.StatusBadRequest)
	UserInUse              = mk("M_USER_IN_USE", http.StatusBadRequest)
	InvalidUsername        = mk("M_INVALID_USERNAME", http.StatusBadRequest)
	Exclusive              = mk("M_EXCLUSIVE", http.StatusBadRequest)
	TooLarge               = mk("M_TOO_LARGE", http.StatusRequestEntityTooLarge)
	UnsupportedRoomVersion = mk("M_UNSUPPORTED_ROOM_VERSION", http.StatusBadRequest)
	BadState               = mk("M_BAD_STATE", http.StatusBadRequest)
	GuestAccessForbidden   = mk("M_GUEST_ACCESS_FORBIDDEN", http.StatusForbidden)
	RoomInUse              = mk("M_ROOM_IN_USE", http.StatusBadRequest)
	InvalidRoomState       = mk("M_INVALID_ROOM_STATE", http.StatusBadRequest)
	WeakPassword           = mk("M_WEAK_PASSWORD", http.StatusBadRequest)
	Unauthorized           = mk("M_UNAUTHORIZED", http.StatusUnauthorized)
	BadAlias               = mk("M_BAD_ALIAS", http.StatusBadRequest)
	// UnknownPos is M_UNKNOWN_POS (400): a sliding sync pos this server does not know (any
	// more), or one issued to another user or device; the client starts the connection over.
	UnknownPos = mk("M_UNKNOWN_POS", http.StatusBadRequest)
	// BadAuthorization is M_UNAUTHORIZED with status 400: a federation request whose
	// X-Matrix header is malformed (an origin that is no server name), as Synapse answers.
	BadAuthorization = mk("M_UNAUTHORIZED", http.StatusBadRequest)
	// InvalidSignature is M_INVALID_SIGNATURE: a cross-signing key or signature does not
	// verify.
	InvalidSignature = mk("M_INVALID_SIGNATURE", http.StatusBadRequest)
	// ServerNotTrusted is M_SERVER_NOT_TRUSTED: the request names a third-party server
	// (an identity server) this server does not trust; it trusts none.
	ServerNotTrusted = mk("M_SERVER_NOT_TRUSTED", http.StatusBadRequest)
	// Conflict is M_UNKNOWN with status 409: what the request would create exists (a room
	// alias, as the spec's PUT /directory/room answers).
	Conflict = mk("M_UNKNOWN", http.StatusConflict)
	// Unknown is an internal failure (500); its message must be generic. Never use it for
	// something the client caused: BadRequest is the spec's 400 M_UNKNOWN.
	Unknown = mk("M_UNKNOWN", http.StatusInternalServerError)
	// BadGateway is M_UNKNOWN with status 502: another server needed for the request
	// failed or could not be reached.
	BadGateway = mk("M_UNKNOWN", http.StatusBadGateway)
	// GatewayTimeout is M_UNKNOWN with status 504: a component the request waited for gave
	// no answer in time; the outcome is unknown and the request may be retried.
	GatewayTimeout = mk("M_UNKNOWN", http.StatusGatewayTimeout)
	// BadRequest is M_UNKNOWN with status 400, for client errors with no specific code.
	BadRequest = mk("M_UNKNOWN", http.StatusBadRequest)
	// MethodNotAllowed is M_UNRECOGNIZED with status 405: the endpoint exists, but not with
	// the request's method.
	MethodNotAllowed = mk("M_UNRECOGNIZED", http.StatusMethodNotAllowed)
	// NotYetUploaded is 504 M_NOT_YET_UPLOADED: a media ID reserved for an asynchronous
	// upload whose content has not arrived within the wait.
	NotYetUploaded = mk("M_NOT_YET_UPLOADED", http.StatusGatewayTimeout)
	// CannotOverwriteMedia is 409 M_CANNOT_OVERWRITE_MEDIA: the asynchronous upload's
	// media ID has its content already.
	CannotOverwriteMedia = mk("M_CANNOT_OVERWRITE_MEDIA", http.StatusConflict)
	// RemoteTooLarge is 502 M_TOO_LARGE: another server's media is larger than this
	// server fetches.
	RemoteTooLarge = mk("M_TOO_LARGE", http.StatusBadGateway)
	// URLNotSet, BadStatus, ConnectionFailed and ConnectionTimeout are the answers of an
	// application service ping (POST /_matrix/client/v1/appservice/{id}/ping) that failed:
	// the service has no URL, answered with an error status, could not be reached, or did
	// not answer in time.
	URLNotSet         = mk("M_URL_NOT_SET", http.StatusBadRequest)
	BadStatus         = mk("M_BAD_STATUS", http.StatusBadGateway)
	ConnectionFailed  = mk("M_CONNECTION_FAILED", http.StatusBadGateway)
	ConnectionTimeout = mk("M_CONNECTION_TIMEOUT", http.StatusGatewayTimeout)
	// UnknownDevice is M_UNKNOWN_DEVICE: an application service names, with device_id, a
	// device its user does not have.
	UnknownDevice = mk("M_UNKNOWN_DEVICE", http.StatusBadRequest)
)

// WrongRoomKeysVersion is 403 M_WRONG_ROOM_KEYS_VERSION: keys were sent for a backup
// version that is not the current one, which it names.
func WrongRoomKeysVersion(current string) *Error {
	return &Error{Code: "M_WRONG_ROOM_KEYS_VERSION", Message: "wrong backup version", Status: http.StatusForbidden, CurrentVersion: current}
}

// LimitExceeded is 429 M_LIMIT_EXCEEDED with the time to wait.
func LimitExceeded(retryAfter time.Duration) *Error {
	return &Error{Code: "M_LIMIT_EXCEEDED", Message: "too many requests", Status: http.StatusTooManyRequests, RetryAfterMS: retryAfter.Milliseconds()}
}

// Unavailable is 503 M_UNKNOWN with the time to wait (the Retry-After header): a part of
// the server the request needs cannot be reached just now (restarting, or down).
func Unavailable(retryAfter time.Duration) *Error {
	return &Error{Code: "M_UNKNOWN", Message: "the server is temporarily unavailable, retry later", Status: http.StatusServiceUnavailable,
		RetryAfterMS: retryAfter.Milliseconds()}
}

// ServerManaged is 405 M_BAD_JSON: the client tried to set account data of a type the
// server manages (m.fully_read, m.push_rules).
var ServerManaged = mk("M_BAD_JSON", http.StatusMethodNotAllowed)
