// Package httputil is how every HTTP endpoint is served: handlers return a Response or an
// error, and one wrapper writes JSON, maps *matrixerr.Error to its status and body (anything
// else becomes a generic 500), limits body sizes, recovers panics, sets CORS headers,
// attaches a request-scoped logger and records latency.
package httputil

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/internal/matrixerr"
)

// Response is a handler's successful answer, written as JSON; or, when Write is set, the
// bytes Write writes (media content), with Headers giving their Content-Type.
type Response struct {
	Status  int
	Body    any
	Headers map[string]string
	// Write, when set, writes the body after the status and headers, instead of Body.
	// Its error (the client went away, the file store failed mid-way) can only be logged:
	// the status is sent.
	Write func(w io.Writer) error
}

// OK is a 200 with body.
func OK(body any) Response {
	return Response{Status: http.StatusOK, Body: body}
}

// HandlerFunc is the shape of every endpoint.
type HandlerFunc func(r *http.Request) (Response, error)

// Route is one named endpoint.
type Route struct {
	Name    string
	Method  string
	Path    string
	Handler HandlerFunc
}

// Server wraps handlers with the shared behaviour.
type Server struct {
	Component    string
	Logger       *logrus.Entry
	Metrics      *Metrics
	MaxBodyBytes int64
	RateLimiter  *RateLimiter
}

// Metrics holds the HTTP latency histogram; nil records nothing.
type Metrics struct {
	latency *prometheus.HistogramVec
}

// NewMetrics registers the HTTP metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "dendrite_http_request_duration_seconds", Help: "Time to answer HTTP requests.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
	}, []string{"component", "route", "method", "code"})}
	if reg != nil {
		reg.MustRegister(m.latency)
	}
	return m
}

type ctxKey int

const (
	loggerKey ctxKey = iota
	rateKey
	assertedUserKey
	assertedDeviceKey
)

// Register adds routes to router, plus a CORS preflight answer for every path. Requests
// that change something are rate limited; reads (GET: /sync long-polls, history, state) are
// not, so that a busy client following a fast room is never throttled for keeping up.
func (s *Server) Register(router *mux.Router, routes []Route) {
	for _, rt := range routes {
		h := rt.Handler
		if s.RateLimiter != nil && rt.Method != http.MethodGet {
			h = s.RateLimited(h)
		}
		router.Handle(rt.Path, s.Wrap(rt.Name, h)).Methods(rt.Method)
		router.Handle(rt.Path, http.HandlerFunc(preflight)).Methods(http.MethodOptions)
	}
}

// Unmatched makes router answer what no route serves as the spec requires ("Standard error
// response", "Web Browser Clients"): an unknown path 404 M_UNRECOGNIZED, a known path with
// another method 405 M_UNRECOGNIZED, an OPTIONS preflight 200 for any path, without auth,
// and every answer with the CORS headers. Each public listener's router calls it once.
func Unmatched(router *mux.Router) {
	router.NotFoundHandler = http.HandlerFunc(UnknownEndpoint)
	router.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodOptions {
			preflight(w, r)
			return
		}
		writeError(w, matrixerr.MethodNotAllowed("the endpoint does not accept "+r.Method))
	})
	router.Use(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			SetCORS(w.Header())
			next.ServeHTTP(w, r)
		})
	})
}

// UnknownEndpoint answers a request no route serves: 404 M_UNRECOGNIZED, or 200 with the
// CORS headers for an OPTIONS preflight.
func UnknownEndpoint(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodOptions {
		preflight(w, r)
		return
	}
	writeError(w, matrixerr.Unrecognized("unrecognized request"))
}

// SetCORS sets the CORS headers the client-server spec recommends on every response.
func SetCORS(h http.Header) {
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, OPTIONS")
	h.Set("Access-Control-Allow-Headers", "X-Requested-With, Content-Type, Authorization")
}

func preflight(w http.ResponseWriter, _ *http.Request) {
	SetCORS(w.Header())
	w.WriteHeader(http.StatusOK)
}

// Wrap turns a HandlerFunc into an http.Handler. Path variables and query parameters that
// are not UTF-8 without NUL are refused (400 M_INVALID_PARAM) before h runs.
func (s *Server) Wrap(name string, h HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		reqID := r.Header.Get("X-Request-Id")
		if reqID == "" {
			b := make([]byte, 8)
			_, _ = rand.Read(b) // crypto/rand never fails on Linux
			reqID = hex.EncodeToString(b)
		}
		logger := s.Logger.WithFields(logrus.Fields{"request_id": reqID, "route": name})
		r = r.WithContext(context.WithValue(r.Context(), loggerKey, logger))
		if s.MaxBodyBytes > 0 && r.Body != nil {
			r.Body = http.MaxBytesReader(w, r.Body, s.MaxBodyBytes)
		}
		status := s.serve(w, r, h, logger)
		if s.Metrics != nil {
			s.Metrics.latency.WithLabelValues(s.Component, name, r.Method, strconv.Itoa(status)).Observe(time.Since(start).Seconds())
		}
	})
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request, h HandlerFunc, logger *logrus.Entry) (status int) {
	defer func() {
		if p := recover(); p != nil {
			logger.WithField("panic", p).Error("handler panicked")
			status = writeError(w, matrixerr.Unknown("Internal server error"))
		}
	}()
	err := checkParams(r)
	var res Response
	if err == nil {
		res, err = h(r)
	}
	if err != nil {
		var merr *matrixerr.Error
		// A part of the server that is down or restarting (inthttp.UnreachableError): 503
		// with Retry-After, so that clients retry instead of reporting a failure.
		var unavailable interface{ RetryAfter() time.Duration }
		switch {
		case errors.As(err, &merr):
		case errors.As(err, &unavailable):
			logger.WithError(err).Warn("request failed: a component is unreachable")
			merr = matrixerr.Unavailable(unavailable.RetryAfter())
		default:
			if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
				logger.Debug("client went away")
			} else {
				logger.WithError(err).Error("request failed")
			}
			merr = matrixerr.Unknown("Internal server error")
		}
		return writeError(w, merr)
	}
	for k, v := range res.Headers {
		w.Header().Set(k, v)
	}
	if res.Status == 0 {
		res.Status = http.StatusOK
	}
	if res.Write != nil {
		SetCORS(w.Header())
		w.WriteHeader(res.Status)
		if err := res.Write(w); err != nil {
			logger.WithError(err).Debug("writing the response body failed")
		}
		return res.Status
	}
	writeJSON(w, res.Status, res.Body)
	return res.Status
}

func writeError(w http.ResponseWriter, e *matrixerr.Error) int {
	status := e.Status
	if status == 0 {
		status = http.StatusInternalServerError
	}
	if e.RetryAfterMS > 0 {
		w.Header().Set("Retry-After", strconv.FormatInt((e.RetryAfterMS+999)/1000, 10))
	}
	writeJSON(w, status, e)
	return status
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	SetCORS(w.Header())
	w.Header().Set("Content-Type", "application/json")
	b, err := json.Marshal(body)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"errcode":"M_UNKNOWN","error":"Internal server error"}`)
	}
	w.WriteHeader(status)
	_, _ = w.Write(b) // the client may have gone; nothing to do
}

// Logger is the request-scoped logger.
func Logger(r *http.Request) *logrus.Entry {
	if l, ok := r.Context().Value(loggerKey).(*logrus.Entry); ok {
		return l
	}
	return logrus.NewEntry(logrus.StandardLogger())
}

// DecodeJSON reads the size-limited body into v: 400 M_NOT_JSON for a body that is not
// UTF-8 JSON (invalid bytes and lone surrogate escapes included, which encoding/json would
// turn into U+FFFD), 400 M_BAD_JSON for NUL characters, numbers beyond the int64 range or a
// shape that does not fit v.
func DecodeJSON(r *http.Request, v any) error {
	if r.Body == nil {
		return matrixerr.NotJSON("the request body is empty")
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return matrixerr.TooLarge("the request body is too large")
		}
		return matrixerr.NotJSON("could not read the request body")
	}
	if !json.Valid(body) {
		return matrixerr.NotJSON("the request body is not valid JSON")
	}
	if err = checkJSON(body); err != nil {
		return err
	}
	if err = json.Unmarshal(body, v); err != nil {
		return matrixerr.BadJSON("the request body has the wrong shape: " + err.Error())
	}
	return nil
}

// Vars returns the path variables, unescaped (the router matches encoded paths). Wrap has
// refused requests whose variables do not unescape to UTF-8 without NUL.
func Vars(r *http.Request) map[string]string {
	vars := mux.Vars(r)
	out := make(map[string]string, len(vars))
	for k, v := range vars {
		if u, err := url.PathUnescape(v); err == nil {
			v = u
		}
		out[k] = v
	}
	return out
}

// AccessToken extracts the token from the Authorization header or the query string.
func AccessToken(r *http.Request) (string, error) {
	if h := r.Header.Get("Authorization"); h != "" {
		if tok, ok := strings.CutPrefix(h, "Bearer "); ok && tok != "" {
			return tok, nil
		}
		return "", matrixerr.MissingToken("the Authorization header must be a Bearer token")
	}
	if tok := r.URL.Query().Get("access_token"); tok != "" {
		return tok, nil
	}
	return "", matrixerr.MissingToken("missing access token")
}

// Authenticated wraps a handler that needs a logged-in identity.
// The lookup's context carries the request's user_id and device_id query parameters
// (AssertedUserID, AssertedDeviceID), with which an application service names the user
// and device it acts as.
func Authenticated[T any](lookup func(ctx context.Context, token string) (T, error), h func(r *http.Request, who T) (Response, error)) HandlerFunc {
	return func(r *http.Request) (Response, error) {
		tok, err := AccessToken(r)
		if err != nil {
			return Response{}, err
		}
		ctx := r.Context()
		if uid := r.URL.Query().Get("user_id"); uid != "" {
			ctx = context.WithValue(ctx, assertedUserKey, uid)
		}
		if did := r.URL.Query().Get("device_id"); did != "" {
			ctx = context.WithValue(ctx, assertedDeviceKey, did)
		}
		who, err := lookup(ctx, tok)
		if err != nil {
			return Response{}, err
		}
		if lim, ok := r.Context().Value(rateKey).(*rateCheck); ok {
			if err := lim.check(who); err != nil {
				return Response{}, err
			}
		}
		return h(r, who)
	}
}

// AssertedUserID is the user_id query parameter of the request whose token Authenticated is
// looking up ("" when absent): an application service's choice of user to act as.
func AssertedUserID(ctx context.Context) string {
	uid, _ := ctx.Value(assertedUserKey).(string) // absent: ""
	return uid
}

// AssertedDeviceID is the device_id query parameter of the request whose token
// Authenticated is looking up ("" when absent): an application service's choice of its
// user's device to act as.
func AssertedDeviceID(ctx context.Context) string {
	did, _ := ctx.Value(assertedDeviceKey).(string) // absent: ""
	return did
}

// Health registers /health (liveness) and /ready (readiness).
func Health(router *mux.Router, ready func(ctx context.Context) error) {
	router.HandleFunc("/health", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	router.HandleFunc("/ready", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		if err := ready(ctx); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
}

// MetricsHandler serves Prometheus metrics.
func MetricsHandler(g prometheus.Gatherer) http.Handler {
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{})
}

// remoteIP is the request's peer address without the port.
func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
