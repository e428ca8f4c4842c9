package inthttp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/mux"
	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/internal/matrixerr"
)

// ServerOptions tunes a Server. The zero value works.
type ServerOptions struct {
	// Logger receives the detail of internal errors; nil logs to a new logrus logger.
	Logger *logrus.Entry
	// Metrics records call latency; nil records nothing.
	Metrics *Metrics
	// MaxBodyBytes limits request bodies; 0 means DefaultMaxBodyBytes.
	MaxBodyBytes int64
}

// Server serves the internal API methods of one component on a router. Register its methods
// with Serve at start-up, before the listener starts.
type Server struct {
	router    *mux.Router
	component string
	opts      ServerOptions

	mu      sync.Mutex
	methods []string
}

// NewServer serves component's methods under PathPrefix + component on router.
func NewServer(router *mux.Router, component string, opts ServerOptions) *Server {
	if opts.Logger == nil {
		opts.Logger = logrus.NewEntry(logrus.New())
	}
	opts.Logger = opts.Logger.WithField("component", component)
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	return &Server{router: router, component: component, opts: opts}
}

// Component is the name the server's routes start with.
func (s *Server) Component() string {
	return s.component
}

// Methods lists the methods served so far, sorted.
func (s *Server) Methods() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := slices.Clone(s.methods)
	slices.Sort(out)
	return out
}

// Serve exposes fn as POST Path(component, Method), Method being derived from the request type
// (MethodName). fn runs with a context that ends when the caller's deadline passes or the
// caller goes away. Serving a method twice, or a function whose types break the naming rule,
// is a wiring bug and panics at start-up.
func Serve[Res, Req any](s *Server, fn func(context.Context, *Req) (*Res, error)) {
	method, err := MethodName[Req]()
	if err != nil {
		panic(fmt.Sprintf("inthttp: serve %s: %v", s.component, err))
	}
	if got := reflect.TypeFor[Res]().Name(); got != method+"Response" {
		panic(fmt.Sprintf("inthttp: serve %s/%s: response type %s is not named %sResponse", s.component, method, got, method))
	}
	s.mu.Lock()
	if slices.Contains(s.methods, method) {
		s.mu.Unlock()
		panic(fmt.Sprintf("inthttp: %s/%s served twice", s.component, method))
	}
	s.methods = append(s.methods, method)
	s.mu.Unlock()

	call := func(ctx context.Context, body []byte) (any, error) {
		req := new(Req)
		if err := json.Unmarshal(body, req); err != nil {
			return nil, errBadRequest{err}
		}
		return fn(ctx, req)
	}
	s.router.Handle(Path(s.component, method), &handler{s: s, method: method, call: call}).Methods(http.MethodPost)
}

// errBadRequest is a request body that does not decode: a bug or version skew between the
// components, never the end user's fault.
type errBadRequest struct{ err error }

func (e errBadRequest) Error() string { return "decode request: " + e.err.Error() }

type handler struct {
	s      *Server
	method string
	call   func(ctx context.Context, body []byte) (any, error)
}

// outcome labels for metrics, a small fixed set.
const (
	outcomeOK         = "ok"
	outcomeMatrix     = "matrix_error"
	outcomeInternal   = "internal_error"
	outcomeBadRequest = "bad_request"
	outcomeTimeout    = "timeout"
	outcomeCancelled  = "cancelled"
	outcomeNetwork    = "network_error"
)

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	logger := h.s.opts.Logger.WithField("method", h.method)
	outcome := h.serve(w, r, logger)
	h.s.opts.Metrics.observe(h.s.component, h.method, sideServer, outcome, time.Since(start))
}

func (h *handler) serve(w http.ResponseWriter, r *http.Request, logger *logrus.Entry) string {
	ctx := r.Context()
	if v := r.Header.Get(HeaderTimeout); v != "" {
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			logger.WithField("header", v).Error("internal API call with a malformed timeout")
			writeInternal(w, http.StatusBadRequest, "malformed "+HeaderTimeout)
			return outcomeBadRequest
		}
		if ms <= 0 {
			writeInternal(w, http.StatusGatewayTimeout, "deadline exceeded")
			return outcomeTimeout
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(ms)*time.Millisecond)
		defer cancel()
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.s.opts.MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			logger.WithField("limit_bytes", tooBig.Limit).Error("internal API request body too large")
			writeInternal(w, http.StatusRequestEntityTooLarge, "request body too large")
			return outcomeBadRequest
		}
		logger.WithError(err).Debug("internal API request body unreadable")
		writeInternal(w, http.StatusBadRequest, "request body unreadable")
		return outcomeCancelled
	}
	res, err := h.safeCall(ctx, body, logger)
	if err == nil {
		b, merr := json.Marshal(res)
		if merr != nil {
			logger.WithError(merr).Error("internal API response does not encode")
			writeInternal(w, http.StatusInternalServerError, "internal error")
			return outcomeInternal
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(b) // the caller may have gone; nothing to do
		return outcomeOK
	}
	return h.writeErr(ctx, w, r, err, logger)
}

// safeCall runs the method, turning a panic into an internal error.
func (h *handler) safeCall(ctx context.Context, body []byte, logger *logrus.Entry) (res any, err error) {
	defer func() {
		if p := recover(); p != nil {
			logger.WithField("panic", p).Error("internal API method panicked")
			err = errors.New("panic")
		}
	}()
	return h.call(ctx, body)
}

func (h *handler) writeErr(ctx context.Context, w http.ResponseWriter, r *http.Request, err error, logger *logrus.Entry) string {
	var merr *matrixerr.Error
	var bad errBadRequest
	switch {
	case errors.As(err, &merr):
		status := merr.Status
		if status == 0 {
			status = http.StatusInternalServerError
		}
		w.Header().Set(HeaderError, ErrorMatrix)
		writeJSON(w, status, wireError{
			Code: merr.Code, Message: merr.Message, Status: merr.Status,
			RetryAfterMS: merr.RetryAfterMS, RoomVersion: merr.RoomVersion, CurrentVersion: merr.CurrentVersion,
		})
		return outcomeMatrix
	case errors.As(err, &bad):
		logger.WithError(err).Error("internal API request does not decode")
		writeInternal(w, http.StatusBadRequest, "request body does not decode")
		return outcomeBadRequest
	case r.Context().Err() != nil:
		logger.WithError(err).Debug("internal API caller went away")
		writeInternal(w, http.StatusServiceUnavailable, "caller went away")
		return outcomeCancelled
	case ctx.Err() != nil && errors.Is(err, context.DeadlineExceeded):
		logger.WithError(err).Warn("internal API call ran past the caller's deadline")
		writeInternal(w, http.StatusGatewayTimeout, "deadline exceeded")
		return outcomeTimeout
	default:
		logger.WithError(err).Error("internal API call failed")
		writeInternal(w, http.StatusInternalServerError, "internal error")
		return outcomeInternal
	}
}

// writeInternal answers with a generic text; the detail is only in the callee's log.
func writeInternal(w http.ResponseWriter, status int, msg string) {
	w.Header().Set(HeaderError, ErrorInternal)
	writeJSON(w, status, wireError{Code: "M_UNKNOWN", Message: msg, Status: status})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v) // wireError always encodes
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b) // the caller may have gone; nothing to do
}
