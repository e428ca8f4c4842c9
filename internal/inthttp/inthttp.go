// Package inthttp is the one generic internal HTTP layer that carries every component's api/
// interfaces between processes in the polylith deployment. It holds no component logic: a
// component's inthttp package registers each method of its interface with Serve and calls it
// with Call, one line per method.
//
// Wire contract (docs/architecture.md, "Internal HTTP"):
//   - every method is POST PathPrefix + component + "/" + Method, where Method is the name of
//     the request type without its "Request" suffix (STYLE 3: a method Name takes a
//     *NameRequest and returns a *NameResponse), so the route is derived from the method name;
//   - the body is the request as JSON, the answer is the response as JSON;
//   - a *matrixerr.Error keeps its code, status, message and extra fields across the wire and
//     is rebuilt on the calling side, so errors.As works there as it does in the monolith; any
//     other error is logged by the callee and reaches the caller only as a generic
//     *RemoteError (internal error text never leaves the process that produced it);
//   - the caller's deadline travels in HeaderTimeout, and the callee stops when it passes.
package inthttp

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"time"
)

const (
	// PathPrefix starts the path of every internal API method.
	PathPrefix = "/_internal/"
	// HeaderTimeout carries the time the caller still waits, in milliseconds. A relative time
	// (as gRPC's grpc-timeout) keeps working when the two hosts' clocks disagree; it loses only
	// the request's transit time.
	HeaderTimeout = "X-Dendrite-Timeout-Ms"
	// HeaderError marks an error answer: ErrorMatrix for a *matrixerr.Error, ErrorInternal for
	// anything else.
	HeaderError = "X-Dendrite-Error"
	// ErrorMatrix is HeaderError's value for a Matrix error the caller rebuilds.
	ErrorMatrix = "matrix"
	// ErrorInternal is HeaderError's value for a failure whose detail stayed in the callee.
	ErrorInternal = "internal"

	// DefaultTimeout is the deadline a Client gives a call whose context has none.
	DefaultTimeout = 30 * time.Second
	// DefaultMaxBodyBytes limits request bodies when ServerOptions.MaxBodyBytes is 0.
	DefaultMaxBodyBytes = 16 << 20
)

// Path is the route of one method of one component.
func Path(component, method string) string {
	return PathPrefix + component + "/" + method
}

// MethodName is the method a request type belongs to: the type's name without its "Request"
// suffix. It fails for a type that does not follow the naming rule.
func MethodName[Req any]() (string, error) {
	return methodName(reflect.TypeFor[Req]())
}

func methodName(t reflect.Type) (string, error) {
	name, ok := strings.CutSuffix(t.Name(), "Request")
	if !ok || name == "" {
		return "", fmt.Errorf("request type %s is not named <Method>Request", t)
	}
	return name, nil
}

// Methods lists the methods of the interface type iface, sorted. Every one must have the shape
// Name(context.Context, *NameRequest) (*NameResponse, error); the error names those that do not.
func Methods(iface reflect.Type) ([]string, error) {
	if iface.Kind() != reflect.Interface {
		return nil, fmt.Errorf("%s is not an interface type", iface)
	}
	var names []string
	var errs []error
	for i := range iface.NumMethod() {
		m := iface.Method(i)
		if err := checkShape(m.Name, m.Type); err != nil {
			errs = append(errs, err)
			continue
		}
		names = append(names, m.Name)
	}
	sort.Strings(names)
	return names, errors.Join(errs...)
}

var (
	ctxType     = reflect.TypeFor[context.Context]()
	errType     = reflect.TypeFor[error]()
	errDeadline = context.DeadlineExceeded
)

func checkShape(name string, ft reflect.Type) error {
	bad := fmt.Errorf("method %s must be %[1]s(context.Context, *%[1]sRequest) (*%[1]sResponse, error)", name)
	if ft.NumIn() != 2 || ft.NumOut() != 2 || ft.In(0) != ctxType || ft.Out(1) != errType {
		return bad
	}
	req, res := ft.In(1), ft.Out(0)
	if req.Kind() != reflect.Pointer || res.Kind() != reflect.Pointer ||
		req.Elem().Name() != name+"Request" || res.Elem().Name() != name+"Response" {
		return bad
	}
	return nil
}

// Missing lists the methods of the interface type iface that s does not serve, and the
// malformed methods as an error. A component's test calls it so that a method added to an
// interface cannot be forgotten in its inthttp package.
func Missing(iface reflect.Type, s *Server) ([]string, error) {
	want, err := Methods(iface)
	served := map[string]bool{}
	for _, m := range s.Methods() {
		served[m] = true
	}
	var missing []string
	for _, m := range want {
		if !served[m] {
			missing = append(missing, m)
		}
	}
	return missing, err
}

// wireError is a *matrixerr.Error on the wire. Unlike the client-visible body it carries the
// HTTP status, so that an error whose status is not the one it is sent with (none is, today)
// still survives.
type wireError struct {
	Code         string `json:"errcode"`
	Message      string `json:"error"`
	Status       int    `json:"status"`
	RetryAfterMS int64  `json:"retry_after_ms,omitempty"`
	RoomVersion  string `json:"room_version,omitempty"`
}

// RemoteError is a call that failed in the callee, or on the way, for a reason that is not a
// Matrix error: the callee's internal error (its detail is in the callee's log), a request it
// refused (StatusCode 400 or 413: a bug or version skew between components) or an answer that
// did not come from this layer (a proxy, a wrong URL). Calls are idempotent, so the caller may
// retry; RemoteError.Temporary says whether that can help.
type RemoteError struct {
	Component  string
	Method     string
	StatusCode int
	// Message is the callee's generic text, never the internal detail.
	Message string
}

// Error implements error.
func (e *RemoteError) Error() string {
	return fmt.Sprintf("internal API %s/%s: HTTP %d: %s", e.Component, e.Method, e.StatusCode, e.Message)
}

// UnreachableError is a call that got no answer: the callee's address refused or dropped
// the connection (the callee is down or restarting). Nothing says whether the callee
// applied the request; calls are idempotent, so the caller may retry. A public handler
// failing with it answers 503 with Retry-After (see RetryAfter), not 500.
type UnreachableError struct {
	Component string
	Method    string
	Err       error
}

// Error implements error.
func (e *UnreachableError) Error() string {
	return fmt.Sprintf("internal API %s/%s unreachable: %v", e.Component, e.Method, e.Err)
}

// Unwrap gives the transport error.
func (e *UnreachableError) Unwrap() error { return e.Err }

// RetryAfter is how long a client should wait before retrying a request that failed
// because of e: about as long as a crashed component takes to be back.
func (e *UnreachableError) RetryAfter() time.Duration { return time.Second }

// Temporary is true for failures that a retry may fix (5xx).
func (e *RemoteError) Temporary() bool {
	return e.StatusCode >= 500
}

// Unwrap makes errors.Is(err, context.DeadlineExceeded) true when the callee gave up because
// the caller's deadline passed (504).
func (e *RemoteError) Unwrap() error {
	if e.StatusCode == 504 {
		return errDeadline
	}
	return nil
}
